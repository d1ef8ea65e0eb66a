/* berth dashboard: plain JavaScript, no build step. Hash routes: #/ (every API) and #/api/<name>.
   Updates arrive on a server-sent events stream (/_berth/api/stream); when it cannot be opened the
   page polls the JSON routes every 2 s instead. Everything is built with DOM calls (textContent),
   never by parsing strings from the server as HTML. */
(function () {
  "use strict";

  var BASE = "/_berth/api/";
  var POLL_MS = 2000;
  var STREAM_RETRY_MS = 30000; // while polling, how often the event stream is tried again
  var state = { route: null, overview: null, detail: null, series: [], window: "1h", charts: {},
                source: null, poller: null, streamFailures: 0, lastCounts: {}, rates: {} };
  var WINDOW_SECONDS = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "14d": 1209600 };

  // ---- small DOM helpers -------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "cls") node.className = attrs[key];
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), attrs[key]);
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child != null) node.appendChild(child); });
    return node;
  }
  function text(value) { return document.createTextNode(value == null ? "" : String(value)); }
  function badge(label, kind) {
    return el("span", { cls: "badge " + String(kind || label).toLowerCase().replace(/\s+/g, "-"), text: label });
  }
  function cell(value, shown, cls, field) {
    var attrs = { cls: cls || "num", text: shown == null ? "\u2014" : shown };
    if (field) { attrs["data-field"] = field; attrs["data-value"] = value == null ? "" : String(value); }
    return el("td", attrs);
  }
  function fmtInt(n) { return n == null ? null : Math.round(n).toLocaleString("en-US"); }
  function fmtRate(r) { return r == null ? null : (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)) + "/s"; }
  function fmtSeconds(s) {
    if (s == null) return null;
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    return s.toFixed(s < 10 ? 2 : 1) + " s";
  }
  function fmtBytes(b) {
    if (b == null) return null;
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return b.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function fmtAge(seconds) {
    if (seconds == null) return null;
    if (seconds < 60) return Math.floor(seconds) + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + Math.floor((seconds % 3600) / 60) + "m";
    return Math.floor(seconds / 86400) + "d" + Math.floor((seconds % 86400) / 3600) + "h";
  }
  function fmtTime(ts) { return ts == null ? "" : new Date(ts * 1000).toLocaleTimeString([], { hour12: false }); }
  function fmtDateTime(ts) {
    if (ts == null) return "";
    var d = new Date(ts * 1000);
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + fmtTime(ts);
  }

  // ---- data ----------------------------------------------------------------------------------------
  function getJSON(path) {
    return fetch(BASE + path, { headers: { Accept: "application/json" } }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw Object.assign(new Error(body.error || response.statusText), { status: response.status });
        return body;
      });
    });
  }

  // Requests per second from the cumulative totals of two consecutive updates (live, not per minute).
  function updateRates(overview) {
    overview.apis.forEach(function (api) {
      var seen = state.lastCounts[api.name], count = (api.metrics || {}).requests || 0;
      if (seen && overview.now > seen.at) state.rates[api.name] = Math.max(0, count - seen.count) / (overview.now - seen.at);
      state.lastCounts[api.name] = { at: overview.now, count: count };
    });
  }

  function onOverview(overview) {
    updateRates(overview);
    state.overview = overview;
    document.getElementById("updated").textContent = "updated " + fmtTime(overview.now);
    if (state.route.page === "overview") renderOverview();
  }

  function onDetail(detail, replaceSeries) {
    if (!state.route || state.route.page !== "api" || detail.api.name !== state.route.name) return;
    state.detail = detail;
    state.series = replaceSeries ? detail.series.slice() : mergeSeries(state.series, detail.series, detail.now);
    renderApi();
  }

  // The stream carries the last few buckets (those still filling); merge them into the window's series.
  function mergeSeries(series, tail, now) {
    var byStart = {};
    series.forEach(function (row) { byStart[row.start] = row; });
    tail.forEach(function (row) { byStart[row.start] = row; });
    var since = now - WINDOW_SECONDS[state.window];
    return Object.keys(byStart).map(function (k) { return byStart[k]; })
      .filter(function (row) { return row.start + row.seconds > since; })
      .sort(function (a, b) { return a.start - b.start; });
  }

  // ---- live updates: SSE, else polling ----------------------------------------------------------
  function connect() {
    disconnect();
    if (!window.EventSource || state.streamFailures >= 2) { startPolling(); return; }
    var url = BASE + "stream" + (state.route.page === "api" ? "?api=" + encodeURIComponent(state.route.name) : "");
    var source = new EventSource(url), got = false;
    state.source = source;
    source.addEventListener("overview", function (e) { got = true; setConn("live"); onOverview(JSON.parse(e.data)); });
    source.addEventListener("api", function (e) { onDetail(JSON.parse(e.data), false); });
    source.addEventListener("missing", function () { renderMissing(state.route.name); });
    source.onerror = function () {
      setConn("connecting");
      if (source.readyState !== EventSource.CLOSED) return; // EventSource reconnects by itself
      // Refused (a 503: too many streams, or the daemon is down): try once more, then poll instead.
      if (!got) state.streamFailures++;
      got = false;
      setTimeout(function () { if (state.source === source) connect(); }, POLL_MS);
    };
  }
  function disconnect() {
    if (state.source) { state.source.close(); state.source = null; }
    if (state.poller) { clearInterval(state.poller); state.poller = null; }
  }
  function startPolling() {
    disconnect();
    setConn("polling");
    var since = Date.now(), offline = false;
    var tick = function () {
      getJSON("overview").then(function (o) {
        setConn("polling");
        onOverview(o);
        // The daemon answers again, or a stream slot may have freed: try the stream again.
        if (offline || Date.now() - since >= STREAM_RETRY_MS) { state.streamFailures = 0; connect(); }
      }).catch(function () { offline = true; setConn("offline"); });
      if (state.route.page === "api") {
        getJSON("apis/" + encodeURIComponent(state.route.name) + "?window=" + state.window)
          .then(function (d) { onDetail(d, true); })
          .catch(function (err) { if (err.status === 404) renderMissing(state.route.name); });
      }
    };
    tick();
    state.poller = setInterval(tick, POLL_MS);
  }
  function setConn(kind) {
    var node = document.getElementById("conn");
    node.dataset.state = kind;
    node.textContent = { live: "live", polling: "polling every 2 s", offline: "daemon not answering",
                         connecting: "connecting" }[kind];
  }

  // ---- routing ---------------------------------------------------------------------------------------
  function parseRoute() {
    var match = /^#\/api\/(.+)$/.exec(location.hash);
    return match ? { page: "api", name: decodeURIComponent(match[1]) } : { page: "overview" };
  }
  function navigate() {
    state.route = parseRoute();
    destroyCharts();
    state.detail = null;
    state.series = [];
    var view = document.getElementById("view");
    view.textContent = "";
    view.appendChild(el("p", { cls: "empty", text: "loading\u2026" }));
    renderCrumbs();
    if (state.route.page === "api") loadDetail(); else if (state.overview) renderOverview();
    connect();
  }
  function loadDetail() {
    getJSON("apis/" + encodeURIComponent(state.route.name) + "?window=" + state.window)
      .then(function (detail) { onDetail(detail, true); })
      .catch(function (err) { if (err.status === 404) renderMissing(state.route.name); });
  }
  function renderCrumbs() {
    var crumbs = document.getElementById("crumbs");
    crumbs.textContent = "";
    crumbs.appendChild(el("a", { href: "#/", text: "APIs" }));
    if (state.route.page === "api") {
      crumbs.appendChild(text(" / "));
      crumbs.appendChild(el("span", { text: state.route.name }));
    }
  }

  window.berthDashboard = { state: state }; // for tests and the curious, read-only by convention
  document.addEventListener("DOMContentLoaded", function () {
    window.addEventListener("hashchange", navigate);
    window.addEventListener("resize", function () { resizeCharts(); });
    navigate();
  });

  /* ---- overview ------------------------------------------------------------------------------------ */
  function renderOverview() {
    var o = state.overview, view = document.getElementById("view");
    if (!o) return;
    view.textContent = "";
    var totalRate = 0, errors = 0, live = 0;
    o.apis.forEach(function (api) {
      totalRate += state.rates[api.name] || 0;
      errors += (api.metrics || {})["5XX"] || 0;
      if (api.status === "live") live++;
    });
    view.appendChild(el("section", { cls: "tiles" }, [
      tile("APIs", String(o.apis.length), "apis"), tile("Live", String(live), "live"),
      tile("Requests now", fmtRate(totalRate) || "0/s", "rate"), tile("5XX total", fmtInt(errors), "errors")]));
    var panel = el("section", { cls: "panel" }, [el("h2", { text: "APIs" })]);
    if (!o.apis.length) {
      panel.appendChild(el("p", { cls: "empty", text: "No API deployed yet: `berth deploy` one and it shows up here." }));
    } else {
      panel.appendChild(overviewTable(o.apis));
    }
    view.appendChild(panel);
  }
  function tile(label, value, name) {
    return el("div", { cls: "tile", "data-tile": name }, [el("div", { cls: "label", text: label }),
                                                          el("div", { cls: "value", text: value })]);
  }
  function overviewTable(apis) {
    var head = ["API", "status", "replicas", "req/s", "2XX", "4XX", "5XX", "avg", "p50", "p99", "in-flight",
                "drift", "last hour"];
    var numeric = { "req/s": 1, "2XX": 1, "4XX": 1, "5XX": 1, avg: 1, p50: 1, p99: 1, "in-flight": 1 };
    var tbody = el("tbody");
    apis.forEach(function (api) {
      var m = api.metrics || {}, recent = api.recent || {};
      var row = el("tr", { cls: "api-row", "data-api": api.name,
                           onclick: function () { location.hash = "#/api/" + encodeURIComponent(api.name); } }, [
        el("td", {}, [el("a", { href: "#/api/" + encodeURIComponent(api.name), text: api.name })]),
        el("td", { "data-field": "status", "data-value": api.status }, [badge(api.status)]),
        cell(api.up_to_date, (api.up_to_date == null ? "?" : api.up_to_date) + " / " + api.requested, "num", "replicas"),
        cell(state.rates[api.name], fmtRate(state.rates[api.name]), "num", "rate"),
        cell(m["2XX"], fmtInt(m["2XX"]), "num c2", "2XX"),
        cell(m["4XX"], fmtInt(m["4XX"]), "num c4", "4XX"),
        cell(m["5XX"], fmtInt(m["5XX"]), "num c5", "5XX"),
        cell(m.avg_request_seconds, fmtSeconds(m.avg_request_seconds), "num", "avg"),
        cell(recent.p50, fmtSeconds(recent.p50), "num", "p50"),
        cell(recent.p99, fmtSeconds(recent.p99), "num", "p99"),
        cell(api.in_flight, api.in_flight == null ? null : String(api.in_flight), "num", "in_flight"),
        el("td", { "data-field": "drift", "data-value": api.drift ? api.drift.verdict : "" },
           [api.drift ? badge(api.drift.verdict + (api.drift.psi == null ? "" : " " + Number(api.drift.psi).toFixed(2)), api.drift.verdict)
                      : el("span", { cls: "muted", text: "\u2014" })]),
        el("td", {}, [sparkline(recent)])]);
      tbody.appendChild(row);
      if (api.error) {
        tbody.appendChild(el("tr", {}, [el("td", { colspan: String(head.length), cls: "muted" },
                                           [el("span", { cls: "c5", text: api.error })])]));
      }
    });
    var titles = { replicas: "up to date / requested", "req/s": "requests per second since the previous update",
                   "2XX": "since the API was created", avg: "average request time since the API was created",
                   p50: "latency of the latest minute with requests", p99: "latency of the latest minute with requests",
                   drift: "population stability index: last hour vs the reference window",
                   "last hour": "requests per minute" };
    var headRow = el("tr", {}, head.map(function (h) {
      return el("th", { cls: numeric[h] ? "num" : "", text: h, title: titles[h] || "" });
    }));
    return el("table", { cls: "apis" }, [el("thead", {}, [headRow]), tbody]);
  }
  function sparkline(recent) {
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 28");
    svg.setAttribute("preserveAspectRatio", "none");
    var counts = recent.count || [];
    if (counts.length > 1) {
      var max = Math.max.apply(null, counts.concat([1])), line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", counts.map(function (c, i) {
        return (i * 120 / (counts.length - 1)).toFixed(1) + "," + (27 - (c / max) * 25).toFixed(1);
      }).join(" "));
      svg.appendChild(line);
    }
    return svg;
  }

  /* ---- one API ------------------------------------------------------------------------------------- */
  function renderMissing(name) {
    destroyCharts();
    var view = document.getElementById("view");
    view.textContent = "";
    view.appendChild(el("div", { cls: "panel" }, [el("p", { cls: "empty",
      text: "No API named \u201c" + name + "\u201d. It may have been deleted." }), el("p", { cls: "empty" },
      [el("a", { href: "#/", text: "Back to every API" })])]));
  }
  function renderApi() {
    var d = state.detail, api = d.api, view = document.getElementById("view");
    if (!view.querySelector("[data-page='api']")) buildApiPage(view);
    var header = view.querySelector("#api-header");
    header.textContent = "";
    header.appendChild(el("h1", {}, [text(api.name), badge(api.status)]));
    var m = api.metrics || {};
    header.appendChild(el("p", { cls: "meta" }, [
      metaItem("endpoint", api.url || api.endpoint), metaItem("version", api.version),
      metaItem("replicas", (api.up_to_date == null ? "?" : api.up_to_date) + " up to date / " + api.requested + " requested"),
      metaItem("requests", fmtInt(m.requests)), metaItem("2XX", fmtInt(m["2XX"])), metaItem("4XX", fmtInt(m["4XX"])),
      metaItem("5XX", fmtInt(m["5XX"])), metaItem("in flight", String(api.in_flight == null ? "\u2014" : api.in_flight)),
      metaItem("last update", fmtDateTime(api.last_update))]));
    if (api.error) {
      header.appendChild(el("div", { cls: "error-box" }, [text(api.error),
        api.traceback ? el("pre", { text: api.traceback }) : null]));
    }
    updateCharts();
    renderPredictions(view.querySelector("#predictions"), d.predictions);
    renderReplicas(view.querySelector("#replicas"), api.replicas || []);
    renderVersions(view.querySelector("#versions"), api.versions || [], api.version);
    renderEvents(view.querySelector("#events"), api.events || [], api.autoscaler || []);
  }
  function metaItem(label, value) {
    return el("span", { "data-meta": label }, [text(label + " "), el("b", { text: value == null ? "\u2014" : value })]);
  }
  function buildApiPage(view) {
    destroyCharts();
    view.textContent = "";
    var windows = el("div", { cls: "windows" }, Object.keys(WINDOW_SECONDS).map(function (w) {
      return el("button", { type: "button", "aria-pressed": String(w === state.window), "data-window": w,
                            text: w, onclick: function () { setWindow(w); } });
    }));
    view.appendChild(el("div", { "data-page": "api" }, [
      el("div", { id: "api-header" }),
      el("div", { cls: "section-head" }, [el("h2", { text: "History" }), windows]),
      el("div", { cls: "grid" }, [chartPanel("replicas", "Replicas"), chartPanel("rate", "Requests per second by status"),
                                  chartPanel("latency", "Latency p50 / p99 (ms)"), chartPanel("inflight", "In-flight requests")]),
      el("section", { cls: "panel", id: "predictions" }),
      el("div", { cls: "grid" }, [el("section", { cls: "panel", id: "replicas" }), el("section", { cls: "panel", id: "versions" })]),
      el("section", { cls: "panel", id: "events" })]));
  }
  function chartPanel(id, title) {
    return el("section", { cls: "panel" }, [el("h2", { text: title }), el("div", { cls: "chart", id: "chart-" + id })]);
  }
  function setWindow(w) {
    state.window = w;
    document.querySelectorAll(".windows button").forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.window === w)); });
    loadDetail();
  }

  /* ---- charts (uPlot) ------------------------------------------------------------------------------ */
  var CHARTS = {
    replicas: [{ label: "ready", stroke: "#1f9d55", width: 2 }, { label: "desired", stroke: "#8a93a6", dash: [6, 4] }],
    rate: [{ label: "2XX", stroke: "#1f9d55", fill: "rgba(31,157,85,.08)" }, { label: "4XX", stroke: "#c77c02" },
           { label: "5XX", stroke: "#d0312d" }],
    latency: [{ label: "p50", stroke: "#2f6fde" }, { label: "p99", stroke: "#8e44ad" }],
    inflight: [{ label: "in flight (avg)", stroke: "#2f6fde", fill: "rgba(47,111,222,.08)" }]
  };
  // Bucket rows -> uPlot columns. Missing buckets become nulls (a gap: the daemon was not running).
  function columns(series, now) {
    var rows = [], step = series.length ? series[series.length - 1].seconds : 60;
    series.forEach(function (row, i) {
      var prev = rows.length ? rows[rows.length - 1] : null;
      if (prev && row.seconds === prev.seconds) {
        for (var t = prev.start + step; t < row.start; t += step) rows.push({ start: t, seconds: step, gap: true });
      }
      rows.push(row);
    });
    var x = [], ready = [], desired = [], r2 = [], r4 = [], r5 = [], p50 = [], p99 = [], inflight = [];
    rows.forEach(function (row) {
      // The open bucket is still filling (and reaches the store up to ~10 s late): its rate is the count
      // over the time elapsed, shown once half a minute has passed, when that is close to the truth.
      var elapsed = Math.min(row.seconds, now - row.start);
      var noRate = row.gap || (elapsed < 30 && row.seconds > elapsed);
      x.push(row.start);
      ready.push(row.gap ? null : row.replicas_ready); desired.push(row.gap ? null : row.replicas_desired);
      r2.push(noRate ? null : row.code_2xx / elapsed); r4.push(noRate ? null : row.code_4xx / elapsed);
      r5.push(noRate ? null : row.code_5xx / elapsed);
      p50.push(row.p50 == null ? null : row.p50 * 1000); p99.push(row.p99 == null ? null : row.p99 * 1000);
      inflight.push(row.gap ? null : row.in_flight);
    });
    return { replicas: [x, ready, desired], rate: [x, r2, r4, r5], latency: [x, p50, p99], inflight: [x, inflight] };
  }
  function updateCharts() {
    var data = columns(state.series, state.detail.now);
    Object.keys(CHARTS).forEach(function (id) {
      var chart = state.charts[id];
      if (chart) { chart.setData(data[id]); return; }
      var target = document.getElementById("chart-" + id);
      if (!target || !window.uPlot) return;
      state.charts[id] = new window.uPlot({
        width: chartWidth(target), height: 200, series: [{}].concat(CHARTS[id]),
        scales: { x: { time: true, range: xRange }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, id === "replicas" ? 2 : 1) * 1.1]; } } },
        axes: [{}, { size: 50 }], legend: { live: false }, cursor: { drag: { x: false, y: false } }
      }, data[id], target);
    });
  }
  // The whole window, whatever the data covers: one bucket after a deploy must not stretch over years.
  function xRange() {
    var now = state.detail ? state.detail.now : Date.now() / 1000;
    return [now - WINDOW_SECONDS[state.window], now];
  }
  function chartWidth(target) { return Math.max(260, target.clientWidth || target.parentNode.clientWidth - 32); }
  function resizeCharts() {
    Object.keys(state.charts).forEach(function (id) {
      var target = document.getElementById("chart-" + id);
      if (target) state.charts[id].setSize({ width: chartWidth(target), height: 200 });
    });
  }
  function destroyCharts() {
    Object.keys(state.charts).forEach(function (id) { state.charts[id].destroy(); });
    state.charts = {};
  }

  /* ---- predictions, replicas, versions, events ---------------------------------------------------- */
  function renderPredictions(panel, p) {
    panel.textContent = "";
    panel.appendChild(el("h2", { text: "Predictions" }));
    if (!p) {
      panel.appendChild(el("p", { cls: "muted", text: "No prediction monitoring: add `monitoring: {model_type: classification | regression}` to the spec." }));
      return;
    }
    var drift = p.drift, s = p.summary || {};
    panel.appendChild(el("p", { cls: "meta", "data-field": "drift" }, [
      metaItem("type", p.model_type), p.key ? metaItem("key", p.key) : null,
      drift ? el("span", {}, [text("drift "), badge(drift.verdict, drift.verdict), text(driftText(drift))])
            : el("span", { cls: "muted", text: "drift: not enough data yet (needs a reference window and the last hour)" })]));
    if (s.classes) panel.appendChild(classBars(s.classes));
    else if (s.histogram) panel.appendChild(histogram(s));
    else panel.appendChild(el("p", { cls: "muted", text: "No predictions in the last hour." }));
  }
  function driftText(drift) {
    var base = drift.baseline || [];
    var psi = drift.psi == null ? "" : " PSI " + Number(drift.psi).toFixed(3);
    var filling = base[1] != null && state.detail && base[1] > state.detail.now ? " (still filling)" : "";
    var ref = base[0] == null ? "" : " \u2014 last hour vs the reference window " + fmtDateTime(base[0]) +
      " \u2013 " + fmtDateTime(base[1]) + filling;
    return psi + ref;
  }
  function classBars(classes) {
    var entries = Object.keys(classes).map(function (k) { return [k, classes[k]]; })
      .sort(function (a, b) { return b[1] - a[1]; }).slice(0, 20);
    var total = entries.reduce(function (sum, e) { return sum + e[1]; }, 0) || 1, box = el("div", { cls: "bars" });
    entries.forEach(function (e) {
      var fill = el("span");
      fill.style.width = (100 * e[1] / total).toFixed(1) + "%"; // CSSOM, allowed by the page's style-src
      box.appendChild(el("span", { cls: "mono", text: e[0] }));
      box.appendChild(el("div", { cls: "bar" }, [fill]));
      box.appendChild(el("span", { cls: "num", "data-class": e[0], "data-value": String(e[1]), text: fmtInt(e[1]) + " (" + (100 * e[1] / total).toFixed(1) + "%)" }));
    });
    return box;
  }
  function histogram(s) {
    var h = s.histogram, counts = h.counts || [], max = Math.max.apply(null, counts.concat([1]));
    var first = counts.findIndex(function (c) { return c > 0; }), last = counts.length - 1;
    while (last > 0 && !counts[last]) last--;
    var bars = el("div", { cls: "hist" });
    for (var i = Math.max(0, first); i <= last && first >= 0; i++) {
      var bar = el("span", { title: "\u2264 " + (h.bounds[i] == null ? "+Inf" : h.bounds[i]) + ": " + counts[i] });
      bar.style.height = (100 * counts[i] / max).toFixed(1) + "%";
      bars.appendChild(bar);
    }
    return el("div", {}, [el("p", { cls: "meta" }, [metaItem("min", fmtNum(s.min)), metaItem("avg", fmtNum(s.avg)),
                                                    metaItem("max", fmtNum(s.max))]), bars]);
  }
  function fmtNum(v) { return v == null ? null : Math.abs(v) >= 1000 || Math.abs(v) < 0.01 ? Number(v).toExponential(2) : Number(v).toFixed(3); }

  function table(headers, rows, emptyText) {
    if (!rows.length) return el("p", { cls: "empty", text: emptyText });
    return el("table", {}, [el("thead", {}, [el("tr", {}, headers.map(function (h) { return el("th", { text: h }); }))]),
                            el("tbody", {}, rows)]);
  }
  function renderReplicas(panel, replicas) {
    panel.textContent = "";
    panel.appendChild(el("h2", { text: "Replicas" }));
    panel.appendChild(table(["id", "version", "status", "pid", "restarts", "age", "memory"], replicas.map(function (r) {
      return el("tr", { "data-replica": r.id }, [el("td", { cls: "mono", text: r.id }),
        el("td", { cls: "mono", text: (r.version || "").slice(0, 12) }),
        el("td", { "data-field": "replica-status" }, [badge(r.status)]), el("td", { cls: "mono", text: r.pid == null ? "\u2014" : r.pid }),
        el("td", { cls: "num", text: String(r.restarts || 0) }), el("td", { text: fmtAge(r.age) }),
        el("td", { text: fmtBytes(r.rss) || "\u2014" })]);
    }), "No replicas (scaled to zero)."));
  }
  function renderVersions(panel, versions, current) {
    panel.textContent = "";
    panel.appendChild(el("h2", { text: "Versions" }));
    panel.appendChild(table(["version", "deployed"], versions.map(function (v) {
      return el("tr", {}, [el("td", { cls: "mono" }, [text(v.version), v.version === current ? text("  \u2190 current") : null]),
                           el("td", { text: fmtDateTime(v.deployed_at) })]);
    }), "No versions recorded."));
  }
  // Events (deploys, rollouts, scaling with its reason, crashes) and autoscaler decisions, newest first.
  function renderEvents(panel, events, decisions) {
    var rows = events.map(function (e) { return { at: e.at, kind: e.kind, message: e.message }; });
    decisions.forEach(function (d) { // the server sends only decisions that asked for a change
      rows.push({ at: d.at, kind: "autoscaler", message: "in flight " + Number(d.avg_in_flight).toFixed(2) + " / target " +
        d.target_replica_concurrency + " per replica \u2192 recommend " + d.recommendation + ", request " + d.request +
        " (had " + d.current_replicas + ")" });
    });
    rows.sort(function (a, b) { return b.at - a.at; });
    panel.textContent = "";
    panel.appendChild(el("h2", { text: "Recent events" }));
    var tableNode = table(["when", "kind", "what"], rows.slice(0, 40).map(function (e) {
      return el("tr", { "data-event": e.kind }, [el("td", { cls: "when", text: fmtDateTime(e.at) }),
                                                 el("td", { cls: "kind" }, [badge(e.kind.replace(/_/g, " "), e.kind)]),
                                                 el("td", { text: e.message })]);
    }), "No events yet.");
    tableNode.classList.add("events");
    panel.appendChild(tableNode);
  }
})();
