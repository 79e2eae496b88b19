"""Redis I/O for the rollups: the aggregator's versioned writer and the reader `api` imports.

The key layout is `aggregator.keys`; this module only moves values in and out of it.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from cachetools import LRUCache
from redis.asyncio import Redis

from aggregator import keys, projection
from aggregator.concurrency import PEAK_STEPS, Minutes, PeakStep, minute_peaks, step_peaks
from aggregator.fragments import encode_step, join_steps, without_nulls
from aggregator.metrics import OPTIONAL_FIELDS, VIEWERSHIP_FIELDS, Components, to_viewership
from aggregator.redisclient import Command, TurnPipeline
from aggregator.rollups import RowId, RowWrite
from aggregator.timebuckets import HOUR_MS, MINUTE_MS, Step, cover, floor, steps

ALL_FIELDS = OPTIONAL_FIELDS  # every optional viewership field (viewCount, playtimeMins always)
MAX_MINUTES = 1_440  # the most minute rows one `RollupReader.minutes` call reads


class RollupWriter:
    """Writes one partition's rows as absolute values under its version (the source offset)."""

    _CACHE_MAX = 200_000

    def __init__(self, redis: Redis, minute_retention_s: int = keys.MINUTE_RETENTION_S) -> None:
        self._redis = redis
        self._minute_retention_s = minute_retention_s
        self._script = redis.register_script(keys.WRITE_SCRIPT)
        # The same rows and tuples are written flush after flush: build their names once.
        self._keys: dict[RowId, str] = {}
        self._fields: dict[tuple[int, tuple[str | None, ...]], str] = {}

    def _key(self, row: RowId) -> str:
        key = self._keys.get(row)
        if key is None:
            if len(self._keys) >= self._CACHE_MAX:
                self._keys.clear()
            key = self._keys[row] = keys.rollup_key(
                row.grain, row.bucket_ms, row.scope_dim, row.scope_value, row.dims
            )
        return key

    def _field(self, partition: int, values: tuple[str | None, ...]) -> str:
        name = self._fields.get((partition, values))
        if name is None:
            if len(self._fields) >= self._CACHE_MAX:
                self._fields.clear()
            name = self._fields[(partition, values)] = keys.row_field(partition, values)
        return name

    async def write(
        self, partition: int, version: int, writes: Sequence[RowWrite], *, replace: bool = False
    ) -> int:
        """Returns how many rows were applied (the rest had a newer version stored).

        With `replace`, every key the partition ever wrote is rewritten from `writes` alone:
        its fields there are deleted first, and keys missing from `writes` are cleared. A
        worker does this once after rebuilding a partition's state. Minute keys are listed in
        their own sorted set (`keys.minute_written_key`), trimmed to the minute retention.
        """
        vfield = keys.version_field(partition)
        mode = keys.REPLACE_MODE if replace else keys.WRITE_MODE
        # The all-dimensions hashes' new generation: random, so it never repeats, not even
        # after the hash was deleted (Redis restarted empty) and written anew, where a counter
        # would start over at a value a reader may have seen before.
        generation = os.urandom(8).hex()
        minute_ttl = self._minute_retention_s
        targets: dict[str, list[Any]] = {}
        minutes: dict[str, int] = {}  # minute keys written -> their minute
        minutes_cleared: set[str] = set()
        for write in writes:
            if not replace and not write.values and not write.deleted:
                continue  # created and emptied between two flushes: nothing to say
            row = write.row
            key = self._key(row)
            is_minute = row.grain == keys.MINUTE
            ttl = minute_ttl if is_minute else keys.RETENTION_S[row.grain]
            stamp = generation if row.dims == keys.FULL else ""
            args: list[Any] = [vfield, version, ttl, mode, stamp]
            for values, components in write.values.items():
                args += [self._field(partition, values), orjson.dumps(components.to_fields())]
            for values in write.deleted:
                args += [self._field(partition, values), ""]
            targets[key] = args
            if is_minute:
                minutes[key] = row.bucket_ms
        written, minutes_written = keys.written_key(partition), keys.minute_written_key(partition)
        if replace:
            for member in await self._redis.smembers(written):
                key = member.decode() if isinstance(member, bytes) else member
                stamp = generation if keys.keeps_projections(key) else ""
                targets.setdefault(key, [vfield, version, keys.RETENTION_S["day"], mode, stamp])
            for listed in await self._redis.zrange(minutes_written, 0, -1):
                # cleared, so not listed again unless written
                key = listed.decode() if isinstance(listed, bytes) else str(listed)
                if key not in targets:
                    targets[key] = [vfield, version, minute_ttl, mode, ""]
                    minutes_cleared.add(key)
        if not targets:
            return 0
        coarse = [k for k in targets if k not in minutes and k not in minutes_cleared]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, args in targets.items():
                await self._script(keys=[key], args=args, client=pipe)
            if coarse:
                pipe.sadd(written, *coarse)
                pipe.expire(written, max(keys.RETENTION_S.values()))
            if minutes:
                pipe.zadd(minutes_written, minutes)
                oldest = max(minutes.values()) - minute_ttl * 1000
                pipe.zremrangebyscore(minutes_written, "-inf", f"({oldest}")
                pipe.expire(minutes_written, minute_ttl)
            results = await pipe.execute()
        return sum(int(r) for r in results[: len(targets)])

    async def add_viewers(
        self, entries: Iterable[tuple[str, int, str | None, str | None, str]]
    ) -> None:
        """PFADD (grain, bucket, scope_dim, scope_value, viewer): idempotent, so no version."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for grain, bucket_ms, scope_dim, scope_value, viewer in entries:
                key = keys.viewers_key(grain, bucket_ms, scope_dim, scope_value)
                pipe.pfadd(key, viewer)
                pipe.expire(key, keys.RETENTION_S[grain])
            await pipe.execute()

    async def redis_lost_data(self, token: str) -> bool:
        """True when the alive marker is missing (Redis restarted empty); sets it again."""
        created = await self._redis.set(keys.ALIVE_KEY, token, nx=True)
        return bool(created)


def _scope(playback_id: str | None, creator_id: str | None) -> tuple[str | None, str | None]:
    if playback_id is not None:
        return "playbackId", playback_id
    if creator_id is not None:
        return "creatorId", creator_id
    return None, None


STEP_CACHE_BYTES = 32 * 2**20
"""Encoded steps of combined breakdowns a reader keeps in memory, in bytes (LRU), per query
shape and step, checked against their hashes' generations before each use."""

_STEP_OVERHEAD = 256  # what an entry costs beside its fragment: key, generations, tuple


MISSING: Final = b""
"""The generation of a hash that does not exist (what a reader's rows were made from)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A viewership answer already encoded: a JSON array of `rows` rows."""

    body: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class _Step:
    """One step of a combined breakdown: its rows encoded (`fragments.encode_step`), and the
    generations of the step's hashes they were made from (None: a hash keeping none)."""

    generations: tuple[bytes | None, ...]
    fragment: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """A combined breakdown's reads: the stored buckets of its range (`plan`: its step's
    start, grain, start), their all-dimensions hashes, which of them each step adds up, and
    the keys its steps are kept under (query shape, step, hashes)."""

    plan: list[tuple[int, Step, int]]
    hashes: list[str]
    per_step: dict[int, list[int]]
    memo_keys: dict[int, tuple[Any, ...]]
    timestamps: bool
    scope: tuple[str | None, str | None]
    dims: tuple[str, ...]
    breakdown: tuple[str, ...]
    filters: dict[str, str]
    fields: tuple[str, ...]
    omit_nulls: bool


def _step_size(step: _Step) -> int:
    return len(step.fragment) + _STEP_OVERHEAD


class RollupReader:
    """Answers viewership queries from the rollup hashes (the API's only way into them)."""

    def __init__(
        self,
        redis: Redis,
        *,
        cache_bytes: int = STEP_CACHE_BYTES,
        turn: TurnPipeline | None = None,
    ) -> None:
        self._redis = redis
        self._project_script = redis.register_script(keys.PROJECTION_WRITE_SCRIPT)
        # (query shape, step, its hashes) -> the step encoded, by bytes.
        self._cache_bytes = cache_bytes
        self._steps: LRUCache[tuple[Any, ...], _Step] = LRUCache(
            max(1, cache_bytes), getsizeof=_step_size
        )
        # Steps being made: (memo key, the generations read) -> the step, shared by the
        # requests that read the same generations meanwhile.
        self._making: dict[tuple[Any, ...], asyncio.Future[_Step]] = {}
        self._layouts: LRUCache[tuple[Any, ...], _Layout | None] = LRUCache(1_024)
        # Generation reads go with the other commands of their event-loop turn.
        self._turn = turn or TurnPipeline(redis)

    async def _read(self, generations: Sequence[str], exist: Sequence[str]) -> list[Any]:
        """The generation of each hash of `generations`, then whether each of `exist` exists:
        in one pipeline with what else was asked for in the same turn of the event loop, each
        distinct read once (a dashboard's requests ask for the same hashes)."""
        commands: list[Command] = [("HGET", key, keys.GENERATION_FIELD) for key in generations]
        commands += [("EXISTS", key) for key in exist]
        answers = await self._turn.run(commands, reads=True)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    async def viewership(
        self,
        *,
        step: Step | None,
        from_ms: int,
        to_ms: int,
        breakdown: Sequence[str] = (),
        playback_id: str | None = None,
        creator_id: str | None = None,
        fields: Sequence[str] = ALL_FIELDS,
    ) -> list[dict[str, Any]]:
        """Rows per `step` bucket and breakdown tuple over the data in [from_ms, to_ms); with no
        step, one row per tuple for the whole range, without `timestamp`.

        The range selects data at hour granularity (from floored, to ceiled to the hour): whole
        days are read from day rows, the edges from hour rows. Rows are grouped by the step's
        start (`timestamp`, which may lie before `from_ms`), like Livepeer's `timestamp_trunc`.
        Each breakdown dimension asked for is a field; the metrics are
        `aggregator.metrics.to_viewership`, plus `uniqueViewers` when there is no breakdown.
        Buckets with no data are left out. The rows are the caller's (decoded anew for a
        combined breakdown, whose steps are kept encoded).
        """
        layout = self._layout(
            step, from_ms, to_ms, breakdown, playback_id, creator_id, fields, False
        )
        if layout is None:
            return await self._flat(
                step, from_ms, to_ms, breakdown, playback_id, creator_id, fields
            )
        made = await self._projected(layout)
        decoded: list[dict[str, Any]] = orjson.loads(join_steps(s.fragment for s in made))
        return decoded

    async def viewership_json(
        self,
        *,
        step: Step | None,
        from_ms: int,
        to_ms: int,
        breakdown: Sequence[str] = (),
        playback_id: str | None = None,
        creator_id: str | None = None,
        fields: Sequence[str] = ALL_FIELDS,
        omit_nulls: bool = False,
        admitted: Awaitable[object] | None = None,
    ) -> Answer:
        """`viewership`'s rows as the JSON the API answers (with `omit_nulls`, each row without
        its null fields: `fragments.without_nulls`). A combined breakdown is spliced from its
        steps kept encoded, so only the steps whose hashes moved are made and encoded again.

        `admitted`, when given, is awaited before anything but the generation reads (the
        API's rate-limit hit, sent with them): what it raises ends the query there."""
        layout = self._layout(
            step, from_ms, to_ms, breakdown, playback_id, creator_id, fields, omit_nulls
        )
        if layout is None:
            if admitted is not None:
                await admitted
            rows = await self._flat(
                step, from_ms, to_ms, breakdown, playback_id, creator_id, fields
            )
            return Answer(orjson.dumps(without_nulls(rows) if omit_nulls else rows), len(rows))
        made = await self._projected(layout, admitted)
        return Answer(join_steps(s.fragment for s in made), sum(s.rows for s in made))

    def _layout(
        self,
        step: Step | None,
        from_ms: int,
        to_ms: int,
        breakdown: Sequence[str],
        playback_id: str | None,
        creator_id: str | None,
        fields: Sequence[str],
        omit_nulls: bool,
    ) -> _Layout | None:
        """What a combined breakdown reads and keeps (projected from the all-dimensions
        hashes), else None. The same for every query of one range at hour granularity (what
        `cover` selects by), so made once per range, shape and hour."""
        wide = from_ms // HOUR_MS, -(-to_ms // HOUR_MS), from_ms < to_ms
        cache_key: tuple[Any, ...] = (step, wide, tuple(breakdown), playback_id, creator_id)
        cache_key += (tuple(fields), omit_nulls)
        if cache_key in self._layouts:
            return self._layouts[cache_key]
        breakdown = tuple(dict.fromkeys(breakdown))  # the caller's order, without repeats
        scope_dim, scope_value = _scope(playback_id, creator_id)
        filters: dict[str, str] = {}
        if playback_id is not None and creator_id is not None:
            filters["creatorId"] = creator_id
        group = keys.group_for(scope_dim, breakdown + tuple(filters))
        dims = keys.ordered(tuple(d for d in (*breakdown, *filters) if d != scope_dim))
        layout = None
        if group.dims == keys.FULL and dims != keys.FULL:
            wanted = set(fields)
            if not wanted <= set(VIEWERSHIP_FIELDS):
                raise ValueError(
                    f"unknown viewership fields: {sorted(wanted - set(VIEWERSHIP_FIELDS))}"
                )
            grains: tuple[Step, ...] = ("hour",) if step == "hour" else ("day", "hour")
            plan = [
                (0 if step is None else floor(start, step), grain, start)
                for grain, start in cover(from_ms, to_ms, grains)
            ]
            shape = (
                scope_dim,
                scope_value,
                dims,
                breakdown,
                tuple(sorted(filters.items())),
                tuple(f for f in VIEWERSHIP_FIELDS if f in wanted),
                step is not None,
                omit_nulls,
            )
            hashes = [
                keys.rollup_key(grain, start, scope_dim, scope_value, keys.FULL)
                for _, grain, start in plan
            ]
            per_step: dict[int, list[int]] = {}
            for i, (bucket, _, _) in enumerate(plan):
                per_step.setdefault(bucket, []).append(i)
            layout = _Layout(
                plan=plan,
                hashes=hashes,
                per_step=per_step,
                memo_keys={
                    bucket: (shape, bucket, tuple(hashes[i] for i in indices))
                    for bucket, indices in per_step.items()
                },
                timestamps=step is not None,
                scope=(scope_dim, scope_value),
                dims=dims,
                breakdown=breakdown,
                filters=filters,
                fields=tuple(fields),
                omit_nulls=omit_nulls,
            )
        self._layouts[cache_key] = layout
        return layout

    async def _flat(
        self,
        step: Step | None,
        from_ms: int,
        to_ms: int,
        breakdown: Sequence[str],
        playback_id: str | None,
        creator_id: str | None,
        fields: Sequence[str],
    ) -> list[dict[str, Any]]:
        """`viewership` from the hashes of the breakdown's own group (summed per request)."""
        breakdown = tuple(dict.fromkeys(breakdown))  # the caller's order, without repeats
        scope_dim, scope_value = _scope(playback_id, creator_id)
        filters: dict[str, str] = {}
        if playback_id is not None and creator_id is not None:
            filters["creatorId"] = creator_id
        group = keys.group_for(scope_dim, breakdown + tuple(filters))
        grains: tuple[Step, ...] = ("hour",) if step == "hour" else ("day", "hour")
        plan = [
            (0 if step is None else floor(start, step), grain, start)
            for grain, start in cover(from_ms, to_ms, grains)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, grain, start in plan:
                pipe.hgetall(keys.rollup_key(grain, start, scope_dim, scope_value, group.dims))
            hashes = await pipe.execute()

        # A dimension that is the scope is constant within it; the others come from the tuple.
        positions = {d: group.dims.index(d) for d in (*breakdown, *filters) if d != scope_dim}
        # Summed as flat fields (counters and sketch buckets add alike), turned into Components
        # once per row: building one per stored tuple was most of a query's time.
        sums: dict[tuple[int, tuple[str | None, ...]], dict[str, int]] = {}
        for (bucket, _, _), raw in zip(plan, hashes, strict=True):
            for field, value in raw.items():
                parsed = keys.parse_row_field(field)
                if parsed is None:
                    continue
                _, values = parsed
                if any(values[positions[d]] != v for d, v in filters.items()):
                    continue
                projected = tuple(
                    scope_value if d == scope_dim else values[positions[d]] for d in breakdown
                )
                slot = (bucket, projected)
                acc = sums.get(slot)
                if acc is None:
                    acc = sums[slot] = {}
                for name, number in orjson.loads(value).items():
                    acc[name] = acc.get(name, 0) + number
        totals = {slot: Components.from_fields(acc) for slot, acc in sums.items()}

        unique: dict[int, int] = {}
        if not breakdown and not filters:
            unique = await self._unique_viewers(plan, scope_dim, scope_value)

        rows = []
        for (bucket, projected), components in sorted(totals.items(), key=_sort_key):
            row: dict[str, Any] = {} if step is None else {"timestamp": bucket}
            row.update(zip(breakdown, projected, strict=True))
            row.update(to_viewership(components, fields))
            if not breakdown and not filters:
                row["uniqueViewers"] = unique.get(bucket, 0)
            rows.append(row)
        return rows

    async def _projected(
        self, layout: _Layout, admitted: Awaitable[object] | None = None
    ) -> list[_Step]:
        """A combined breakdown's steps, encoded, in order, from the all-dimensions hashes'
        projections onto `dims` (the breakdown and filter dimensions).

        Two caches, both checked against each hash's generation (`keys.GENERATION_FIELD`),
        which every applied write replaces: this reader's encoded steps, from the
        generations of the step's hashes when they were made (one round trip of `HGET`s
        checks them all), and the projection of each hash cached in the hash itself
        (`_project`) for the steps not in memory or no longer current. Requests that find
        the same step stale at the same generations while it is being made wait for it
        instead of making it again (a live dashboard's open step, at every write)."""
        hashes, per_step, memo_keys = layout.hashes, layout.per_step, layout.memo_keys
        memos = {bucket: self._steps.get(key) for bucket, key in memo_keys.items()}
        # A hash that was missing is still missing if it does not exist (a hash without a
        # generation might, written by an aggregator older than generations).
        were_missing = [
            i
            for bucket, memo in memos.items()
            if memo is not None
            for i, made_at in zip(per_step[bucket], memo.generations, strict=True)
            if made_at == MISSING
        ]
        answers = await self._read([*hashes], [hashes[i] for i in were_missing])
        if admitted is not None:
            await admitted
        current: list[bytes | None] = answers[: len(hashes)]
        for i, exists in zip(were_missing, answers[len(hashes) :], strict=True):
            if not exists:
                current[i] = MISSING
        answer: dict[int, _Step] = {}
        waiting: dict[int, asyncio.Future[_Step]] = {}
        mine: dict[int, asyncio.Future[_Step]] = {}
        for bucket, indices in per_step.items():
            now = tuple(current[i] for i in indices)
            memo = memos[bucket]
            if memo is not None and memo.generations == now:
                answer[bucket] = memo
                continue
            if None in now:  # a hash whose contents no generation names: made for this request
                mine[bucket] = asyncio.get_running_loop().create_future()
                continue
            making = (memo_keys[bucket], now)
            future = self._making.get(making)
            if future is not None:
                waiting[bucket] = future
            else:
                future = self._making[making] = asyncio.get_running_loop().create_future()
                future.add_done_callback(functools.partial(self._made, making))
                mine[bucket] = future
        if mine:
            try:
                made = await self._make(layout, sorted(mine))
            except BaseException as exc:
                for future in mine.values():  # who waits for them makes them itself
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                        future.exception()  # retrieved: nobody may be waiting for it
                    else:
                        future.cancel()
                raise
            for bucket, future in mine.items():
                done = answer[bucket] = made[bucket]
                if None not in done.generations and self._cache_bytes >= _step_size(done):
                    self._steps[memo_keys[bucket]] = done
                future.set_result(done)
        again = []
        for bucket, future in waiting.items():
            try:
                done = await asyncio.shield(future)  # cancelled, this request leaves it be
            except BaseException:
                if not future.done():
                    raise  # this request was cancelled
                again.append(bucket)  # the request making it failed
                continue
            if done.generations == tuple(current[i] for i in per_step[bucket]):
                answer[bucket] = done
            else:  # made from a newer write than this request read: not what it checked
                again.append(bucket)
        if again:
            answer.update(await self._make(layout, again))
        return [answer[bucket] for bucket in sorted(answer)]

    def _made(self, making: tuple[Any, ...], future: asyncio.Future[_Step]) -> None:
        if self._making.get(making) is future:
            del self._making[making]

    async def _make(self, layout: _Layout, buckets: Sequence[int]) -> dict[int, _Step]:
        """The steps starting at `buckets`, made from their hashes' projections and encoded,
        each with the generations they were made from."""
        indices = [i for bucket in buckets for i in layout.per_step[bucket]]
        made = await self._project(
            [layout.plan[i] for i in indices], [layout.hashes[i] for i in indices], layout.dims
        )
        rows = projection.assemble_steps(
            [entry for entry, _ in made],
            timestamps=layout.timestamps,
            dims=layout.dims,
            breakdown=layout.breakdown,
            scope=layout.scope,
            filters=layout.filters,
            fields=layout.fields,
        )
        made_at: dict[int, list[bytes | None]] = {}
        for (bucket, _, _), generation in made:
            made_at.setdefault(bucket, []).append(generation)
        out = {}
        for bucket in buckets:
            step_rows = rows.get(bucket, [])
            out[bucket] = _Step(
                tuple(made_at[bucket]),
                encode_step(step_rows, omit_nulls=layout.omit_nulls),
                len(step_rows),
            )
        return out

    async def _project(
        self, plan: list[tuple[int, Step, int]], hashes: list[str], dims: tuple[str, ...]
    ) -> list[tuple[tuple[int, projection.Rows | None, projection.FlatSums | None], bytes | None]]:
        """`projection.assemble_steps` entries for `plan`'s all-dimensions hashes, each with
        the generation it was made at (`MISSING` for a hash that does not exist, None for one
        that keeps no generation), from the projections cached in them.

        One round trip reads each hash's generation and cached projection: the rows of a
        hash alone in its step, the sums of one that shares it. A projection stamped with
        another generation (or none) is made again from the hash (a second round trip) and
        written back by `PROJECTION_WRITE_SCRIPT`, which keeps it only if the hash's
        generation has not moved meanwhile (a third, only then)."""
        rows_field, sums_field = keys.projection_fields(dims)
        sharing = Counter(bucket for bucket, _, _ in plan)
        alone = [sharing[bucket] == 1 for bucket, _, _ in plan]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, single in zip(hashes, alone, strict=True):
                pipe.hmget(key, keys.GENERATION_FIELD, rows_field if single else sums_field)
            cached = await pipe.execute()
        generations: list[bytes | None] = [generation for generation, _ in cached]
        blobs = [projection.unstamp(value, generation) for generation, value in cached]
        made: dict[int, dict[projection.Values, projection.Sums]] = {}
        made_rows: dict[int, projection.Rows] = {}
        misses = [i for i, blob in enumerate(blobs) if blob is None]
        if misses:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in misses:
                    pipe.hgetall(hashes[i])
                sources = await pipe.execute()
            positions = [keys.FULL.index(d) for d in dims]
            backs = []
            for i, raw in zip(misses, sources, strict=True):
                sums = made[i] = projection.project(raw, positions)
                made_rows[i] = projection.rows_of(sums)
                generation = raw.get(keys.GENERATION_FIELD.encode())
                generations[i] = MISSING if not raw else generation
                if generation:
                    rows_blob = projection.encode_rows(made_rows[i])
                    backs.append((hashes[i], generation, rows_blob, projection.encode_sums(sums)))
            if backs:
                joined = ",".join(dims)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, generation, rows_blob, sums_blob in backs:
                        args = [
                            generation,
                            joined,
                            projection.stamp(generation, rows_blob),
                            projection.stamp(generation, sums_blob),
                        ]
                        await self._project_script(keys=[key], args=args, client=pipe)
                    await pipe.execute()

        entries: list[
            tuple[tuple[int, projection.Rows | None, projection.FlatSums | None], bytes | None]
        ] = []
        for i, (bucket, _, _) in enumerate(plan):
            blob = blobs[i]
            if alone[i]:
                rows = made_rows[i] if blob is None else projection.decode_rows(blob)
                entries.append(((bucket, rows, None), generations[i]))
            else:
                flat = (
                    projection.flat_sums(made[i]) if blob is None else projection.decode_sums(blob)
                )
                entries.append(((bucket, None, flat), generations[i]))
        return entries

    async def minutes(
        self,
        *,
        from_ms: int,
        to_ms: int,
        step: Literal["minute"] | None = None,
        playback_id: str | None = None,
        creator_id: str | None = None,
        fields: Sequence[str] = ALL_FIELDS,
    ) -> list[dict[str, Any]]:
        """Like `viewership` without a breakdown, from the minute rows: the data in
        [from_ms, to_ms) at minute granularity (from floored, to ceiled to the minute), a row
        per minute with data (`step="minute"`) or one row for the range (None; no row when
        there is no data). Minute rows are kept for the minute retention only (the caller's
        range should lie within it) and have no unique viewers. One scope: a playbackId or a
        creatorId, not both (ValueError)."""
        if playback_id is not None and creator_id is not None:
            raise ValueError("minute rows are per playback or per creator, not both")
        starts = list(steps(from_ms, to_ms, "minute"))
        if len(starts) > MAX_MINUTES:
            raise ValueError(f"at most {MAX_MINUTES} minutes, asked for {len(starts)}")
        scope_dim, scope_value = _scope(playback_id, creator_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(keys.rollup_key(keys.MINUTE, start, scope_dim, scope_value, ()))
            hashes = await pipe.execute()
        sums: dict[int, dict[str, int]] = {}
        for start, raw in zip(starts, hashes, strict=True):
            acc = sums.setdefault(0 if step is None else start, {})
            for field, value in raw.items():
                if keys.parse_row_field(field) is not None:
                    for name, number in orjson.loads(value).items():
                        acc[name] = acc.get(name, 0) + number
        rows = []
        for bucket, acc in sums.items():
            if not acc:
                continue
            row: dict[str, Any] = {} if step is None else {"timestamp": bucket}
            row.update(to_viewership(Components.from_fields(acc), fields))
            rows.append(row)
        return rows

    async def _unique_viewers(
        self, plan: list[tuple[int, Step, int]], scope_dim: str | None, scope_value: str | None
    ) -> dict[int, int]:
        per_bucket: dict[int, list[str]] = {}
        for bucket, grain, start in plan:
            per_bucket.setdefault(bucket, []).append(
                keys.viewers_key(grain, start, scope_dim, scope_value)
            )
        async with self._redis.pipeline(transaction=False) as pipe:
            for ks in per_bucket.values():
                pipe.pfcount(*ks)
            counts = await pipe.execute()
        return dict(zip(per_bucket, (int(c) for c in counts), strict=True))


def _sort_key(item: tuple[tuple[int, tuple[str | None, ...]], Components]) -> tuple[Any, ...]:
    (start, values), _ = item
    return (start, tuple((v is not None, v or "") for v in values))


NOW_TTL_S = 3_600
NOW_KEEP_MS = 10 * 60_000  # members older than this are pruned from the keys written
NOW_UPKEEP_MS = 60_000  # a key is pruned and its TTL renewed at most this often per writer


def _scopes(dims: Mapping[str, str | None]) -> list[tuple[str | None, str | None]]:
    out: list[tuple[str | None, str | None]] = [(None, None)]
    out += [(d, dims[d]) for d in keys.SCOPE_DIMENSIONS if dims.get(d) is not None]
    return out


@dataclass(frozen=True, slots=True)
class _NowPlan:
    """Where a session with these dimensions is written: the same for every session of one
    dimension tuple, so built once per tuple rather than per session and flush."""

    sets: tuple[str, ...]  # sorted sets of sessions, scored by the last beacon
    error_sets: tuple[str, ...]  # the same, for sessions with an error
    tuple_index: tuple[tuple[str, str], ...]  # (index key, tuple member): scored by the latest
    values: tuple[tuple[str, str], ...]  # (value index key, value)
    viewer_scopes: tuple[tuple[str | None, str | None], ...]


def _now_plan(dims: Mapping[str, str | None]) -> _NowPlan:
    sets, error_sets, tuple_index, values = [], [], [], []
    member = keys.now_tuple(dims)
    scopes = _scopes(dims)
    for scope_dim, scope_value in scopes:
        scope = keys.scope_text(scope_dim, scope_value)
        targets: list[tuple[str | None, str | None]] = [(None, None)]
        for dim in keys.NOW_DIMENSIONS:
            value = dims.get(dim)
            targets.append((dim, value))
            values.append((keys.now_index_key(scope, dim), keys.encode_now_value(value)))
        for by, of in targets:
            sets.append(keys.now_key(scope, by, of))
            error_sets.append(keys.now_key(scope, by, of, errors=True))
        sets.append(keys.now_tuple_key(scope, member))
        error_sets.append(keys.now_tuple_key(scope, member, errors=True))
        tuple_index.append((keys.now_tuple_index_key(scope), member))
    return _NowPlan(
        tuple(sets), tuple(error_sets), tuple(tuple_index), tuple(values), tuple(scopes)
    )


class TouchedWriter:
    """Writes what the sessions touched since the last flush did: unique viewers and who is
    watching now. Both are idempotent (PFADD; ZADD GT keeps the newest time), so no version.

    Every flush adds its sessions to their sets; pruning members older than `NOW_KEEP_MS` and
    renewing a set's TTL, housekeeping that no reader depends on, is done for a key at most
    every `NOW_UPKEEP_MS` (and at the first write of a key by this writer)."""

    _CACHE_MAX = 100_000

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._plans: dict[tuple[tuple[str, str | None], ...], _NowPlan] = {}
        self._upkept: dict[str, int] = {}  # key -> when this writer last pruned it (ms)

    def _plan(self, dims: Mapping[str, str | None]) -> _NowPlan:
        cache_key = tuple(dims.items())
        plan = self._plans.get(cache_key)
        if plan is None:
            if len(self._plans) >= self._CACHE_MAX:
                self._plans.clear()
            plan = self._plans[cache_key] = _now_plan(dims)
        return plan

    async def write(self, touched: Mapping[str, Any], now_ms: int) -> None:
        if not touched:
            return
        zsets: dict[str, dict[str, int]] = {}
        index: dict[str, set[str]] = {}
        viewers: dict[str, set[str]] = {}
        for session_id, t in touched.items():
            plan = self._plan(t.dims)
            seen = t.last_seen_ms
            for hour in t.view_hours:
                for grain, bucket in (("hour", hour), ("day", floor(hour, "day"))):
                    for scope_dim, value in plan.viewer_scopes:
                        key = keys.viewers_key(grain, bucket, scope_dim, value)
                        viewers.setdefault(key, set()).add(t.viewer)
            for key in plan.error_sets if t.has_error else ():
                zsets.setdefault(key, {})[session_id] = seen
            for key in plan.sets:
                members = zsets.get(key)
                if members is None:
                    zsets[key] = {session_id: seen}
                else:
                    members[session_id] = seen
            for key, member in plan.tuple_index:
                tuples = zsets.setdefault(key, {})
                if tuples.get(member, 0) < seen:
                    tuples[member] = seen
            for key, value in plan.values:
                index.setdefault(key, set()).add(value)
        upkept = self._upkept
        if len(upkept) >= self._CACHE_MAX:
            upkept.clear()
        due = now_ms - NOW_UPKEEP_MS
        kept: list[str] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, viewer_ids in viewers.items():
                pipe.pfadd(key, *viewer_ids)
                grain = key.split(":")[2]
                pipe.expire(key, keys.RETENTION_S[grain])
            for key, scores in zsets.items():
                pipe.zadd(key, scores, gt=True)
                if upkept.get(key, due) <= due:
                    kept.append(key)
                    pipe.zremrangebyscore(key, "-inf", now_ms - NOW_KEEP_MS)
                    pipe.expire(key, NOW_TTL_S)
            for key, values in index.items():
                pipe.sadd(key, *values)
                if upkept.get(key, due) <= due:
                    kept.append(key)
                    pipe.expire(key, NOW_TTL_S)
            await pipe.execute()
        upkept.update(dict.fromkeys(kept, now_ms))  # only once Redis has done it


class RealtimeReader:
    """Concurrent viewers now: sessions with a beacon in (now - 30 s, now]."""

    def __init__(self, redis: Redis, window_ms: int) -> None:
        self._redis = redis
        self._window_ms = window_ms

    async def now(
        self,
        now_ms: int,
        *,
        breakdown: Sequence[str] = (),
        playback_id: str | None = None,
        creator_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of `viewCount` and `errorRate`: one without a breakdown, else one per tuple of
        the breakdown dimensions' values with someone watching (any of `keys.NOW_DIMENSIONS`,
        in the order given). One dimension reads its own sets; several read the full tuples
        active in the window and project them (`project_now`)."""
        breakdown = tuple(dict.fromkeys(breakdown))
        unknown = [d for d in breakdown if d not in keys.NOW_DIMENSIONS]
        if unknown:
            raise ValueError(f"cannot break concurrent viewers down by {unknown}")
        scope_dim, scope_value = _scope(playback_id, creator_id)
        scope = keys.scope_text(scope_dim, scope_value)
        low, high = f"({now_ms - self._window_ms}", str(now_ms)
        if len(breakdown) > 1:
            return await self._combined(scope, breakdown, low, high)
        if not breakdown:
            targets: list[tuple[dict[str, Any], str | None, str | None]] = [({}, None, None)]
        else:
            dim = breakdown[0]
            members = await self._redis.smembers(keys.now_index_key(scope, dim))
            values = [keys.decode_now_value(m) for m in sorted(members)]
            targets = [({dim: value}, dim, value) for value in values]
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, by, of in targets:
                pipe.zcount(keys.now_key(scope, by, of), low, high)
                pipe.zcount(keys.now_key(scope, by, of, errors=True), low, high)
            counts = await pipe.execute()
        rows = []
        for i, (labels, _, _) in enumerate(targets):
            viewers, erroring = int(counts[2 * i]), int(counts[2 * i + 1])
            if breakdown and viewers == 0:
                continue
            rows.append(
                {
                    **labels,
                    "viewCount": viewers,
                    "errorRate": erroring / viewers if viewers else 0.0,
                }
            )
        return rows

    async def last_seen(
        self, *, playback_id: str | None = None, creator_id: str | None = None
    ) -> int | None:
        """The newest beacon time (server ms) of the scope's sessions kept for now, or None."""
        scope_dim, scope_value = _scope(playback_id, creator_id)
        newest = await self._redis.zrange(
            keys.now_key(keys.scope_text(scope_dim, scope_value)), -1, -1, withscores=True
        )
        return int(newest[0][1]) if newest else None

    async def totals(self, now_ms: int) -> tuple[int, int]:
        """(concurrent viewers, of them with an error) over everything: the gauges' numbers,
        the same sets as `now()` without a breakdown."""
        scope = keys.scope_text(None, None)
        low, high = f"({now_ms - self._window_ms}", str(now_ms)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.now_key(scope), low, high)
            pipe.zcount(keys.now_key(scope, errors=True), low, high)
            viewers, erroring = await pipe.execute()
        return int(viewers), int(erroring)

    async def _combined(
        self, scope: str, breakdown: tuple[str, ...], low: str, high: str
    ) -> list[dict[str, Any]]:
        index = keys.now_tuple_index_key(scope)
        found = await self._redis.zrangebyscore(index, low, high)  # members only: no scores
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in found]
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.zcount(keys.now_tuple_key(scope, member), low, high)
                pipe.zcount(keys.now_tuple_key(scope, member, errors=True), low, high)
            counts = await pipe.execute()
        tuples = [
            (keys.parse_now_tuple(member), int(counts[2 * i]), int(counts[2 * i + 1]))
            for i, member in enumerate(members)
        ]
        return project_now(tuples, breakdown)


def project_now(
    tuples: Iterable[tuple[dict[str, str | None], int, int]], breakdown: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows of concurrent viewers per value tuple of `breakdown` from (full dimension values,
    viewers, erroring viewers) of disjoint session sets: summed, tuples with no viewer left out,
    sorted by the values (None first)."""
    totals: dict[tuple[str | None, ...], list[int]] = {}
    for dims, viewers, erroring in tuples:
        total = totals.setdefault(tuple(dims[d] for d in breakdown), [0, 0])
        total[0] += viewers
        total[1] += erroring
    rows = []
    for values in sorted(totals, key=lambda vs: tuple((v is not None, v or "") for v in vs)):
        viewers, erroring = totals[values]
        if viewers == 0:
            continue
        rows.append(
            {
                **dict(zip(breakdown, values, strict=True)),
                "viewCount": viewers,
                "errorRate": erroring / viewers,
            }
        )
    return rows


class ConcurrencyWriter:
    """Writes one partition's concurrent-viewer counts (`aggregator.concurrency`) as absolute
    per-partition fields under its version, like `RollupWriter`."""

    def __init__(self, redis: Redis, retention_s: int = keys.CONCURRENCY_RETENTION_S) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._script = redis.register_script(keys.CONCURRENCY_WRITE_SCRIPT)

    async def write(
        self,
        partition: int,
        version: int,
        writes: Mapping[tuple[str, int], Minutes],
        *,
        replace: bool = False,
    ) -> int:
        """`writes`: minutes per (scope, hour start). With `replace`, every key the partition
        ever wrote is rewritten from `writes` alone (its fields not in `writes` are deleted).
        Returns how many keys were applied."""
        vfield = keys.version_field(partition)
        mode = keys.REPLACE_MODE if replace else keys.WRITE_MODE
        targets: dict[str, list[Any]] = {}
        for (scope, hour_ms), minutes in writes.items():
            args: list[Any] = [vfield, version, self._retention_s, mode]
            for minute_ms, counts in sorted(minutes.items()):
                args += [minute_ms, orjson.dumps(counts)]
            targets[keys.concurrency_key(hour_ms, scope)] = args
        written = keys.concurrency_written_key(partition)
        if replace:
            for member in await self._redis.smembers(written):
                key = member.decode() if isinstance(member, bytes) else member
                targets.setdefault(key, [vfield, version, self._retention_s, mode])
        if not targets:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, args in targets.items():
                await self._script(keys=[key], args=args, client=pipe)
            pipe.sadd(written, *targets)
            pipe.expire(written, self._retention_s)
            results = await pipe.execute()
        return sum(int(r) for r in results[: len(targets)])


class ConcurrencyReader:
    """The concurrent-viewers series: peaks per minute or hour, from the `pp:c:` hashes."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def peaks(
        self,
        *,
        step: PeakStep,
        from_ms: int,
        to_ms: int,
        playback_id: str | None = None,
        creator_id: str | None = None,
        now_ms: int | None = None,
    ) -> list[dict[str, int]]:
        """`{"timestamp", "peakConcurrentViewers"}` for every `step` (minute or hour) that
        intersects [from_ms, to_ms), in order, 0 where nobody watched: the largest number of
        concurrent sessions at any 5 s sample instant of the step, summed over partitions
        first. Instants after `now_ms` (not decided yet) are left out. A playbackId filter
        wins over a creatorId one (the caller checks that they agree)."""
        if step not in PEAK_STEPS:
            raise ValueError(f"step must be one of {PEAK_STEPS}, got {step!r}")
        starts = list(steps(from_ms, to_ms, step))
        if not starts:
            return []
        scope = keys.scope_text(*_scope(playback_id, creator_id))
        hours = list(steps(starts[0], to_ms, "hour"))
        minutes = [list(range(h, h + HOUR_MS, MINUTE_MS)) for h in hours]
        async with self._redis.pipeline(transaction=False) as pipe:
            for hour_ms, in_hour in zip(hours, minutes, strict=True):
                fields = [keys.concurrency_sum_field(m) for m in in_hour]
                pipe.hmget(keys.concurrency_key(hour_ms, scope), fields)
            answers = await pipe.execute()
        total: Minutes = {}
        for in_hour, values in zip(minutes, answers, strict=True):
            for minute_ms, raw in zip(in_hour, values, strict=True):
                if raw is not None:
                    total[minute_ms] = orjson.loads(raw)
        return step_peaks(minute_peaks(total, now_ms), step, starts)
