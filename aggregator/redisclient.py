"""The aggregator's Redis client: redis-py's asyncio client, with hiredis packing commands.

redis-py's synchronous client packs commands with hiredis (C) when it is installed; its asyncio
connections still pack them in Python, about 16 us for a rollup write's arguments against
hiredis' 1 us, and a flush sends thousands of commands. `connect` gives the asyncio client the
synchronous client's packer (`redis.connection.HiredisRespSerializer`, the same bytes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

_PACKER = HiredisRespSerializer() if HIREDIS_AVAILABLE else None


class HiredisConnection(Connection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        assert _PACKER is not None
        return _PACKER.pack(*args)  # type: ignore[arg-type]  # typed as List, takes any args


def connect(url: str, **kwargs: Any) -> Redis:
    """`Redis.from_url`, packing commands with hiredis when it is installed and the URL is
    `redis://` (redis-py picks its own connection class for `rediss://` and `unix://`)."""
    if _PACKER is not None and urlsplit(url).scheme == "redis":
        kwargs["connection_class"] = HiredisConnection
    return Redis.from_url(url, **kwargs)
