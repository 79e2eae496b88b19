"""Schemathesis against the real API: a real HTTP server on loopback over the real Redis, filled
by the aggregator's own writers (the data of `test_api_integration`), explored through every
operation of the document the server itself serves at `/openapi.json`: with a private key, and
with an admin key on the admin operations (`/api/admin/...`), which write the playback registry;
after them the seeded registry is restored, so the other operations still find their data.

Two runs, both failing on any finding:
- per operation, Hypothesis over schemathesis' strategies (valid, invalid, and valid narrowed
  toward the seeded data so that answers with rows are explored), in pytest;
- `schemathesis run`, whose coverage phase adds boundary values, missing keys and methods the
  document does not declare (it found the 405 without `Allow`): once with the private key over
  every operation (the admin ones answer 403), once with the admin key over the admin ones.

Checked: no 5xx; the status is documented; content type, body and headers conform; invalid
input is refused. Not checked: that every valid input is accepted (`positive_data_acceptance`):
constraints across parameters (`from` before `to`, the range cap per step, at most one of
playbackId/assetId/streamId, printable identifiers) are answered 400 and no parameter schema
can say them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import openapi
from api.app import create_app
from api.auth import create_key
from api.settings import ApiSettings
from ingest.registry import ASSET_KEY, PLAYBACK_INDEX_KEY, PLAYBACK_KEY, STREAM_KEY
from ingest.settings import IngestSettings
from tests.api.test_api_integration import NOW, seed, seed_registry

MAX_EXAMPLES = 60  # per operation, in each of the two runs
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
CLI_EXCLUDED_CHECKS = "positive_data_acceptance"


@dataclass(frozen=True)
class RunningApi:
    base_url: str
    private_key: str
    admin_key: str


def _serve(ready: threading.Event, box: dict[str, Any]) -> None:
    """Seeds Redis and serves the API on this thread's own event loop until `box["stop"]()`."""

    async def main() -> None:
        redis = Redis.from_url(IngestSettings.from_env().redis_url)
        await redis.flushdb()
        await seed(redis)
        _, secret = await create_key(redis, kind="private", name="schemathesis")
        _, admin = await create_key(redis, kind="admin", name="schemathesis")
        # No rate limits here: they are tested on their own, and would turn cases into 429s.
        settings = ApiSettings(rate_limit_key=None, rate_limit_ip=None)
        app = create_app(settings, redis=redis, clock=lambda: NOW)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stop = asyncio.Event()
        box["api"] = RunningApi(f"http://127.0.0.1:{runner.addresses[0][1]}", secret, admin)
        box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await redis.aclose()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    except BaseException as exc:
        box["error"] = exc
        ready.set()
    finally:
        loop.close()


@pytest.fixture(scope="module")
def running_api() -> Iterator[RunningApi]:
    """The API on loopback, in a thread: schemathesis' calls are blocking."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    thread = threading.Thread(target=_serve, args=(ready, box), daemon=True)
    thread.start()
    assert ready.wait(30), "the API did not start"
    if "error" in box:
        raise box["error"]
    yield box["api"]
    box["stop"]()
    thread.join(10)


@pytest.fixture(scope="module")
def api_schema(running_api: RunningApi) -> schemathesis.BaseSchema:
    """The document as the server serves it."""
    config = schemathesis.Config.from_dict({"base-url": running_api.base_url})
    return schemathesis.openapi.from_url(f"{running_api.base_url}/openapi.json", config=config)


# The seeded data's identifiers, drawn into some cases so that answers with rows are explored.
SEEDED = {
    "playbackId": ["pb-1", "pb-2", "pb-9"],
    "assetId": ["as-1"],
    "streamId": ["st-2"],
    "creatorId": ["cr-1", "cr-2"],
}
TARGETS = ("playbackId", "assetId", "streamId")


def restore_registry() -> None:
    """Empties the playback registry and registers the seeded playbacks again."""

    async def restore() -> None:
        redis = Redis.from_url(IngestSettings.from_env().redis_url)
        try:
            for pattern in (PLAYBACK_KEY, ASSET_KEY, STREAM_KEY):
                async for key in redis.scan_iter(match=pattern.format("*"), count=1000):
                    await redis.delete(key)
            await redis.delete(PLAYBACK_INDEX_KEY)
            await seed_registry(redis)
        finally:
            await redis.aclose()

    asyncio.run(restore())


ADMIN_PREFIX = "/api/admin/"


@st.composite
def near_the_data(draw: st.DrawFn, operation: APIOperation) -> schemathesis.Case:
    """A valid case narrowed toward the seeded data: the default range (the data's days), one
    target at most, and seeded identifiers wherever the case has identifiers."""
    case = draw(operation.as_strategy(GenerationMode.POSITIVE))
    query = {k: v for k, v in (case.query or {}).items() if k not in ("from", "to")}
    for extra in [t for t in TARGETS if t in query][1:]:
        del query[extra]
    for name, values in SEEDED.items():
        if name in query:
            query[name] = draw(st.sampled_from(values))
    case.query = query
    if case.path_parameters and "playbackId" in case.path_parameters:
        case.path_parameters["playbackId"] = draw(st.sampled_from(SEEDED["playbackId"]))
    return case


def _cases(operation: APIOperation) -> st.SearchStrategy[schemathesis.Case]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        near_the_data(operation),
    )


OPERATIONS = [
    (method.upper(), path) for path, item in openapi.document()["paths"].items() for method in item
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_conforms(
    api_schema: schemathesis.BaseSchema, running_api: RunningApi, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    admin = path.startswith(ADMIN_PREFIX)
    authorization = f"Bearer {running_api.admin_key if admin else running_api.private_key}"

    @given(case=_cases(operation))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def explore(case: schemathesis.Case) -> None:
        # Valid cases carry the private key; invalid ones whatever was generated (no key, a
        # malformed header, an unknown key), so refusals are explored too.
        negative = case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE
        headers = None if negative else {"Authorization": authorization}
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        explore()
    finally:
        if admin:
            restore_registry()


@pytest.mark.parametrize("key", ["private", "admin"])
def test_schemathesis_run_finds_nothing(running_api: RunningApi, tmp_path: Path, key: str) -> None:
    secret = running_api.admin_key if key == "admin" else running_api.private_key
    only = ["--include-path-regex", f"^{ADMIN_PREFIX}"] if key == "admin" else []
    try:
        _schemathesis_run(running_api, tmp_path, secret, only)
    finally:
        if key == "admin":
            restore_registry()


def _schemathesis_run(
    running_api: RunningApi, tmp_path: Path, secret: str, only: list[str]
) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{running_api.base_url}/openapi.json",
        *only,
        "--header",
        f"Authorization: Bearer {secret}",
        "--checks",
        "all",
        "--exclude-checks",
        CLI_EXCLUDED_CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--no-color",
    ]
    # Its cache and reports go to the temporary directory, not into the work tree.
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "passed" in run.stdout and "API Operations" in run.stdout, run.stdout[-5_000:]
