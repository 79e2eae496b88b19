"""The aggregator's Redis client packs commands with hiredis into the very bytes redis-py's
asyncio connection would send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from aggregator.redisclient import HiredisConnection, connect

ARG = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.sampled_from(["EVALSHA", "ZADD", "HSET", "CLIENT SETNAME"]), st.lists(ARG, max_size=20))
def test_same_bytes_as_redis_py(command: str, args: list[object]) -> None:
    ours = b"".join(HiredisConnection().pack_command(command, *args))
    theirs = b"".join(Connection().pack_command(command, *args))
    assert ours == theirs


def test_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "k", None)  # type: ignore[arg-type]


def test_connect_uses_it_for_redis_urls_only() -> None:
    client = connect("redis://127.0.0.1:1/3", socket_timeout=1.0)
    assert client.connection_pool.connection_class is HiredisConnection
    assert client.connection_pool.connection_kwargs["db"] == 3
    unix = connect("unix:///tmp/nowhere.sock")
    assert unix.connection_pool.connection_class is not HiredisConnection
