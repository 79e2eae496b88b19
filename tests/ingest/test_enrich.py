from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.enrich import (
    CONTINENT_OF_COUNTRY,
    MAX_USER_AGENT_CHARS,
    NO_GEO,
    Device,
    Geo,
    GeoLocator,
    client_ip,
    dimensions,
    parse_user_agent,
    viewer_hash,
)
from ingest.geodb import DemoNetwork, build_db
from ingest.settings import IngestSettings

# --- user agents ---------------------------------------------------------------------------------

UA_CASES = [
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        Device("mobile", "Apple iPhone", None, "iOS", "Mobile Safari", "WebKit"),
        id="iphone-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
        Device("mobile", "Apple iPhone", None, "iOS", "Chrome Mobile iOS", "WebKit"),
        id="iphone-chrome-is-webkit",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        Device("mobile", "Samsung SM-G991B", None, "Android", "Chrome Mobile", "Blink"),
        id="android-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
        Device("mobile", "Google Pixel 8", None, "Android", "Chrome Mobile WebView", "Blink"),
        id="android-webview",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36",
        Device("mobile", None, None, "Android", "Chrome Mobile", "Blink"),
        id="android-reduced-ua-has-no-model",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
        Device("mobile", None, None, "Android", "Firefox Mobile", "Gecko"),
        id="android-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        Device("tablet", "Apple iPad", None, "iOS", "Mobile Safari", "WebKit"),
        id="ipad",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        Device("tablet", "SM-X700", None, "Android", "Chrome", "Blink"),
        id="android-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/124.2.1 like Chrome/124.0.6367.82 Safari/537.36",
        Device("tablet", "Amazon Kindle", None, "Android", "Amazon Silk", "Blink"),
        id="kindle-fire",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        Device("desktop", None, "amd64", "Windows", "Chrome", "Blink"),
        id="windows-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
        Device("desktop", None, "amd64", "Windows", "Edge", "Blink"),
        id="windows-edge",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        Device("desktop", None, "amd64", "Windows", "Firefox", "Gecko"),
        id="windows-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
        Device("desktop", None, "amd64", "Windows", "IE", "Trident"),
        id="windows-ie11-wow64",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0; Touch; "
        "Tablet PC 2.0)",
        Device("desktop", None, "amd64", "Windows", "IE", "Trident"),
        id="windows-touch-laptop-is-no-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        Device("desktop", "Apple Mac", None, "Mac OS X", "Safari", "WebKit"),
        id="macos-safari-no-cpu",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        Device("desktop", None, "amd64", "Linux", "Firefox", "Gecko"),
        id="linux-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux aarch64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        Device("desktop", None, "arm64", "Linux", "Chrome", "Blink"),
        id="linux-arm64-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        Device("desktop", None, "arm", "Linux", "Chrome", "Blink"),
        id="linux-armv7-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux i686; rv:109.0) Gecko/20100101 Firefox/115.0",
        Device("desktop", None, "ia32", "Linux", "Firefox", "Gecko"),
        id="linux-i686-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        Device("desktop", None, "amd64", "Chrome OS", "Chrome", "Blink"),
        id="chromebook",
    ),
    pytest.param(
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        Device("smarttv", "Samsung SMART-TV", None, "Tizen", "Samsung Internet", "Blink"),
        id="samsung-tizen-tv",
    ),
    pytest.param(
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/87.0.4280.88 Safari/537.36 WebAppManager",
        Device("smarttv", "LG Web0S SmartTV", None, "Web0S", "Chrome", "Blink"),
        id="lg-webos-tv",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7633; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36",
        Device("smarttv", "AFTMM", None, "Android", "Chrome Mobile WebView", "Blink"),
        id="fire-tv-says-mobile",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 12; Chromecast) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/108.0.5359.128 Safari/537.36 CrKey/1.56.500000 DeviceType/AndroidTV",
        Device("smarttv", "Google AndroidTV", None, "Chromecast Linux", "Chrome", "Blink"),
        id="chromecast-google-tv",
    ),
    pytest.param(
        "Roku/DVP-12.5 (12.5.0.4178-46)",
        Device("smarttv", "Roku", None, "Roku", "Roku", None),
        id="roku",
    ),
    pytest.param(
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0 Safari/605.1.15",
        Device("console", "Sony PlayStation 5", None, None, "Safari", "WebKit"),
        id="playstation-5",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
        Device("console", None, "amd64", "Windows", "Edge", "EdgeHTML"),
        id="xbox-legacy-edge",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        Device("unknown", None, None, None, "Googlebot", None),
        id="googlebot",
    ),
    pytest.param("curl/8.5.0", Device("unknown", None, None, None, "curl", None), id="curl"),
    pytest.param(
        "ExoPlayerLib/2.19.1", Device("unknown", None, None, None, None, None), id="unparseable"
    ),
    pytest.param("", Device("unknown", None, None, None, None, None), id="empty"),
    pytest.param("   ", Device("unknown", None, None, None, None, None), id="blank"),
]


@pytest.mark.parametrize(("user_agent", "expected"), UA_CASES)
def test_parse_user_agent(user_agent: str, expected: Device) -> None:
    assert parse_user_agent(user_agent) == expected


def test_parse_user_agent_is_memoized() -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
    assert parse_user_agent(ua) is parse_user_agent(ua)


def test_huge_user_agent_is_cut_not_choked_on() -> None:
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    )
    padded = chrome + " " + "x" * (10 * MAX_USER_AGENT_CHARS)
    assert parse_user_agent(padded) == parse_user_agent(chrome)


@given(st.text(max_size=300))
def test_any_user_agent_parses(user_agent: str) -> None:
    device = parse_user_agent(user_agent)
    assert device.device_type in {"mobile", "tablet", "desktop", "smarttv", "console", "unknown"}


# --- location ------------------------------------------------------------------------------------

NETWORKS = (
    DemoNetwork("23.10.0.0/16", "NA", "US", "California", "America/Los_Angeles", 37.77, -122.42),
    DemoNetwork("126.70.0.0/16", "AS", "JP", "Tokyo", "Asia/Tokyo", 35.68, 139.69),
    DemoNetwork("2001:db8:1::/48", "EU", "DE", "Berlin", "Europe/Berlin", 52.52, 13.40),
)
CALIFORNIA = Geo("NA", "US", "California", "America/Los_Angeles", "9q8")
TOKYO = Geo("AS", "JP", "Tokyo", "Asia/Tokyo", "xn7")
BERLIN = Geo("EU", "DE", "Berlin", "Europe/Berlin", "u33")

CDN_HEADERS = {
    "X-City-Country-Code": "br",
    "X-Region-Name": "Sao Paulo",
    "X-Time-Zone": "America/Sao_Paulo",
    "X-Latitude": "-23.55",
    "X-Longitude": "-46.63",
}
SAO_PAULO = Geo("SA", "BR", "Sao Paulo", "America/Sao_Paulo", "6gy")


@pytest.fixture(scope="module")
def geo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("geo") / "city.mmdb", NETWORKS)


def locator(db: Path | None = None, *, trust_headers: bool = False) -> GeoLocator:
    settings = IngestSettings(geoip_db=str(db) if db else None, trust_cdn_geo_headers=trust_headers)
    return GeoLocator(settings)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("23.10.200.1", CALIFORNIA),
        ("126.70.0.9", TOKYO),
        ("2001:db8:1:ffff::1", BERLIN),
        ("23.11.0.1", NO_GEO),
        ("2001:db8:2::1", NO_GEO),
        ("not an ip", NO_GEO),
        ("", NO_GEO),
        (None, NO_GEO),
    ],
)
def test_locate_in_database(geo_db: Path, ip: str | None, expected: Geo) -> None:
    with locator(geo_db) as geo:
        assert geo.locate(ip, CDN_HEADERS) == expected  # headers untrusted: ignored


def test_database_miss_falls_back_to_trusted_headers(geo_db: Path) -> None:
    with locator(geo_db, trust_headers=True) as geo:
        assert geo.locate("23.10.0.1", CDN_HEADERS) == CALIFORNIA  # the database wins
        assert geo.locate("9.9.9.9", CDN_HEADERS) == SAO_PAULO


def test_no_database_and_trusted_headers() -> None:
    with locator(trust_headers=True) as geo:
        assert geo.locate("23.10.0.1", CDN_HEADERS) == SAO_PAULO
        lower_case = {name.lower(): value for name, value in CDN_HEADERS.items()}
        assert geo.locate(None, lower_case) == SAO_PAULO
        assert geo.locate(None, {}) == NO_GEO


def test_no_database_and_untrusted_headers() -> None:
    with locator() as geo:
        assert geo.locate("23.10.0.1", CDN_HEADERS) == NO_GEO


def test_header_names_come_from_settings() -> None:
    settings = IngestSettings(trust_cdn_geo_headers=True)
    names = replace(settings.geo_headers, country_code="CF-IPCountry")
    geo = GeoLocator(replace(settings, geo_headers=names))
    assert geo.locate(None, {"CF-IPCountry": "NG"}) == Geo("AF", "NG", None, None, None)
    geo.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"X-Latitude": "north"}, replace(SAO_PAULO, geohash=None)),
        ({"X-Latitude": "91"}, replace(SAO_PAULO, geohash=None)),
        ({"X-Longitude": "nan"}, replace(SAO_PAULO, geohash=None)),
        ({"X-Longitude": "inf"}, replace(SAO_PAULO, geohash=None)),
        ({"X-Longitude": ""}, replace(SAO_PAULO, geohash=None)),
        ({"X-City-Country-Code": "XX"}, replace(SAO_PAULO, continent=None, country=None)),
        ({"X-City-Country-Code": "Brazil"}, replace(SAO_PAULO, continent=None, country=None)),
        ({"X-Time-Zone": "<script>"}, replace(SAO_PAULO, timezone=None)),
        ({"X-Region-Name": "  "}, replace(SAO_PAULO, subdivision=None)),
        ({"X-Region-Name": "x" * 65}, replace(SAO_PAULO, subdivision=None)),
    ],
)
def test_malformed_headers_are_dropped_not_fatal(overrides: dict[str, str], expected: Geo) -> None:
    with locator(trust_headers=True) as geo:
        assert geo.locate(None, {**CDN_HEADERS, **overrides}) == expected


def test_close_is_idempotent(geo_db: Path) -> None:
    geo = locator(geo_db)
    geo.close()
    geo.close()
    assert geo.locate("23.10.0.1", {}) == NO_GEO


def test_every_country_has_a_maxmind_continent() -> None:
    assert len(CONTINENT_OF_COUNTRY) == 250  # ISO 3166-1 plus Kosovo (XK)
    assert set(CONTINENT_OF_COUNTRY.values()) == {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
    assert CONTINENT_OF_COUNTRY["RU"] == "EU"
    assert CONTINENT_OF_COUNTRY["EG"] == "AF"


# --- client address ------------------------------------------------------------------------------

PROXIES = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("192.0.2.7/32"),
    ipaddress.ip_network("fd00::/8"),
)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.5", None, "203.0.113.5", id="no-xff"),
        pytest.param("203.0.113.5", "1.2.3.4", "203.0.113.5", id="xff-from-untrusted-peer"),
        pytest.param("10.0.0.1", None, "10.0.0.1", id="trusted-peer-no-xff"),
        pytest.param("10.0.0.1", "", "10.0.0.1", id="trusted-peer-empty-xff"),
        pytest.param("10.0.0.1", "1.2.3.4", "1.2.3.4", id="one-proxy"),
        pytest.param(
            "10.0.0.1", "6.6.6.6, 1.2.3.4, 192.0.2.7, 10.1.1.1", "1.2.3.4", id="proxy-chain"
        ),
        pytest.param("10.0.0.1", "10.2.2.2, 10.3.3.3", "10.2.2.2", id="all-trusted"),
        pytest.param("10.0.0.1", "1.2.3.4, garbage", "10.0.0.1", id="garbage-stops-at-peer"),
        pytest.param("10.0.0.1", "1.2.3.4, 999.1.1.1, 10.9.9.9", "10.9.9.9", id="garbage-mid"),
        pytest.param("10.0.0.1", " , ,", "10.0.0.1", id="empty-entries"),
        pytest.param("10.0.0.1", "1.2.3.4:5678", "1.2.3.4", id="v4-with-port"),
        pytest.param("fd00::1", "2001:db8::9", "2001:db8::9", id="ipv6-proxy"),
        pytest.param("fd00::1", "[2001:db8::9]:443, fd12::3", "2001:db8::9", id="ipv6-with-port"),
        pytest.param("::ffff:10.0.0.1", "1.2.3.4", "1.2.3.4", id="ipv4-mapped-peer"),
        pytest.param("10.0.0.1", "::ffff:1.2.3.4", "1.2.3.4", id="ipv4-mapped-client"),
        pytest.param("2001:DB8::0:1", None, "2001:db8::1", id="normalized"),
        pytest.param(None, "1.2.3.4", None, id="no-peer"),
        pytest.param("unix-socket", "1.2.3.4", None, id="peer-not-an-address"),
    ],
)
def test_client_ip(peer: str | None, forwarded_for: str | None, expected: str | None) -> None:
    assert client_ip(peer, forwarded_for, PROXIES) == expected


def test_no_trusted_proxies_means_xff_is_ignored() -> None:
    assert client_ip("10.0.0.1", "1.2.3.4", ()) == "10.0.0.1"


@given(st.text(max_size=200))
def test_forwarded_for_garbage_never_raises(forwarded_for: str) -> None:
    ip = client_ip("10.0.0.1", forwarded_for, PROXIES)
    assert ip is not None
    ipaddress.ip_address(ip)


# --- viewer hash and dimensions ------------------------------------------------------------------

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def test_uid_is_the_viewer() -> None:
    assert viewer_hash("user-42", "example.com", UA, "1.2.3.4", "salt") == "user-42"


def test_viewer_hash_is_a_deterministic_salted_digest() -> None:
    h = viewer_hash(None, "example.com", UA, "1.2.3.4", "salt")
    assert len(h) == 64
    assert int(h, 16) >= 0
    assert h == viewer_hash("", "example.com", UA, "1.2.3.4", "salt")
    assert h != viewer_hash(None, "example.com", UA, "1.2.3.4", "pepper")
    assert h != viewer_hash(None, "example.com", UA, "1.2.3.5", "salt")
    assert h != viewer_hash(None, "example.com", UA, None, "salt")
    assert h != viewer_hash(None, "example.org", UA, "1.2.3.4", "salt")
    assert h != viewer_hash(None, "example.com", UA + " ", "1.2.3.4", "salt")


def test_viewer_hash_fields_cannot_run_together() -> None:
    assert viewer_hash(None, "ab", "c", None, "s") != viewer_hash(None, "a", "bc", None, "s")


def test_viewer_hash_survives_undecodable_header_bytes() -> None:
    assert len(viewer_hash(None, None, "bad \udcff bytes", "1.2.3.4", "salt")) == 64


def test_dimensions_use_livepeer_names() -> None:
    device = Device("mobile", "Apple iPhone", None, "iOS", "Mobile Safari", "WebKit")
    assert dimensions(device, CALIFORNIA) == {
        "deviceType": "mobile",
        "device": "Apple iPhone",
        "cpu": None,
        "os": "iOS",
        "browser": "Mobile Safari",
        "browserEngine": "WebKit",
        "continent": "NA",
        "country": "US",
        "subdivision": "California",
        "timezone": "America/Los_Angeles",
        "geohash": "9q8",
    }
