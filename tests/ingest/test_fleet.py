from __future__ import annotations

import ipaddress
import statistics
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any, Literal

import pytest

from ingest.fleet import (
    BEACON_CONTENT_TYPE,
    CATALOGUE,
    DELTA_FIELDS,
    JSON_CONTENT_TYPE,
    ONCE_FIELDS,
    USER_AGENTS,
    FleetSpec,
    PlayerTimeline,
    plan,
    schedule,
)
from ingest.geodb import DemoNetwork

START_MS = 1_795_441_630_000
# Stand-in networks, so these tests do not depend on the demo table's contents.
NETWORKS = (
    DemoNetwork("198.51.100.0/24", "NA", "US", "Texas", "America/Chicago", 30.27, -97.74),
    DemoNetwork("203.0.113.0/30", "OC", "NZ", "Auckland", "Pacific/Auckland", -36.85, 174.76),
    DemoNetwork("2001:db8:1::/48", "EU", "NL", "North Holland", "Europe/Amsterdam", 52.37, 4.9),
)
# The keys of the captured @livepeer/core payloads (player-payloads/livepeer_*.json), less `uid`.
ENVELOPE_KEYS = {
    "live",
    "session_id",
    "playback_id",
    "protocol",
    "domain",
    "path",
    "params",
    "hash",
    "source_url",
    "player",
    "version",
    "user_agent",
    "events",
}


@pytest.fixture(scope="module")
def fleet() -> tuple[PlayerTimeline, ...]:
    return plan(
        FleetSpec(players=1500, duration_s=300, networks=NETWORKS), seed=11, start_ms=START_MS
    )


def unique_events(timeline: PlayerTimeline) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for send in timeline.sends:
        for event in send.envelope["events"]:
            seen.setdefault(event["id"], event)
    return list(seen.values())


def test_same_seed_same_fleet() -> None:
    spec = FleetSpec(players=40, duration_s=60, networks=NETWORKS)
    assert plan(spec, seed=5, start_ms=START_MS) == plan(spec, seed=5, start_ms=START_MS)
    assert schedule(spec, seed=5, start_ms=START_MS) == schedule(spec, seed=5, start_ms=START_MS)
    assert plan(spec, seed=5, start_ms=START_MS) != plan(spec, seed=6, start_ms=START_MS)


def test_start_ms_only_shifts_client_timestamps() -> None:
    spec = FleetSpec(players=30, duration_s=60, networks=NETWORKS)
    a = schedule(spec, seed=2, start_ms=START_MS)
    b = schedule(spec, seed=2, start_ms=START_MS + 12_345)
    assert [s.offset_ms for s in a] == [s.offset_ms for s in b]
    for x, y in zip(a, b, strict=True):
        assert [e["id"] for e in x.envelope["events"]] == [e["id"] for e in y.envelope["events"]]
        for ex, ey in zip(x.envelope["events"], y.envelope["events"], strict=True):
            assert ey["timestamp"] - ex["timestamp"] == 12_345


def test_schedule_is_in_send_order_and_within_the_run() -> None:
    spec = FleetSpec(players=60, duration_s=45, networks=NETWORKS)
    sends = schedule(spec, seed=1, start_ms=START_MS)
    offsets = [s.offset_ms for s in sends]
    assert offsets == sorted(offsets)
    assert sends
    assert offsets[0] > 0 and offsets[-1] < 45_000


def test_envelopes_are_shaped_like_the_livepeer_player(fleet: tuple[PlayerTimeline, ...]) -> None:
    for timeline in fleet:
        truth = timeline.truth
        for send in timeline.sends:
            env = send.envelope
            assert set(env) - {"uid"} == ENVELOPE_KEYS
            assert list(env)[-1] == "events" and env["events"]
            for key in ENVELOPE_KEYS - {"live", "events"}:
                assert isinstance(env[key], str), key
            assert isinstance(env["live"], bool)
            assert env["session_id"] == truth.session_id
            assert (env["playback_id"], env["live"]) == (truth.playback_id, truth.live)
            assert env.get("uid") == truth.viewer_id
            assert env["events"][-1]["type"] == "heartbeat"
            for event in env["events"]:
                assert isinstance(event["id"], str) and len(event["id"]) == 22
                assert event["id"].isalnum()
                assert isinstance(event["type"], str)
                assert isinstance(event["timestamp"], int) and not isinstance(
                    event["timestamp"], bool
                )
            for beat in (e for e in env["events"] if e["type"] == "heartbeat"):
                for name in DELTA_FIELDS:
                    assert isinstance(beat[name], int) and beat[name] >= 0, name
                assert set(beat) <= {"id", "type", "timestamp", *DELTA_FIELDS, *ONCE_FIELDS}
            for error in (e for e in env["events"] if e["type"] in {"error", "warning"}):
                assert isinstance(error["message"], str) and isinstance(error["category"], str)


def test_headers_carry_the_player_and_its_address(fleet: tuple[PlayerTimeline, ...]) -> None:
    cidrs = {n.country: ipaddress.ip_network(n.cidr) for n in NETWORKS}
    for timeline in fleet:
        truth = timeline.truth
        assert ipaddress.ip_address(truth.client_ip) in cidrs[truth.country]
        for send in timeline.sends:
            assert send.client_ip == truth.client_ip == send.headers["X-Forwarded-For"]
            assert send.headers["User-Agent"] == send.envelope["user_agent"]
            expected = BEACON_CONTENT_TYPE if send.kind == "beacon" else JSON_CONTENT_TYPE
            assert send.headers["Content-Type"] == expected


def test_heartbeats_advance_and_add_up(fleet: tuple[PlayerTimeline, ...]) -> None:
    for timeline in fleet:
        kinds = [s.kind for s in timeline.sends]
        assert kinds.count("beacon") <= 1 and "beacon" not in kinds[:-1]
        beats = [e for e in unique_events(timeline) if e["type"] == "heartbeat"]
        stamps = [b["timestamp"] for b in beats]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        counted = sum(b[f] for b in beats for f in DELTA_FIELDS if f.startswith("time_"))
        assert counted <= timeline.leave_ms - timeline.mount_ms
        for name in ONCE_FIELDS:
            assert sum(name in b for b in beats) <= 1, name
        if timeline.sends:
            last = [s for s in timeline.sends if s.kind != "duplicate"][-1]
            skew = timeline.truth.clock_skew_ms
            assert last.envelope["events"][-1]["timestamp"] == START_MS + last.offset_ms + skew


def test_a_large_fleet_shows_every_behaviour(fleet: tuple[PlayerTimeline, ...]) -> None:
    outcomes = Counter(t.truth.outcome for t in fleet)
    assert set(outcomes) == {
        "no_play",
        "exit_before_start",
        "start_failure",
        "error",
        "ended",
        "left",
    }
    assert {"page_close", "vanished", "run_end"} == {t.truth.closed_by for t in fleet}
    kinds = Counter(s.kind for t in fleet for s in t.sends)
    assert kinds["beacon"] > 0 and kinds["duplicate"] > 0
    assert 0 < sum(t.truth.viewer_id is None for t in fleet) < len(fleet)
    assert any(t.truth.clock_skew_ms != 0 for t in fleet)
    assert len({t.truth.viewer_key for t in fleet}) < len(fleet)  # returning viewers
    assert {t.truth.live for t in fleet} == {True, False}
    assert {t.truth.ua_row for t in fleet} == {u.row_id for u in USER_AGENTS}

    by_type: dict[str, set[str]] = defaultdict(set)
    resent = 0
    for timeline in fleet:
        ids = [
            e["id"] for s in timeline.sends if s.kind != "duplicate" for e in s.envelope["events"]
        ]
        resent += len(ids) - len(set(ids))
        types = {e["type"] for e in unique_events(timeline)}
        by_type[timeline.truth.outcome] |= types
        if timeline.truth.outcome == "exit_before_start":
            assert "first-frame" not in types and "error" not in types
        if timeline.truth.outcome == "start_failure":
            assert "first-frame" not in types
        if timeline.truth.outcome == "no_play":
            assert "play" not in types
    assert resent > 0  # events re-sent inside a later envelope, same ids
    assert "error" in by_type["start_failure"] and "error" in by_type["error"]
    assert "ended" in by_type["ended"] and "seek" in by_type["ended"] | by_type["left"]
    assert "warning" in by_type["left"]


def test_startup_and_rebuffering_are_realistic(fleet: tuple[PlayerTimeline, ...]) -> None:
    beats = [e for t in fleet for e in unique_events(t) if e["type"] == "heartbeat"]
    ttff = sorted(b["play_to_first_frame_ms"] for b in beats if "play_to_first_frame_ms" in b)
    assert 600 <= statistics.median(ttff) <= 2_000
    assert ttff[len(ttff) // 20] >= 200 and ttff[len(ttff) * 19 // 20] <= 6_000
    playing = sum(b["time_playing_ms"] for b in beats)
    rebuffering = sum(b["time_stalled_ms"] + b["time_waiting_ms"] for b in beats)
    assert 0.005 < rebuffering / (playing + rebuffering) < 0.15
    assert sum(b["stalled_count"] for b in beats) > 0 and sum(b["errors"] for b in beats) > 0


def test_catalogue_maps_playbacks_to_assets_streams_and_creators() -> None:
    ids = [e.playback_id for e in CATALOGUE]
    assert len(ids) == len(set(ids))
    vod = next(e for e in CATALOGUE if e.playback_id == "pb-vod-001")
    assert (vod.asset_id, vod.creator_id, vod.live, vod.stream_id) == (
        "asset-001",
        "creator-a",
        False,
        None,
    )
    for entry in CATALOGUE:
        if entry.live:
            assert entry.stream_id and entry.asset_id is None and entry.duration_ms is None
        else:
            assert entry.asset_id and entry.stream_id is None and entry.duration_ms
    assert {e.live for e in CATALOGUE} == {True, False}
    assert len({e.creator_id for e in CATALOGUE}) > 1


def test_live_share_and_catalogue_restrict_the_mix() -> None:
    only_vod = replace(FleetSpec(players=50, duration_s=60, networks=NETWORKS), live_share=0.0)
    assert not any(t.truth.live for t in plan(only_vod, seed=3, start_ms=START_MS))
    live = tuple(e for e in CATALOGUE if e.live)
    only_live = FleetSpec(players=50, duration_s=60, networks=NETWORKS, catalogue=live)
    fleet = plan(only_live, seed=3, start_ms=START_MS)
    assert all(t.truth.live for t in fleet)
    assert not any("duration_ms" in e for t in fleet for e in unique_events(t))


@pytest.mark.parametrize("arrival", ["poisson", "ramp", "burst"])
def test_arrivals_fall_within_the_span(arrival: Literal["poisson", "ramp", "burst"]) -> None:
    spec = FleetSpec(players=200, duration_s=100, arrival=arrival, networks=NETWORKS)
    mounts = [t.mount_ms for t in plan(spec, seed=9, start_ms=START_MS)]
    assert len(mounts) == 200 and all(0 <= m < 75_000 for m in mounts)
    if arrival == "burst":
        assert statistics.median(mounts) < 25_000
    if arrival == "ramp":
        assert statistics.median(mounts) > 37_500


def test_the_demo_networks_are_the_default() -> None:
    from ingest.geodb import DEMO_NETWORKS

    fleet = plan(FleetSpec(players=30, duration_s=30), seed=4, start_ms=START_MS)
    cidrs = [ipaddress.ip_network(n.cidr) for n in DEMO_NETWORKS]
    for t in fleet:
        assert any(ipaddress.ip_address(t.truth.client_ip) in c for c in cidrs)


def test_truth_serialises_with_api_dimension_names() -> None:
    truth = plan(FleetSpec(players=1, duration_s=30, networks=NETWORKS), seed=1, start_ms=START_MS)[
        0
    ].truth
    data = truth.to_json()
    assert {"playbackId", "creatorId", "viewerId", "clientIp", "country", "uaRow", "live"} <= set(
        data
    )
    assert data["sessionId"] == truth.session_id
