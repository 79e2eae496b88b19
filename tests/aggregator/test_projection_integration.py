"""The projection cache of combined breakdowns against the real Redis: read while its hash is
unchanged, never after the aggregator wrote the hash again (a session going on, a rebuild's
replace mode, Redis emptied and rewritten), whoever races whom."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from aggregator import keys
from aggregator.fragments import without_nulls
from aggregator.metrics import Components, to_viewership
from aggregator.rollups import PartitionRollups
from aggregator.store import RollupReader, RollupWriter

EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first

H = 1_767_229_200_000  # 2026-01-01T01:00Z
HOUR = 3_600_000
BREAKDOWN = ("country", "deviceType")
DIMS = keys.ordered(BREAKDOWN)  # the projection's dimensions, canonical order
ROWS_FIELD, SUMS_FIELD = keys.projection_fields(DIMS)
KEY = keys.rollup_key("hour", H, None, None, keys.FULL)


def add(rollups: PartitionRollups, country: str, device: str, views: int, hour: int = H) -> None:
    dims = {**dict.fromkeys(keys.FULL), "viewerId": f"v-{country}-{device}", "country": country}
    dims["deviceType"] = device
    rollups.add(dims, {hour: Components(views=views, sessions=views, playing_ms=60_000)})


async def flush(
    rollups: PartitionRollups, writer: RollupWriter, version: int, *, replace: bool = False
) -> int:
    rollups.fold()
    return await writer.write(0, version, rollups.take_dirty(), replace=replace)


async def views(redis: Redis, step: str = "hour") -> list[tuple[Any, ...]]:
    """(country, deviceType, viewCount) per row: with step hour the bucket is alone in its step
    (read from the cached rows); with step day, [H, H + 2 h) is two hour buckets of one day
    (read from the cached sums)."""
    rows = await RollupReader(redis).viewership(
        step=step,  # type: ignore[arg-type]
        from_ms=H,
        to_ms=H + (HOUR if step == "hour" else 2 * HOUR),
        breakdown=BREAKDOWN,
    )
    return [(r["country"], r["deviceType"], r["viewCount"]) for r in rows]


async def poison(redis: Redis, field: str) -> None:
    """Rewrites a cached projection under its own stamp with every viewCount set to 999: a
    reader that answers 999 read the cache."""
    value = await redis.hget(KEY, field)
    assert value is not None, f"{field} is cached"
    stamp, _, blob = value.partition(b"|")
    tuples = orjson.loads(blob)
    for t in tuples:
        t[1][0] = 999  # rows: viewCount, first of VIEWERSHIP_FIELDS; sums: views, of COUNTERS
    await redis.hset(KEY, field, stamp + b"|" + orjson.dumps(tuples))


async def test_a_fresh_projection_is_read_and_not_made_again(redis: Redis) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    add(rollups, "DE", "desktop", 1)
    add(rollups, "FR", "mobile", 3, hour=H + HOUR)
    await flush(rollups, writer, 1)
    assert await redis.hget(KEY, keys.GENERATION_FIELD) is not None
    assert await redis.hget(KEY, ROWS_FIELD) is None  # nothing cached before a query
    assert await views(redis) == [("DE", "desktop", 1), ("DE", "mobile", 2)]
    generation = await redis.hget(KEY, keys.GENERATION_FIELD)
    for field in (ROWS_FIELD, SUMS_FIELD):
        cached = await redis.hget(KEY, field)
        assert cached is not None and cached.startswith(generation + b"|")
    assert await redis.hget(KEY, keys.PROJECTION_INDEX_FIELD) == b"deviceType,country"

    await poison(redis, ROWS_FIELD)
    assert await views(redis) == [("DE", "desktop", 999), ("DE", "mobile", 999)]
    # The day-step query reads both hours' sums (the second hour's made by the first query).
    assert await views(redis, "day") == [
        ("DE", "desktop", 1),
        ("DE", "mobile", 2),
        ("FR", "mobile", 3),
    ]
    await poison(redis, SUMS_FIELD)
    assert await views(redis, "day") == [
        ("DE", "desktop", 999),
        ("DE", "mobile", 999),
        ("FR", "mobile", 3),
    ]


async def test_a_write_to_the_bucket_drops_the_projection(redis: Redis) -> None:
    """A session goes on in the same bucket after a query: the next query sees it."""
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    assert await views(redis) == [("DE", "mobile", 2)]
    assert await views(redis, "day") == [("DE", "mobile", 2)]
    before = await redis.hget(KEY, keys.GENERATION_FIELD)
    await poison(redis, ROWS_FIELD)
    await poison(redis, SUMS_FIELD)

    add(rollups, "DE", "mobile", 1)  # the same tuple, one more view
    add(rollups, "FR", "tablet", 1)
    await flush(rollups, writer, 2)
    assert await redis.hget(KEY, keys.GENERATION_FIELD) != before
    for field in (ROWS_FIELD, SUMS_FIELD, keys.PROJECTION_INDEX_FIELD):
        assert await redis.hget(KEY, field) is None, f"{field} dropped by the write"
    assert await views(redis) == [("DE", "mobile", 3), ("FR", "tablet", 1)]
    assert await views(redis, "day") == [("DE", "mobile", 3), ("FR", "tablet", 1)]
    # ...and made again under the new generation, which the next query reads.
    await poison(redis, ROWS_FIELD)
    assert await views(redis) == [("DE", "mobile", 999), ("FR", "tablet", 999)]


async def test_a_replace_mode_rewrite_drops_the_projection(redis: Redis) -> None:
    writer, before = RollupWriter(redis), PartitionRollups()
    add(before, "DE", "mobile", 2)
    await flush(before, writer, 1)
    assert await views(redis) == [("DE", "mobile", 2)]
    await poison(redis, ROWS_FIELD)
    # A new owner rebuilt the partition without the DE session: replace mode clears it...
    after = PartitionRollups()
    add(after, "FR", "tablet", 1, hour=H + HOUR)
    after.mark_all_dirty()
    await flush(after, writer, (2 << 40) | 1, replace=True)
    # ...including in this hash, which its writes do not name (it comes from `pp:written:0`).
    assert await views(redis) == []
    assert await views(redis, "day") == [("FR", "tablet", 1)]


async def test_a_refused_zombie_write_keeps_the_projection(redis: Redis) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 10)
    assert await views(redis) == [("DE", "mobile", 2)]
    generation = await redis.hget(KEY, keys.GENERATION_FIELD)
    zombie = PartitionRollups()
    add(zombie, "DE", "mobile", 7)
    assert await flush(zombie, writer, 9) == 0  # an older version: refused, nothing changed
    assert await redis.hget(KEY, keys.GENERATION_FIELD) == generation
    await poison(redis, ROWS_FIELD)
    assert await views(redis) == [("DE", "mobile", 999)]  # still the hash's contents: kept


async def test_a_stamp_of_another_generation_is_not_trusted(redis: Redis) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    assert await views(redis) == [("DE", "mobile", 2)]
    await poison(redis, ROWS_FIELD)
    value = await redis.hget(KEY, ROWS_FIELD)
    assert value is not None
    await redis.hset(KEY, ROWS_FIELD, b"0000000000000000" + value[16:])  # left by a bug, say
    assert await views(redis) == [("DE", "mobile", 2)]


async def test_a_projection_made_before_a_write_is_not_stored_after_it(redis: Redis) -> None:
    """The aggregator writes the hash between a reader's read and its write-back."""
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    reader = RollupReader(redis)
    script = reader._project_script
    raced = []

    async def racing(*, keys: list[str], args: list[Any], client: Any) -> Any:
        add(rollups, "DE", "mobile", 1)
        raced.append(await flush(rollups, writer, 2))
        return await script(keys=keys, args=args, client=client)

    reader._project_script = racing  # type: ignore[assignment]
    rows = await reader.viewership(step="hour", from_ms=H, to_ms=H + HOUR, breakdown=BREAKDOWN)
    assert len(raced) == 1 and raced[0] > 0  # the write landed between read and write-back
    assert [r["viewCount"] for r in rows] == [2]  # what the hash held when read
    assert await redis.hget(KEY, ROWS_FIELD) is None  # but not kept: the hash moved on
    assert await views(redis) == [("DE", "mobile", 3)]
    # The racing reader's rows in memory are of the old generation: not used either.
    rows = await reader.viewership(step="hour", from_ms=H, to_ms=H + HOUR, breakdown=BREAKDOWN)
    assert [r["viewCount"] for r in rows] == [3]


async def test_a_generation_is_never_seen_again_after_redis_lost_its_data(redis: Redis) -> None:
    """A reader read the hash, Redis restarted empty, the aggregator rewrote it: the reader's
    write-back does not land on the rewritten hash, whatever it holds."""
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    old = await redis.hgetall(KEY)
    await redis.flushdb()
    rollups.mark_all_dirty()
    add(rollups, "FR", "tablet", 1)
    await flush(rollups, writer, 1, replace=True)
    project = redis.register_script(keys.PROJECTION_WRITE_SCRIPT)
    generation = old[keys.GENERATION_FIELD.encode()]
    stale = generation + b"|[]"
    assert await project(keys=[KEY], args=[generation, ",".join(DIMS), stale, stale]) == 0
    assert await redis.hget(KEY, ROWS_FIELD) is None
    assert await views(redis) == [("DE", "mobile", 2), ("FR", "tablet", 1)]


async def test_hashes_of_one_dimension_keep_no_generation(redis: Redis) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    one = keys.rollup_key("hour", H, None, None, ("country",))
    assert await redis.hget(one, "v|0") is not None
    assert await redis.hget(one, keys.GENERATION_FIELD) is None
    rows = await RollupReader(redis).viewership(
        step="hour", from_ms=H, to_ms=H + HOUR, breakdown=["country"]
    )
    assert [(r["country"], r["viewCount"]) for r in rows] == [("DE", 2)]


async def test_a_readers_rows_in_memory_are_used_only_while_their_hashes_are_unchanged(
    redis: Redis,
) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    add(rollups, "FR", "tablet", 1, hour=H + HOUR)
    await flush(rollups, writer, 1)
    reader = RollupReader(redis)

    async def read(step: str) -> list[tuple[Any, ...]]:
        rows = await reader.viewership(
            step=step,  # type: ignore[arg-type]
            from_ms=H,
            to_ms=H + (HOUR if step == "hour" else 2 * HOUR),
            breakdown=BREAKDOWN,
        )
        got = [(r["country"], r["deviceType"], r["viewCount"]) for r in rows]
        for row in rows:
            row["viewCount"] = -1  # the caller's to change: not the reader's cached rows
        return got

    assert await read("hour") == [("DE", "mobile", 2)]
    assert await read("day") == [("DE", "mobile", 2), ("FR", "tablet", 1)]
    await poison(redis, ROWS_FIELD)
    assert await views(redis) == [("DE", "mobile", 999)]  # a new reader reads Redis' cache...
    assert await read("hour") == [("DE", "mobile", 2)]  # ...this one its rows in memory
    zombie = PartitionRollups()
    add(zombie, "DE", "mobile", 7)
    assert await flush(zombie, writer, 0) == 0  # refused: nothing changed, the rows stand
    assert await read("hour") == [("DE", "mobile", 2)]

    add(rollups, "DE", "mobile", 1, hour=H + HOUR)  # only the second hour (and the day) written
    await flush(rollups, writer, 2)
    assert await read("day") == [("DE", "mobile", 3), ("FR", "tablet", 1)]
    assert await read("hour") == [("DE", "mobile", 2)]
    add(rollups, "DE", "mobile", 1)  # now the first hour
    await flush(rollups, writer, 3)
    assert await read("hour") == [("DE", "mobile", 3)]
    assert await read("day") == [("DE", "mobile", 4), ("FR", "tablet", 1)]


async def test_rows_made_while_a_hash_was_missing_are_used_only_while_it_is(redis: Redis) -> None:
    writer, rollups = RollupWriter(redis), PartitionRollups()
    add(rollups, "DE", "mobile", 2)
    await flush(rollups, writer, 1)
    reader = RollupReader(redis)

    async def read() -> list[tuple[Any, ...]]:
        rows = await reader.viewership(
            step="day", from_ms=H, to_ms=H + 2 * HOUR, breakdown=BREAKDOWN
        )
        return [(r["country"], r["deviceType"], r["viewCount"]) for r in rows]

    assert await read() == [("DE", "mobile", 2)]  # the second hour has no hash
    assert await read() == [("DE", "mobile", 2)]
    # An aggregator from before generations writes the second hour: no `g|` in the hash.
    second = keys.rollup_key("hour", H + HOUR, None, None, keys.FULL)
    values = dict.fromkeys(keys.FULL) | {"country": "FR", "deviceType": "tv"}
    field = keys.row_field(1, tuple(values[d] for d in keys.FULL))
    await redis.hset(second, mapping={field: orjson.dumps({"views": 4}), "v|1": 1})
    assert await read() == [("DE", "mobile", 2), ("FR", "tv", 4)]
    assert await read() == [("DE", "mobile", 2), ("FR", "tv", 4)]  # (not kept: no generation)
    await redis.delete(second)
    assert await read() == [("DE", "mobile", 2)]
    add(rollups, "FR", "tablet", 1, hour=H + HOUR)
    await flush(rollups, writer, 2)
    assert await read() == [("DE", "mobile", 2), ("FR", "tablet", 1)]


# -- encoded steps (`RollupReader.viewership_json`) -------------------------------------------

DAY = 24 * HOUR
D0 = H - HOUR  # 2026-01-01T00:00Z
# Three day steps: two hours at the end of the first day, the whole second day (its day hash),
# two hours at the start of the third: an edge step of summed hours, a day alone, an edge again.
LO, HI = D0 + 22 * HOUR, D0 + 2 * DAY + 2 * HOUR
Model = dict[tuple[int, str | None, str], int]  # (hour, country, deviceType) -> views


def reference(model: Model, *, omit_nulls: bool = False) -> list[dict[str, Any]]:
    """The day-step answer over [LO, HI) the obvious way: each row's Components summed from
    what was written, `to_viewership`, sorted by day then values (None first)."""
    totals: dict[tuple[int, str | None, str], Components] = {}
    for (hour, country, device), n in model.items():
        if LO <= hour < HI:
            slot = (hour - hour % DAY, country, device)
            totals[slot] = totals.get(slot, Components()) + views_of(n)
    rows = []
    for day, country, device in sorted(
        totals, key=lambda s: (s[0], s[1] is not None, s[1] or "", s[2])
    ):
        row = {"timestamp": day, "country": country, "deviceType": device}
        row.update(to_viewership(totals[(day, country, device)]))
        rows.append(row)
    return without_nulls(rows) if omit_nulls else rows


def views_of(n: int) -> Components:
    return Components(views=n, sessions=n, playing_ms=60_000 * n)


async def write(writer: RollupWriter, model: Model, version: int, additions: Model) -> None:
    """Adds views to the model and writes the hours (and their days) they touch, absolute."""
    for slot, n in additions.items():
        model[slot] = model.get(slot, 0) + n
    rollups = PartitionRollups()
    touched_days = {hour - hour % DAY for hour, _, _ in additions}
    for (hour, country, device), n in model.items():
        if hour - hour % DAY in touched_days:
            dims = {**dict.fromkeys(keys.FULL), "viewerId": f"v-{country}-{device}"}
            dims.update(country=country, deviceType=device)
            rollups.add(dims, {hour: views_of(n)})
    await flush(rollups, writer, version)


async def answer(reader: RollupReader, *, omit_nulls: bool = False) -> list[dict[str, Any]]:
    got = await reader.viewership_json(
        step="day", from_ms=LO, to_ms=HI, breakdown=BREAKDOWN, omit_nulls=omit_nulls
    )
    rows: list[dict[str, Any]] = orjson.loads(got.body)
    assert got.rows == len(rows)
    return rows


async def test_an_encoded_step_is_not_reused_after_a_write_to_its_bucket(redis: Redis) -> None:
    writer, model = RollupWriter(redis), Model()
    await write(
        writer, model, 1, {(D0 + 22 * HOUR, "DE", "mobile"): 2, (D0 + 23 * HOUR, None, "tv"): 1}
    )
    await write(writer, model, 2, {(D0 + DAY + 5 * HOUR, "FR", "tablet"): 3})
    await write(writer, model, 3, {(D0 + 2 * DAY + HOUR, "DE", "mobile"): 4})
    reader = RollupReader(redis)
    for omit_nulls in (False, True):
        assert await answer(reader, omit_nulls=omit_nulls) == reference(
            model, omit_nulls=omit_nulls
        )
    made = 0
    project = reader._project

    async def counted(*args: Any) -> Any:
        nonlocal made
        made += len(args[0])
        return await project(*args)

    reader._project = counted  # type: ignore[method-assign, assignment]
    assert await answer(reader) == reference(model)
    assert made == 0  # every step from memory: nothing moved
    # A write to each step in turn: that step alone is made again, and the answer follows.
    for version, (slot, hashes) in enumerate(
        [
            ((D0 + DAY + 9 * HOUR, "FR", "tablet"), 1),  # the middle day's hash
            ((D0 + 2 * DAY + HOUR, "BR", "mobile"), 2),  # the last step: its two hours
            ((D0 + 23 * HOUR, "DE", "mobile"), 2),  # the first step's hours
        ],
        start=4,
    ):
        made = 0
        await write(writer, model, version, {slot: 1})
        for omit_nulls in (False, True):
            assert await answer(reader, omit_nulls=omit_nulls) == reference(
                model, omit_nulls=omit_nulls
            )
        assert made == 2 * hashes  # its hashes, once per encoding
        assert await reader.viewership(
            step="day", from_ms=LO, to_ms=HI, breakdown=BREAKDOWN
        ) == reference(model)
        assert made == 2 * hashes
    # A write refused by the version check changes nothing: the steps stand.
    made = 0
    zombie = PartitionRollups()
    add(zombie, "DE", "mobile", 99, hour=D0 + DAY + 5 * HOUR)
    assert await flush(zombie, writer, 0) == 0
    assert await answer(reader) == reference(model)
    assert made == 0


async def test_requests_at_once_share_one_read_and_one_making(redis: Redis) -> None:
    """A dashboard's requests at once: their generation reads go as one pipeline, and a step
    found stale by all of them (the open hour written) is made once, for all."""
    writer, model = RollupWriter(redis), Model()
    await write(writer, model, 1, {(D0 + 22 * HOUR, "DE", "mobile"): 2, (D0 + DAY, "FR", "tv"): 1})
    await write(writer, model, 2, {(D0 + 2 * DAY + HOUR, "DE", "mobile"): 4})
    reader = RollupReader(redis)
    assert await answer(reader) == reference(model)
    sends, made = 0, 0
    send, project = reader._turn._send, reader._project

    async def counted_send(batch: Any) -> None:
        nonlocal sends
        sends += 1
        await send(batch)

    async def counted_project(*args: Any) -> Any:
        nonlocal made
        made += len(args[0])
        return await project(*args)

    reader._turn._send = counted_send  # type: ignore[method-assign]
    reader._project = counted_project  # type: ignore[method-assign, assignment]
    await write(writer, model, 3, {(D0 + 2 * DAY + HOUR, "NL", "mobile"): 1})
    answers = await asyncio.gather(*(answer(reader) for _ in range(12)))
    assert answers == [reference(model)] * 12
    assert sends == 1
    assert made == 2  # the last step's two hours, once
    # Every request still reads after it began: one asked for after a write sees the write.
    await write(writer, model, 4, {(D0 + 2 * DAY, "NL", "mobile"): 1})
    assert await answer(reader) == reference(model)


async def test_a_step_larger_than_the_cache_is_answered_not_kept(redis: Redis) -> None:
    writer, model = RollupWriter(redis), Model()
    await write(writer, model, 1, {(D0 + DAY + HOUR, "DE", "mobile"): 2})
    for cache_bytes in (0, 100):
        reader = RollupReader(redis, cache_bytes=cache_bytes)
        assert await answer(reader) == reference(model)
        assert await answer(reader) == reference(model)
        assert len(reader._steps) == 0
