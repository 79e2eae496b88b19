"""`TurnPipeline` against the real Redis: one pipeline per turn of the event loop, reads once,
writes each time, a refused command in place, one deadline for the whole exchange."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aggregator.redisclient import TurnPipeline, without_read_timeout

KEY = "pp:test:turn"


class Recording:
    """A client whose pipelines record how many commands they send."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sizes: list[int] = []

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.redis.pipeline(**kwargs)
        execute = pipe.execute

        async def recorded(**options: Any) -> Any:
            self.sizes.append(len(pipe.command_stack))
            return await execute(**options)

        pipe.execute = recorded  # type: ignore[method-assign]
        return pipe


async def test_one_turn_is_one_pipeline_reads_once_writes_each_time(redis: Redis) -> None:
    await redis.delete(KEY)
    await redis.set(KEY + ":r", "x")
    recording = Recording(redis)
    turn, sizes = TurnPipeline(recording), recording.sizes  # type: ignore[arg-type]
    read = ("GET", KEY + ":r")
    answers = await asyncio.gather(
        turn.run([read, ("EXISTS", KEY + ":r")], reads=True),
        turn.run([("INCR", KEY)], reads=False),
        turn.run([read], reads=True),
        turn.run([("INCR", KEY)], reads=False),
    )
    assert answers == [[b"x", 1], [1], [b"x"], [2]]
    assert sizes == [4]  # GET once, EXISTS, INCR twice
    # A later turn is another pipeline, sent after it was asked for: it sees the writes.
    assert await turn.run([("GET", KEY)], reads=True) == [b"2"]
    assert sizes == [4, 1]


async def test_a_refused_command_is_its_error_in_place(redis: Redis) -> None:
    await redis.set(KEY, "not a hash")
    turn = TurnPipeline(redis)
    wrong, right = await asyncio.gather(
        turn.run([("HGET", KEY, "f")], reads=True), turn.run([("GET", KEY)], reads=True)
    )
    assert isinstance(wrong[0], ResponseError) and right == [b"not a hash"]


async def test_the_deadline_bounds_the_whole_exchange_and_the_client_recovers(
    redis: Redis,
) -> None:
    untimed = without_read_timeout(redis)
    try:
        assert untimed.connection_pool.connection_kwargs["socket_timeout"] is None
        turn = TurnPipeline(untimed, timeout_s=0.2)
        with pytest.raises(RedisTimeoutError):
            await turn.run([("BLPOP", KEY + ":empty", 5)], reads=False)
        await redis.set(KEY, "after")
        assert await turn.run([("GET", KEY)], reads=True) == [b"after"]
    finally:
        await untimed.aclose()
        await asyncio.sleep(0.05)  # the connection cut short finishes closing, then is freed
        gc.collect()
