// The live page: trades the API key for a stream token, renders each pushed snapshot, and says
// when what it shows is stale. No build step; the only library is the vendored uPlot.
"use strict";

(() => {
  const KEY_STORE = "playpulse.liveKey";
  const $ = (sel) => document.querySelector(sel);
  const filters = new URLSearchParams(location.search);
  const scope = {};
  for (const name of ["playbackId", "creatorId"]) {
    if (filters.get(name)) scope[name] = filters.get(name);
  }

  // The key comes in the URL fragment (never sent to a server) or the form; it is kept for
  // this tab only and taken out of the address bar at once.
  function takeKeyFromUrl() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (!hash.get("key")) return false;
    sessionStorage.setItem(KEY_STORE, hash.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }
  takeKeyFromUrl();

  let source = null;
  let lastEventAt = 0;
  let intervalMs = 1000;
  let retryDelayMs = 1000;
  let reconnectTimer = null;
  let unavailable = null; // why the server could not read its data, while it cannot
  let chart = null;
  let chartDrawn = null; // the lastHour last drawn, as JSON
  let chartPeak = null;

  const fmt = {
    int: (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US")),
    ms: (v) => (v == null ? "–" : `${Math.round(v).toLocaleString("en-US")} ms`),
    pct: (v) => (v == null ? "–" : `${(v * 100).toFixed(v < 0.1 ? 2 : 1)} %`),
    time: (ms) => new Date(ms).toISOString().slice(11, 19) + " UTC",
    hm: (ms) => new Date(ms).toISOString().slice(11, 16),
    hms: (ms) => new Date(ms).toISOString().slice(11, 19),
  };
  const QOE_FORMAT = {
    ttffMs: fmt.ms, ttffP95Ms: fmt.ms, rebufferRatio: fmt.pct, errorRate: fmt.pct,
    exitsBeforeStart: fmt.pct,
  };

  function setStatus(state, text) {
    const el = $("#status");
    el.dataset.state = state;
    el.textContent = text;
    document.body.classList.toggle("stale", state === "stale");
  }

  function key() {
    return sessionStorage.getItem(KEY_STORE);
  }

  function showKeyForm(message) {
    $("#panels").hidden = true;
    $("#key-form").hidden = false;
    $("#auth-error").textContent = message || "";
  }

  function refuse(message) {
    if (source) source.close();
    source = null;
    clearTimeout(reconnectTimer);
    sessionStorage.removeItem(KEY_STORE);
    setStatus("refused", "refused");
    showKeyForm(message);
  }

  async function errorsOf(resp) {
    try {
      const body = await resp.json();
      return (body.errors || []).join("; ") || `HTTP ${resp.status}`;
    } catch (_) {
      return `HTTP ${resp.status}`;
    }
  }

  function scheduleReconnect(why) {
    setStatus("stale", why);
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, retryDelayMs);
    retryDelayMs = Math.min(retryDelayMs * 2, 10000);
  }

  // A fresh token on every (re)connection the browser does not do by itself: that is also
  // how a refused key or an expired token is told apart from an API that is down.
  async function connect() {
    const secret = key();
    if (!secret) {
      showKeyForm("An API key is required to watch live.");
      setStatus("refused", "no key");
      return;
    }
    let resp;
    try {
      resp = await fetch(`/api/live/token?${new URLSearchParams(scope)}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${secret}` },
        cache: "no-store",
      });
    } catch (_) {
      scheduleReconnect("API unreachable: retrying");
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      refuse(`Refused: ${await errorsOf(resp)}`);
      return;
    }
    if (!resp.ok) {
      scheduleReconnect(`API answered ${resp.status}: retrying`);
      return;
    }
    const { token } = await resp.json();
    openStream(token);
  }

  function openStream(token) {
    if (source) source.close();
    const params = new URLSearchParams({ token, ...scope });
    const es = new EventSource(`/api/live/stream?${params}`);
    source = es;
    es.addEventListener("open", () => {
      retryDelayMs = 1000;
    });
    es.addEventListener("snapshot", (e) => {
      unavailable = null;
      lastEventAt = Date.now();
      render(JSON.parse(e.data));
    });
    es.addEventListener("unavailable", (e) => {
      lastEventAt = Date.now();
      unavailable = JSON.parse(e.data).errors.join("; ");
      checkStale();
    });
    es.addEventListener("revoked", () => {
      refuse("Refused: the API key was revoked");
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The server answered with an error (expired token, refused filter, 503): ask anew.
        es.close();
        source = null;
        scheduleReconnect("reconnecting");
      } else {
        setStatus("stale", "reconnecting"); // EventSource retries by itself
      }
    });
  }

  function checkStale() {
    if (!source && $("#status").dataset.state === "refused") return;
    const age = Date.now() - lastEventAt;
    if (unavailable) {
      setStatus("stale", `stale: ${unavailable}`);
    } else if (lastEventAt && age > Math.max(3 * intervalMs, 4000)) {
      setStatus("stale", `stale: no update for ${Math.round(age / 1000)} s`);
    } else if (lastEventAt && source && source.readyState === EventSource.OPEN) {
      setStatus("live", "live");
    }
  }

  function fillTable(id, dim, rows) {
    const body = document.querySelector(`#${id} tbody`);
    body.replaceChildren(
      ...rows.map((r) => {
        const tr = document.createElement("tr");
        const cells = [r[dim] == null ? "(unknown)" : r[dim], fmt.int(r.viewCount), fmt.pct(r.errorRate)];
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        if (r.errorRate > 0) tr.lastChild.classList.add("bad");
        return tr;
      }),
    );
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 3;
      td.className = "note";
      td.textContent = "nobody watching";
      tr.append(td);
      body.append(tr);
    }
  }

  function render(s) {
    intervalMs = s.intervalMs;
    $("#panels").hidden = false;
    $("#key-form").hidden = true;
    const viewers = $("#viewers");
    viewers.textContent = fmt.int(s.concurrentViewers);
    viewers.dataset.value = String(s.concurrentViewers);
    viewers.dataset.serverTime = String(s.serverTime);
    $("#error-now").textContent = fmt.pct(s.errorRateNow);
    $("#last-beacon").textContent =
      s.lastBeaconMs == null ? "none" : `${Math.max(0, Math.round((s.serverTime - s.lastBeaconMs) / 1000))} s ago`;
    $("#updated").textContent = fmt.time(s.serverTime);
    fillTable("topPlaybacks", "playbackId", s.topPlaybacks);
    fillTable("countries", "country", s.countries);
    fillTable("devices", "device", s.devices);
    fillTable("browsers", "browser", s.browsers);
    const q = s.qoe;
    // The minute rollups from the start of the minute 5 minutes ago up to now: the last 5
    // whole minutes and the one under way (5 to 6 minutes); say which stretch it is.
    const seconds = Math.max(0, Math.floor((q.to - q.from) / 1000));
    $("#qoe-window").textContent =
      `${fmt.hm(q.from)}–${fmt.hms(q.to)} UTC, the last ${Math.floor(seconds / 60)} min ` +
      `${seconds % 60} s, ${fmt.int(q.viewCount)} views`;
    for (const tile of document.querySelectorAll(".tile")) {
      const name = tile.dataset.metric;
      const value = q[name];
      tile.querySelector(".value").textContent = QOE_FORMAT[name](value);
      tile.dataset.breach = value == null ? "none" : String(s.breaches[name]);
      let limit = tile.querySelector(".limit");
      if (!limit) {
        limit = document.createElement("div");
        limit.className = "limit";
        tile.append(limit);
      }
      limit.textContent = `threshold ${QOE_FORMAT[name](s.thresholds[name])}`;
    }
    drawChart(s.lastHour);
    checkStale();
  }

  // -- the per-minute chart ---------------------------------------------------------------
  // Drawn from each snapshot's `lastHour` (peak concurrent viewers per minute, UTC, and the
  // hour's peak, chosen by the server); redrawn only when it changed.

  function peakMarker(u) {
    if (!chartPeak) return;
    const x = u.valToPos(chartPeak.timestamp / 1000, "x", true);
    const y = u.valToPos(chartPeak.peakConcurrentViewers, "y", true);
    const ctx = u.ctx;
    ctx.save();
    ctx.fillStyle = "#da3633";
    ctx.beginPath();
    ctx.arc(x, y, 5 * devicePixelRatio, 0, 2 * Math.PI);
    ctx.fill();
    ctx.font = `${12 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.fillStyle = "#e6edf3";
    ctx.textAlign = x > u.bbox.left + u.bbox.width * 0.8 ? "right" : "left";
    const label = `peak ${chartPeak.peakConcurrentViewers}`;
    ctx.fillText(label, x + (ctx.textAlign === "left" ? 8 : -8) * devicePixelRatio, y - 8 * devicePixelRatio);
    ctx.restore();
  }

  function drawChart(h) {
    const drawn = JSON.stringify(h);
    if (drawn === chartDrawn) return;
    chartDrawn = drawn;
    chartPeak = h.peak;
    const xs = h.peaks.map((_, i) => (h.from + i * h.stepMs) / 1000);
    const el = $("#chart");
    el.dataset.from = String(h.from);
    el.dataset.peaks = h.peaks.join(",");
    el.dataset.peak = h.peak ? String(h.peak.peakConcurrentViewers) : "";
    el.dataset.peakAt = h.peak ? String(h.peak.timestamp) : "";
    if (!chart) {
      chart = new uPlot(
        {
          width: Math.max(300, el.clientWidth),
          height: 220,
          series: [{}, { label: "viewers", stroke: "#58a6ff", width: 2, fill: "rgba(88,166,255,0.12)" }],
          axes: [
            {
              stroke: "#8b98a5", grid: { stroke: "#253040" }, ticks: { stroke: "#253040" },
              values: (u, splits) => splits.map((v) => fmt.hm(v * 1000)), // 24 h UTC, as the title
            },
            { stroke: "#8b98a5", grid: { stroke: "#253040" }, ticks: { stroke: "#253040" } },
          ],
          scales: { y: { range: (u, lo, hi) => [0, Math.max(5, Math.ceil(hi * 1.15))] } },
          hooks: { draw: [peakMarker] },
          tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        },
        [xs, h.peaks],
        el,
      );
      window.addEventListener("resize", () => chart.setSize({ width: Math.max(300, el.clientWidth), height: 220 }));
    } else {
      chart.setData([xs, h.peaks]);
    }
    $("#peak").textContent = h.peak
      ? `· peak ${fmt.int(h.peak.peakConcurrentViewers)} at ${fmt.hm(h.peak.timestamp)} UTC`
      : "";
    $("#chart-note").textContent = h.peak ? "" : "Nobody watched in the last hour.";
  }

  // -- start --------------------------------------------------------------------------------

  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("#key-input").value.trim());
    $("#key-input").value = "";
    $("#key-form").hidden = true;
    setStatus("connecting", "connecting…");
    connect();
  });
  $("#scope").textContent = scope.playbackId
    ? `playback ${scope.playbackId}`
    : scope.creatorId ? `creator ${scope.creatorId}` : "all playbacks";
  window.addEventListener("hashchange", () => {
    if (!takeKeyFromUrl()) return;
    setStatus("connecting", "connecting…");
    connect();
  });
  setInterval(checkStale, 500);
  connect();
})();
