"""Small MaxMind-format (GeoIP2 City-style) databases for tests and the local demo.

The records carry only what `ingest.enrich.GeoLocator` reads::

    {"continent": {"code": "NA"},
     "country": {"iso_code": "US"},
     "subdivisions": [{"names": {"en": "California"}}],
     "location": {"time_zone": "America/Los_Angeles", "latitude": 37.77, "longitude": -122.42}}

The tree is IPv6 with IPv4 networks stored under ``::/96`` (`ipv4_compatible`), which is where
maxminddb looks IPv4 addresses up in an IPv6 database, as in MaxMind's own City databases.
Unlike those, there is no alias for IPv4-mapped addresses (``::ffff:a.b.c.d``);
`ingest.enrich.client_ip` unmaps them before a lookup.

`mmdb-writer` (and its `netaddr`) is imported only by `build_db`, so the rest of the collector
imports this module without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class DemoNetwork:
    cidr: str
    continent: str  # MaxMind continent code: AF, AN, AS, EU, NA, OC, SA
    country: str  # ISO 3166-1 alpha-2
    subdivision: str  # English name, as CDN region headers carry it
    timezone: str  # IANA name
    latitude: float
    longitude: float


# Arbitrary public-looking ranges, one per place; the demo's simulated players pick addresses
# from them and send them in X-Forwarded-For through a trusted proxy.
DEMO_NETWORKS: tuple[DemoNetwork, ...] = (
    DemoNetwork("23.10.0.0/16", "NA", "US", "California", "America/Los_Angeles", 37.77, -122.42),
    DemoNetwork("23.20.0.0/16", "NA", "US", "New York", "America/New_York", 40.71, -74.01),
    DemoNetwork("45.160.12.0/24", "NA", "MX", "Mexico City", "America/Mexico_City", 19.43, -99.13),
    DemoNetwork("45.170.0.0/16", "SA", "BR", "Sao Paulo", "America/Sao_Paulo", -23.55, -46.63),
    DemoNetwork("51.140.0.0/16", "EU", "GB", "England", "Europe/London", 51.51, -0.13),
    DemoNetwork("62.150.0.0/16", "EU", "DE", "Berlin", "Europe/Berlin", 52.52, 13.40),
    DemoNetwork("80.12.40.0/24", "EU", "FR", "Ile-de-France", "Europe/Paris", 48.86, 2.35),
    DemoNetwork("103.21.0.0/16", "AS", "IN", "Maharashtra", "Asia/Kolkata", 19.08, 72.88),
    DemoNetwork("126.70.0.0/16", "AS", "JP", "Tokyo", "Asia/Tokyo", 35.68, 139.69),
    DemoNetwork("1.120.0.0/16", "OC", "AU", "New South Wales", "Australia/Sydney", -33.87, 151.21),
    DemoNetwork("105.112.0.0/16", "AF", "NG", "Lagos", "Africa/Lagos", 6.52, 3.38),
    DemoNetwork("41.160.0.0/16", "AF", "ZA", "Gauteng", "Africa/Johannesburg", -26.20, 28.05),
    DemoNetwork("2a02:c7c:1000::/48", "EU", "GB", "Scotland", "Europe/London", 55.95, -3.19),
)


def _record(network: DemoNetwork) -> dict[str, Any]:
    return {
        "continent": {"code": network.continent},
        "country": {"iso_code": network.country},
        "subdivisions": [{"names": {"en": network.subdivision}}],
        "location": {
            "time_zone": network.timezone,
            "latitude": float(network.latitude),
            "longitude": float(network.longitude),
        },
    }


def build_db(path: str | Path, networks: Iterable[DemoNetwork] = DEMO_NETWORKS) -> Path:
    """Write a database holding `networks` to `path` (replacing it) and return the path."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="Playpulse-Demo-City",
        languages=["en"],
        description="Playpulse demo networks",
    )
    for network in networks:
        writer.insert_network(IPSet([network.cidr]), _record(network))
    path = Path(path)
    writer.to_db_file(str(path))
    return path
