"""The admin API's playback bodies and list parameters, parsed and checked. Pure: no aiohttp, no
Redis.

`PUT /api/admin/playbacks/{playbackId}` takes a JSON object `{"creatorId": ..., "assetId": ...}`
or `{"creatorId": ..., "streamId": ...}` (or neither target): `creatorId` is required, since a
playback without a creator escapes creator-scoped keys and creator queries; at most one of
`assetId` and `streamId` (null counts as absent); a `playbackId` in the body must equal the
path's; any other field is refused, so a misspelt one (`assetID`) is not silently dropped. The
identifiers follow the query parameters' rules (`api.params`): 1 to `MAX_ID_CHARS` printable
characters. Every problem is reported at once, `"<field>: <reason>"` (`InvalidQuery`, a 400).

`GET /api/admin/playbacks` pages through the registry in byte order of the playback IDs:
`limit` (1 to `MAX_LIST_LIMIT`, default `DEFAULT_LIST_LIMIT`) and `cursor` (the `nextCursor`
of the previous page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from api.params import MAX_ID_CHARS, InvalidQuery, Pairs, _Params
from ingest.registry import Playback

MAX_BODY_BYTES: Final = 16 * 1024  # three identifiers, even fully \u-escaped, fit 4 times over
DEFAULT_LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 1000
BODY_FIELDS: Final = ("creatorId", "assetId", "streamId")
TARGETS: Final = ("assetId", "streamId")
_SHOWN_CHARS: Final = 40  # of a refused field's name, in the error


@dataclass(frozen=True, slots=True)
class ListQuery:
    cursor: str | None = None
    limit: int = DEFAULT_LIST_LIMIT


def list_query(pairs: Pairs) -> ListQuery:
    p = _Params(pairs)
    cursor = p.identifier("cursor")
    limit = DEFAULT_LIST_LIMIT
    text = p.one("limit")
    if text is not None:
        if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIST_LIMIT:
            limit = int(text)
        else:
            p.problem("limit", f"{text[:_SHOWN_CHARS]!r} is not an integer in 1..{MAX_LIST_LIMIT}")
    p.done()
    return ListQuery(cursor, limit)


def _kind(value: Any) -> str:
    """The JSON type of a decoded value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


def _identifier(problems: list[str], name: str, value: Any) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{name}: expected a string, not {_kind(value)}")
    elif not value:
        problems.append(f"{name}: empty")
    elif len(value) > MAX_ID_CHARS:
        problems.append(f"{name}: longer than {MAX_ID_CHARS} characters")
    elif not value.isprintable():
        problems.append(f"{name}: contains control characters")
    else:
        return value
    return None


def playback_body(playback_id: str, body: bytes) -> Playback:
    """The playback a PUT body describes (`playback_id` from the path, already checked)."""
    if not body.strip():
        raise InvalidQuery(["body: required (a JSON object)"])
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidQuery([f"body: not valid JSON ({exc})"]) from exc
    if not isinstance(document, dict):
        raise InvalidQuery([f"body: expected a JSON object, not {_kind(document)}"])
    problems: list[str] = []
    for name in document:
        if name not in (*BODY_FIELDS, "playbackId"):
            shown = name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "..."
            problems.append(
                f"{shown!r}: unknown field (expected {', '.join(BODY_FIELDS)}, or playbackId)"
            )
    if "playbackId" in document and document["playbackId"] != playback_id:
        problems.append("playbackId: differs from the playback ID of the path")
    creator_id = None
    if document.get("creatorId") is None:
        problems.append("creatorId: required")
    else:
        creator_id = _identifier(problems, "creatorId", document["creatorId"])
    targets: dict[str, str | None] = {}
    for name in TARGETS:
        value = document.get(name)
        targets[name] = None if value is None else _identifier(problems, name, value)
    given: Sequence[str] = [name for name in TARGETS if document.get(name) is not None]
    if len(given) > 1:
        problems.append(f"{', '.join(given)}: give at most one of assetId and streamId")
    if problems:
        raise InvalidQuery(problems)
    return Playback(playback_id, creator_id, targets["assetId"], targets["streamId"])


class BodyTooLarge(Exception):
    """A body over `limit_bytes` (a 413), by its Content-Length or as it was read."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"body: larger than {limit_bytes} bytes")
        self.limit_bytes = limit_bytes
