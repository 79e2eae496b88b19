"""API keys: created and revoked by an admin (the `playpulse keys` CLI), checked on every request.

Two kinds, like Livepeer's: a *private* key is a server-side secret and opens every metrics
endpoint; a *CORS* key is embedded in web pages, so it is only accepted from its allowed origins
and only on the endpoints that allow it (`/data/views/query/creator` and the public total).
Either kind may be scoped to one creator: it then sees only that creator's data. A third kind,
ours, an *admin* key, opens only `/api/admin/*` (the playback registry), and no metrics
endpoint: whoever manages playbacks (a platform's backend) need not read viewers' data, and a
leaked metrics key cannot reassign playbacks to another creator. It takes no origins and no
creator scope.

The secret is shown once, by `create_key`; Redis keeps only its SHA-256, so a leaked database
does not leak usable keys. A request's bearer secret is hashed and looked up by that hash (the
lookup learns nothing about the secret itself), and the stored hash is compared again with
`hmac.compare_digest`. An API process remembers a key it found for `PLAYPULSE_API_KEY_CACHE_S`
(1 s; `KnownKeys`), so a busy client's requests do not each pay a Redis round trip for it: a
revoked key stops working within that time, and a secret that found no key is looked up again
every time (a new key works at once).

Redis layout (keys never expire: a key lives until it is revoked):

    pp:apikey:{sha256 hex}   hash: id, sha256, kind, origins (json list), creator_id, name,
                             created_ms
    pp:apikeyid:{key_id}     string: the sha256 hex of that key's secret (revoke by id)
    pp:apikeys               set of key ids (listing)
    pp:livetoken:{sha256 hex} string: the key id a live-stream token stands for; expires

Live-stream tokens. A browser's `EventSource` cannot send an Authorization header, so the live
page trades its key (sent as a bearer header to `POST /api/live/token`) for a short-lived
random token that it puts in the stream's URL. Redis keeps only the token's SHA-256 and the id
of the key it stands for; redeeming it looks the key up again, so revoking the key ends the
token too. A token is not itself a key: it opens nothing but the live stream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, get_args

import orjson
from cachetools import TTLCache
from redis.asyncio import Redis

KeyKind = Literal["private", "cors", "admin"]
KEY_KINDS: Final[tuple[KeyKind, ...]] = get_args(KeyKind)

KEY_BY_HASH: Final = "pp:apikey:{}"
HASH_BY_ID: Final = "pp:apikeyid:{}"
KEY_INDEX: Final = "pp:apikeys"
LIVE_TOKEN: Final = "pp:livetoken:{}"

_ORIGIN = re.compile(r"https?://[a-z0-9.\-]+(?::\d{1,5})?|https?://\[[0-9a-f:.]+\](?::\d{1,5})?")


class AuthError(Exception):
    """A request the key does not allow: 401 (no or unknown key) or 403 (not allowed)."""

    def __init__(self, status: Literal[401, 403], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    kind: KeyKind
    origins: tuple[str, ...] = ()
    creator_id: str | None = None
    name: str | None = None
    created_ms: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.key_id,
            "kind": self.kind,
            "origins": list(self.origins),
            "creatorId": self.creator_id,
            "name": self.name,
            "createdAt": self.created_ms,
        }


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]`, lowercased, as browsers send it in `Origin`; ValueError if not."""
    text = origin.strip().lower().rstrip("/")
    if not _ORIGIN.fullmatch(text):
        raise ValueError(f"origin {origin!r} is not scheme://host[:port] (http or https)")
    return text


async def create_key(
    redis: Redis,
    *,
    kind: KeyKind,
    origins: Iterable[str] = (),
    creator_id: str | None = None,
    name: str | None = None,
) -> tuple[str, str]:
    """(key_id, secret). The secret is not stored and cannot be shown again.

    A CORS key needs at least one origin; private and admin keys take none, and an admin key
    no creator scope. ValueError otherwise.
    """
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, not {kind!r}")
    allowed = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
    if kind == "cors" and not allowed:
        raise ValueError("a CORS key needs at least one allowed origin")
    if kind != "cors" and allowed:
        raise ValueError(f"a {kind} key takes no origins (it must not be used in browsers)")
    if kind == "admin" and creator_id:
        raise ValueError("an admin key manages every creator's playbacks: it takes no creator")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    digest = hash_secret(secret)
    fields = {
        "id": key_id,
        "sha256": digest,
        "kind": kind,
        "origins": orjson.dumps(list(allowed)).decode(),
        "creator_id": creator_id or "",
        "name": name or "",
        "created_ms": str(time.time_ns() // 1_000_000),
    }
    # The index first and the usable key last: an interrupted create leaves no key that works
    # but cannot be listed or revoked.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(HASH_BY_ID.format(key_id), digest)
        pipe.sadd(KEY_INDEX, key_id)
        pipe.hset(KEY_BY_HASH.format(digest), mapping=fields)  # type: ignore[arg-type]  # redis-py types the mapping invariantly
        await pipe.execute()
    return key_id, secret


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _key(raw: dict[bytes | str, bytes | str]) -> ApiKey | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    kind = fields.get("kind")
    if kind not in KEY_KINDS:
        return None
    return ApiKey(
        key_id=fields.get("id", ""),
        kind=kind,  # checked against KEY_KINDS above
        origins=tuple(orjson.loads(fields.get("origins") or "[]")),
        creator_id=fields.get("creator_id") or None,
        name=fields.get("name") or None,
        created_ms=int(fields.get("created_ms") or 0),
    )


async def list_keys(redis: Redis) -> list[ApiKey]:
    """Every key, without secrets (there are none to show), oldest first."""
    ids = sorted(_text(m) for m in await redis.smembers(KEY_INDEX))
    if not ids:
        return []
    digests = await redis.mget([HASH_BY_ID.format(i) for i in ids])
    async with redis.pipeline(transaction=False) as pipe:
        for digest in digests:
            pipe.hgetall(KEY_BY_HASH.format(_text(digest or "")))
        raws = await pipe.execute()
    keys = [k for k in (_key(raw) for raw in raws) if k is not None]
    return sorted(keys, key=lambda k: (k.created_ms, k.key_id))


async def revoke_key(redis: Redis, key_id: str) -> bool:
    """False when there is no such key. Takes effect on the next request (nothing is cached)."""
    digest = await redis.get(HASH_BY_ID.format(key_id))
    if digest is None:
        return False
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(KEY_BY_HASH.format(_text(digest)))  # unusable first
        pipe.delete(HASH_BY_ID.format(key_id))
        pipe.srem(KEY_INDEX, key_id)
        await pipe.execute()
    return True


def bearer_secret(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when the header is absent.

    AuthError(401) when the header is there but is not a bearer token.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "authorization: expected 'Bearer <API key>'")
    return token


async def lookup_key(redis: Redis, secret: str) -> ApiKey | None:
    """The key whose secret this is, or None."""
    return await _key_by_digest(redis, hash_secret(secret))


async def _key_by_digest(redis: Redis, digest: str) -> ApiKey | None:
    raw = await redis.hgetall(KEY_BY_HASH.format(digest))
    stored = raw.get(b"sha256", raw.get("sha256"))
    if stored is None or not hmac.compare_digest(_text(stored), digest):
        return None
    return _key(raw)


class KnownKeys:
    """`lookup_key` with the keys found remembered for `ttl_s` seconds (0: not remembered)."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._redis = redis
        self._found: TTLCache[str, ApiKey] | None = (
            TTLCache(10_000, ttl_s, timer=time.monotonic) if ttl_s > 0 else None
        )

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_secret(secret)
        if self._found is None:
            return await _key_by_digest(self._redis, digest)
        key = self._found.get(digest)
        if key is None:
            key = await _key_by_digest(self._redis, digest)
            if key is not None:
                self._found[digest] = key
        return key


async def key_by_id(redis: Redis, key_id: str) -> ApiKey | None:
    """The key with this id, or None once it is revoked."""
    digest = await redis.get(HASH_BY_ID.format(key_id))
    if digest is None:
        return None
    raw = await redis.hgetall(KEY_BY_HASH.format(_text(digest)))
    key = _key(raw)
    return key if key is not None and key.key_id == key_id else None


async def issue_live_token(redis: Redis, key: ApiKey, ttl_s: int) -> str:
    """A random token standing for `key` for `ttl_s` seconds (the stream URL's credential)."""
    token = secrets.token_urlsafe(24)
    await redis.set(LIVE_TOKEN.format(hash_secret(token)), key.key_id, ex=ttl_s)
    return token


async def redeem_live_token(redis: Redis, token: str) -> ApiKey | None:
    """The key a live token stands for; None when the token is unknown, expired or its key
    was revoked."""
    key_id = await redis.get(LIVE_TOKEN.format(hash_secret(token)))
    if key_id is None:
        return None
    return await key_by_id(redis, _text(key_id))
