"""The live page in headless Chromium against the whole stack run as processes: the collector,
an aggregator worker, the API and simulated players, on the real Kafka and Redis of `make test`.

The browser is Debian's `chromium`, driven through Debian's `chromedriver` by Selenium; nothing
is downloaded at run time. The page must show the concurrent viewers that `/api/data/views/now`
reports while the simulated audience joins and leaves, chart the last hour's peak concurrent
viewers per minute as `/api/data/views/concurrent` reports them (also for a CORS key, which may
not call that route), ride out the API and Redis restarting, refuse what it must, and leave a
screenshot in `$PLAYPULSE_STATE/artifacts/live.png`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from api.auth import create_key
from ingest.geodb import build_db
from tests.aggregator.pipeline import free_port
from tests.conftest import REPO_DIR, stop_processes

T = TypeVar("T")
STATE = Path(os.environ.get("PLAYPULSE_STATE", REPO_DIR / ".state"))
ARTIFACTS = STATE / "artifacts"
Chart = tuple[int, list[int], int | None, int | None]  # first minute, peaks, peak, its minute


def views_in(window: str) -> int:
    """The view count the quality window's label names (0 when it names none)."""
    found = re.search(r"([\d,]+) views", window)
    return int(found.group(1).replace(",", "")) if found else 0


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)


class Stack:
    """Playpulse's services as child processes on free ports, with a topic of their own."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api_addr = f"127.0.0.1:{free_port()}"
        self.ingest_addr = f"127.0.0.1:{free_port()}"
        topic = f"beacons-live-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "PLAYPULSE_BEACONS_TOPIC": topic,
            "PLAYPULSE_VIEWS_TOPIC": f"views-{topic}",
            "PLAYPULSE_BEACONS_PARTITIONS": "3",
            "PLAYPULSE_AGGREGATOR_APP_ID": f"pp-live-{uuid.uuid4().hex[:6]}",
            "PLAYPULSE_AGGREGATOR_ADDR": f"127.0.0.1:{free_port()}",
            "PLAYPULSE_AGGREGATOR_DATA_DIR": str(tmp / "faust"),
            "PLAYPULSE_FLUSH_INTERVAL_S": "0.5",
            "PLAYPULSE_API_ADDR": self.api_addr,
            "PLAYPULSE_INGEST_ADDR": self.ingest_addr,
            "PLAYPULSE_GEOIP_DB": str(build_db(tmp / "geo.mmdb")),
            "PLAYPULSE_TRUSTED_PROXIES": "127.0.0.1/32",
            "PLAYPULSE_LIVE_INTERVAL_S": "1",
        }

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            cwd=REPO_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def start(self, name: str, *args: str, health: str | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=REPO_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if health is not None:
            wait_for(lambda: self._healthy(name, health), 60, f"{name} at {health}")

    def _healthy(self, name: str, url: str) -> bool:
        if self.procs[name].poll() is not None:
            raise AssertionError(f"{name} exited:\n{self.logs()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        stop_processes([self.procs.pop(name)], sig)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log")
        )

    def api_json(self, path: str, key: str, **query: str) -> Any:
        url = f"http://{self.api_addr}{path}?{urlencode(query)}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)


def redis_ctl(action: str) -> None:
    subprocess.run(
        ["bash", str(REPO_DIR / "deploy" / "redis.sh"), action], check=True, env=os.environ.copy()
    )


async def _keys(api_origin: str) -> tuple[str, str]:
    redis = Redis.from_url(os.environ.get("PLAYPULSE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        await redis.flushdb()  # rollups and realtime sets are not namespaced per topic
        _, private = await create_key(redis, kind="private", name="live-test")
        _, cors = await create_key(
            redis, kind="cors", origins=[api_origin], creator_id="creator-a", name="live-cors"
        )
        return private, cors
    finally:
        await redis.aclose()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        for name in list(s.procs):
            s.stop(name)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "deploy/install.sh installs Debian's chromium and chromium-driver"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    b = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield b
    finally:
        b.quit()


class Page:
    def __init__(self, browser: webdriver.Chrome, stack: Stack) -> None:
        self.b, self.stack = browser, stack

    def open(self, query: str = "", key: str | None = None) -> None:
        fragment = "" if key is None else f"#key={key}"
        self.b.get(f"http://{self.stack.api_addr}/live{query}{fragment}")

    def text(self, element_id: str) -> str:
        return str(self.b.find_element(By.ID, element_id).text)

    def status(self) -> str:
        return str(self.b.find_element(By.ID, "status").get_attribute("data-state"))

    def viewers(self) -> int | None:
        value = self.b.find_element(By.ID, "viewers").get_attribute("data-value")
        return None if not value else int(value)

    def matches_now(self, key: str, **scope: str) -> int | None:
        """The page's number when it equals `/views/now`'s, read between two page reads."""
        if self.status() != "live":
            return None
        before = self.viewers()
        now = self.stack.api_json("/api/data/views/now", key, **scope)[0]["viewCount"]
        after = self.viewers()
        return now if before == now == after else None

    def chart(self) -> Chart | None:
        """The chart the page drew: (first minute, peaks per minute, marked peak, its minute)."""
        el = self.b.find_element(By.ID, "chart")
        start, peaks = el.get_attribute("data-from"), el.get_attribute("data-peaks")
        if not start or peaks is None:
            return None
        peak, at = el.get_attribute("data-peak"), el.get_attribute("data-peak-at")
        return (
            int(start),
            [int(p) for p in peaks.split(",") if p],
            int(peak) if peak else None,
            int(at) if at else None,
        )

    def matches_concurrent(self, key: str, **scope: str) -> Chart | None:
        """The page's chart when it is the series `/views/concurrent` answers for the last hour
        of the same scope, read between two page reads. A minute boundary between the reads
        moves the window (and the open minute's peak can rise): those tries do not count."""
        if self.status() != "live":
            return None
        before = self.chart()
        rows = self.stack.api_json("/api/data/views/concurrent", key, **scope)
        after = self.chart()
        if before is None or before != after:
            return None
        start, peaks, _, _ = before
        if [r["timestamp"] for r in rows][:1] != [start]:
            return None
        return before if [r["peakConcurrentViewers"] for r in rows] == peaks else None

    def charts_the_hour(self, key: str, what: str, **scope: str) -> int:
        """Waits for the chart to show `/views/concurrent`'s series with someone watching, and
        checks the peak it marks: the series' maximum, at its first minute. Returns the peak."""

        def watched() -> Chart | None:
            got = self.matches_concurrent(key, **scope)
            return got if got is not None and max(got[1], default=0) > 0 else None

        start, peaks, peak, at = wait_for(watched, 60, what)
        assert len(peaks) == 61  # the minute an hour ago, to the open minute
        assert peak == max(peaks)
        assert at == start + peaks.index(peak) * 60_000
        assert f"peak {peak:,} at " in self.text("peak")
        assert self.b.find_elements(By.CSS_SELECTOR, "#chart canvas")  # uPlot drew it
        return peak

    def shows(self, key: str, want: Callable[[int], bool], what: str, **scope: str) -> int:
        return wait_for(
            lambda: n if (n := self.matches_now(key, **scope)) is not None and want(n) else None,
            60,
            what,
        )


def test_live_page_follows_the_simulated_audience(stack: Stack, browser: webdriver.Chrome) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    private, cors = asyncio.run(_keys(f"http://{stack.api_addr}"))
    page = Page(browser, stack)
    players: subprocess.Popen[bytes] | None = None
    try:
        stack.run("playbacks", "add-demo")
        stack.start("api", "api", health=f"http://{stack.api_addr}/healthz")

        # Refused without a key, and with a wrong one: nothing but the key form is shown.
        page.open()
        wait_for(lambda: page.status() == "refused", 10, "the page to ask for a key")
        assert browser.find_element(By.ID, "key-form").is_displayed()
        assert not browser.find_element(By.ID, "panels").is_displayed()
        page.open(key="not-a-key")
        error = wait_for(
            lambda: "Refused" in (text := page.text("auth-error")) and text, 10, "the refusal"
        )
        assert "unknown or revoked API key" in error
        assert not browser.find_element(By.ID, "panels").is_displayed()

        stack.start("ingest", "ingest", health=f"http://{stack.ingest_addr}/readyz")
        stack.start(
            "aggregator",
            "aggregate",
            health=f"http://{stack.env['PLAYPULSE_AGGREGATOR_ADDR']}/healthz",
        )
        page.open(key=private)
        assert page.shows(private, lambda n: n == 0, "no viewers before the players") == 0

        # Viewers join: the page follows /views/now up.
        log = stack.tmp / "simulate.jsonl"
        sim = [sys.executable, "-m", "api.cli", "simulate", "--collector"]
        sim += [f"http://{stack.ingest_addr}", "--players", "60", "--duration", "150"]
        sim += ["--seed", "5", "--log", str(log)]
        sim_log = open(stack.tmp / "simulate.log", "ab")  # noqa: SIM115 - the child owns it
        players = subprocess.Popen(sim, cwd=REPO_DIR, env=stack.env, stdout=sim_log, stderr=sim_log)
        sim_log.close()
        first = page.shows(private, lambda n: n > 0, "the first viewers")
        more = page.shows(private, lambda n: n >= first + 3, f"more than {first + 2} viewers")
        assert page.text("viewers") == f"{more:,}"
        rows = browser.find_elements(By.CSS_SELECTOR, "#topPlaybacks tbody tr")
        assert rows and rows[0].text.startswith("pb-")
        assert browser.find_elements(By.CSS_SELECTOR, "#countries tbody tr td")[0].text

        def quality_window() -> str | None:
            text = page.text("qoe-window")
            return text if views_in(text) > 0 else None

        window = wait_for(quality_window, 30, "quality numbers over the views of the last minutes")
        # the minute rows from 5 minutes ago (floored to the minute) to now
        assert re.search(r"\d\d:\d\d\u2013\d\d:\d\d:\d\d UTC, the last 5 min \d+ s, ", window)
        # The chart: the last hour per minute as /views/concurrent has it, its peak marked.
        peak_all = page.charts_the_hour(private, "the per-minute chart")
        assert peak_all >= first
        browser.save_screenshot(str(ARTIFACTS / "live.png"))

        # The API restarts: the page says it is stale, then resumes by itself.
        stack.stop("api")
        wait_for(lambda: page.status() == "stale", 15, "the page to show it is stale")
        stack.start("api", "api", health=f"http://{stack.api_addr}/healthz")
        page.shows(private, lambda n: n > 0, "the stream resuming after the API restarted")

        # Redis restarts (with its data): stale while it is down, then live again.
        redis_ctl("stop")
        try:
            stale = wait_for(
                lambda: page.status() == "stale" and page.text("status"), 15, "stale on Redis"
            )
            assert "redis" in stale
        finally:
            redis_ctl("start")
        page.shows(private, lambda n: n > 0, "the stream resuming after Redis restarted")

        # A CORS key scoped to creator-a, from the page's own origin: creator-a's viewers only,
        # and another creator's are refused.
        page.open("?creatorId=creator-b", key=cors)
        error = wait_for(
            lambda: "Refused" in (text := page.text("auth-error")) and text, 10, "creator-b refused"
        )
        assert "own creator" in error
        page.open("?creatorId=creator-a", key=cors)
        page.shows(private, lambda n: n > 0, "creator-a's viewers", creatorId="creator-a")
        page.charts_the_hour(private, "creator-a's chart", creatorId="creator-a")

        # Everybody leaves: 30 s after their last beacon nobody is watching any more.
        players.send_signal(signal.SIGINT)
        players.wait(timeout=30)
        page.open(key=private)
        page.shows(private, lambda n: n == 0, "the viewers leaving")
    except BaseException:
        browser.save_screenshot(str(ARTIFACTS / "live-failure.png"))
        print(stack.logs())
        raise
    finally:
        if players is not None and players.poll() is None:
            players.kill()
            players.wait()
