"""Settings read from the environment: the variables a user and a Job pod set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxyrefresh.models import Protocol, TargetSpec
from proxyrefresh.settings import CheckerSettings, NetworkSettings, RedisSettings, WorkerSettings
from proxyrefresh.worker.rotate_settings import RotatorSettings


def test_a_variable_is_the_prefix_and_the_field_in_any_case() -> None:
    settings = CheckerSettings.from_env(
        {"PROXYREFRESH_TIMEOUT": "2.5", "proxyrefresh_concurrency": "40", "UNRELATED": "x"}
    )
    assert (settings.timeout, settings.concurrency) == (2.5, 40)
    assert settings.default_protocol is Protocol.HTTP  # a default where nothing is set


def test_each_class_reads_its_own_prefix() -> None:
    env = {"PROXYREFRESH_REDIS_URL": "redis://r:1/2", "PROXYREFRESH_ROTATOR_RETRIES": "5"}
    assert RedisSettings.from_env(env).url == "redis://r:1/2"
    assert RotatorSettings.from_env(env).retries == 5
    assert CheckerSettings.from_env(env).judges == []


def test_lists_and_models_are_json() -> None:
    env = {
        "PROXYREFRESH_JUDGES": '["http://127.0.0.2:8080/"]',
        "PROXYREFRESH_TARGETS": '[{"url": "https://example.test/", "expectStatus": 204}]',
        "PROXYREFRESH_NETWORK_ALLOWED": '["127.0.0.0/8"]',
    }
    checker = CheckerSettings.from_env(env)
    assert checker.judges == ["http://127.0.0.2:8080/"]
    assert checker.targets == [TargetSpec(url="https://example.test/", expect_status=204)]
    assert NetworkSettings.from_env(env).allowed == ["127.0.0.0/8"]


def test_a_list_that_is_not_json_names_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        CheckerSettings.from_env({"PROXYREFRESH_JUDGES": "http://127.0.0.2:8080/"})
    assert [e["loc"] for e in caught.value.errors()] == [("judges",)]


def test_a_bad_value_names_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        CheckerSettings.from_env({"PROXYREFRESH_CONCURRENCY": "0"})
    assert [e["loc"] for e in caught.value.errors()] == [("concurrency",)]


def test_an_alias_names_the_variables_instead() -> None:
    """The Job controller sets JOB_COMPLETION_INDEX, without our prefix."""
    env = {"PROXYREFRESH_RUN_ID": "uid-1", "JOB_COMPLETION_INDEX": "7"}
    assert WorkerSettings.from_env(env).job_completion_index == 7
    env = {"PROXYREFRESH_RUN_ID": "uid-1", "PROXYREFRESH_INDEX": "3"}
    assert WorkerSettings.from_env(env).job_completion_index == 3
    with pytest.raises(ValidationError):
        WorkerSettings.from_env({"PROXYREFRESH_RUN_ID": "uid-1"})


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYREFRESH_MAX_LATENCY_MS", "750")
    assert CheckerSettings.from_env().max_latency_ms == 750
    assert CheckerSettings().max_latency_ms is None  # a plain instance is defaults only


def test_a_bad_environment_is_explained_by_the_variables_it_came_from() -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings.from_env({"PROXYREFRESH_CHUNK_SECONDS": "soon"})
    text = WorkerSettings.explain(caught.value)
    assert "PROXYREFRESH_RUN_ID: Field required" in text
    assert "JOB_COMPLETION_INDEX: Field required" in text  # its alias, not a made-up name
    assert "PROXYREFRESH_CHUNK_SECONDS: Input should be a valid number" in text
