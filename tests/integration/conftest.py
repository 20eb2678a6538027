"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Bed
from tests.harness.rotator import Rotating
from tests.harness.testbed import RedisServer


@pytest.fixture
def rotating(bed: Bed, redis_server: RedisServer) -> Iterator[Rotating]:
    setup = Rotating(bed, redis_server)
    yield setup
    for r in setup.started:
        r.stop()
