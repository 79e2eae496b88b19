"""A fleet of synthetic `@livepeer/core` players, planned ahead: what each one POSTs, and when.

Pure and deterministic: no I/O, no clock, no global `random`. `plan(spec, seed=..., start_ms=...)`
returns every player's timeline; the same seed gives the same players, ids and offsets, and
`start_ms` only shifts the client timestamps. `ingest.simulate` does the sending.

The envelopes copy what the player really sends (the captures in research/player-payloads/):
an envelope every 5 s carrying the media events buffered since the last one and a heartbeat with
*delta* counters, send-once fields on the first heartbeat that knows them, and on page close a
final sendBeacon (text/plain) with the partial interval's heartbeat. Each `ScheduledSend` also
carries `truth`: what the simulator knows about the player independently of the collector.
"""

from __future__ import annotations

import ipaddress
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ingest.geodb import DEMO_NETWORKS, DemoNetwork

HEARTBEAT_INTERVAL_MS = 5_000
# Heartbeat counters: deltas since the previous heartbeat, in the order the player lists them.
DELTA_FIELDS = (
    "errors",
    "warnings",
    "stalled_count",
    "waiting_count",
    "time_errored_ms",
    "time_warning_ms",
    "time_stalled_ms",
    "time_playing_ms",
    "time_waiting_ms",
)
# Send-once fields in the order the real heartbeat lists them.
ONCE_FIELDS = (
    "autoplay_status",
    "mount_to_play_ms",
    "mount_to_first_frame_ms",
    "play_to_first_frame_ms",
    "duration_ms",
    "offset_ms",
    "video_height_px",
    "video_width_px",
    "player_height_px",
    "player_width_px",
    "window_height_px",
    "window_width_px",
)
JSON_CONTENT_TYPE = "application/json"
BEACON_CONTENT_TYPE = "text/plain;charset=UTF-8"
CDN = "https://cdn.playpulse.example"
_NANOID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PLAYER_VERSIONS = ("@livepeer/core@3.3.1", "@livepeer/core@3.3.1", "@livepeer/core@3.2.4")
# player kind -> (source MIME, source URL path template, median TTFF ms)
_PROTOCOLS = {
    "hls": ("application/vnd.apple.mpegurl", "/hls/{}/index.m3u8", 1300.0),
    "webrtc": ("video/h264", "/webrtc/{}", 800.0),
    "video": ("video/mp4", "/hls/{}/static720p0.mp4", 600.0),
}

Outcome = Literal["no_play", "exit_before_start", "start_failure", "error", "ended", "left"]
ClosedBy = Literal["page_close", "vanished", "run_end"]
SendKind = Literal["heartbeat", "beacon", "duplicate"]


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One playback ID; field names match `ingest.registry.Playback` so the demo can register it."""

    playback_id: str
    creator_id: str
    live: bool
    asset_id: str | None = None
    stream_id: str | None = None
    duration_ms: int | None = None  # VOD length
    popularity: float = 1.0  # relative weight among entries of the same kind (live or VOD)


def _vod(n: int, creator: str, duration_ms: int, popularity: float) -> CatalogueEntry:
    return CatalogueEntry(
        f"pb-vod-{n:03}",
        creator,
        False,
        asset_id=f"asset-{n:03}",
        duration_ms=duration_ms,
        popularity=popularity,
    )


def _live(n: int, creator: str, popularity: float) -> CatalogueEntry:
    return CatalogueEntry(
        f"pb-live-{n:03}", creator, True, stream_id=f"stream-{n:03}", popularity=popularity
    )


# Short VODs so that even a one-minute run has viewers reaching `ended`.
CATALOGUE: tuple[CatalogueEntry, ...] = (
    _vod(1, "creator-a", 24_000, 5.0),
    _vod(2, "creator-a", 45_000, 3.0),
    _vod(3, "creator-b", 95_000, 2.0),
    _vod(4, "creator-c", 180_000, 1.5),
    _vod(5, "creator-b", 600_000, 1.0),
    _live(1, "creator-a", 6.0),
    _live(2, "creator-c", 2.0),
    _live(3, "creator-d", 1.0),
)


@dataclass(frozen=True, slots=True)
class UserAgent:
    row_id: str
    user_agent: str
    device_type: str  # what a UA parser should call it: mobile | tablet | desktop | tv
    weight: float
    window_px: tuple[int, int]  # (width, height)


# row id, device type (what a UA parser should call it), weight, window size, user agent
_UA_ROWS = """
iphone-safari    mobile   18  390x844    Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1
android-chrome   mobile   22  412x915    Mozilla/5.0 (Linux; Android 13; SM-S901B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0.0.0 Mobile Safari/537.36
ipad-safari      tablet    4  820x1180   Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1
android-tablet   tablet    3  1138x712   Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36
windows-chrome   desktop  20  1536x864   Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36
windows-edge     desktop   6  1536x864   Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0
windows-firefox  desktop   4  1920x1080  Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0
macos-safari     desktop   6  1440x900   Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15
macos-chrome     desktop   8  1728x1117  Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36
linux-firefox    desktop   2  1920x1080  Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0
chromeos-chrome  desktop   2  1366x768   Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36
tizen-tv         tv        2  1920x1080  Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36
"""


def _ua(row: str) -> UserAgent:
    row_id, device_type, weight, size, user_agent = row.split(maxsplit=4)
    width, height = size.split("x")
    return UserAgent(row_id, user_agent, device_type, float(weight), (int(width), int(height)))


USER_AGENTS: tuple[UserAgent, ...] = tuple(_ua(row) for row in _UA_ROWS.strip().splitlines())


@dataclass(frozen=True, slots=True)
class BehaviourMix:
    """Shares are per session unless named otherwise; rates are per minute of playing."""

    uid_share: float = 0.6  # viewers whose page passes a viewerId (`uid`)
    returning_share: float = 0.15  # sessions by an already-seen viewer (same uid, IP and UA)
    skewed_clock_share: float = 0.2  # viewers whose clock is off (normal, sigma below)
    clock_skew_sigma_ms: float = 20_000.0
    no_play_share: float = 0.04  # mount and leave without pressing play: not a view
    autoplay_share: float = 0.4
    start_failure_share: float = 0.03  # fatal error before the first frame (video start failure)
    exit_before_start_share: float = 0.05  # leave during a slow startup (EBVS)
    fatal_errors_per_min: float = 0.02
    median_watch_s: float = 90.0  # intended watch time, lognormal (sigma 1)
    page_close_share: float = 0.75  # leave with a sendBeacon; the others vanish silently
    resend_share: float = 0.03  # sends the player thinks failed: re-sent inside the next envelope
    duplicate_share: float = 0.01  # envelopes POSTed twice verbatim about a second apart


@dataclass(frozen=True, slots=True)
class FleetSpec:
    players: int = 50  # player instances, one session each
    duration_s: float = 120.0  # nothing is sent at or after this offset
    live_share: float = 0.5
    # Arrivals in the first `arrival_span` of the run: "poisson" (uniform rate), "ramp" (rate
    # rising linearly) or "burst" (a flash crowd decaying exponentially).
    arrival: Literal["poisson", "ramp", "burst"] = "poisson"
    arrival_span: float = 0.75
    catalogue: tuple[CatalogueEntry, ...] = CATALOGUE
    user_agents: tuple[UserAgent, ...] = USER_AGENTS
    networks: tuple[DemoNetwork, ...] = DEMO_NETWORKS
    mix: BehaviourMix = field(default_factory=BehaviourMix)


@dataclass(frozen=True, slots=True)
class Truth:
    """What the simulator knows about a session, independent of the collector's enrichment."""

    session_id: str
    viewer_key: str  # stable per simulated viewer, with or without uid
    viewer_id: str | None  # the envelope's `uid`
    playback_id: str
    creator_id: str
    asset_id: str | None
    stream_id: str | None
    live: bool
    client_ip: str
    continent: str
    country: str
    subdivision: str
    timezone: str
    ua_row: str
    device_type: str
    clock_skew_ms: int
    outcome: Outcome
    closed_by: ClosedBy

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, as the query API names the dimensions (`playbackId`, `viewerId`...)."""
        return {_camel(k): v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class ScheduledSend:
    offset_ms: int  # since the run start, in real (server) time
    client_ip: str
    headers: dict[str, str]  # X-Forwarded-For, User-Agent, Origin, Content-Type
    envelope: dict[str, Any]
    truth: Truth
    kind: SendKind


@dataclass(frozen=True, slots=True)
class PlayerTimeline:
    truth: Truth
    mount_ms: int
    leave_ms: int
    sends: tuple[ScheduledSend, ...]


@dataclass(frozen=True, slots=True)
class _Viewer:
    key: str
    uid: str | None
    ua: UserAgent
    network: DemoNetwork
    ip: str
    skew_ms: int
    rebuffers_per_min: float
    stall_median_ms: float
    ttff_factor: float


# name, share, rebuffers per playing minute, median rebuffer ms, TTFF multiplier
_QUALITY = (
    ("good", 0.7, 0.15, 700.0, 1.0),
    ("fair", 0.2, 0.8, 1500.0, 1.5),
    ("poor", 0.1, 3.0, 3000.0, 2.5),
)
_START_ERRORS = (
    ("unknown", "Unknown error loading video"),
    ("unknown", "Failed to load the HLS manifest"),
    ("access-control", "Access control: the playback policy rejected this viewer"),
    ("permissions", "NotAllowedError: play() failed because the user didn't interact"),
)
_PLAY_ERRORS = (("unknown", "Media decode error"), ("unknown", "Unknown error loading video"))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def nanoid(rng: random.Random, size: int = 22) -> str:
    return "".join(rng.choices(_NANOID_ALPHABET, k=size))


def _lognormal_ms(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma))))


def _host(rng: random.Random, cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses <= 2:
        return str(net[0])
    return str(net[rng.randrange(1, net.num_addresses - 1)])


def _new_viewer(rng: random.Random, spec: FleetSpec, n: int) -> _Viewer:
    mix = spec.mix
    ua = rng.choices(spec.user_agents, weights=[u.weight for u in spec.user_agents])[0]
    network = rng.choice(spec.networks)
    skew = 0
    if rng.random() < mix.skewed_clock_share:
        skew = round(rng.gauss(0.0, mix.clock_skew_sigma_ms))
        if rng.random() < 0.05:  # a badly set clock
            skew = rng.choice((-1, 1)) * rng.randrange(600_000, 7_200_000)
    quality = rng.choices(_QUALITY, weights=[q[1] for q in _QUALITY])[0]
    _, _, rebuffers, stall_ms, ttff_factor = quality
    uid = f"u-{nanoid(rng, 10)}" if rng.random() < mix.uid_share else None
    return _Viewer(
        f"viewer-{n:05}",
        uid,
        ua,
        network,
        _host(rng, network.cidr),
        skew,
        rebuffers,
        stall_ms,
        ttff_factor,
    )


def _arrivals(rng: random.Random, spec: FleetSpec) -> list[int]:
    span = max(1.0, spec.duration_s * 1000 * spec.arrival_span)
    out = []
    for _ in range(spec.players):
        u = rng.random()
        if spec.arrival == "ramp":
            t = span * math.sqrt(u)
        elif spec.arrival == "burst":
            t = min(span - 1, -math.log(1.0 - u) * span / 4)
        else:
            t = span * u
        out.append(int(t))
    return sorted(out)


class _Track:
    """A session's history in real-time ms: counted spans, counter bumps, media events, values."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int, str]] = []  # [start, end) in a `time_*_ms` field
        self.counts: list[tuple[int, str]] = []
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.values: list[tuple[int, str, Any]] = []  # send-once fields, from when known

    def span(self, start: int, end: int, field_name: str) -> None:
        if end > start:
            self.spans.append((start, end, field_name))

    def event(self, t: int, type_: str, **payload: Any) -> None:
        self.events.append((t, {"type": type_, **payload}))


def _simulate(
    rng: random.Random,
    spec: FleetSpec,
    viewer: _Viewer,
    entry: CatalogueEntry,
    kind: str,
    mount: int,
    track: _Track,
) -> tuple[int, Outcome]:
    """Plays one session into `track`; returns when the viewer leaves and why."""
    mix = spec.mix
    autoplay = rng.random() < mix.autoplay_share
    track.values.append((mount, "autoplay_status", "autoplay" if autoplay else "none"))
    w, h = viewer.ua.window_px
    pw = w if viewer.ua.device_type in {"mobile", "tv"} else min(w - 64, 1280)
    track.values += [(mount, "player_height_px", pw * 9 // 16), (mount, "player_width_px", pw)]
    track.values += [(mount, "window_height_px", h), (mount, "window_width_px", w)]
    start = rng.random()
    fails = start < mix.start_failure_share
    if not fails:
        can_play = mount + _lognormal_ms(rng, 350, 0.5, 30, 10_000)
        track.event(can_play, "can-play")
        if entry.duration_ms is not None:
            track.values.append((can_play, "duration_ms", entry.duration_ms))
    if not autoplay and rng.random() < mix.no_play_share:
        return mount + _lognormal_ms(rng, 8_000, 0.8, 1_000, 120_000), "no_play"

    play = mount + (
        _lognormal_ms(rng, 150, 0.5, 10, 3_000)
        if autoplay
        else _lognormal_ms(rng, 2_500, 0.8, 200, 60_000)
    )
    track.event(play, "play")
    if rng.random() < 0.3:  # the player often reports `play` twice, a few ms apart
        track.event(play + rng.randrange(1, 6), "play")
    track.values.append((play, "mount_to_play_ms", play - mount))
    track.counts.append((play, "waiting_count"))
    ttff = _lognormal_ms(rng, _PROTOCOLS[kind][2] * viewer.ttff_factor, 0.5, 120, 20_000)

    if fails:
        failed = play + _lognormal_ms(rng, 1_500, 0.8, 50, 15_000)
        track.span(play, failed, "time_waiting_ms")
        if entry.duration_ms is not None:  # metadata never loaded: the real player reports 0
            track.values.append((failed, "duration_ms", 0))
        return _fatal(rng, track, failed, _START_ERRORS), "start_failure"
    if start < mix.start_failure_share + mix.exit_before_start_share:
        slow = ttff * rng.uniform(2.5, 6.0)
        leave = play + max(500, int(slow * rng.uniform(0.3, 0.9)))
        track.span(play, leave, "time_waiting_ms")
        return leave, "exit_before_start"

    first = play + ttff
    track.span(play, first, "time_waiting_ms")
    track.event(first, "first-frame")
    track.values.append((first, "play_to_first_frame_ms", ttff))
    track.values.append((first, "mount_to_first_frame_ms", first - mount))
    track.values += [(first, "video_height_px", 720), (first, "video_width_px", 1280)]
    if entry.live:
        latency = 1_200 if kind == "webrtc" else 9_000
        track.values.append((first, "offset_ms", _lognormal_ms(rng, latency, 0.4, 100, 60_000)))
    watch = _lognormal_ms(rng, mix.median_watch_s * 1000, 1.0, 2_000, 3 * 3_600_000)
    return _watch(rng, spec, viewer, entry, track, first, first + watch)


def _fatal(rng: random.Random, track: _Track, t: int, errors: tuple[tuple[str, str], ...]) -> int:
    category, message = rng.choice(errors)
    track.event(t, "pause")
    track.event(t, "error", category=category, message=message)
    track.counts.append((t, "errors"))
    leave = t + _lognormal_ms(rng, 6_000, 0.6, 1_000, 60_000)
    track.span(t, leave, "time_errored_ms")
    return leave


def _watch(
    rng: random.Random,
    spec: FleetSpec,
    viewer: _Viewer,
    entry: CatalogueEntry,
    track: _Track,
    t: int,
    leave: int,
) -> tuple[int, Outcome]:
    per_ms = 1 / 60_000
    rates = {
        "rebuffer": viewer.rebuffers_per_min * per_ms,
        "pause": (0.15 if entry.live else 0.5) * per_ms,
        "seek": 0.0 if entry.live else 0.4 * per_ms,
        "warning": (0.1 if entry.live else 0.0) * per_ms,
        "fatal": spec.mix.fatal_errors_per_min * per_ms,
    }
    names, weights = list(rates), list(rates.values())
    total = sum(weights)
    playhead = 0
    length = entry.duration_ms
    while True:
        run = max(1, int(rng.expovariate(total))) if total > 0 else leave - t
        run = min(run, leave - t, (length - playhead) if length is not None else run)
        track.span(t, t + run, "time_playing_ms")
        t += run
        playhead += run
        if t >= leave:
            return leave, "left"
        if length is not None and playhead >= length:
            track.event(t, "pause")
            track.event(t, "ended")
            return t + _lognormal_ms(rng, 5_000, 0.8, 300, 120_000), "ended"
        what = rng.choices(names, weights=weights)[0]
        if what == "fatal":
            return _fatal(rng, track, t, _PLAY_ERRORS), "error"
        if what == "pause":
            track.event(t, "pause")
            t += int(rng.expovariate(1 / 12_000)) + 200
            if t >= leave:
                return leave, "left"
            track.event(t, "play")
            continue
        if what == "seek":
            assert length is not None
            playhead = rng.randrange(0, length)
            track.event(t, "seek", payload=playhead / 1000)  # the position sought, in s
            d, name = _lognormal_ms(rng, 600, 0.6, 50, 10_000), "waiting"
        elif what == "warning":
            category = rng.choice(("offline", "fallback"))
            message = "Stream is offline" if category == "offline" else "Falling back to HLS"
            track.event(t, "warning", category=category, message=message)
            median = 4_000 if category == "offline" else 700
            d, name = _lognormal_ms(rng, median, 0.7, 100, 60_000), "warning"
            track.counts.append((t, "warnings"))
        else:
            name = "stalled" if rng.random() < 0.3 else "waiting"
            d = _lognormal_ms(rng, viewer.stall_median_ms, 0.7, 100, 60_000)
        if name != "warning":
            track.counts.append((t, f"{name}_count"))
        track.span(t, min(t + d, leave), f"time_{name}_ms")
        t += d
        if t >= leave:
            return leave, "left"


def _heartbeat(track: _Track, since: int, until: int, sent: set[str]) -> dict[str, Any]:
    """Deltas over [since, until) plus the send-once values known by `until` and not yet sent."""
    beat: dict[str, Any] = dict.fromkeys(DELTA_FIELDS, 0)
    for begin, end, name in track.spans:
        beat[name] += max(0, min(end, until) - max(begin, since))
    for t, name in track.counts:
        beat[name] += since <= t < until
    known = {name: value for t, name, value in track.values if t < until and name not in sent}
    for name in ONCE_FIELDS:
        if name in known:
            beat[name] = known[name]
            sent.add(name)
    return beat


def _envelope_base(
    rng: random.Random, entry: CatalogueEntry, kind: str, session_id: str, viewer: _Viewer
) -> dict[str, Any]:
    if rng.random() < 0.2:  # embedded in someone else's page: the player reports the referrer
        domain, path = rng.choice(
            (("blog.example.org", "/posts/launch"), ("news.example.net", "/"))
        )
    else:
        domain = f"watch.{entry.creator_id}.example"
        path = f"/live/{entry.stream_id}" if entry.live else f"/v/{entry.asset_id}"
    mime, source_path, _ = _PROTOCOLS[kind]
    base: dict[str, Any] = {
        "live": entry.live,
        "session_id": session_id,
        "playback_id": entry.playback_id,
        "protocol": mime,
        "domain": domain,
        "path": path,
        "params": rng.choice(("", "", "", "?utm_source=newsletter", "?ref=share")),
        "hash": "",
        "source_url": f"{CDN}{source_path.format(entry.playback_id)}?tkn={session_id}",
        "player": kind,
        "version": rng.choice(_PLAYER_VERSIONS),
        "user_agent": viewer.ua.user_agent,
    }
    if viewer.uid is not None:
        base["uid"] = viewer.uid
    return base


def _timeline(
    rng: random.Random,
    spec: FleetSpec,
    viewer: _Viewer,
    entry: CatalogueEntry,
    mount: int,
    start_ms: int,
) -> PlayerTimeline:
    end = int(spec.duration_s * 1000)
    session_id = nanoid(rng)
    choices = (("webrtc", "hls"), (0.6, 0.4)) if entry.live else (("hls", "video"), (0.7, 0.3))
    kind = rng.choices(choices[0], weights=choices[1])[0]
    track = _Track()
    leave, outcome = _simulate(rng, spec, viewer, entry, kind, mount, track)
    page_close = rng.random() < spec.mix.page_close_share
    closed_by: ClosedBy = "run_end" if leave >= end else "page_close" if page_close else "vanished"
    net = viewer.network
    truth = Truth(
        session_id,
        viewer.key,
        viewer.uid,
        entry.playback_id,
        entry.creator_id,
        entry.asset_id,
        entry.stream_id,
        entry.live,
        viewer.ip,
        net.continent,
        net.country,
        net.subdivision,
        net.timezone,
        viewer.ua.row_id,
        viewer.ua.device_type,
        viewer.skew_ms,
        outcome,
        closed_by,
    )
    base = _envelope_base(rng, entry, kind, session_id, viewer)
    headers = {
        "X-Forwarded-For": viewer.ip,
        "User-Agent": viewer.ua.user_agent,
        "Origin": f"https://{base['domain']}",
        "Content-Type": JSON_CONTENT_TYPE,
    }
    clock = start_ms + viewer.skew_ms  # client time = real time + skew
    events = [
        (t, {"id": nanoid(rng), "type": e["type"], "timestamp": clock + t, **e})
        for t, e in sorted(track.events, key=lambda te: te[0])
    ]
    # setInterval ticks every 5 s after mount, a few ms late; then maybe the page-close beacon.
    stop = min(leave, end)
    ticks = range(1, (stop - mount) // HEARTBEAT_INTERVAL_MS + 1)
    cuts = [mount + k * HEARTBEAT_INTERVAL_MS + rng.randrange(8) for k in ticks]
    cuts = [t for t in cuts if t < stop]
    if closed_by == "page_close":
        cuts.append(leave)
    sends: list[ScheduledSend] = []
    sent: set[str] = set()
    carry: list[dict[str, Any]] = []
    since = mount
    for until in cuts:
        beacon = closed_by == "page_close" and until == leave
        new = [e for t, e in events if since <= t < until]
        # The captured player lists `first-frame` after the other media events of its envelope.
        new.sort(key=lambda e: e["type"] == "first-frame")
        beat = {"id": nanoid(rng), "type": "heartbeat", "timestamp": clock + until}
        beat.update(_heartbeat(track, since, until, sent))
        body = [*carry, *new, beat]
        carry = []
        envelope = {**base, "events": body}
        if beacon:
            hdrs = {**headers, "Content-Type": BEACON_CONTENT_TYPE}
            sends.append(ScheduledSend(until, viewer.ip, hdrs, envelope, truth, "beacon"))
        else:
            sends.append(ScheduledSend(until, viewer.ip, headers, envelope, truth, "heartbeat"))
            r = rng.random()
            if r < spec.mix.resend_share:  # the player saw a failure: events go again next time
                carry = body
            elif r < spec.mix.resend_share + spec.mix.duplicate_share:
                again = until + rng.randrange(300, 2_000)
                if again < stop:
                    dup = ScheduledSend(again, viewer.ip, headers, envelope, truth, "duplicate")
                    sends.append(dup)
        since = until
    return PlayerTimeline(truth, mount, leave, tuple(sends))


def plan(spec: FleetSpec, *, seed: int, start_ms: int) -> tuple[PlayerTimeline, ...]:
    """Every player's timeline. `start_ms` is the real epoch ms of offset 0; it moves the client
    timestamps (`start_ms + offset + skew`) and nothing else."""
    rng = random.Random(seed)
    live = [e for e in spec.catalogue if e.live]
    vod = [e for e in spec.catalogue if not e.live]
    viewers: list[_Viewer] = []
    timelines = []
    for mount in _arrivals(rng, spec):
        if viewers and rng.random() < spec.mix.returning_share:
            viewer = rng.choice(viewers)
        else:
            viewer = _new_viewer(rng, spec, len(viewers))
            viewers.append(viewer)
        pool = live if live and (not vod or rng.random() < spec.live_share) else vod
        entry = rng.choices(pool, weights=[e.popularity for e in pool])[0]
        session_rng = random.Random(rng.getrandbits(64))
        timelines.append(_timeline(session_rng, spec, viewer, entry, mount, start_ms))
    return tuple(timelines)


def schedule(spec: FleetSpec, *, seed: int, start_ms: int) -> list[ScheduledSend]:
    """All sends of `plan(...)` in send order (by offset; ties keep player order)."""
    sends = [s for timeline in plan(spec, seed=seed, start_ms=start_ms) for s in timeline.sends]
    return sorted(sends, key=lambda s: s.offset_ms)
