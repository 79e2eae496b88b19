from __future__ import annotations

import ipaddress
from pathlib import Path

import maxminddb
import pytest

from ingest.enrich import CONTINENT_OF_COUNTRY, Geo, GeoLocator
from ingest.geodb import DEMO_NETWORKS, DemoNetwork, build_db
from ingest.settings import IngestSettings

MAXMIND_CONTINENTS = {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("geo") / "demo.mmdb")


def first_host(network: DemoNetwork) -> str:
    return str(next(ipaddress.ip_network(network.cidr).hosts()))


def test_demo_networks_are_sane() -> None:
    networks = [ipaddress.ip_network(n.cidr) for n in DEMO_NETWORKS]
    assert len(DEMO_NETWORKS) >= 12
    assert {n.continent for n in DEMO_NETWORKS} >= MAXMIND_CONTINENTS - {"AN"}
    assert any(net.version == 6 for net in networks)
    assert all(net.is_global for net in networks if net.version == 4)
    for i, a in enumerate(networks):
        assert all(not a.overlaps(b) for b in networks[i + 1 :] if a.version == b.version)
    for n in DEMO_NETWORKS:
        assert CONTINENT_OF_COUNTRY[n.country] == n.continent


@pytest.mark.parametrize("network", DEMO_NETWORKS, ids=lambda n: f"{n.country}-{n.subdivision}")
def test_maxminddb_reads_city_records(demo_db: Path, network: DemoNetwork) -> None:
    with maxminddb.open_database(str(demo_db)) as reader:
        assert reader.metadata().ip_version == 6
        assert reader.get(first_host(network)) == {
            "continent": {"code": network.continent},
            "country": {"iso_code": network.country},
            "subdivisions": [{"names": {"en": network.subdivision}}],
            "location": {
                "time_zone": network.timezone,
                "latitude": network.latitude,
                "longitude": network.longitude,
            },
        }


@pytest.mark.parametrize("mode", [maxminddb.MODE_AUTO, maxminddb.MODE_MEMORY, maxminddb.MODE_FILE])
def test_ipv4_lookups_work_in_the_ipv6_tree(demo_db: Path, mode: int) -> None:
    with maxminddb.open_database(str(demo_db), mode) as reader:
        record = reader.get("23.10.1.2")
        assert isinstance(record, dict)
        assert record["country"] == {"iso_code": "US"}
        assert reader.get("23.9.255.255") is None
        assert reader.get("8.8.8.8") is None
        assert reader.get("::1") is None


@pytest.mark.parametrize("network", DEMO_NETWORKS, ids=lambda n: f"{n.country}-{n.subdivision}")
def test_locator_on_demo_db(demo_db: Path, network: DemoNetwork) -> None:
    with GeoLocator(IngestSettings(geoip_db=str(demo_db))) as geo:
        found = geo.locate(first_host(network), {})
    assert found == Geo(
        continent=network.continent,
        country=network.country,
        subdivision=network.subdivision,
        timezone=network.timezone,
        geohash=found.geohash,
    )
    assert found.geohash is not None and len(found.geohash) == 3


def test_build_db_takes_custom_networks_and_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "one.mmdb"
    build_db(path)
    only = DemoNetwork(
        "198.51.100.0/24", "OC", "NZ", "Auckland", "Pacific/Auckland", -36.85, 174.76
    )
    assert build_db(str(path), [only]) == path
    with maxminddb.open_database(str(path)) as reader:
        assert reader.get("23.10.1.2") is None
        record = reader.get("198.51.100.20")
        assert isinstance(record, dict)
        assert record["country"] == {"iso_code": "NZ"}
