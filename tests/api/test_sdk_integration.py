"""The official Livepeer SDKs, unchanged, pointed at our `/api`: Python (`livepeer` on PyPI) and
JavaScript (`livepeer` on npm, run by node from `tests/api/livepeer_js`).

The API runs over real HTTP on the real Redis, filled by the aggregator's own writers (the seed
of `test_api_integration`, plus viewers whose country is unknown). Every case is called three
ways: a plain HTTP GET, the Python SDK and the JS SDK; each SDK must parse our answer into its
models with exactly the values the plain call returned, less the fields beyond Livepeer's
schema, which the SDKs drop. Error answers must reach the caller as the SDK's own error type
with our status and body.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from livepeer import Livepeer
from livepeer.models import errors
from pydantic import BaseModel
from redis.asyncio import Redis

from aggregator.keys import FULL
from aggregator.metrics import Components
from aggregator.partition import Touched
from aggregator.rollups import PartitionRollups
from aggregator.store import RollupWriter, TouchedWriter
from api.app import create_app
from api.auth import create_key
from api.settings import ApiSettings
from tests.api.test_api_integration import H0, NOW, ORIGIN, ms, seed

JS_DIR = Path(__file__).resolve().parent / "livepeer_js"

# Ours beyond Livepeer's schema: the SDKs ignore them (pydantic and zod drop unknown fields).
EXTRAS = frozenset({"ttffP50Ms", "ttffP95Ms", "exitsBeforeStartCount", "uniqueViewers"})

QUERY = "/api/data/views/query"
NOW_PATH = "/api/data/views/now"
CREATOR = "/api/data/views/query/creator"
TOTAL = "/api/data/views/query/total/"
USAGE = "/api/data/usage/query"

JUNE_MS = {"from": ms("2025-06-01T00:00:00"), "to": ms("2025-06-15T00:00:00")}
JUNE_RFC3339 = {"from": "2025-06-01T00:00:00Z", "to": "2025-06-15T00:00:00Z"}
WIDE = {"from": ms("2024-12-01T00:00:00"), "to": ms("2025-07-01T00:00:00")}


@dataclass(frozen=True)
class Case:
    """One call in Livepeer's own terms: the operation and its query parameters as on the wire
    (`breakdownBy` stands for the repeated `breakdownBy[]`; `playbackId` of the public total is
    its path)."""

    name: str
    op: str
    params: dict[str, Any]
    key: str | None = "private"
    python: bool = True  # the Python SDK cannot call without a key (httpx refuses `Bearer `)

    @property
    def path(self) -> str:
        paths = {
            "get_viewership": QUERY,
            "get_realtime_viewership": NOW_PATH,
            "get_creator_viewership": CREATOR,
            "get_usage": USAGE,
        }
        if self.op == "get_public_viewership":
            return TOTAL + self.params["playbackId"]
        return paths[self.op]

    def http_params(self) -> list[tuple[str, str]]:
        if self.op == "get_public_viewership":
            return []
        pairs = []
        for name, value in self.params.items():
            if name == "breakdownBy":
                pairs += [("breakdownBy[]", v) for v in value]
            else:
                pairs.append((name, str(value)))
        return pairs

    def python_request(self) -> dict[str, Any]:
        """The SDK's snake_case request, RFC 3339 strings as datetimes (the SDK formats them)."""
        names = {"from": "from_", "breakdownBy": "breakdown_by"}
        out = {}
        for name, value in self.params.items():
            snake = names.get(name) or "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
            if isinstance(value, str) and name in ("from", "to"):
                value = datetime.fromisoformat(value).astimezone(UTC)
            out[snake] = value
        return out

    def js_args(self) -> Any:
        if self.op == "get_public_viewership":
            return self.params["playbackId"]
        if self.op == "get_realtime_viewership":
            p = self.params
            return [p.get("playbackId"), p.get("creatorId"), p.get("breakdownBy")]
        return self.params  # sdk_check.mjs turns string from/to into Dates


CASES = [
    Case(
        "views by day for a playback",
        "get_viewership",
        {
            "playbackId": "pb-1",
            "timeStep": "day",
            "breakdownBy": ["country"],
            **JUNE_MS,
        },
    ),
    Case(
        "views total, RFC 3339 range, two dimensions",
        "get_viewership",
        {
            "breakdownBy": ["deviceType", "country"],
            **JUNE_RFC3339,
        },
    ),
    Case(
        "views of an asset by month",
        "get_viewership",
        {
            "assetId": "as-1",
            "timeStep": "month",
            **WIDE,
        },
    ),
    Case(
        "views by week, every dimension",
        "get_viewership",
        {
            "timeStep": "week",
            "breakdownBy": list(FULL),
            **JUNE_MS,
        },
    ),
    Case(
        "views of a creator by hour",
        "get_viewership",
        {
            "creatorId": "cr-1",
            "timeStep": "hour",
            "from": H0 - 3_600_000,
            "to": H0 + 7_200_000,
        },
    ),
    Case(
        "views of a stream, nothing there",
        "get_viewership",
        {
            "streamId": "st-2",
            "timeStep": "day",
            "from": ms("2025-01-01T00:00:00"),
            "to": ms("2025-01-05T00:00:00"),
        },
    ),
    Case("realtime total", "get_realtime_viewership", {}),
    Case("realtime by country", "get_realtime_viewership", {"breakdownBy": ["country"]}),
    Case(
        "realtime of a playback by device",
        "get_realtime_viewership",
        {
            "playbackId": "pb-1",
            "breakdownBy": ["device"],
        },
    ),
    Case("realtime of a creator", "get_realtime_viewership", {"creatorId": "cr-1"}),
    Case("creator views of an asset", "get_creator_viewership", {"assetId": "as-1", **WIDE}),
    Case(
        "creator views of a stream by browser and day",
        "get_creator_viewership",
        {
            "streamId": "st-2",
            "timeStep": "day",
            "breakdownBy": ["browser"],
            **JUNE_MS,
        },
    ),
    Case(
        "creator views by country",
        "get_creator_viewership",
        {
            "assetId": "as-1",
            "breakdownBy": ["country"],
            **WIDE,
        },
    ),
    Case("public total", "get_public_viewership", {"playbackId": "pb-1"}),
    Case(
        "public total without a key",
        "get_public_viewership",
        {"playbackId": "pb-1"},
        key=None,
        python=False,
    ),
    Case("public total of an unknown playback", "get_public_viewership", {"playbackId": "pb-x"}),
    Case("usage", "get_usage", {**JUNE_MS}),
    Case("usage of a creator", "get_usage", {"creatorId": "cr-2", **JUNE_MS}),
]

ERRORS = [
    Case("401 unknown key", "get_viewership", {}, key="not-a-key"),
    Case("401 no key", "get_realtime_viewership", {}, key=None, python=False),
    Case("400 creator query without asset or stream", "get_creator_viewership", {}),
    Case(
        "400 hour step over 31 days",
        "get_viewership",
        {
            "timeStep": "hour",
            "from": ms("2025-04-01T00:00:00"),
            "to": ms("2025-06-01T00:00:00"),
        },
    ),
    Case("403 CORS key on a private endpoint", "get_usage", {}, key="cors"),
    Case("404 unknown asset", "get_viewership", {"assetId": "nope"}),
]


@dataclass
class Api:
    http: ClientSession
    url: str  # what an SDK takes as its server URL: http://host:port/api
    keys: dict[str, str]
    sdk_http: httpx.AsyncClient  # the Python SDK's, closed by the fixture

    def python_sdk(self, case: Case) -> Livepeer:
        secret = self.secret(case)
        assert secret is not None
        return Livepeer(api_key=secret, server_url=self.url, async_client=self.sdk_http)

    def secret(self, case: Case) -> str | None:
        return None if case.key is None else self.keys.get(case.key, case.key)

    async def plain(self, case: Case) -> tuple[int, Any]:
        secret = self.secret(case)
        headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
        async with self.http.get(case.path, params=case.http_params(), headers=headers) as resp:
            return resp.status, await resp.json()


async def seed_unknown_geography(redis: Redis) -> None:
    """A viewer the geography database did not place, in its own partition: its country is
    unknown, which our answers leave out (Livepeer's schema has no null)."""
    nowhere = {**dict.fromkeys(FULL), "playbackId": "pb-1", "creatorId": "cr-1"}
    nowhere |= {"deviceType": "tv", "device": "tv", "browser": "Chrome"}
    rollups = PartitionRollups()
    rollups.add(nowhere, {H0: Components(views=1, sessions=1, playing_ms=90_000)})
    rollups.fold()
    await RollupWriter(redis).write(2, 1, rollups.take_dirty())
    touched = {"s5": Touched(nowhere, "viewer-5", NOW - 2_000, False, (H0,))}
    await TouchedWriter(redis).write(touched, NOW)


@asynccontextmanager
async def serving(redis: Redis, settings: ApiSettings) -> AsyncIterator[Api]:
    await redis.flushdb()
    await seed(redis)
    await seed_unknown_geography(redis)
    keys = {
        "private": (await create_key(redis, kind="private", name="sdk"))[1],
        "cors": (await create_key(redis, kind="cors", origins=[ORIGIN]))[1],
    }
    app = create_app(settings, redis=redis, clock=lambda: NOW)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession(str(server.make_url("/"))) as http, httpx.AsyncClient() as sdk_http:
        yield Api(http, str(server.make_url("/api")), keys, sdk_http)
    await server.close()


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    """The API as configured by default: null for what was asked for and has no data."""
    async with serving(redis, ApiSettings()) as running:
        yield running


@pytest.fixture
async def api_omit(redis: Redis) -> AsyncIterator[Api]:
    """`PLAYPULSE_API_NULLS=omit`: such fields left out, which Livepeer's JS SDK needs."""
    async with serving(redis, ApiSettings(nulls="omit")) as running:
        yield running


def livepeer_view(body: Any) -> Any:
    """Our answer as Livepeer's schema has it: without the fields beyond it, and without nulls
    (an SDK model holds an absent field and a null one alike)."""
    if isinstance(body, list):
        return [livepeer_view(row) for row in body]
    return {k: v for k, v in body.items() if k not in EXTRAS and v is not None}


def dump(parsed: Any) -> Any:
    """The SDK's models back as JSON names, without the fields our answer did not carry."""
    if isinstance(parsed, list):
        return [dump(m) for m in parsed]
    assert isinstance(parsed, BaseModel)
    return parsed.model_dump(by_alias=True, exclude_none=True)


async def call_python(api: Api, case: Case) -> Any:
    metrics = api.python_sdk(case).metrics
    if case.op == "get_public_viewership":
        res = await metrics.get_public_viewership_async(playback_id=case.params["playbackId"])
        return res.data
    if case.op == "get_realtime_viewership":
        return (await metrics.get_realtime_viewership_async(**case.python_request())).data
    if case.op == "get_usage":
        return (await metrics.get_usage_async(request=case.python_request())).usage_metric
    method = getattr(metrics, f"{case.op}_async")
    return (await method(request=case.python_request())).data


async def test_python_sdk_parses_every_operation(api: Api) -> None:
    for case in CASES:
        if not case.python:
            continue
        status, body = await api.plain(case)
        assert status == 200, (case.name, body)
        parsed = await call_python(api, case)
        assert dump(parsed) == livepeer_view(body), case.name
        for row in body if isinstance(body, list) else [body]:
            if "viewCount" in row:
                assert isinstance(row["viewCount"], int), case.name  # `integer` in the schema


async def test_the_cases_see_real_data(api: Api) -> None:
    """The comparisons above are not of empty answers: spot values from the seed."""
    answers = {case.name: (await api.plain(case))[1] for case in CASES}
    by_day = answers["views by day for a playback"]
    assert [(r.get("country"), r["viewCount"]) for r in by_day] == [
        (None, 1),  # the unknown country is null
        ("DE", 2),
        ("FR", 1),
    ]
    assert by_day[1]["ttffMs"] is not None and by_day[2]["ttffMs"] is None  # no TTFF data
    both = answers["views total, RFC 3339 range, two dimensions"]
    tv = both[-1]
    assert (tv["deviceType"], tv["viewCount"], tv["playtimeMins"]) == ("tv", 1, 1.5)
    assert tv["country"] is None
    countries = answers["realtime by country"]
    assert [r.get("country") for r in countries] == [None, "DE", "FR"]  # unknown first
    assert (
        answers["public total"]
        == answers["public total without a key"]
        == {"playbackId": "pb-1", "viewCount": 9, "playtimeMins": 9.5}
    )
    assert answers["usage"]["DeliveryUsageMins"] == 8.0
    assert len(answers["views by week, every dimension"]) == 5


async def test_python_sdk_sync_client_as_its_readme_shows(api: Api) -> None:
    with httpx.Client() as client:
        sdk = Livepeer(api_key=api.keys["private"], server_url=api.url, client=client)
        res = await asyncio.to_thread(sdk.metrics.get_viewership, request={})
    _, body = await api.plain(Case("default range", "get_viewership", {}))
    assert res.data is not None and dump(res.data) == livepeer_view(body)
    assert res.data[0].view_count == 8


async def test_python_sdk_raises_its_error_with_our_status_and_body(api: Api) -> None:
    for case in ERRORS:
        if not case.python:
            continue
        status, body = await api.plain(case)
        assert status == int(case.name[:3]), (case.name, body)
        with pytest.raises(errors.SDKError) as raised:
            await call_python(api, case)
        assert raised.value.status_code == status, case.name
        assert json.loads(raised.value.body) == body, case.name


@pytest.fixture(scope="session")
def livepeer_js() -> Path:
    """The JS SDK's packages, pinned by the lock file; `make deps` installs them with `npm ci`,
    this does it when that has not happened. Skipped only when npm cannot reach its registry."""
    if (JS_DIR / "node_modules" / "livepeer").is_dir():
        return JS_DIR
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed: cannot run the official JS SDK")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        unreachable = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET")
        if any(code in done.stderr for code in unreachable):
            pytest.skip(f"npm cannot reach its registry: {done.stderr.strip()[-300:]}")
        raise AssertionError(f"npm ci failed:\n{done.stderr[-2000:]}")
    return JS_DIR


async def call_js(api: Api, js_dir: Path, cases: list[Case]) -> dict[str, dict[str, Any]]:
    ops = {
        "get_viewership": "getViewership",
        "get_realtime_viewership": "getRealtimeViewership",
        "get_creator_viewership": "getCreatorViewership",
        "get_public_viewership": "getPublicViewership",
        "get_usage": "getUsage",
    }
    calls = [
        {"name": c.name, "op": ops[c.op], "apiKey": api.secret(c), "args": c.js_args()}
        for c in cases
    ]
    proc = await asyncio.create_subprocess_exec(
        "node",
        "sdk_check.mjs",
        cwd=js_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    request = json.dumps({"serverURL": api.url, "calls": calls}).encode()
    out, err = await asyncio.wait_for(proc.communicate(request), timeout=120)
    assert proc.returncode == 0, err.decode()
    results = [json.loads(line) for line in out.decode().splitlines()]
    return {r["name"]: r for r in results}


USAGE_JS_NAMES = {
    "UserID": "userID",
    "CreatorID": "creatorID",
    "DeliveryUsageMins": "deliveryUsageMins",
    "TotalUsageMins": "totalUsageMins",
    "StorageUsageMins": "storageUsageMins",
}


async def test_js_sdk_parses_every_operation(api_omit: Api, livepeer_js: Path) -> None:
    api = api_omit
    results = await call_js(api, livepeer_js, CASES)
    for case in CASES:
        _, body = await api.plain(case)
        assert all(v is not None for row in _rows(body) for v in row.values()), case.name
        result = results[case.name]
        assert result["ok"], (case.name, result)
        if case.op == "get_usage":
            expected = {USAGE_JS_NAMES[k]: v for k, v in body.items()}
            assert result["value"] == {"usageMetric": expected}, case.name
        else:
            assert result["value"] == {"data": livepeer_view(body)}, case.name


def _rows(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else [body]


async def test_js_sdk_refuses_the_nulls_livepeers_server_answers(
    api: Api, livepeer_js: Path
) -> None:
    """Why `PLAYPULSE_API_NULLS=omit` exists: by default we answer `null` for a metric with no
    data, as Livepeer's server does, and the JS SDK's schema validation refuses the row."""
    case = next(c for c in CASES if c.name == "views by day for a playback")
    _, body = await api.plain(case)
    assert any(v is None for row in _rows(body) for v in row.values())
    result = (await call_js(api, livepeer_js, [case]))[case.name]
    assert (result["ok"], result["error"]) == (False, "SDKValidationError"), result


async def test_js_sdk_raises_its_error_with_our_status_and_body(
    api: Api, livepeer_js: Path
) -> None:
    results = await call_js(api, livepeer_js, ERRORS)
    for case in ERRORS:
        status, body = await api.plain(case)
        result = results[case.name]
        assert (result["ok"], result["error"], result["statusCode"]) == (False, "SDKError", status)
        assert json.loads(result["body"]) == body, case.name
