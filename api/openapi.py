"""The API's OpenAPI 3.1 description, served at `GET /openapi.json`. Pure: no aiohttp, no Redis.

Built from the same constants the parameter parsers (`api.params`) and the metrics
(`aggregator.metrics`) use, so an enum or a field cannot drift from the code that accepts or
writes it. Each operation is one entry of `OPERATIONS`, written in one place by a small
function; to add one, write its function and list it there (a test fails for any route the app
registers under `/api` that is missing here).

What the document cannot say, the descriptions do: every parser ignores unknown parameters and
treats an empty value as absent (as Livepeer does), and some constraints span parameters
(`from` before `to`, the range's cap per `timeStep`, at most one of playbackId, assetId and
streamId), so a request whose parameters each match their schema may still be answered 400.
Response schemas are closed (`additionalProperties: false`): a field the code adds must be
described here first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Final

from aggregator.metrics import OPTIONAL_FIELDS
from api import live, params, playbacks

Schema = dict[str, Any]

SECURITY_SCHEME: Final = "apiKey"
ERROR_STATUSES: Final = {
    "400": "A parameter is invalid; each problem is `<parameter>: <reason>`.",
    "401": "No API key, a malformed Authorization header, or an unknown or revoked key.",
    "403": "The key may not call this endpoint or see this data (a CORS key on a private "
    "endpoint or from another origin; a key scoped to another creator).",
    "404": "An assetId or streamId that is not in the playback registry, or no such route.",
    "409": "The assetId or streamId already belongs to another playback.",
    "413": f"The body is larger than {playbacks.MAX_BODY_BYTES} bytes.",
    "429": "Too many requests for this key or client address; retry after `Retry-After` seconds.",
    "503": "The metrics store (Redis) is unreachable; retry after `Retry-After` seconds.",
}
RETRY_AFTER_STATUSES: Final = ("429", "503")

ERROR: Final[Schema] = {
    "type": "object",
    "description": "Livepeer's error shape: one message per problem.",
    "required": ["errors"],
    "properties": {"errors": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
    "additionalProperties": False,
}

EMPTY: Final[Schema] = {
    "type": "string",
    "maxLength": 0,
    "description": "An empty value counts as absent (Go's `Query().Get`, as Livepeer).",
}
TIMESTAMP: Final[Schema] = {
    "oneOf": [
        {
            "type": "integer",
            "minimum": 0,
            "maximum": params.MAX_TIMESTAMP_MS,
            "description": "Epoch milliseconds.",
        },
        {
            "type": "string",
            "pattern": f"^{params.RFC3339_PATTERN}$",
            "description": "RFC 3339 date-time; without an offset it is UTC; the fraction is "
            "truncated to the millisecond. An impossible date (2023-02-29) is refused.",
        },
        EMPTY,
    ]
}
NULLABLE_NUMBER: Final[Schema] = {"type": ["number", "null"]}
DIMENSION: Final[Schema] = {
    "type": ["string", "null"],
    "description": "A breakdown value; null when it is unknown (e.g. no location).",
}
STEP_START: Final[Schema] = {
    "type": "integer",
    "description": "The start of the time step, epoch ms UTC (weeks start on Monday); "
    "present only when `timeStep` is given.",
}

VIEWERSHIP_METRIC_DESCRIPTIONS: Final = {
    "viewCount": "Views: sessions with play intent, counted in the step of their first event.",
    "playtimeMins": "Minutes played.",
    "ttffMs": "Mean time to first frame, ms; null without data.",
    "ttffP50Ms": "Median time to first frame, ms (beyond Livepeer); null without data.",
    "ttffP95Ms": "95th percentile time to first frame, ms (beyond Livepeer); null without data.",
    "rebufferRatio": "Buffering time over playing plus buffering time; null without data.",
    "errorRate": "Sessions with an error over all sessions; null without data.",
    "exitsBeforeStart": "Views that left before the first frame over views; null without data.",
    "exitsBeforeStartCount": "Views that left before the first frame (beyond Livepeer).",
}
COUNT_FIELDS: Final = ("viewCount", "exitsBeforeStartCount", "uniqueViewers")


def _metric(name: str) -> Schema:
    if name in COUNT_FIELDS:
        schema: Schema = {"type": "integer", "minimum": 0}
    elif name == "playtimeMins":
        schema = {"type": "number", "minimum": 0}
    else:
        schema = dict(NULLABLE_NUMBER)
    description = VIEWERSHIP_METRIC_DESCRIPTIONS.get(name)
    return schema | {"description": description} if description else schema


def _row(
    description: str,
    dimensions: Sequence[str],
    required: Sequence[str],
    optional: Sequence[str] = (),
) -> Schema:
    """A closed row: `required` metrics always, `optional` ones and a breakdown's dimensions
    only when they apply."""
    properties: dict[str, Schema] = {"timestamp": STEP_START}
    properties |= {d: DIMENSION for d in dimensions}
    properties |= {name: _metric(name) for name in (*required, *optional)}
    return {
        "type": "object",
        "description": description,
        "required": list(required),
        "properties": properties,
        "additionalProperties": False,
    }


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _closed(description: str, properties: dict[str, Schema]) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def _live_snapshot() -> Schema:
    """The data of a `snapshot` event of `/live/stream` (`api/live.py` builds it)."""
    ms: Schema = {"type": "integer", "description": "Epoch ms UTC."}
    count: Schema = {"type": "integer", "minimum": 0}
    share: Schema = {"type": "number", "minimum": 0, "maximum": 1}
    by_qoe = {name: _metric(name) for name in live.QOE_FIELDS}
    tops = {
        name: _array(
            _closed(
                f"Viewers now by {dim}, most first (at most {live.TOP_N}).",
                {dim: DIMENSION, "viewCount": count, "errorRate": share},
            )
        )
        for name, dim in live.BREAKDOWNS
    }
    return _closed(
        "The whole live page at `serverTime`; every event is complete.",
        {
            "serverTime": ms,
            "intervalMs": {"type": "integer", "minimum": 1},
            "scope": _closed(
                "The filter watched.",
                {
                    "playbackId": {"type": ["string", "null"]},
                    "creatorId": {"type": ["string", "null"]},
                },
            ),
            "concurrentViewers": count | {"description": "Viewers now, as `/data/views/now`."},
            "errorRateNow": share | {"description": "Of them, the share with an error."},
            "lastBeaconMs": {
                "type": ["integer", "null"],
                "description": "The newest beacon the aggregator stored for the scope.",
            },
            **tops,
            "qoe": _closed(
                "Quality over [from, to): from the start of the minute holding `to` - 5 min, "
                "the last 5 whole minutes and the one under way (5 to 6 minutes of data).",
                {"from": ms, "to": ms, "viewCount": count, **by_qoe},
            ),
            "lastHour": _closed(
                "Peak concurrent viewers per minute of the last hour: the series "
                "`/data/views/concurrent` answers for the scope by default, whatever the key "
                "may query, packed.",
                {
                    "from": {"type": ["integer", "null"], "description": "The first minute."},
                    "stepMs": {"const": 60_000},
                    "peaks": _array(count) | {"description": "One per minute from `from`."},
                    "peak": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/concurrent-viewers"},
                            {"type": "null"},
                        ],
                        "description": "The hour's largest minute (the earliest of equal "
                        "ones); null when nobody watched.",
                    },
                },
            ),
            "thresholds": _closed(
                "Thresholds of the quality numbers.", {n: {"type": "number"} for n in by_qoe}
            ),
            "breaches": _closed(
                "Quality numbers at or over their threshold.",
                {n: {"type": "boolean"} for n in by_qoe},
            ),
        },
    )


def _admin_id(description: str, *, nullable: bool = False) -> Schema:
    schema: Schema = {
        "type": ["string", "null"] if nullable else "string",
        "minLength": 1,
        "maxLength": params.MAX_ID_CHARS,
    }
    return schema | {"description": description + " Printable characters only."}


PLAYBACK_PROPERTIES: Final[dict[str, Schema]] = {
    "playbackId": {"type": "string"},
    "creatorId": {"type": ["string", "null"]},
    "assetId": {"type": ["string", "null"]},
    "streamId": {"type": ["string", "null"]},
}

SCHEMAS: Final[dict[str, Schema]] = {
    "error": ERROR,
    "playback": {
        "type": "object",
        "description": "A playback of the registry: its creator, and its asset or stream.",
        "required": list(PLAYBACK_PROPERTIES),
        "properties": PLAYBACK_PROPERTIES,
        "additionalProperties": False,
    },
    "playback-page": {
        "type": "object",
        "description": "Playbacks in byte order of their IDs.",
        "required": ["playbacks", "nextCursor"],
        "properties": {
            "playbacks": {"type": "array", "items": {"$ref": "#/components/schemas/playback"}},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
        "additionalProperties": False,
    },
    "playback-body": {
        "type": "object",
        "description": "A playback to create or replace: its creator, and at most one of its "
        "asset and stream. Other fields are refused (400); a `playbackId` must equal the path's.",
        "required": ["creatorId"],
        "properties": {
            "creatorId": _admin_id("The creator whose playback it is."),
            "assetId": _admin_id("The asset it plays (VOD).", nullable=True),
            "streamId": _admin_id("The stream it plays (live).", nullable=True),
            "playbackId": {"type": "string", "description": "Optional: the path's playbackId."},
        },
        "not": {
            "required": ["assetId", "streamId"],
            "properties": {"assetId": {"type": "string"}, "streamId": {"type": "string"}},
        },
        "additionalProperties": False,
    },
    "viewership-metric": _row(
        "A row of `/data/views/query`: one per time step (with `timeStep`) and breakdown tuple. "
        "A dimension field is present only when broken down by it; `uniqueViewers` only "
        "without a breakdown.",
        params.VIEWS_BREAKDOWNS,
        ("viewCount", "playtimeMins", *OPTIONAL_FIELDS),
        ("uniqueViewers",),
    ),
    "creator-viewership-metric": _row(
        "A row of `/data/views/query/creator`: views and playtime only.",
        params.CREATOR_BREAKDOWNS,
        ("viewCount", "playtimeMins"),
    ),
    "realtime-viewership-metric": {
        "type": "object",
        "description": "A row of `/data/views/now`: viewers now (a beacon in the last 30 s) and "
        "the share of them with an error.",
        "required": ["viewCount", "errorRate"],
        "properties": {
            **{d: DIMENSION for d in params.NOW_BREAKDOWNS},
            "viewCount": {"type": "integer", "minimum": 0},
            "errorRate": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "additionalProperties": False,
    },
    "concurrent-viewers": {
        "type": "object",
        "description": "A step of `/data/views/concurrent` (beyond Livepeer): the largest number of "
        "viewers at once within the step. Viewers at an instant t are sessions with a beacon in "
        "(t - 30 s, t], sampled every 5 s on epoch-aligned instants.",
        "required": ["timestamp", "peakConcurrentViewers"],
        "properties": {
            "timestamp": {
                "type": "integer",
                "description": "The start of the minute or hour, epoch ms UTC.",
            },
            "peakConcurrentViewers": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    },
    "live-token": {
        "type": "object",
        "description": "A token that opens `/live/stream` (EventSource cannot send headers).",
        "required": ["token", "expiresInS", "kind", "creatorId"],
        "properties": {
            "token": {"type": "string"},
            "expiresInS": {"type": "integer", "minimum": 1},
            "kind": {"type": "string", "enum": ["private", "cors"]},
            "creatorId": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    },
    "live-snapshot": _live_snapshot(),
    "public-viewership-metric": {
        "type": "object",
        "description": "All-time views and playtime of a playback.",
        "required": ["playbackId", "viewCount", "playtimeMins"],
        "properties": {
            "playbackId": {"type": "string"},
            "viewCount": _metric("viewCount"),
            "playtimeMins": _metric("playtimeMins"),
        },
        "additionalProperties": False,
    },
    "usage-metric": {
        "type": "object",
        "description": "Livepeer's usage metric. Playpulse delivers but neither transcodes nor "
        "stores, so TotalUsageMins and StorageUsageMins are 0.",
        "required": ["DeliveryUsageMins", "TotalUsageMins", "StorageUsageMins"],
        "properties": {
            "TimeInterval": {
                "type": "integer",
                "description": "The step's start, epoch ms; only with `timeStep`.",
            },
            "CreatorID": {
                "type": ["string", "null"],
                "description": "Only with `breakdownBy[]=creatorId`; null for playbacks "
                "without a registered creator.",
            },
            "DeliveryUsageMins": {"type": "number", "minimum": 0},
            "TotalUsageMins": {"type": "number", "minimum": 0},
            "StorageUsageMins": {"type": "number", "minimum": 0},
        },
        "additionalProperties": False,
    },
}


def _ref(name: str) -> Schema:
    assert name in SCHEMAS, name
    return {"$ref": f"#/components/schemas/{name}"}


# -- parameters ---------------------------------------------------------------------------------


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _identifier(name: str, description: str) -> Schema:
    schema = {"type": "string", "maxLength": params.MAX_ID_CHARS}
    return _query(name, schema, description + " Printable characters only.")


def _breakdown(allowed: Sequence[str], note: str = "") -> Schema:
    return {
        "name": params.BREAKDOWN_PARAM,
        "in": "query",
        "description": "Dimensions to break the results down by; repeat the parameter once for "
        "each (`breakdownBy[]=country&breakdownBy[]=device`), at most once per dimension "
        "(repeats are ignored). " + note,
        "style": "form",
        "explode": True,
        "schema": _array({"type": "string", "enum": list(allowed)}) | {"maxItems": len(allowed)},
    }


def _time_step(allowed: Sequence[str]) -> Schema:
    return _query(
        "timeStep",
        {"oneOf": [{"type": "string", "enum": list(allowed)}, EMPTY]},
        "Aggregate per step: `timestamp` is the step's start (UTC, weeks start on Monday). "
        "Without it, one row per breakdown tuple for the whole range.",
    )


def _range() -> list[Schema]:
    return [
        _query(
            "from",
            TIMESTAMP,
            "Start of the range, inclusive. Default: `to` minus 24 h (timeStep=hour), 30 days "
            "(day, none), 12 weeks (week), 365 days (month), 730 days (year).",
        ),
        _query(
            "to",
            TIMESTAMP,
            "End of the range, exclusive; default now. Data is selected at hour granularity. "
            "At most 31 days with timeStep=hour, 732 days with day, 800 days otherwise.",
        ),
    ]


PLAYBACK_ID: Final = _identifier("playbackId", "Only this playback.")
ASSET_ID: Final = _identifier("assetId", "The playback of this asset (playback registry).")
STREAM_ID: Final = _identifier("streamId", "The playback of this stream (playback registry).")
CREATOR_ID: Final = _identifier(
    "creatorId", "Only this creator's playbacks (a key scoped to a creator sees only its own)."
)


# -- operations ---------------------------------------------------------------------------------


def _json_response(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _retry_after() -> Schema:
    return {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }


def _errors(statuses: Sequence[str]) -> dict[str, Schema]:
    out = {}
    for status in statuses:
        response = _json_response(ERROR_STATUSES[status], _ref("error"))
        if status in RETRY_AFTER_STATUSES:
            response["headers"] = _retry_after()
        if status == "400":
            # aiohttp's HTTP parser refuses a request line or header over 8 190 bytes itself,
            # in plain text, before any handler runs.
            response["content"]["text/plain"] = {"schema": {"type": "string"}}
            response["description"] += (
                " A request line or header over 8 190 bytes is refused by the HTTP server "
                "itself, in plain text."
            )
        out[status] = response
    return out


PUBLIC_SECURITY: Final[list[dict[str, list[str]]]] = [{}, {SECURITY_SCHEME: []}]
NO_SECURITY: Final[list[dict[str, list[str]]]] = []


def _operation(
    operation_id: str,
    summary: str,
    description: str,
    parameters: list[Schema],
    ok: Schema,
    *,
    errors: Sequence[str] = ("400", "401", "403", "429", "503"),
    security: list[dict[str, list[str]]] | None = None,
    ok_headers: dict[str, Schema] | None = None,
) -> Schema:
    """An `/api` GET operation: `ok` is its 200 response's schema; every such operation may be
    refused for its key (401/403), its rate (429) or an unreachable store (503)."""
    response = _json_response("OK", ok)
    if ok_headers:
        response["headers"] = ok_headers
    operation: Schema = {
        "tags": ["metrics"],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": {"200": response, **_errors(errors)},
    }
    if security is not None:
        operation["security"] = security
    return operation


def _preflight(description: str) -> Schema:
    return {
        "tags": ["metrics"],
        "summary": "CORS preflight",
        "description": description,
        "security": NO_SECURITY,
        "responses": {
            "204": {
                "description": "The request's Origin is echoed in Access-Control-Allow-Origin; "
                "the key is checked on the actual request.",
                "headers": {
                    name: {"schema": {"type": "string"}}
                    for name in ("Access-Control-Allow-Methods", "Access-Control-Allow-Headers")
                },
            },
            **_errors(("429",)),
        },
    }


def views_query() -> dict[str, Schema]:
    return {
        "get": _operation(
            "getViewershipMetrics",
            "Query viewership metrics",
            "Requires a private (non-CORS) API key. At most one of playbackId, assetId and "
            "streamId. Each optional metric is null when there is no data for it.",
            [
                PLAYBACK_ID,
                *_range(),
                _time_step(params.TIME_STEPS),
                ASSET_ID,
                STREAM_ID,
                CREATOR_ID,
                _breakdown(params.VIEWS_BREAKDOWNS, f"At most {params.MAX_ROWS} rows."),
            ],
            _array(_ref("viewership-metric")),
            errors=("400", "401", "403", "404", "429", "503"),
        )
    }


def views_now() -> dict[str, Schema]:
    return {
        "get": _operation(
            "getRealtimeViewershipNow",
            "Query realtime viewership",
            "Requires a private (non-CORS) API key. Viewers now and their error rate; "
            "`from`, `to` and `timeStep` are refused (400). Without a breakdown, one row.",
            [
                PLAYBACK_ID,
                CREATOR_ID,
                _breakdown(params.NOW_BREAKDOWNS, "Any combination of the dimensions."),
            ],
            _array(_ref("realtime-viewership-metric")),
        )
    }


def views_concurrent() -> dict[str, Schema]:
    limits = ", ".join(
        f"{params.CONCURRENT_MAX_RANGE_MS[step] // 3_600_000} h with timeStep={step}"
        for step in params.CONCURRENT_TIME_STEPS
    )
    return {
        "get": _operation(
            "getConcurrentViewers",
            "Query peak concurrent viewers per minute or hour",
            "Beyond Livepeer. Requires a private (non-CORS) API key. One row per minute or hour "
            "that overlaps the range, zeros included; sample instants after now are not counted. "
            "No breakdown: `breakdownBy[]`, `assetId` and `streamId` are refused (400).",
            [
                PLAYBACK_ID,
                CREATOR_ID,
                _query(
                    "from",
                    TIMESTAMP,
                    "Start of the range, inclusive. Default: `to` minus one hour.",
                ),
                _query(
                    "to", TIMESTAMP, f"End of the range, exclusive; default now. At most {limits}."
                ),
                _query(
                    "timeStep",
                    {
                        "oneOf": [
                            {"type": "string", "enum": list(params.CONCURRENT_TIME_STEPS)},
                            EMPTY,
                        ]
                    },
                    "The step of the series (default minute).",
                ),
            ],
            _array(_ref("concurrent-viewers")),
        )
    }


def _live_filter() -> list[Schema]:
    return [
        _identifier("playbackId", "Watch only this playback."),
        _identifier("creatorId", "Watch only this creator's playbacks (not with playbackId)."),
    ]


def live_token() -> dict[str, Schema]:
    operation = _operation(
        "createLiveToken",
        "Get a token for the live stream",
        "A private key, or a CORS key scoped to a creator (from one of its origins), as a bearer "
        "header; the filter is checked here as on the stream. The token opens "
        "`/api/live/stream` for a while and dies with its key.",
        _live_filter(),
        _ref("live-token"),
    )
    operation["tags"] = ["live"]
    return {"post": operation, "options": _preflight("Preflight for CORS keys.")}


def live_stream() -> dict[str, Schema]:
    operation = _operation(
        "streamLive",
        "Live snapshots as Server-Sent Events",
        "Authorised by `token` (from `POST /api/live/token`), not by a header. Events: "
        "`snapshot` (the whole live page's data, JSON: `live-snapshot`, with the last hour's "
        "peak concurrent viewers per minute) every interval, `unavailable` while the "
        "store cannot be read, `revoked` when the key is revoked (then the stream ends).",
        [
            _query("token", {"type": "string", "maxLength": 64}, "A live token."),
            *_live_filter(),
        ],
        {"type": "string"},
        security=NO_SECURITY,
    )
    operation["tags"] = ["live"]
    operation["responses"]["200"] = {
        "description": "An endless stream of events.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": "Each event: its name, and its data as one line of JSON.",
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"enum": ["snapshot", "unavailable", "revoked"]},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "JSON; a `snapshot` event's is a `live-snapshot`.",
                            "contentSchema": _ref("live-snapshot"),
                        },
                        "retry": {"type": "integer", "minimum": 0},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
    return {"get": operation}


def creator_query() -> dict[str, Schema]:
    return {
        "get": _operation(
            "getCreatorViewershipMetrics",
            "Query creator viewership metrics",
            "A private key, or a CORS key from one of its origins. Exactly one of assetId and "
            "streamId is required (the proof of ownership); a playbackId is ignored.",
            [
                ASSET_ID,
                STREAM_ID,
                CREATOR_ID,
                *_range(),
                _time_step(params.TIME_STEPS),
                _breakdown(params.CREATOR_BREAKDOWNS),
            ],
            _array(_ref("creator-viewership-metric")),
            errors=("400", "401", "403", "404", "429", "503"),
        ),
        "options": _preflight("Preflight for CORS keys."),
    }


PATH_PLAYBACK_ID: Final[Schema] = {
    "name": "playbackId",
    "in": "path",
    "required": True,
    "description": "The playback. Printable characters only.",
    "schema": {"type": "string", "minLength": 1, "maxLength": params.MAX_ID_CHARS},
}


def views_total() -> dict[str, Schema]:
    path_id = PATH_PLAYBACK_ID
    return {
        "get": _operation(
            "getPublicViewershipMetrics",
            "Query public total views metrics",
            "Public: no key, or a CORS key from one of its origins. All-time views and "
            "playtime, cached for a while (see Cache-Control).",
            [path_id],
            _ref("public-viewership-metric"),
            security=PUBLIC_SECURITY,
            ok_headers={"Cache-Control": {"schema": {"type": "string"}}},
        ),
        # A preflight checks nothing but the route: any non-empty playbackId.
        "options": {
            **_preflight("Preflight for browsers."),
            "parameters": [path_id | {"schema": {"type": "string", "minLength": 1}}],
        },
    }


def usage_query() -> dict[str, Schema]:
    usage = _ref("usage-metric")
    return {
        "get": _operation(
            "getUsageMetrics",
            "Query usage metrics",
            "Requires a private (non-CORS) API key. A single object when neither timeStep nor "
            "breakdownBy[] is given, else an array.",
            [
                *_range(),
                _time_step(params.USAGE_TIME_STEPS),
                CREATOR_ID,
                _breakdown(params.USAGE_BREAKDOWNS),
            ],
            {"oneOf": [usage, _array(usage)]},
        )
    }


# -- the playback registry (admin keys) ---------------------------------------------------------

ADMIN_DESCRIPTION: Final = (
    "Requires an admin key (`playpulse keys create --kind admin`); private and CORS keys are "
    "refused (403), as an admin key is on every other endpoint. "
)
ADMIN_ERROR_STATUSES: Final = {
    "403": "The key is not an admin key.",
    "404": "No such playback.",
}


def _admin(
    operation_id: str,
    summary: str,
    description: str,
    parameters: list[Schema],
    responses: dict[str, Schema],
    errors: Sequence[str],
) -> Schema:
    refusals = _errors(errors)
    for status, text in ADMIN_ERROR_STATUSES.items():
        if status in refusals:
            refusals[status]["description"] = text
    return {
        "tags": ["admin"],
        "operationId": operation_id,
        "summary": summary,
        "description": ADMIN_DESCRIPTION + description,
        "parameters": parameters,
        "responses": {**responses, **refusals},
    }


def admin_playbacks() -> dict[str, Schema]:
    return {
        "get": _admin(
            "listPlaybacks",
            "List the playback registry",
            "One page of playbacks in byte order of their IDs; follow `nextCursor`.",
            [
                _query(
                    "limit",
                    {
                        "oneOf": [
                            {"type": "integer", "minimum": 1, "maximum": playbacks.MAX_LIST_LIMIT},
                            EMPTY,
                        ]
                    },
                    f"Playbacks per page, default {playbacks.DEFAULT_LIST_LIMIT}.",
                ),
                _identifier("cursor", "The `nextCursor` of the previous page."),
            ],
            {"200": _json_response("OK", _ref("playback-page"))},
            ("400", "401", "403", "429", "503"),
        )
    }


def admin_playback() -> dict[str, Schema]:
    playback = _ref("playback")
    return {
        "get": _admin(
            "getPlayback",
            "Get a playback of the registry",
            "",
            [PATH_PLAYBACK_ID],
            {"200": _json_response("OK", playback)},
            ("400", "401", "403", "404", "429", "503"),
        ),
        "put": _admin(
            "putPlayback",
            "Create or replace a playback",
            "Replaces the whole playback (an asset or stream it no longer names is released). "
            "Views queries resolve a new assetId or streamId at once; the collector caches "
            "lookups per process for `PLAYPULSE_REGISTRY_CACHE_S` (30 s), so beacons carry a "
            "new creator within that time. Views already counted keep the creator they had.",
            [PATH_PLAYBACK_ID],
            {
                "200": _json_response("Replaced.", playback),
                "201": _json_response("Created.", playback),
            },
            ("400", "401", "403", "409", "413", "429", "503"),
        )
        | {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("playback-body")}},
            }
        },
        "delete": _admin(
            "deletePlayback",
            "Delete a playback",
            "Its asset or stream no longer resolves; views already counted stay.",
            [PATH_PLAYBACK_ID],
            {"204": {"description": "Deleted."}},
            ("400", "401", "403", "404", "429", "503"),
        ),
    }


def _plain(operation_id: str, description: str, ok: Schema, *statuses: str) -> dict[str, Schema]:
    responses: dict[str, Schema] = {"200": ok}
    for status in statuses:
        responses[status] = _json_response(ERROR_STATUSES[status], _ref("error"))
    return {
        "get": {
            "tags": ["operations"],
            "operationId": operation_id,
            "summary": description,
            "security": NO_SECURITY,
            "responses": responses,
        }
    }


def _status(value: str) -> Schema:
    schema = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": value}},
        "additionalProperties": False,
    }
    return _json_response(value, schema)


OPERATIONS: Final[dict[str, Callable[[], dict[str, Schema]]]] = {
    "/api/data/views/query": views_query,
    "/api/data/views/now": views_now,
    "/api/data/views/concurrent": views_concurrent,
    "/api/data/views/query/creator": creator_query,
    "/api/data/views/query/total/{playbackId}": views_total,
    "/api/data/usage/query": usage_query,
    "/api/live/token": live_token,
    "/api/live/stream": live_stream,
    "/api/admin/playbacks": admin_playbacks,
    "/api/admin/playbacks/{playbackId}": admin_playback,
    "/healthz": lambda: _plain("healthz", "The process is up.", _status("ok")),
    "/readyz": lambda: _plain("readyz", "Redis answers.", _status("ready"), "503"),
    "/metrics": lambda: _plain(
        "metrics",
        "Prometheus metrics.",
        {"description": "Prometheus text format.", "content": {"text/plain": {}}},
    ),
    "/openapi.json": lambda: _plain(
        "openapi", "This document.", _json_response("OpenAPI 3.1", {"type": "object"})
    ),
}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (paths are absolute: point a Livepeer SDK at `/api`).

    A fresh copy each call: the pieces above are shared between operations, and a caller that
    edits its copy must not edit the next one's.
    """
    return copy.deepcopy(_document())


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Playpulse metrics API",
            "version": "1.0.0",
            "description": "Livepeer's metrics API, served from Playpulse's own pipeline. "
            "Unknown query parameters are ignored and an empty value counts as absent; "
            "constraints across parameters are answered 400.",
        },
        "security": [{SECURITY_SCHEME: []}],
        "tags": [
            {"name": "metrics", "description": "Livepeer's metrics operations"},
            {"name": "live", "description": "The live page's token and event stream"},
            {"name": "admin", "description": "The playback registry, for admin keys"},
            {"name": "operations", "description": "Health, readiness, metrics, this document"},
        ],
        "paths": {path: build() for path, build in OPERATIONS.items()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
    }
