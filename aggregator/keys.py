"""The Redis key layout: every key the aggregator writes and the API reads, in one place.

Rollups. One hash per (grain, bucket, scope, breakdown dimensions):

    pp:r:{grain}:{bucket_ms}:{scope}:{dims}
      grain      hour | day (week, month and year are sums of days when read); minute for
                 `MINUTE_GROUPS` only (below)
      scope      all | playbackId={id} | creatorId={id} (the id percent-encoded)
      dims       the breakdown dimensions, comma-joined in `BREAKDOWN_DIMENSIONS` order, or `-`
      fields     `{partition}|{json list of the dimension values}` -> json of `Components.to_fields()`
                 `v|{partition}` -> the version (source offset) the partition's fields reflect

A query reads one hash per bucket in its range, holding only the tuples of the dimensions it
asked for within its scope: its cost grows with those tuples, not with what else is stored.
Stored groups (`ROLLUP_GROUPS`): per scope, no breakdown and each single dimension, plus `FULL`
(every dimension) for combined breakdowns, which the reader projects. Each source partition
writes only its own fields, as absolute values, guarded by its version (`WRITE_SCRIPT`), so a
replay or a stale worker can never double count or overwrite newer data, and a hot playback is
spread over every partition. Every key is a single-slot key, so the layout runs unchanged on
Redis Cluster. Values carry their TTL (`RETENTION_S`).

`pp:written:{partition}` is the set of rollup keys a partition wrote: a worker that takes the
partition over rewrites them all in replace mode, so no stale tuple survives a crash.

Minute rows. The same hashes at grain `minute` (`pp:r:minute:{minute_ms}:{scope}:-`), for the
no-breakdown group of each scope only (`MINUTE_GROUPS`): the live page's quality numbers over
the last minutes. Kept `PLAYPULSE_MINUTE_RETENTION_S` (default `MINUTE_RETENTION_S`), in Redis
and in the worker (`aggregator.rollups`, `aggregator.partition`). The minute keys a partition
wrote are the sorted set `pp:mwritten:{partition}` (scored by minute, trimmed to the retention)
rather than members of `pp:written:`, which would otherwise gain a key per scope and minute.

Unique viewers. HyperLogLog per (grain, bucket, scope): `pp:u:{grain}:{bucket_ms}:{scope}`.

Concurrent viewers. Sorted sets of session ids scored by last beacon time (server ms):
`pp:now:{scope}:-` (all of the scope) and `pp:now:{scope}:{dim}={value}` for the `/views/now`
dimensions, with `pp:nowidx:{scope}:{dim}` the set of values seen; `pp:nowerr:{scope}:...` the
same for sessions with an error.

Combined `/views/now` breakdowns (any two or more of `NOW_DIMENSIONS`) read the full tuples, like
the rollups' `FULL` group: `pp:nowt:{scope}:{tuple}` is the sorted set of the sessions whose
(playbackId, device, browser, country) is that tuple (`now_tuple`: the values encoded and
comma-joined), `pp:nowterr:{scope}:{tuple}` those of them with an error, and `pp:nowtidx:{scope}`
a sorted set of the tuples scored by the latest beacon of any of their sessions. A reader takes
the tuples with a beacon in the window from the index, counts each tuple's sessions and projects
onto the dimensions asked for: its cost grows with the distinct tuples active now, not with the
sessions. A session has one tuple per scope (its dimensions are fixed when it starts), so the
projected sums count each session once.

Concurrent viewers over time (`aggregator.concurrency`). One hash per (scope, hour):

    pp:c:{hour_ms}:{scope}
      fields     `{partition}|{minute_ms}` -> json list of the partition's session counts at the
                 minute's 12 sample instants (minute_ms + i * 5 s); `v|{partition}` -> version;
                 `s|{minute_ms}` -> the same list summed over the partitions

Written like the rollups (absolute per-partition fields under the partition's version, the same
version as its rollups), by `CONCURRENCY_WRITE_SCRIPT`, which also keeps the `s|` sums in step
with the partition fields, atomically: counts at one instant add across partitions, peaks do
not, so a reader needs the sums, and reading every partition's fields instead cost seconds for
an hour-step month. A query reads the 60 `s|` fields of one hash per hour of its range. TTL
`PLAYPULSE_CONCURRENCY_RETENTION_S` (default 40 days). `pp:cwritten:{partition}` is the set of
these keys a partition wrote (the `pp:written` of the rollups, kept apart so neither writer's
replace mode clears the other's keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, unquote

import orjson

from aggregator.definitions import BREAKDOWN_DIMENSIONS

Grain = Literal["hour", "day"]
GRAINS: Final[tuple[Grain, ...]] = ("hour", "day")

RETENTION_S: Final[dict[str, int]] = {
    "hour": 40 * 86_400,  # a 30-day hour-step query with room to spare
    "day": 800 * 86_400,  # two years of day buckets for month and year steps
}

MINUTE: Final = "minute"
MINUTE_RETENTION_S: Final = 3_600
"""Default TTL of the minute rows (and how long sessions keep their per-minute contributions):
the live page reads the last 6 minutes; an hour leaves room for a longer live view."""

SCOPE_DIMENSIONS: Final = ("playbackId", "creatorId")
"""Filters stored as scopes: a filtered query reads only its own scope's hashes."""

FULL: Final[tuple[str, ...]] = BREAKDOWN_DIMENSIONS

NOW_DIMENSIONS: Final = ("playbackId", "device", "browser", "country")
"""`/views/now` breakdowns (Livepeer's realtime-viewership dimensions)."""


@dataclass(frozen=True, slots=True)
class Group:
    """A stored rollup: one scope dimension (or None for all) and the dimensions broken down."""

    scope_dim: str | None
    dims: tuple[str, ...]


def _groups() -> tuple[Group, ...]:
    out: list[Group] = []
    for scope_dim in (None, *SCOPE_DIMENSIONS):
        out.append(Group(scope_dim, ()))
        out.extend(Group(scope_dim, (d,)) for d in BREAKDOWN_DIMENSIONS if d != scope_dim)
        out.append(Group(scope_dim, FULL))
    return tuple(out)


ROLLUP_GROUPS: Final = _groups()

MINUTE_GROUPS: Final = tuple(Group(d, ()) for d in (None, *SCOPE_DIMENSIONS))
"""The groups stored at minute grain: each scope without a breakdown."""


def ordered(dims: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Dimensions in canonical order, without repeats."""
    wanted = set(dims)
    return tuple(d for d in BREAKDOWN_DIMENSIONS if d in wanted)


def group_for(scope_dim: str | None, dims: tuple[str, ...]) -> Group:
    """The stored group a query reads: its exact dimensions when stored, else `FULL`."""
    dims = ordered(tuple(d for d in dims if d != scope_dim))
    if len(dims) <= 1:
        return Group(scope_dim, dims)
    return Group(scope_dim, FULL)


def scope_text(scope_dim: str | None, scope_value: str | None) -> str:
    if scope_dim is None:
        return "all"
    return f"{scope_dim}={quote(scope_value or '', safe='')}"


def rollup_key(
    grain: str,
    bucket_ms: int,
    scope_dim: str | None,
    scope_value: str | None,
    dims: tuple[str, ...],
) -> str:
    return f"pp:r:{grain}:{bucket_ms}:{scope_text(scope_dim, scope_value)}:{','.join(dims) or '-'}"


def viewers_key(grain: str, bucket_ms: int, scope_dim: str | None, scope_value: str | None) -> str:
    return f"pp:u:{grain}:{bucket_ms}:{scope_text(scope_dim, scope_value)}"


def now_key(
    scope: str, dim: str | None = None, value: str | None = None, *, errors: bool = False
) -> str:
    """The sorted set of a scope (`dim` None), or of one value of a dimension within it (a
    missing value is its own member, `encode_now_value(None)`)."""
    prefix = "pp:nowerr" if errors else "pp:now"
    if dim is None:
        return f"{prefix}:{scope}:-"
    return f"{prefix}:{scope}:{dim}={encode_now_value(value)}"


def now_index_key(scope: str, dim: str) -> str:
    return f"pp:nowidx:{scope}:{dim}"


def decode_now_value(member: bytes | str) -> str | None:
    text = member.decode() if isinstance(member, bytes) else member
    return None if text == "\x00" else unquote(text)


def encode_now_value(value: str | None) -> str:
    return "\x00" if value is None else quote(value, safe="")


def now_tuple(dims: Mapping[str, str | None]) -> str:
    """The member of `now_tuple_index_key` (and the tail of `now_tuple_key`) for a session's
    `NOW_DIMENSIONS` values; commas inside values are percent-encoded."""
    return ",".join(encode_now_value(dims.get(d)) for d in NOW_DIMENSIONS)


def parse_now_tuple(member: bytes | str) -> dict[str, str | None]:
    text = member.decode() if isinstance(member, bytes) else member
    parts = text.split(",")
    if len(parts) != len(NOW_DIMENSIONS):
        raise ValueError(f"not a {len(NOW_DIMENSIONS)}-value now tuple: {text!r}")
    return {d: decode_now_value(p) for d, p in zip(NOW_DIMENSIONS, parts, strict=True)}


def now_tuple_key(scope: str, member: str, *, errors: bool = False) -> str:
    """The sorted set of the sessions of one full tuple (`now_tuple`) within a scope."""
    return f"{'pp:nowterr' if errors else 'pp:nowt'}:{scope}:{member}"


def now_tuple_index_key(scope: str) -> str:
    """A scope's tuples, scored by the latest beacon time of any of their sessions."""
    return f"pp:nowtidx:{scope}"


def concurrency_key(hour_ms: int, scope: str) -> str:
    """The hash of one scope's (`scope_text`) concurrent-viewer counts in one hour."""
    return f"pp:c:{hour_ms}:{scope}"


def concurrency_sum_field(minute_ms: int) -> str:
    return f"{CONCURRENCY_SUM_PREFIX}{minute_ms}"


def concurrency_written_key(partition: int) -> str:
    """The set of concurrency keys a partition has written."""
    return f"pp:cwritten:{partition}"


CONCURRENCY_RETENTION_S: Final = 40 * 86_400
"""Default TTL of the concurrency hashes (an hour-step query covers up to 31 days)."""


CONCURRENCY_SUM_PREFIX: Final = "s|"

CONCURRENCY_WRITE_SCRIPT: Final = """
-- KEYS[1] a concurrency hash; ARGV: version field ('v|<partition>'), version, ttl seconds, mode
-- ('w' or 'r', as WRITE_SCRIPT), then minute_ms/value pairs (a json list of counts; empty
-- deletes). Applies only if no newer version of this partition is stored. Besides the
-- partition's absolute fields '<partition>|<minute_ms>', it keeps 's|<minute_ms>', the counts
-- of all partitions added instant by instant, adjusted by each field's change in the same
-- atomic step, so the sum is always the sum of the stored partition fields.
local key = KEYS[1]
local current = redis.call('HGET', key, ARGV[1])
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
local prefix = string.sub(ARGV[1], 3) .. '|'
local function adjust(minute, old, new)
  local sum_field = 's|' .. minute
  local raw = redis.call('HGET', key, sum_field)
  local sums = raw and cjson.decode(raw) or {}
  local o = old and cjson.decode(old) or {}
  local n = new and cjson.decode(new) or {}
  local size = math.max(#sums, #o, #n)
  local any = false
  for j = 1, size do
    sums[j] = (sums[j] or 0) - (o[j] or 0) + (n[j] or 0)
    if sums[j] ~= 0 then any = true end
  end
  if any then
    redis.call('HSET', key, sum_field, cjson.encode(sums))
  else
    redis.call('HDEL', key, sum_field)
  end
end
if ARGV[4] == 'r' then
  if #ARGV < 5 and redis.call('EXISTS', key) == 0 then return 0 end
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, #prefix) == prefix then
      local old = redis.call('HGET', key, field)
      redis.call('HDEL', key, field)
      adjust(string.sub(field, #prefix + 1), old, false)
    end
  end
end
for i = 5, #ARGV, 2 do
  local field = prefix .. ARGV[i]
  local old = redis.call('HGET', key, field)
  local new = ARGV[i + 1]
  if new == '' then
    redis.call('HDEL', key, field)
    new = false
  else
    redis.call('HSET', key, field, new)
  end
  adjust(ARGV[i], old, new)
end
redis.call('HSET', key, ARGV[1], ARGV[2])
redis.call('EXPIRE', key, ARGV[3])
return 1
"""


VERSION_PREFIX: Final = "v|"


def row_field(partition: int, values: tuple[str | None, ...]) -> str:
    return f"{partition}|{orjson.dumps(list(values)).decode()}"


def parse_row_field(field: bytes | str) -> tuple[int, tuple[str | None, ...]] | None:
    """(partition, dimension values) of a data field; None for a version field."""
    text = field.decode() if isinstance(field, bytes) else field
    if text.startswith(VERSION_PREFIX):
        return None
    partition, _, values = text.partition("|")
    return int(partition), tuple(orjson.loads(values))


def version_field(partition: int) -> str:
    return f"{VERSION_PREFIX}{partition}"


ALIVE_KEY: Final = "pp:alive"
"""Set by the aggregator; when it is missing, Redis lost its data and every row is rewritten."""


def written_key(partition: int) -> str:
    """The set of rollup keys a partition has written, so a new owner can clear stale fields."""
    return f"pp:written:{partition}"


def minute_written_key(partition: int) -> str:
    """The minute rollup keys a partition has written: a sorted set scored by the minute."""
    return f"pp:mwritten:{partition}"


WRITE_MODE = "w"  # set the given fields, delete the ones given empty
REPLACE_MODE = "r"  # first delete every field of this partition, then set the given ones

WRITE_SCRIPT: Final = """
-- KEYS[1] rollup hash; ARGV: version field ('v|<partition>'), version, ttl seconds, mode,
-- then field/value pairs (an empty value deletes the field). Applies only if no newer version
-- of this partition is stored, so replays and stale workers cannot overwrite newer values.
-- Mode 'r' first deletes all of the partition's fields: a worker that rebuilt its state from
-- the sessions table does not know which tuples its predecessor wrote.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
if ARGV[4] == 'r' then
  if #ARGV < 5 and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  local prefix = string.sub(ARGV[1], 3) .. '|'
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, #prefix) == prefix then redis.call('HDEL', KEYS[1], field) end
  end
end
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
