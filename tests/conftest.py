"""Fixtures shared by the integration tests: the real Kafka and Redis that `make test` started.

Integration tests never fall back to fakes: when the servers are not there, they fail loudly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings
from redis.asyncio import Redis

from ingest.settings import IngestSettings

REPO_DIR = Path(__file__).resolve().parent.parent
PAYLOADS_DIR = REPO_DIR.parent / "shared" / "research" / "player-payloads"

# Property tests check laws, not speed: no per-example deadline, so a loaded machine (CI, or
# Kafka and the workers sharing two cores) cannot fail them on timing.
settings.register_profile("playpulse", deadline=None)
settings.load_profile("playpulse")


def stop_processes(
    procs: Iterable[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, timeout_s: float = 30
) -> None:
    """Signals every process, then waits for each; one that outlives `timeout_s` is killed."""
    procs = list(procs)
    for proc in procs:
        proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def ingest_settings() -> IngestSettings:
    """Settings for the test servers, with a topic of the test's own."""
    base = IngestSettings.from_env()
    return replace(base, topic=f"beacons-test-{uuid.uuid4().hex[:8]}", topic_partitions=3)


@pytest.fixture
async def redis(
    request: pytest.FixtureRequest, ingest_settings: IngestSettings
) -> AsyncIterator[Redis]:
    """The test Redis; emptied first for a module that sets `EMPTY_REDIS = True`."""
    client = Redis.from_url(ingest_settings.redis_url)
    await client.ping()
    if getattr(request.module, "EMPTY_REDIS", False):
        await client.flushdb()
    yield client
    await client.aclose()


def kafka_ctl(action: str) -> None:
    """Stops or starts the test broker through the same script `make test` used."""
    subprocess.run(
        ["bash", str(REPO_DIR / "deploy" / "kafka.sh"), action], check=True, env=os.environ.copy()
    )
