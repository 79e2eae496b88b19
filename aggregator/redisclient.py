"""The aggregator's Redis client: redis-py's asyncio client, with hiredis packing commands; and
`TurnPipeline`, which sends the commands of one event-loop turn together.

redis-py's synchronous client packs commands with hiredis (C) when it is installed; its asyncio
connections still pack them in Python, about 16 us for a rollup write's arguments against
hiredis' 1 us, and a flush sends thousands of commands. `connect` gives the asyncio client the
synchronous client's packer (`redis.connection.HiredisRespSerializer`, the same bytes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool
from redis.connection import HiredisRespSerializer
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

_PACKER = HiredisRespSerializer() if HIREDIS_AVAILABLE else None

Command = tuple[EncodableT, ...]


class HiredisConnection(Connection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        assert _PACKER is not None
        return _PACKER.pack(*args)  # type: ignore[arg-type]  # typed as List, takes any args


_POOL_BOUND = ("maint_notifications_pool_handler", "himport_registry")  # the old pool's own


def without_read_timeout(redis: Redis, **kwargs: Any) -> Redis:
    """A client on a new pool with `redis`'s connection settings (changed by `kwargs`) but no
    `socket_timeout`: redis-py arms and cancels a timer for each answer it reads (a third of
    a 54-read pipeline's time), so a caller bounds the whole exchange instead
    (`TurnPipeline`'s `timeout_s`). The caller closes it."""
    pool = redis.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_BOUND}
    settings |= {**kwargs, "socket_timeout": None}
    # from_pool: the client owns its pool, so closing the client closes its connections.
    return Redis.from_pool(ConnectionPool(connection_class=pool.connection_class, **settings))


def connect(url: str, **kwargs: Any) -> Redis:
    """`Redis.from_url`, packing commands with hiredis when it is installed and the URL is
    `redis://` (redis-py picks its own connection class for `rediss://` and `unix://`)."""
    if _PACKER is not None and urlsplit(url).scheme == "redis":
        kwargs["connection_class"] = HiredisConnection
    return Redis.from_url(url, **kwargs)


class TurnPipeline:
    """Commands asked for in one turn of the event loop, by any caller, sent to Redis together
    as one pipeline: one round trip for all of them, each distinct read once.

    The first caller in a turn schedules the send for the end of the turn, so every command
    queued by then goes with it, and each is sent after its caller asked for it (a read is
    never older than the request it answers). Answers come back in each caller's order; a
    command Redis refused is its exception, in place (a `NOSCRIPT`, say); a connection error
    fails every caller of the batch, and so does `timeout_s` passing (redis-py's
    `TimeoutError`) for the whole pipeline: give it a client without a `socket_timeout`,
    which redis-py otherwise arms for every answer (`without_read_timeout`). The API shares one between its rate limiter and its
    rollup reader, so a request's rate-limit hit and its generation reads are one round trip.
    """

    def __init__(self, redis: Redis, *, timeout_s: float | None = None) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._pending: list[tuple[Sequence[Command], bool, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, commands: Sequence[Command], *, reads: bool) -> list[Any]:
        """The answers to `commands` (raw, e.g. `("HGET", key, field)`). With `reads`, a
        command asked for again in the same batch is sent once (only for commands that change
        nothing)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send_pending)
        self._pending.append((commands, reads, future))
        return await future

    def _send_pending(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, batch: list[tuple[Sequence[Command], bool, asyncio.Future[list[Any]]]]
    ) -> None:
        sent: list[Command] = []
        read_at: dict[Command, int] = {}
        places: list[list[int]] = []
        for commands, reads, _ in batch:
            at = []
            for command in commands:
                i = read_at.get(command) if reads else None
                if i is None:
                    i = len(sent)
                    sent.append(command)
                    if reads:
                        read_at[command] = i
                at.append(i)
            places.append(at)
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for command in sent:
                            pipe.execute_command(*command)
                        answers = await pipe.execute(raise_on_error=False)
            except TimeoutError as exc:  # (redis-py disconnects a read cut short)
                raise RedisTimeoutError(f"no answer within {self._timeout_s} s") from exc
        except BaseException as exc:
            for _, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, future), at in zip(batch, places, strict=True):
                if not future.done():  # (its caller may have been cancelled)
                    future.set_result([answers[i] for i in at])
