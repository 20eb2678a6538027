"""`make chart-check`: what needs no cluster. helm lint, manifests/ in step
with the chart, hadolint and checkov (skips justified in .checkov.yaml)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis as SyncRedis

from tests.harness.cluster import binary, tools_bin
from tests.harness.testbed import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "proxyrefresh"
SPEC = {"sources": [{"inline": ["1.2.3.4:80"]}], "checker": {"judges": ["http://judge/"]}}
EVERYTHING = [
    "--set",
    "redis.bundled.enabled=true",
    "--set",
    "judge.enabled=true",
    "--set",
    "judge.service.type=LoadBalancer",
    "--set",
    "rotator.enabled=true",
    "--set",
    "ui.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
    "--set",
    "operator.watchNamespaces={proxyrefresh,scraping}",
    "--set",
    "operator.secretNames={list-auth}",
    "--set",
    "schedules[0].name=nightly",
    "--set",
    "schedules[0].schedule=0 3 * * *",
    "--set-json",
    f"schedules[0].spec={json.dumps(SPEC)}",
]


def helm(*args: str) -> str:
    try:
        exe = binary("helm")
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    result = subprocess.run([exe, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*values: str) -> list[dict[str, Any]]:
    text = helm("template", "proxyrefresh", str(CHART), "-n", "proxyrefresh", *values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint() -> None:
    helm("lint", str(CHART), "--strict", "--set", "redis.url=redis://r:6379/0")
    helm("lint", str(CHART), "--strict", *EVERYTHING)


def test_manifests_are_rendered_from_the_chart() -> None:
    expected = subprocess.run(
        [
            "bash",
            "-c",
            "helm template proxyrefresh charts/proxyrefresh --namespace proxyrefresh "
            "--set redis.existingSecret=proxyrefresh-redis",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": f"{tools_bin()}:/usr/bin:/bin"},
    ).stdout
    committed = (ROOT / "manifests" / "install.yaml").read_text()
    assert committed.split("\n", 3)[3] == expected, "run hack/render-manifests.sh"
    crds = [
        (CHART / "crds" / f"proxyrefresh.dev_{plural}.yaml").read_text()
        for plural in ("proxyrefreshes", "proxypools")
    ]
    committed_crds = (ROOT / "manifests" / "crd.yaml").read_text()
    assert committed_crds == crds[0] + "---\n" + crds[1].split("\n", 1)[1]


def test_operator_is_locked_down() -> None:
    docs = render("--set", "redis.url=redis://r:6379/0")
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Ready when kopf serves its probe: its start-up done (test_real_node waits on it).
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Namespaced by default: a Role in the release namespace, nothing cluster-wide.
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "proxyrefresh"
    # Secrets: create (the per-run Redis Secrets) but never read one back.
    assert [r["verbs"] for r in role["rules"] if "secrets" in r["resources"]] == [["create"]]
    env = {e["name"]: str(e.get("value")) for e in deployment_env(deployment)}
    assert json.loads(env["PROXYREFRESH_OPERATOR_NAMESPACES"]) == ["proxyrefresh"]
    assert env["PROXYREFRESH_NETWORK_GUARD"] == "true"
    assert env["PROXYREFRESH_OPERATOR_WORKER_REDIS_ACL"] == "true"
    workers = [sa for sa in by_kind(docs, "ServiceAccount") if "worker" in sa["metadata"]["name"]]
    assert [sa["automountServiceAccountToken"] for sa in workers] == [False]


def deployment_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["env"])


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template the chart renders, by its workload's name."""
    specs = {}
    for doc in docs:
        template = (doc.get("spec") or {}).get("template") or (
            ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template")
        )
        if template:
            specs[doc["metadata"]["name"]] = template["spec"]
    return specs


def test_host_network_is_an_opt_in_for_every_pod_and_names_the_api_server() -> None:
    default = render(*EVERYTHING)
    assert not [n for n, s in pod_specs(default).items() if s.get("hostNetwork")]
    docs = render(
        *EVERYTHING,
        "--set",
        "hostNetwork.enabled=true",
        "--set",
        "hostNetwork.apiServer=127.0.0.1:6443",
        "--set",
        "schedules[1].name=eu",
        "--set",
        "schedules[1].schedule=0 * * * *",
        "--set",
        "schedules[1].pool=eu",
    )
    specs = pod_specs(docs)
    # The bundled Redis keeps the pod network: only the chart's own image moves.
    ours = {n: s for n, s in specs.items() if "redis" not in n}
    assert len(ours) >= 6, sorted(specs)
    for name, spec in ours.items():
        assert spec["hostNetwork"] is True, name
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", name
    # What calls the API server is told where it is; nothing else is.
    for name, spec in ours.items():
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
        calls_api = spec.get("automountServiceAccountToken", True)
        assert (env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")) == (
            ("127.0.0.1", "6443") if calls_api else (None, None)
        ), name
    (deployment,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    env = {e["name"]: str(e.get("value")) for e in deployment_env(deployment)}
    assert env["PROXYREFRESH_OPERATOR_WORKER_HOST_NETWORK"] == "true"


def test_cluster_wide_rights_are_an_explicit_opt_in() -> None:
    docs = render("--set", "redis.url=redis://r:6379/0", "--set", "operator.clusterWide=true")
    assert len(by_kind(docs, "ClusterRole")) == len(by_kind(docs, "ClusterRoleBinding")) == 1
    assert not [r for r in by_kind(docs, "Role") if "operator" in r["metadata"]["name"]]
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: str(e.get("value")) for e in deployment_env(deployment)}
    assert json.loads(env["PROXYREFRESH_OPERATOR_NAMESPACES"]) == []


def test_bundled_redis_requires_a_password_from_a_secret(tmp_path: Path) -> None:
    docs = render("--set", "redis.bundled.enabled=true")
    (secret,) = by_kind(docs, "Secret")
    password = secret["stringData"]["password"]
    assert len(password) == 32
    assert secret["stringData"]["url"].startswith(f"redis://:{password}@")
    (redis,) = by_kind(docs, "StatefulSet")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert "requirepass $REDIS_PASSWORD" in script
    assert password not in json.dumps(redis)  # by reference only
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": secret["metadata"]["name"], "key": "password"}
    # Its own start script, run here: Redis takes the password and a
    # maxmemory that never evicts a run's or a pool's keys.
    port = free_port("127.0.0.1")
    local = script.replace("--dir /data", f"--dir {tmp_path} --port {port} --bind 127.0.0.1")
    env = {**os.environ, "REDIS_PASSWORD": "pw"}
    server = subprocess.Popen(["sh", "-c", local], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=server)
        client = SyncRedis(port=port, password="pw", decode_responses=True)
        assert client.config_get("maxmemory") == {"maxmemory": str(160 << 20)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    (policy,) = [
        p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("redis")
    ]
    sources = policy["spec"]["ingress"][0]["from"]
    components = {s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for s in sources}
    assert components == {"operator", "worker"}
    (workers,) = [
        p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("worker")
    ]
    blocks = [
        to["ipBlock"]
        for rule in workers["spec"]["egress"]
        for to in rule.get("to", [])
        if "ipBlock" in to
    ]
    assert "169.254.0.0/16" in blocks[0]["except"]


def test_every_optional_part_renders() -> None:
    docs = render(*EVERYTHING)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "CronJob",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    operator = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in operator) == ["proxyrefresh", "scraping"]
    (secrets,) = [
        r for r in operator[0]["rules"] if "get" in r["verbs"] and "secrets" in r["resources"]
    ]
    assert secrets["resourceNames"] == ["list-auth"]
    (scheduler,) = [r for r in by_kind(docs, "Role") if "scheduler" in r["metadata"]["name"]]
    assert scheduler["rules"] == [
        {"apiGroups": ["proxyrefresh.dev"], "resources": ["proxyrefreshes"], "verbs": ["create"]}
    ]
    (cron,) = by_kind(docs, "CronJob")
    env = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert json.loads(env[0]["value"]) == SPEC
    workers = [sa for sa in by_kind(docs, "ServiceAccount") if "worker" in sa["metadata"]["name"]]
    assert sorted(sa["metadata"]["namespace"] for sa in workers) == ["proxyrefresh", "scraping"]


def test_values_schema_refuses_nonsense() -> None:
    exe = binary("helm")
    result = subprocess.run(
        [
            exe,
            "template",
            "x",
            str(CHART),
            "--set",
            "redis.url=mysql://nope",
            "--set",
            "judge.service.type=Magic",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "/redis/url" in result.stderr
    assert "/judge/service/type" in result.stderr


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_the_chart_and_the_dockerfile(tmp_path: Path) -> None:
    checkov = tools_bin() / "checkov"
    if not checkov.exists():
        pytest.fail(f"{checkov} is missing: run `make bootstrap`", pytrace=False)
    for name, values in (
        ("defaults", ["--set", "redis.url=redis://r:6379/0"]),
        ("everything", EVERYTHING),
    ):
        text = helm("template", "proxyrefresh", str(CHART), "-n", "proxyrefresh", *values)
        (tmp_path / f"{name}.yaml").write_text(text)
    result = subprocess.run(
        [
            str(checkov),
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "-f",
            str(ROOT / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Failed checks: 0" in result.stdout
    assert "prismacloud" not in result.stdout + result.stderr  # it stayed offline


def test_the_native_rotator_needs_no_api_rights_and_no_volume() -> None:
    docs = render(
        "--set",
        "redis.bundled.enabled=true",
        "--set",
        "rotator.enabled=true",
        "--set",
        "rotator.filters.minAnonymity=elite",
        "--set",
        "rotator.auth.existingSecret=rotator-clients",
    )
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "rotator" in d["metadata"]["name"]]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "volumes" not in pod
    (container,) = pod["containers"]
    assert container["args"][:3] == ["rotate", "--pool", "default"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["PROXYREFRESH_ROTATOR_MIN_ANONYMITY"] == "elite"
    assert env["PROXYREFRESH_ROTATOR_PASSWORD"] == {"name": "rotator-clients", "key": "password"}
    assert "redis://" not in json.dumps(deployment)  # the URL by reference only
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert not [r for r in by_kind(docs, "Role") if "rotator" in r["metadata"]["name"]]
    (redis_policy,) = [
        p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("redis")
    ]
    sources = redis_policy["spec"]["ingress"][0]["from"]
    assert "rotator" in {
        s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for s in sources
    }
    # mubeng stays selectable: the feed with its one ConfigMap, mubeng serving.
    mubeng = render(
        "--set",
        "redis.url=redis://r:6379/0",
        "--set",
        "rotator.enabled=true",
        "--set",
        "rotator.engine=mubeng",
    )
    (deployment,) = [d for d in by_kind(mubeng, "Deployment") if "rotator" in d["metadata"]["name"]]
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert names == ["feed", "mubeng"]
    (role,) = [r for r in by_kind(mubeng, "Role") if "rotator" in r["metadata"]["name"]]
    assert role["rules"][0]["resourceNames"] == ["default-proxies"]


def test_a_tls_redis_with_its_own_ca_reaches_every_redis_client() -> None:
    """Issue 34: rediss:// with a CA from a Secret: the operator, the
    rotator and the page read it (the operator hands it on to its workers,
    tests/e2e/test_redis_tls.py); without it nothing is added."""
    values = ["--set", "redis.url=rediss://r:6380/0", "--set", "redis.tls.caSecret=redis-ca"]
    docs = render(*values, "--set", "rotator.enabled=true", "--set", "ui.enabled=true")
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert len(deployments) == 3
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        wanted = {"secretKeyRef": {"name": "redis-ca", "key": "ca.crt"}}
        assert env["PROXYREFRESH_REDIS_CA_DATA"] == wanted, name
    plain = render("--set", "redis.url=redis://r:6379/0", "--set", "rotator.enabled=true")
    assert "PROXYREFRESH_REDIS_CA_DATA" not in json.dumps(plain)


def test_a_sentinel_or_cluster_url_is_taken_and_the_sentinels_password_reaches_the_clients() -> (
    None
):
    """Issue 34: ``redis.url`` takes every topology's URL (the values schema
    refused all but redis:// and rediss://); the sentinels' own password,
    from a Secret, reaches the operator, the rotator and the page."""
    for url in ("redis+sentinel://s1:26379,s2:26379/svc/0", "rediss+cluster://n1:6379,n2:6379"):
        escaped = url.replace(",", "\\,")  # --set splits values at commas
        assert by_kind(render("--set", f"redis.url={escaped}"), "Deployment")
    values = ["--set", "redis.url=redis+sentinel://s1:26379/svc/0",
              "--set", "redis.sentinel.passwordSecret=sentinels"]  # fmt: skip
    docs = render(*values, "--set", "rotator.enabled=true", "--set", "ui.enabled=true")
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 3
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        wanted = {"secretKeyRef": {"name": "sentinels", "key": "password"}}
        assert env["PROXYREFRESH_REDIS_SENTINEL_PASSWORD"] == wanted
        assert "PROXYREFRESH_REDIS_CA_DATA" not in env


def test_the_page_reads_with_a_user_the_operator_keeps() -> None:
    """Issue 34: with the page on and no URL of its own, the operator keeps
    a read-only Redis user for it (made again after a Redis restart) and
    the page reads its URL from the Secret the operator writes; a URL of
    the user's own, or an operator that makes no users, keep it as it was."""

    def ui_and_operator(*values: str) -> tuple[Any, dict[str, str | None]]:
        docs = render("--set", "redis.url=redis://r:6379/0", "--set", "ui.enabled=true", *values)
        deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
        ui = deployments["proxyrefresh-proxyrefresh-ui"]["spec"]["template"]["spec"]["containers"][
            0
        ]
        operator = deployments["proxyrefresh-proxyrefresh-operator"]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
        url = next(e for e in ui["env"] if e["name"] == "PROXYREFRESH_REDIS_URL")
        return url["valueFrom"]["secretKeyRef"], env

    ref, env = ui_and_operator()
    assert ref == {"name": "proxyrefresh-proxyrefresh-viewer", "key": "url"}
    assert (
        env["PROXYREFRESH_OPERATOR_VIEWER_SECRET"]
        == "proxyrefresh/proxyrefresh-proxyrefresh-viewer"
    )
    ref, env = ui_and_operator("--set", "ui.redis.existingSecret=mine")
    assert ref == {"name": "mine", "key": "url"}
    assert "PROXYREFRESH_OPERATOR_VIEWER_SECRET" not in env
    ref, env = ui_and_operator("--set", "worker.redisAcl=false")
    assert ref["name"] == "proxyrefresh-proxyrefresh-redis"
    assert "PROXYREFRESH_OPERATOR_VIEWER_SECRET" not in env


def test_metrics_service_monitor_dashboard_and_the_page() -> None:
    docs = render(
        "--set", "redis.url=redis://r:6379/0", "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.grafanaDashboard.enabled=true", "--set", "ui.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
    )  # fmt: skip
    operator = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    )
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROXYREFRESH_OPERATOR_METRICS_PORT"] == "9090"
    (monitor,) = by_kind(docs, "ServiceMonitor")
    # honorLabels: the refresh's namespace label stays `namespace` (the
    # dashboard filters on it), not exported_namespace (issue 32, item 6).
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "interval": "30s", "honorLabels": True}
    ]
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "proxyrefresh_pool_last_success_timestamp_seconds > 86400" in alerts["ProxyPoolStale"]
    assert "ProxyPoolEmpty" in alerts
    assert "$labels.pool" in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    (dashboard,) = by_kind(docs, "ConfigMap")
    board = json.loads(dashboard["data"]["proxyrefresh.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in (
        "proxyrefresh_refreshes",
        "proxyrefresh_pool_usable",
        "proxyrefresh_refresh_duration_seconds_bucket",
        "proxyrefresh_chunk_retries_total",
        "proxyrefresh_reconcile_duration_seconds_bucket",
    ):
        assert metric in exprs
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-ui")]
    assert role["rules"] == [
        {"apiGroups": ["proxyrefresh.dev"], "resources": ["proxyrefreshes", "proxypools"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]  # fmt: skip
    off = render("--set", "redis.url=redis://r:6379/0", "--set", "metrics.enabled=false")
    operator = next(
        d for d in by_kind(off, "Deployment") if d["metadata"]["name"].endswith("-operator")
    )
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["PROXYREFRESH_OPERATOR_METRICS_PORT"] == "0"


def test_default_values_render_and_lint_with_the_bundled_redis() -> None:
    """`helm template` with nothing set renders (issue 32, item 8): the
    bundled Redis, used only while no other Redis is named."""
    helm("lint", str(CHART), "--strict")
    docs = render()
    (redis,) = by_kind(docs, "StatefulSet")
    # <release>-<chart>, as every release so far was named (an upgrade renames nothing)
    assert redis["metadata"]["name"] == "proxyrefresh-proxyrefresh-redis"
    assert not by_kind(render("--set", "redis.url=redis://r:6379/0"), "StatefulSet")
    assert not by_kind(render("--set", "redis.existingSecret=mine"), "StatefulSet")


def test_what_a_production_install_overrides() -> None:
    """The knobs bitnami-style charts have (issue 32, item 8)."""
    docs = render(
        "--set", "redis.url=redis://r:6379/0", "--set", "fullnameOverride=prx",
        "--set", "priorityClassName=proxies-high",
        "--set", "podSecurityContext.runAsUser=1000700000",
        "--set", "securityContext.readOnlyRootFilesystem=false",
        "--set-json", 'operator.extraEnv=[{"name": "HTTPS_PROXY", "value": "http://egress:3128"}]',
        "--set-json", 'operator.extraVolumes=[{"name": "ca", "configMap": {"name": "ca"}}]',
        "--set-json", 'operator.extraVolumeMounts=[{"name": "ca", "mountPath": "/ca"}]',
        "--set", "ui.enabled=true", "--set", "ui.ingress.enabled=true",
        "--set", "ui.ingress.host=prx.internal", "--set", "rotator.enabled=true",
        "--set", "rotator.replicas=3", "--set", "schedules[0].name=nightly",
        "--set", "schedules[0].schedule=0 3 * * *", "--set", "schedules[0].pool=eu",
        "--set", "schedules[0].timeZone=Europe/Berlin",
        "--set", "schedules[0].startingDeadlineSeconds=600", "--set", "schedules[0].suspend=true",
    )  # fmt: skip
    operator = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "prx-operator"
    )
    pod = operator["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "proxies-high"
    assert pod["securityContext"]["runAsUser"] == 1000700000
    assert pod["securityContext"]["runAsNonRoot"] is True  # the rest of the default stays
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "HTTPS_PROXY", "value": "http://egress:3128"} in container["env"]
    assert pod["volumes"] == [{"name": "ca", "configMap": {"name": "ca"}}]
    assert container["volumeMounts"] == [{"name": "ca", "mountPath": "/ca"}]
    pods = [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]
    assert {p.get("priorityClassName") for p in pods} == {"proxies-high"}
    (ingress,) = by_kind(docs, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "prx.internal"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "prx-ui", "port": {"name": "http"}}
    (budget,) = by_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    (cron,) = by_kind(docs, "CronJob")
    assert (cron["spec"]["timeZone"], cron["spec"]["startingDeadlineSeconds"]) == (
        "Europe/Berlin",
        600,
    )
    assert cron["spec"]["suspend"] is True
    # A lone rotator gets no budget: it would block every drain.
    alone = render("--set", "redis.url=redis://r:6379/0", "--set", "rotator.enabled=true")
    assert not by_kind(alone, "PodDisruptionBudget")
    assert (
        by_kind(render("--set", "nameOverride=prx"), "StatefulSet")[0]["metadata"]["name"]
        == "proxyrefresh-prx-redis"
    )
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.33.0-0"
    assert chart["home"]
    assert chart["sources"]
