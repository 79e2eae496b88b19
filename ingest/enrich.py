"""Server-side enrichment: what the collector adds to every beacon, never trusted from the client.

* Device, OS and browser come from the request's User-Agent, parsed by `ua-parser` (uap-core's
  maintained regexes, with the `ua-parser-rs` native matcher). uap-core names neither the
  rendering engine nor the CPU, so `browserEngine` and `cpu` come from two small token tables
  below, in the vocabulary of ua-parser-js (Blink, WebKit, Gecko...; amd64, ia32, arm64, arm).
* Location comes from a MaxMind-format database when one is configured, from the trusted CDN
  headers named in `GeoHeaders` when the database has no answer and those headers are trusted,
  and is null otherwise.
* `viewer_hash` is the player's `uid` when it sends one, else a salted hash of
  (domain, user agent, client IP), as Livepeer's `sha256(domain + user_agent + IP)`.

The output names are Livepeer's breakdown dimensions (`dimensions`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import maxminddb
import pygeohash
import ua_parser

from ingest.settings import IngestSettings, IPNetwork

# --- user agent ----------------------------------------------------------------------------------

# Longer user agents are cut before parsing: bounds both the regex work and the memo's memory.
MAX_USER_AGENT_CHARS = 1024
UA_CACHE_SIZE = 8192
GEOHASH_PRECISION = 3

_PARSER = ua_parser.Parser(ua_parser.BestAvailableResolver(ua_parser.load_lazy_builtins()))


@dataclass(frozen=True, slots=True)
class Device:
    device_type: str  # mobile | tablet | desktop | smarttv | console | unknown
    device: str | None  # brand and model, e.g. "Apple iPhone", "Samsung SM-G991B"
    cpu: str | None  # amd64 | ia32 | arm64 | arm, only when the user agent says so
    os: str | None  # family only, e.g. "iOS", "Android", "Windows", "Mac OS X"
    browser: str | None  # family only, e.g. "Chrome", "Mobile Safari", "Firefox"
    browser_engine: str | None  # Blink | WebKit | Gecko | Trident | EdgeHTML | Presto


# First match wins. Every browser on iOS and tvOS is WebKit, whatever its name, so the OS is
# checked before these; "Edge/" (with the e) is the legacy EdgeHTML Edge, Chromium Edge says "Edg/".
_ENGINES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Trident/|MSIE "), "Trident"),
    (re.compile(r"\bEdge/"), "EdgeHTML"),
    (re.compile(r"Presto/"), "Presto"),
    (re.compile(r"\bGecko/"), "Gecko"),  # Chromium and WebKit say "like Gecko)"
    (re.compile(r"Chrome/|Chromium/|CrKey/"), "Blink"),
    (re.compile(r"AppleWebKit/"), "WebKit"),
)
_APPLE_MOBILE_OS = frozenset({"iOS", "iPadOS", "ATV OS X", "tvOS", "watchOS"})

# Architecture tokens, as ua-parser-js reads them. Macs are left out: Apple silicon Macs still
# say "Intel Mac OS X". WOW64 (a 32-bit browser on 64-bit Windows) counts as amd64, the machine.
_CPUS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:aarch64|arm64|armv8l?)\b", re.IGNORECASE), "arm64"),
    (re.compile(r"\b(?:x86_64|x86-64|amd64|x64|win64|wow64)\b", re.IGNORECASE), "amd64"),
    (re.compile(r"\barmv[4-7]\w*|\barmhf\b", re.IGNORECASE), "arm"),
    (re.compile(r"\b(?:i[3-6]86|ia32)\b", re.IGNORECASE), "ia32"),
)

_BOT_DEVICES = frozenset({"Spider"})
_SMARTTV = re.compile(
    r"SMART-?TV|Smart ?TV|HbbTV|Web0S|webOS\.TV|NetCast|Apple ?TV|AppleTV|Roku|BRAVIA|CrKey"
    r"|Android TV|GoogleTV|Google TV|\bAFT[A-Z]|AndroidTV|\bTV Safari",
    re.IGNORECASE,
)
_SMARTTV_OS = frozenset({"ATV OS X", "tvOS", "Roku", "Web0S", "webOS TV", "Tizen"})
_CONSOLE = re.compile(r"PlayStation|Xbox|Nintendo", re.IGNORECASE)
# "Tablet PC" is a Windows touch laptop running IE.
_TABLET = re.compile(r"iPad|\bTablet\b(?! PC)|\bKF[A-Z]{2,}|Kindle|Silk/|PlayBook")
_MOBILE = re.compile(r"Mobile|iPhone|iPod|Windows Phone|Opera Mini|BlackBerry|BB10")
_MOBILE_OS = frozenset({"Android", "iOS", "Windows Phone", "KaiOS", "BlackBerry OS", "Symbian OS"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Chrome OS", "Ubuntu", "Fedora", "Debian", "FreeBSD"}
    | {"OpenBSD", "NetBSD", "Solaris", "Red Hat", "SUSE", "Mint", "Arch Linux", "Gentoo"}
)

# Placeholder models uap-core reports when the UA names none ("K" is Chrome's reduced UA).
_PLACEHOLDER_MODELS = frozenset({"K", "Smartphone", "Tablet", "Feature Phone", "Desktop"})


# Order matters: a TV or console UA often also says "Mobile" or "Android", a tablet "Mobile".
def _device_type(
    ua: str, os: str | None, browser: str | None, device: ua_parser.Device | None
) -> str:
    if _CONSOLE.search(ua):
        return "console"
    if os in _SMARTTV_OS or _SMARTTV.search(ua):
        return "smarttv"
    if _TABLET.search(ua) or (device is not None and device.brand == "Generic_Android_Tablet"):
        return "tablet"
    if os == "Android":
        # Android phones say "Mobile"; tablets leave it out.
        return "mobile" if "Mobile" in ua else "tablet"
    if os in _MOBILE_OS or _MOBILE.search(ua):
        return "mobile"
    if os in _DESKTOP_OS and browser is not None:
        return "desktop"
    return "unknown"


def _device_name(device: ua_parser.Device | None) -> str | None:
    if device is None:
        return None
    brand, model = device.brand, device.model
    if model is None or model in _PLACEHOLDER_MODELS:
        return None
    if brand is None or brand.startswith("Generic") or model.startswith(brand):
        return model
    return f"{brand} {model}"


def _engine(ua: str, os: str | None) -> str | None:
    if os in _APPLE_MOBILE_OS and "AppleWebKit/" in ua:
        return "WebKit"
    return next((engine for pattern, engine in _ENGINES if pattern.search(ua)), None)


def _cpu(ua: str) -> str | None:
    return next((cpu for pattern, cpu in _CPUS if pattern.search(ua)), None)


@functools.lru_cache(maxsize=UA_CACHE_SIZE)
def _parse(ua: str) -> Device:
    result = _PARSER(ua, ua_parser.Domain.ALL)
    os = result.os.family if result.os is not None else None
    browser = result.user_agent.family if result.user_agent is not None else None
    if result.device is not None and result.device.family in _BOT_DEVICES:
        return Device("unknown", None, None, os, browser, None)
    return Device(
        device_type=_device_type(ua, os, browser, result.device),
        device=_device_name(result.device),
        cpu=_cpu(ua),
        os=os,
        browser=browser,
        browser_engine=_engine(ua, os),
    )


def parse_user_agent(user_agent: str) -> Device:
    """The device behind `user_agent`; memoized (bounded LRU), since the same few UAs repeat.

    Crawlers keep their OS and browser family but get device type "unknown" and no device,
    engine or CPU. Unparseable and empty user agents give `Device("unknown", None, ...)`.
    """
    return _parse(user_agent.strip()[:MAX_USER_AGENT_CHARS])


# --- location ------------------------------------------------------------------------------------

# MaxMind's continent of every ISO 3166-1 country (its legacy GeoIP C API's table, plus XK).
_CONTINENT_COUNTRIES = {
    "AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY "
    "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    "AN": "AQ BV GS HM TF",
    "AS": "AE AF AM AZ BD BH BN BT CC CN CX CY GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ "
    "LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TW UZ VN YE",
    "EU": "AD AL AT AX BA BE BG BY CH CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE "
    "LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM TR UA VA XK",
    "NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS "
    "MX NI PA PM PR SV SX TC TT US VC VG VI",
    "OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    "SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}
CONTINENT_OF_COUNTRY: Mapping[str, str] = {
    country: continent
    for continent, countries in _CONTINENT_COUNTRIES.items()
    for country in countries.split()
}
_MAX_HEADER_CHARS = 64
_TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]*")


@dataclass(frozen=True, slots=True)
class Geo:
    continent: str | None  # AF | AN | AS | EU | NA | OC | SA
    country: str | None  # ISO 3166-1 alpha-2
    subdivision: str | None  # region name where known, e.g. "California"
    timezone: str | None  # IANA name
    geohash: str | None  # 3 characters, about 156 km x 156 km


NO_GEO = Geo(None, None, None, None, None)


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _geohash(latitude: object, longitude: object) -> str | None:
    lat, lon = _float(latitude), _float(longitude)
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return pygeohash.encode(lat, lon, precision=GEOHASH_PRECISION)


def _country(code: object) -> str | None:
    if not isinstance(code, str):
        return None
    code = code.strip().upper()
    return code if code in CONTINENT_OF_COUNTRY else None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= _MAX_HEADER_CHARS else None


def _timezone(value: object) -> str | None:
    text = _text(value)
    return text if text is not None and _TIMEZONE.fullmatch(text) else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive; a plain dict may hold lower-case names.
    value = headers.get(name)
    return value if value is not None else headers.get(name.lower())


class GeoLocator:
    """Locates a client by IP address in a MaxMind-format City database, or by CDN headers.

    The database, when `settings.geoip_db` names one, is opened (memory-mapped) in `__init__`,
    which raises `OSError` or `maxminddb.InvalidDatabaseError` if it cannot be: a misconfigured
    collector should not start. `locate` never raises and never blocks on I/O.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self._headers = settings.geo_headers
        self._trust_headers = settings.trust_cdn_geo_headers
        self._reader: maxminddb.Reader | None = (
            maxminddb.open_database(settings.geoip_db) if settings.geoip_db else None
        )

    def locate(self, ip: str | None, headers: Mapping[str, str]) -> Geo:
        """The database's answer for `ip`; failing that, the trusted CDN headers; else `NO_GEO`."""
        geo = self._from_db(ip)
        if geo.country is None and self._trust_headers:
            geo = self._from_headers(headers)
        return geo

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> GeoLocator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _from_db(self, ip: str | None) -> Geo:
        if self._reader is None or not ip:
            return NO_GEO
        try:
            record = self._reader.get(ip)
        except ValueError:  # not an address, or IPv6 in an IPv4-only database
            return NO_GEO
        if not isinstance(record, Mapping):
            return NO_GEO
        country = _country(_dict(record.get("country")).get("iso_code"))
        continent = _dict(record.get("continent")).get("code")
        subdivisions = record.get("subdivisions")
        first = _dict(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
        location = _dict(record.get("location"))
        return Geo(
            continent=_text(continent) or (CONTINENT_OF_COUNTRY.get(country) if country else None),
            country=country,
            subdivision=_text(_dict(first.get("names")).get("en")) or _text(first.get("iso_code")),
            timezone=_timezone(location.get("time_zone")),
            geohash=_geohash(location.get("latitude"), location.get("longitude")),
        )

    def _from_headers(self, headers: Mapping[str, str]) -> Geo:
        names = self._headers
        country = _country(_header(headers, names.country_code))
        return Geo(
            continent=CONTINENT_OF_COUNTRY.get(country) if country else None,
            country=country,
            subdivision=_text(_header(headers, names.subdivision)),
            timezone=_timezone(_header(headers, names.timezone)),
            geohash=_geohash(_header(headers, names.latitude), _header(headers, names.longitude)),
        )


# --- client address and viewer -------------------------------------------------------------------

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str | None) -> _Address | None:
    """Parses "a.b.c.d", "v6", "a.b.c.d:port" and "[v6]:port"; IPv4-mapped IPv6 is unmapped."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: _Address, trusted_proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in trusted_proxies)


# Clients post every few seconds from the same address: answers are memoized, for headers this short.
_MEMO_MAX_FORWARDED_CHARS = 256


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]
) -> str | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Then X-Forwarded-For (several headers joined with ", ") is walked right to left, skipping
    trusted proxies; the first untrusted address is the client. An entry that is not an address
    stops the walk: everything to its left may be forged, so the last trusted hop is returned.
    Returns None only when the peer itself is unknown or not an address.
    """
    if forwarded_for is not None and len(forwarded_for) > _MEMO_MAX_FORWARDED_CHARS:
        return _client_ip(peer, forwarded_for, trusted_proxies)
    return _client_ip_memo(peer, forwarded_for, trusted_proxies)


def _client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]
) -> str | None:
    address = _address(peer)
    if address is None:
        return None
    if forwarded_for and _trusted(address, trusted_proxies):
        for entry in reversed(forwarded_for.split(",")):
            hop = _address(entry)
            if hop is None:
                break
            address = hop
            if not _trusted(hop, trusted_proxies):
                break
    return str(address)


_client_ip_memo = functools.lru_cache(maxsize=8192)(_client_ip)


def viewer_hash(
    uid: str | None, domain: str | None, user_agent: str, ip: str | None, salt: str
) -> str:
    """`uid` when the player sent one, else HMAC-SHA256(salt, [domain, user agent, ip]) in hex.

    The fields are JSON-encoded so that no two different triples collide, and ASCII-escaped so
    that undecodable header bytes (surrogate escapes) hash instead of raising.
    """
    if uid:
        return uid
    message = json.dumps([domain, user_agent, ip], separators=(",", ":"))
    return hmac.new(salt.encode(), message.encode("ascii"), hashlib.sha256).hexdigest()


def dimensions(device: Device, geo: Geo) -> dict[str, str | None]:
    """The enrichment under Livepeer's breakdown-dimension names."""
    return {
        "deviceType": device.device_type,
        "device": device.device,
        "cpu": device.cpu,
        "os": device.os,
        "browser": device.browser,
        "browserEngine": device.browser_engine,
        "continent": geo.continent,
        "country": geo.country,
        "subdivision": geo.subdivision,
        "timezone": geo.timezone,
        "geohash": geo.geohash,
    }
