/* kwx dashboard: the read-only operator page of the Kalshi temperature loop.
 *
 * The trader's terms: every instant on the shown city's settlement clock, local *standard* time all year (the
 * server sends its UTC offset; UTC is in each time's title), prices in whole cents, money in dollars and cents.
 *
 * Vanilla ES2020, no build step. Polls six JSON endpoints (api/state first, then ladder, signals, models,
 * execution and calibration in parallel), renders them, and schedules the next poll with setTimeout after
 * `refresh_seconds` (at least 2 s). All data reaches the DOM through textContent / attributes, never innerHTML.
 *
 * Test hooks: window.kwx = {charts: {ticker: uPlot}, calibrationCharts: {"city/bracket": uPlot},
 *   lastRefresh: Date|null, refreshCount: int, errorCount: int, lastError: string|null, refresh(): void}.
 * refreshCount and lastRefresh move only after a refresh in which every endpoint answered and rendered.
 */
(() => {
  "use strict";

  const MIN_REFRESH_S = 2;
  const DEFAULT_REFRESH_S = 9;
  const FETCH_TIMEOUT_MS = 20000;
  const MAX_TABLE_ROWS = 2000;
  const LADDER_HEIGHT = 150;
  const CAL_HEIGHT = 170;

  const C = {
    model: "#4ea1ff", blend: "#ff9f43", bid: "#35c27f", ask: "#f0616d", mid: "#a3adba",
    axis: "#8a96a6", grid: "rgba(138,150,166,0.14)", tick: "rgba(138,150,166,0.35)",
    yesLine: "#35c27f", yesShade: "rgba(53,194,127,0.10)", noLine: "#f0616d", noShade: "rgba(240,97,109,0.09)",
  };
  // The ladder's five series, in the contract's order (uPlot adds x in front: series.length === 6).
  const LADDER_SERIES = [
    {key: "model", stroke: C.model, width: 1.75},
    {key: "blend", stroke: C.blend, width: 1.75},
    {key: "bid", stroke: C.bid, width: 1, dash: [4, 3]},
    {key: "ask", stroke: C.ask, width: 1, dash: [4, 3]},
    {key: "mid", stroke: C.mid, width: 1.25},
  ];
  const CAL_PALETTE = ["#4ea1ff", "#ff9f43", "#a3adba", "#c678dd", "#35c27f", "#f0616d", "#e5c07b", "#56b6c2"];
  const MONO_COL = /ticker|(^|_)id$|^run$/; // identifiers read better in a fixed-width font
  const ISO_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d/;
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- page state

  const ui = {
    city: null,            // ladder / calibration city; null = the first city the server lists
    day: null,             // pinned day; null = follow the server's newest day
    viewDay: null,         // the day being shown (from api/state)
    filters: {city: "all", bracket: "all"},
    refreshMs: DEFAULT_REFRESH_S * 1000,
    timer: null, inFlight: false, again: false, stopped: false,
    selVersion: 0,         // bumps on every city/day change so late answers for the old selection are dropped
    serverBanners: [], clientBanners: [], bannerSig: "",
    markets: new Map(),    // ticker -> market of the current ladder (read by the lock/settlement hook)
    ladderKey: "", ladderX: null, ladderZoomed: false, focusTicker: null,
    dayMarks: {},          // the ladder's close time and usual time of the high (api/ladder axis)
    calKey: "",
    health: null, healthAt: 0, forecasts: [],
    clock: {zone: "UTC", utc_offset_seconds: 0, label: "UTC"}, // the shown city's settlement clock (api/state)
    execution: {mode: null, halted: false, haltText: ""},
    failing: false,
  };

  const kwx = (window.kwx = {
    charts: {}, calibrationCharts: {}, lastRefresh: null, refreshCount: 0, errorCount: 0, lastError: null,
    refresh: () => refreshNow(),
  });

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  /** A Date moved onto the city's clock: read it with the getUTC* methods (the browser's zone never enters). */
  const onClock = (d) => new Date(d.getTime() + ui.clock.utc_offset_seconds * 1000);

  /** "HH:MM:SS" of a Date on the city's clock. */
  function hms(d) {
    const c = onClock(d);
    return `${pad2(c.getUTCHours())}:${pad2(c.getUTCMinutes())}:${pad2(c.getUTCSeconds())}`;
  }

  /** The page's one timestamp format, on the city's clock: "07-18 14:50". */
  function clockStamp(d) {
    return `${onClock(d).toISOString().slice(5, 10)} ${hms(d).slice(0, 5)}`;
  }

  /** The hover text of a time: the same instant in UTC. */
  const utcTitle = (d) => `${d.toISOString().slice(0, 19).replace("T", " ")} UTC`;

  /** An ISO time in the page's format; its UTC is the title of the element that shows it. */
  function fmtTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : clockStamp(d);
  }

  /** Seconds as "12 s", "3 min", "2 h", "5 d". */
  function humanAge(s) {
    if (s === null || s === undefined || !Number.isFinite(Number(s))) return "–";
    s = Math.max(0, Number(s));
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h`;
    return `${Math.floor(s / 86400)} d`;
  }

  /** Cents as signed dollars: 252.2 -> "+$2.52", -3 -> "−$0.03". */
  function dollars(cents, signed = true) {
    if (cents === null || cents === undefined || !Number.isFinite(Number(cents))) return "–";
    const v = Number(cents) / 100;
    const sign = v < 0 ? "−" : signed && v > 0 ? "+" : "";
    return `${sign}$${Math.abs(v).toFixed(2)}`;
  }

  /** A price in whole cents: 98.0 -> "98¢", a probability 0.31 -> "31¢" (what a YES contract at it costs). */
  function cents(v) {
    if (v === null || v === undefined || !Number.isFinite(Number(v))) return "–";
    return `${Math.round(Number(v)) || 0}¢`; // "|| 0": never "-0¢"
  }
  const probCents = (p) => (p === null || p === undefined ? "–" : cents(Number(p) * 100));

  // Columns by unit: prices (per contract) in whole cents, other *_cents are money in dollars, counts whole.
  const PRICE_COL = /^(avg_cost|mark|limit_price|price|edge)_cents$/;
  const COUNT_COL = /^(contracts|count|filled_count|fills|positions|unmarked)$/;

  /** A column's heading in the units its cells are shown in: times on the city's clock, ¢ or $ for cents. */
  function columnLabel(col) {
    const name = String(col);
    if (name === "ts_utc" || name === "ts") return `time (${ui.clock.zone})`;
    if (/_at$/.test(name)) return `${name.slice(0, -3)} (${ui.clock.zone})`;
    if (PRICE_COL.test(name)) return `${name.slice(0, -6)} ¢`;
    if (/_cents$/.test(name)) return `${name.slice(0, -6)} $`;
    return name;
  }

  /** A cell's display text; the raw value stays in the cell's data-value. */
  function fmtCell(col, v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (Array.isArray(v)) return v.length ? v.map((x) => fmtCell(col, x)).join(", ") : "–";
    if (typeof v === "object") return JSON.stringify(v);
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return String(v);
      if (/^p_|prob/.test(col)) return probCents(v);
      if (PRICE_COL.test(col)) return cents(v);
      if (/cents$/.test(col)) return dollars(v, false);
      if (COUNT_COL.test(col)) return String(Math.round(v));
      if (/fraction$/.test(col)) return `${(v * 100).toFixed(2)}%`;
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return v.toFixed(a >= 100 ? 1 : a >= 1 ? 2 : 3);
    }
    if (typeof v === "string" && ISO_RE.test(v)) return fmtTime(v);
    return String(v);
  }

  /** Only http(s) links become anchors (a javascript: URL from the data must not). */
  function safeHref(link) {
    if (typeof link !== "string" || !link) return null;
    try {
      const u = new URL(link, window.location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch {
      return null;
    }
  }

  const tzUTC = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const AXIS_FONT = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  // Ladder x-axis: the climate day on the city's clock, 00:00 to 24:00 (its end is the next midnight, "24:00").
  const ladderAxis = {end: null};
  const hhmmValues = (u, splits) => splits.map((v) => {
    if (v === null) return "";
    return v === ladderAxis.end ? "24:00" : hms(new Date(v * 1000)).slice(0, 5);
  });
  const HOUR = 3600;
  // ticks on whole clock hours (or half/quarter hours zoomed in), at most seven across
  const hourSplits = (u, axisIdx, min, max) => {
    const span = max - min;
    const step = [900, 1800, HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 6 * HOUR].find((s) => span / s <= 6) || 12 * HOUR;
    const offset = ui.clock.utc_offset_seconds;
    const out = [];
    for (let t = Math.ceil((min + offset) / step) * step - offset; t <= max; t += step) out.push(t);
    return out;
  };
  const dayValues = (u, splits) => splits.map((v) => (v === null ? "" : new Date(v * 1000).toISOString().slice(5, 10)));
  // one tick per whole UTC day (thinned to about a dozen), so a date is never labelled twice
  const DAY_SECONDS = 86400;
  const daySplits = (u, axisIdx, min, max) => {
    const first = Math.ceil(min / DAY_SECONDS) * DAY_SECONDS;
    const step = DAY_SECONDS * Math.max(1, Math.ceil((Math.floor((max - first) / DAY_SECONDS) + 1) / 12));
    const out = [];
    for (let t = first; t <= max; t += step) out.push(t);
    return out;
  };

  // ---------------------------------------------------------------- fetching

  class ApiError extends Error {
    constructor(message, status, kind, path) {
      super(message);
      this.status = status;
      this.kind = kind; // "database" (503 / network), "auth" (401), "request" (other), "render"
      this.path = path;
    }
  }

  async function getJSON(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") qs.set(k, v);
    const url = qs.toString() ? `${path}?${qs}` : path;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let resp;
    try {
      resp = await fetch(url, {headers: {Accept: "application/json"}, cache: "no-store",
        credentials: "same-origin", signal: ctl.signal});
    } catch (e) {
      const why = e && e.name === "AbortError" ? "timed out" : "unreachable";
      throw new ApiError(`dashboard server ${why}`, 0, "database", path);
    } finally {
      clearTimeout(timer);
    }
    if (resp.status === 401) throw new ApiError("login required", 401, "auth", path);
    let body = null;
    try {
      body = await resp.json();
    } catch {
      body = null;
    }
    if (!resp.ok) {
      const text = body && typeof body.error === "string" ? body.error : `HTTP ${resp.status} ${resp.statusText}`;
      throw new ApiError(text, resp.status, resp.status === 503 ? "database" : "request", path);
    }
    if (body === null || typeof body !== "object") {
      throw new ApiError(`${path}: answer is not JSON`, resp.status, "request", path);
    }
    return body;
  }

  // ---------------------------------------------------------------- refresh loop

  function schedule(ms) {
    clearTimeout(ui.timer);
    if (!ui.stopped) ui.timer = setTimeout(run, ms);
  }

  function refreshNow() {
    if (ui.inFlight) ui.again = true;
    else schedule(0);
  }

  async function run() {
    if (ui.inFlight) {
      ui.again = true;
      return;
    }
    ui.inFlight = true;
    try {
      await cycle();
    } catch (e) {
      // a bug, not an outage: say so and keep polling
      console.error(e);
      fail([new ApiError(`dashboard error: ${e && e.message}`, 0, "render")]);
    } finally {
      ui.inFlight = false;
      if (ui.again) {
        ui.again = false;
        schedule(0);
      } else {
        schedule(ui.refreshMs);
      }
    }
  }

  async function cycle() {
    const v = ui.selVersion;
    let state;
    try {
      state = await getJSON("api/state", {day: ui.day});
    } catch (e) {
      return fail([e]);
    }
    if (v !== ui.selVersion) return; // the operator changed city/day meanwhile: the rerun asks again
    ui.refreshMs = Math.max(MIN_REFRESH_S, Number(state.refresh_seconds) || DEFAULT_REFRESH_S) * 1000;
    const day = state.day || null;
    // a pinned day the server no longer lists (an old bookmark): follow the newest day again
    if (ui.day && Array.isArray(state.days) && !state.days.includes(ui.day)) ui.day = null;
    const cities = Array.isArray(state.cities) ? state.cities : [];
    if (!ui.city || !cities.includes(ui.city)) ui.city = cities.length ? cities[0] : null;
    const city = ui.city;

    const jobs = [
      ["ladder", city ? getJSON("api/ladder", {city, day}) : Promise.resolve(null)],
      ["signals", getJSON("api/signals", {day})],
      ["models", getJSON("api/models", {day})],
      ["execution", getJSON("api/execution", {day})],
      ["calibration", city ? getJSON("api/calibration", {city}) : Promise.resolve({families: []})],
    ];
    const settled = await Promise.allSettled(jobs.map(([, p]) => p));
    if (v !== ui.selVersion) return;

    const errors = [];
    const guard = (name, fn) => {
      try {
        fn();
      } catch (e) {
        console.error(e);
        errors.push(new ApiError(`rendering ${name} failed: ${e && e.message}`, 0, "render", name));
      }
    };
    guard("state", () => renderState(state));
    const renderers = {ladder: renderLadder, signals: renderSignals, models: renderModels,
      execution: renderExecution, calibration: renderCalibration};
    settled.forEach((r, i) => {
      const name = jobs[i][0];
      if (r.status === "rejected") errors.push(r.reason);
      else guard(name, () => renderers[name](r.value, city));
    });
    if (errors.length) return fail(errors, true);

    ui.failing = false;
    ui.clientBanners = [];
    renderBanners();
    kwx.lastRefresh = new Date();
    kwx.refreshCount += 1;
    const upd = $("updated");
    upd.textContent = `updated ${hms(kwx.lastRefresh)}`;
    upd.classList.remove("stale", "partial");
    document.body.classList.remove("stale-data");
    renderStatus();
  }

  /** Failed refresh: 401 goes to the login page; anything else becomes a banner and polling goes on.
   * `rendered`: api/state answered and the endpoints that did answer were drawn (a partial refresh). */
  function fail(errors, rendered = false) {
    if (errors.some((e) => e && e.kind === "auth")) {
      ui.stopped = true;
      clearTimeout(ui.timer);
      window.location = "login";
      return;
    }
    kwx.errorCount += 1;
    ui.failing = true;
    const isDb = (e) => e instanceof ApiError && e.kind === "database";
    const db = errors.filter(isDb);
    const other = errors.filter((e) => !isDb(e));
    const retry = `retrying every ${Math.round(ui.refreshMs / 1000)} s`;
    const since = kwx.lastRefresh ? `, showing data from ${hms(kwx.lastRefresh)} ${ui.clock.zone}` : "";
    const banners = [];
    if (db.length) {
      const text = [...new Set(db.map((e) => (e && e.message) || String(e)))].join("; ");
      banners.push({level: "error", kind: "database", text, note: `${retry}${since}`});
    }
    for (const e of other) {
      const kind = e instanceof ApiError && e.kind === "request" ? "request" : "render";
      const msg = (e && e.message) || String(e);
      banners.push({level: "error", kind, text: e && e.path && kind === "request" ? `${e.path}: ${msg}` : msg,
        note: retry});
    }
    kwx.lastError = banners.map((b) => b.text).join(" | ");
    ui.clientBanners = banners;
    renderBanners();
    const upd = $("updated");
    if (rendered) {
      // only some sections failed (they say so in a banner): the rest is fresh; refreshCount stays for full ones
      upd.textContent = `updated ${hms(new Date())}`;
      upd.classList.remove("stale");
      upd.classList.add("partial");
      document.body.classList.remove("stale-data");
    } else {
      upd.classList.remove("partial");
      upd.classList.add("stale");
      document.body.classList.add("stale-data");
    }
    renderStatus();
  }

  // ---------------------------------------------------------------- banners, header, status

  function renderBanners() {
    const list = [...ui.serverBanners, ...ui.clientBanners];
    const sig = JSON.stringify(list);
    if (sig === ui.bannerSig) return;
    ui.bannerSig = sig;
    $("banners").replaceChildren(...list.map((b) => {
      const level = b.level === "error" || b.level === "warning" ? b.level : "info";
      // the note ("retrying every 9 s…") is drawn by CSS from data-note, so the banner's text is exactly the error
      return el("div", {class: `banner ${level}`, "data-kind": b.kind || "server", "data-note": b.note || null},
        String(b.text ?? ""));
    }));
  }

  /** Fill a <select> only when its options change (rebuilding closes an open dropdown). */
  function fillSelect(select, values, current, labels) {
    const want = values.map(String);
    const have = Array.from(select.options, (o) => o.value);
    if (want.join("\u0000") !== have.join("\u0000")) {
      select.replaceChildren(...want.map((v) => el("option", {value: v}, labels ? labels(v) : v)));
    }
    if (current !== null && current !== undefined) select.value = String(current);
  }

  function setPill(node, text, cls, title) {
    node.textContent = text;
    node.className = `pill ${cls}`;
    if (title !== undefined) node.title = title;
  }

  /** The trading badges: the mode, and one word that agrees with the banners: "halted" (the kill switch is
   * on), "stale" (no recent tick: whatever the switch says, nothing trades), else "trading". */
  function renderExecPills(modeNode, haltNode) {
    const {mode, halted, haltText} = ui.execution;
    if (!mode) {
      setPill(modeNode, "signals only", "muted", "no execution records: the loop only writes signals");
      setPill(haltNode, "no execution", "muted", haltText || "");
      return;
    }
    setPill(modeNode, String(mode).toUpperCase(), mode === "live" ? "live" : "paper", `execution mode: ${mode}`);
    const h = ui.health;
    if (halted) setPill(haltNode, "halted", "halted", haltText || "halted");
    else if (!h || h.stale) setPill(haltNode, "stale", "stale", `${haltText}; but the newest tick is stale`);
    else setPill(haltNode, "trading", "running", haltText || "trading");
  }

  function renderAllExecPills() {
    renderExecPills($("exec-mode-pill"), $("halt-pill-top"));
    renderExecPills($("exec-mode"), $("halt-pill"));
  }

  function renderState(s) {
    ui.viewDay = s.day || null;
    const days = Array.isArray(s.days) ? [...s.days] : [];
    if (s.day && !days.includes(s.day)) days.unshift(s.day);
    fillSelect($("day-select"), days, s.day);
    const cities = Array.isArray(s.cities) ? s.cities : [];
    fillSelect($("city-select"), cities, ui.city);
    $("city-select").disabled = !cities.length;
    $("day-select").disabled = !days.length;
    // the shown city's clock (the ladder's city; before one is chosen, the first the loop trades)
    const clocks = s.clocks || {};
    const city = ui.city && cities.includes(ui.city) ? ui.city : cities[0] || s.home_city;
    ui.clock = clocks[city] || clocks[s.home_city] || ui.clock;
    const tz = $("clock-zone");
    tz.textContent = ui.clock.label;
    tz.title = `times are ${city || ""} local standard time all year (the settlement's clock, no daylight saving)`;

    // a replay's clock is its newest tick's time, not this machine's
    const mode = (s.health && s.health.mode) || "";
    const replay = mode.endsWith("replay");
    const shown = new Date(replay ? s.health.newest_tick : s.now);
    const clockNode = $("server-now");
    clockNode.textContent = Number.isNaN(shown.getTime()) ? "" : `${replay ? "replay" : "now"} ${clockStamp(shown)}`;
    clockNode.title = Number.isNaN(shown.getTime()) ? "" : `${replay ? "the replay's newest tick" : "server clock"}: `
      + utcTitle(shown);

    ui.serverBanners = Array.isArray(s.banners) ? s.banners.map((b) => ({level: b.level, kind: b.kind, text: b.text}))
      : [];
    renderBanners();
    ui.health = s.health || null;
    ui.forecasts = Array.isArray(s.forecasts) ? s.forecasts : [];
    ui.healthAt = Date.now();
    renderHealth();
    const ex = s.execution || {};
    ui.execution = {mode: ex.mode || null, halted: !!ex.halted, haltText: ex.halt_text || ""};
    renderAllExecPills();
    writeHash();
  }

  /** Tab title and favicon say ok / warning / error, for an operator looking at another tab. */
  function renderStatus() {
    const levels = [...ui.serverBanners, ...ui.clientBanners].map((b) => b.level);
    const status = ui.failing || levels.includes("error") || (ui.health && ui.health.stale) ? "error"
      : levels.includes("warning") ? "warning" : "ok";
    const dot = $("status-dot");
    dot.className = `dot ${status}`;
    dot.title = status === "ok" ? "all fresh" : status === "warning" ? "warnings" : "errors or stale data";
    const icon = $("favicon");
    const href = `static/favicon-${status}.svg`;
    if (icon.getAttribute("href") !== href) icon.setAttribute("href", href);
    const mark = status === "error" ? "✖ " : status === "warning" ? "▲ " : "";
    document.title = `${mark}kwx ${ui.city || ""} ${ui.viewDay || ""}`.trim();
  }

  // ---------------------------------------------------------------- health

  function renderHealth() {
    const h = ui.health || {};
    const kv = $("health-kv");
    const rows = [];
    const add = (key, label, value, cls, title) => rows.push(
      el("dt", {}, label), el("dd", {"data-key": key, class: cls || null, title: title || null}, value));
    const tick = h.newest_tick ? new Date(h.newest_tick) : null;
    const known = tick && !Number.isNaN(tick.getTime());
    add("newest_tick", "last tick", known ? fmtTime(h.newest_tick) : "never", null,
      known ? utcTitle(tick) : "no tick recorded");
    add("age", "age", liveAge(), ageClass(), `stale after ${humanAge(h.max_age_seconds)}`);
    add("mode", "loop mode", h.mode || "–", (h.mode || "").endsWith("replay") ? "warn" : null);
    add("ticks_last_hour", "ticks, last hour", h.ticks_last_hour ?? "–", h.ticks_last_hour === 0 ? "bad" : null);
    const ms = (x) => (x === null || x === undefined ? "–" : `${Number(x).toFixed(1)} ms`);
    add("latency_p50_ms", "latency p50", ms(h.latency_p50_ms));
    add("latency_p99_ms", "latency p99", ms(h.latency_p99_ms));
    for (const f of ui.forecasts) {
      add(`forecast_${f.city}`, `forecast ${f.city}`, `${Number(f.age_hours).toFixed(1)} h old (${f.models})`,
        null, f.newest_public ? `newest run public ${fmtTime(f.newest_public)} (${utcTitle(new Date(f.newest_public))})`
          : null);
    }
    if (!ui.forecasts.length) add("forecast", "forecasts", "none public", "warn", "kwx ingest forecasts");
    kv.replaceChildren(...rows);

    const skips = h.skips && typeof h.skips === "object" ? Object.entries(h.skips) : [];
    renderTable("skips-table", {columns: ["reason", "count"], rows: skips},
      {defaultSort: {col: "count", dir: -1}});
    $("skips-empty").hidden = skips.length > 0;
  }

  /** The tick's age in seconds, counting on between refreshes (the server's age plus time since it answered). */
  function ageNow() {
    const h = ui.health;
    if (!h || h.age_seconds === null || h.age_seconds === undefined) return null;
    return Number(h.age_seconds) + (Date.now() - ui.healthAt) / 1000;
  }

  const liveAge = () => humanAge(ageNow());

  function ageClass() {
    const h = ui.health || {};
    const age = ageNow();
    if (age === null) return "muted";
    if (h.stale || (h.max_age_seconds && age > h.max_age_seconds)) return "bad";
    if (h.max_age_seconds && age > h.max_age_seconds / 2) return "warn";
    return "ok";
  }

  setInterval(() => {
    const node = document.querySelector('#health-kv dd[data-key="age"]');
    if (node && ui.health) {
      node.textContent = liveAge();
      node.className = ageClass();
    }
  }, 1000);

  // ---------------------------------------------------------------- generic sortable table

  const tables = new Map(); // table id -> {sort: {col, dir} | null, data, opts, sig}

  /**
   * Render {columns, rows, links?} into <table id>. opts: filter(row, idx) -> bool, filterKey (string that
   * changes when the filter does), rowAttrs(row, idx) -> {name: value} (data-* attributes), rowClass(row, idx),
   * cellClass(col, value, row, idx), linkColumn (column whose cell becomes links[i]), defaultSort {col, dir},
   * countNode (element for "n rows").
   */
  function renderTable(id, data, opts = {}) {
    const table = $(id);
    let st = tables.get(id);
    if (!st) {
      st = {sort: opts.defaultSort || null, data: null, opts: null, sig: ""};
      tables.set(id, st);
      table.addEventListener("click", (ev) => {
        const th = ev.target.closest("th[data-col]");
        if (!th || !table.contains(th)) return;
        const col = th.dataset.col;
        st.sort = st.sort && st.sort.col === col ? {col, dir: -st.sort.dir} : {col, dir: 1};
        drawTable(id, true);
      });
      table.addEventListener("keydown", (ev) => {
        if ((ev.key === "Enter" || ev.key === " ") && ev.target.matches("th[data-col]")) {
          ev.preventDefault();
          ev.target.click();
        }
      });
    }
    st.data = data || {columns: [], rows: []};
    st.opts = opts;
    drawTable(id, false);
  }

  function compareValues(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
    const sa = typeof a === "object" ? JSON.stringify(a) : String(a);
    const sb = typeof b === "object" ? JSON.stringify(b) : String(b);
    return sa.localeCompare(sb, undefined, {numeric: true, sensitivity: "base"});
  }

  function drawTable(id, force) {
    const st = tables.get(id);
    const table = $(id);
    const {opts} = st;
    const columns = Array.isArray(st.data.columns) ? st.data.columns : [];
    const rows = Array.isArray(st.data.rows) ? st.data.rows : [];
    const links = Array.isArray(st.data.links) ? st.data.links : null;
    const sig = JSON.stringify([st.data, st.sort, opts.filterKey || "", ui.clock]);
    if (!force && sig === st.sig) return; // nothing changed: keep the DOM (and any text selection)
    st.sig = sig;

    const numeric = columns.map((_, c) => {
      let seen = false;
      for (const r of rows) {
        const v = r[c];
        if (v === null || v === undefined) continue;
        if (typeof v !== "number") return false;
        seen = true;
      }
      return seen;
    });

    // header
    const head = el("tr");
    columns.forEach((col, c) => {
      const dir = st.sort && st.sort.col === col ? st.sort.dir : 0;
      const th = el("th", {scope: "col", "data-col": col, "data-column": col, tabindex: "0",
        class: numeric[c] ? "num" : null, "aria-sort": dir > 0 ? "ascending" : dir < 0 ? "descending" : "none",
        title: `sort by ${col}`});
      // a line-break chance after each "_" lets long names wrap; data-column keeps the API's column name
      columnLabel(col).split(/(?<=_)/).forEach((part, k) => th.append(...(k ? [el("wbr"), part] : [part])));
      head.append(th);
    });

    // rows: filter, then a stable sort with nulls last both ways
    let recs = rows.map((row, i) => ({row, i, link: links ? links[i] ?? null : null}));
    if (opts.filter) recs = recs.filter((r) => opts.filter(r.row, r.i));
    const shown = recs.length;
    const sc = st.sort ? columns.indexOf(st.sort.col) : -1;
    if (sc >= 0) {
      const dir = st.sort.dir;
      recs.sort((a, b) => {
        const va = a.row[sc];
        const vb = b.row[sc];
        const na = va === null || va === undefined;
        const nb = vb === null || vb === undefined;
        if (na || nb) return na && nb ? a.i - b.i : na ? 1 : -1;
        return compareValues(va, vb) * dir || a.i - b.i;
      });
    }
    if (recs.length > MAX_TABLE_ROWS) recs = recs.slice(0, MAX_TABLE_ROWS);

    const linkCol = opts.linkColumn ? columns.indexOf(opts.linkColumn) : -1;
    const body = el("tbody");
    for (const {row, i, link} of recs) {
      const tr = el("tr", {class: opts.rowClass ? opts.rowClass(row, i) || null : null});
      if (opts.rowAttrs) for (const [k, v] of Object.entries(opts.rowAttrs(row, i))) {
        if (v !== null && v !== undefined) tr.setAttribute(`data-${k}`, String(v));
      }
      columns.forEach((col, c) => {
        const v = row[c] === undefined ? null : row[c];
        const text = fmtCell(col, v);
        const cls = [numeric[c] ? "num" : "", v === null ? "null" : "", MONO_COL.test(col) ? "mono" : "",
          opts.cellClass ? opts.cellClass(col, v, row, i) || "" : ""].filter(Boolean).join(" ");
        const td = el("td", {"data-value": JSON.stringify(v), class: cls || null});
        const href = c === linkCol ? safeHref(link) : null;
        if (href) td.append(el("a", {href, target: "_blank", rel: "noopener noreferrer"}, text));
        else td.textContent = text;
        if (typeof v === "string" && ISO_RE.test(v)) td.title = utcTitle(new Date(v));
        else if (typeof v === "string" && v.length > 28) td.title = v;
        tr.append(td);
      });
      body.append(tr);
    }
    table.replaceChildren(el("thead", {}, head), body);

    if (opts.countNode) {
      const total = rows.length;
      let text = shown === total ? `${total} row${total === 1 ? "" : "s"}` : `${shown} of ${total} rows`;
      if (shown > MAX_TABLE_ROWS) text += `, first ${MAX_TABLE_ROWS} shown`;
      opts.countNode.textContent = text;
    }
  }

  // ---------------------------------------------------------------- signals

  function renderSignals(data) {
    const columns = data.columns || [];
    const rows = data.rows || [];
    const ix = (name) => columns.indexOf(name);
    const [ci, bi, ti, si, ki] = ["city", "bracket", "ticker", "side", "skip_reason"].map(ix);
    const distinct = (c) => (c < 0 ? [] : [...new Set(rows.map((r) => r[c]).filter((v) => v !== null && v !== undefined))]
      .map(String).sort());
    for (const [key, c, node] of [["city", ci, $("signals-city")], ["bracket", bi, $("signals-bracket")]]) {
      const values = distinct(c);
      const cur = ui.filters[key];
      if (cur !== "all" && !values.includes(cur)) values.push(cur); // keep the operator's filter across refreshes
      fillSelect(node, ["all", ...values], cur);
    }
    const f = ui.filters;
    renderTable("signals-table", data, {
      filter: (r) => (f.city === "all" || String(r[ci]) === f.city) && (f.bracket === "all" || String(r[bi]) === f.bracket),
      filterKey: `${f.city}\u0000${f.bracket}`,
      rowAttrs: (r) => ({ticker: ti >= 0 ? r[ti] : null, city: ci >= 0 ? r[ci] : null}),
      rowClass: (r) => (ki >= 0 && r[ki] ? "skipped" : si >= 0 && r[si] ? `trade side-${r[si]}` : null),
      cellClass: (col, v) => {
        if (col === "side" && v) return `side side-${v}`;
        if (col === "edge_cents" && typeof v === "number") return v > 0 ? "pos" : v < 0 ? "neg" : null;
        if (col === "skip_reason" && v) return "reason";
        if (col === "locked" && v === true) return "locked";
        return null;
      },
      countNode: $("signals-count"),
    });
    $("signals-empty").hidden = rows.length > 0;
    $("signals-ts").textContent = data.ts ? `as of ${fmtTime(data.ts)}` : "";
  }

  function onSignalsFilter() {
    ui.filters.city = $("signals-city").value;
    ui.filters.bracket = $("signals-bracket").value;
    const st = tables.get("signals-table");
    if (st) {
      const f = ui.filters;
      st.opts.filterKey = `${f.city}\u0000${f.bracket}`;
      renderSignals(st.data); // same data, new filter
    }
    writeHash();
  }

  /** Clicking a signal row shows its market's chart (switching the ladder's city when needed). */
  function onSignalsClick(ev) {
    if (ev.target.closest("a, th")) return;
    const tr = ev.target.closest("tbody tr[data-ticker]");
    if (!tr || (window.getSelection && String(window.getSelection()).length)) return;
    ui.focusTicker = tr.dataset.ticker;
    if (tr.dataset.city && tr.dataset.city !== ui.city) {
      setCity(tr.dataset.city);
    } else {
      focusChart();
    }
  }

  // ---------------------------------------------------------------- models

  function renderModels(data) {
    const columns = data.columns || [];
    const sd = columns.indexOf("stale_days");
    const pr = columns.indexOf("problem");
    // links[i] goes on the "run" cell ("run_id" or another run column if the server names it so)
    const linkColumn = columns.find((c) => c === "run") || columns.find((c) => c === "run_id")
      || columns.find((c) => /run/.test(c)) || null;
    renderTable("models-table", data, {
      linkColumn,
      rowClass: (r) => [sd >= 0 && typeof r[sd] === "number" && r[sd] > 0 ? "stale" : "",
        pr >= 0 && r[pr] ? "problem" : ""].filter(Boolean).join(" ") || null,
      cellClass: (col, v) => ((col === "stale_days" && typeof v === "number" && v > 0) || (col === "problem" && v)
        ? "warn" : null),
    });
    $("models-empty").hidden = (data.rows || []).length > 0;
  }

  // ---------------------------------------------------------------- execution

  function renderExecution(ex) {
    ui.execution = {mode: ex.mode || null, halted: !!ex.halted, haltText: ex.halt_text || ""};
    renderAllExecPills();
    const ht = $("halt-text");
    ht.textContent = ex.mode && ex.halted ? ex.halt_text : ""; // the badge says trading or stale
    ht.classList.toggle("halted", !!(ex.mode && ex.halted));
    const none = !ex.mode;
    $("execution-empty").hidden = !none;
    $("execution-tables").hidden = none;

    const figs = [];
    if (ex.pnl && !none) {
      for (const [key, label, signed] of [["realized_cents", "realized", true], ["unrealized_cents", "unrealized", true],
        ["fees_cents", "fees", false], ["total_cents", "total P&L", true]]) {
        const v = ex.pnl[key];
        const cls = key === "fees_cents" || typeof v !== "number" || v === 0 ? "" : v > 0 ? "pos" : "neg";
        figs.push(el("div", {class: `fig ${key === "total_cents" ? "total" : ""}`, "data-key": key},
          el("span", {class: "k"}, label),
          el("span", {class: `v ${cls}`, "data-value": JSON.stringify(v ?? null)}, dollars(v, signed))));
      }
    }
    // where the total came from: fills on rows the model priced (open) and on rows the settlement rule had
    // already decided (locked); the two sum to the total
    for (const [source, part] of Object.entries((ex.pnl && !none && ex.pnl.by_source) || {})) {
      const v = part.total_cents;
      const cls = typeof v !== "number" || v === 0 ? "" : v > 0 ? "pos" : "neg";
      const detail = `realized ${dollars(part.realized_cents)}, MTM ${dollars(part.unrealized_cents)}, fees `
        + `${dollars(part.fees_cents, false)}; ${part.fills} fills, ${part.contracts} contracts, `
        + `${part.positions} positions`;
      figs.push(el("div", {class: "fig source", "data-key": `source-${source}`, title: detail},
        el("span", {class: "k"}, part.label || source),
        el("span", {class: `v ${cls}`, "data-value": JSON.stringify(v ?? null)}, dollars(v, true))));
    }
    if (ex.pnl && !none && typeof ex.pnl.unmarked === "number" && ex.pnl.unmarked > 0) {
      // positions without a mark: unrealized P&L leaves them out
      figs.unshift(el("div", {class: "fig", "data-key": "unmarked", title: "positions without a market price"},
        el("span", {class: "k"}, "unmarked"),
        el("span", {class: "v warn", "data-value": JSON.stringify(ex.pnl.unmarked)}, String(ex.pnl.unmarked))));
    }
    $("pnl").replaceChildren(...figs);

    for (const name of ["positions", "orders", "fills"]) {
      const t = ex[name] || {columns: [], rows: []};
      renderTable(`${name}-table`, t, {
        countNode: $(`${name}-count`),
        cellClass: (col, v) => {
          if (col === "side" && v) return `side side-${v}`;
          if (/(pnl|realized|unrealized)_cents$/.test(col) && typeof v === "number" && v) return v > 0 ? "pos" : "neg";
          if (col === "status" && v) return `status status-${v}`;
          return null;
        },
      });
    }
  }

  // ---------------------------------------------------------------- ladder

  /** Index of the newest non-null value at or before `from` (default: the end), or -1. */
  function lastIndex(arr, from = arr.length - 1) {
    for (let i = Math.min(from, arr.length - 1); i >= 0; i--) if (arr[i] !== null && arr[i] !== undefined) return i;
    return -1;
  }

  /** uPlot data for one market: [t, model, blend, bid, ask, mid], each as long as t. */
  function ladderData(s) {
    const t = s && Array.isArray(s.t) ? s.t : [];
    const col = (k) => {
      const a = s && Array.isArray(s[k]) ? s[k] : [];
      return a.length === t.length ? a : t.map((_, i) => (a[i] === undefined ? null : a[i]));
    };
    return [t, ...LADDER_SERIES.map((d) => col(d.key))];
  }

  /** drawClear hook: the locked region shaded from locked_at on, with a labelled line; under the series. */
  function drawLock(u) {
    const m = ui.markets.get(u.kwxTicker);
    if (!m || !m.locked_at) return;
    const t = Date.parse(m.locked_at) / 1000;
    if (!Number.isFinite(t)) return;
    const yes = m.locked_outcome === "yes";
    const no = m.locked_outcome === "no";
    const line = yes ? C.yesLine : no ? C.noLine : C.axis;
    const {left, top, width, height} = u.bbox;
    const x = Math.round(u.valToPos(t, "x", true));
    if (x > left + width) return;
    const x0 = Math.max(left, x);
    const ctx = u.ctx;
    const px = uPlot.pxRatio;
    ctx.save();
    ctx.fillStyle = yes ? C.yesShade : no ? C.noShade : C.grid;
    ctx.fillRect(x0, top, left + width - x0, height);
    if (x >= left) {
      ctx.strokeStyle = line;
      ctx.lineWidth = 1.5 * px;
      ctx.beginPath();
      ctx.moveTo(x + 0.5, top);
      ctx.lineTo(x + 0.5, top + height);
      ctx.stroke();
    }
    ctx.fillStyle = line;
    ctx.font = `600 ${10 * px}px ui-sans-serif, system-ui, sans-serif`;
    ctx.textBaseline = "top";
    const label = `locked ${yes ? "YES" : no ? "NO" : ""}`.trim();
    const w = ctx.measureText(label).width;
    const lx = x0 + 4 * px + w > left + width ? x0 - 4 * px - w : x0 + 4 * px;
    ctx.fillText(label, Math.max(left + 2 * px, lx), top + 3 * px);
    ctx.restore();
  }

  /** drawClear hook: a dashed line where the markets close and one where the high usually comes, labelled. */
  function drawDayMarks(u) {
    const marks = ui.dayMarks || {};
    const {left, top, width, height} = u.bbox;
    const px = uPlot.pxRatio;
    const ctx = u.ctx;
    // the usual high labelled at the foot, the close below the lock's label at the top: they never overlap
    for (const [t, label, color, y] of [[marks.usual_high, "usual high", C.blend, top + height - 2 * px],
      [marks.close, "close", C.axis, top + 26 * px]]) {
      if (!Number.isFinite(t)) continue;
      const x = Math.round(u.valToPos(t, "x", true));
      if (x < left || x > left + width) continue;
      ctx.save();
      ctx.strokeStyle = color;
      ctx.globalAlpha = 0.7;
      ctx.lineWidth = px;
      ctx.setLineDash([3 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(x + 0.5, top);
      ctx.lineTo(x + 0.5, top + height);
      ctx.stroke();
      ctx.fillStyle = color;
      ctx.font = `${9 * px}px ui-sans-serif, system-ui, sans-serif`;
      ctx.textBaseline = "bottom";
      const text = `${label} ${hms(new Date(t * 1000)).slice(0, 5).replace(/^00:00$/, "24:00")}`;
      const w = ctx.measureText(text).width;
      ctx.fillText(text, x + 3 * px + w > left + width ? x - 3 * px - w : x + 3 * px, y);
      ctx.restore();
    }
  }

  /** The chart header's read-out: values at the cursor (synced over the ladder), else the latest ones. */
  function updateReadout(u) {
    const node = u.kwxReadout;
    if (!node) return;
    const t = u.data[0];
    let idx = u.cursor.idx;
    const live = idx === null || idx === undefined;
    if (live) idx = t.length - 1;
    const parts = [];
    if (idx >= 0 && t.length) {
      parts.push(el("span", {class: "rt", title: utcTitle(new Date(t[idx] * 1000))},
        `${live ? "last " : ""}${hms(new Date(t[idx] * 1000)).slice(0, 5)}`));
      LADDER_SERIES.forEach((d, k) => {
        // the newest value at or before the cursor (the line spans gaps too); dimmed when carried forward
        const arr = u.data[k + 1];
        const j = lastIndex(arr, idx);
        const v = j >= 0 ? arr[j] : null;
        const carried = j >= 0 && j !== idx;
        parts.push(el("span", {class: `rv rv-${d.key}${carried ? " carried" : ""}`,
          title: carried ? `${d.key} as of ${hms(new Date(t[j] * 1000))}` : null},
        el("i", {}, d.key === "model" ? "mdl" : d.key === "blend" ? "bld" : d.key),
        probCents(v)));
      });
    } else {
      parts.push(el("span", {class: "rt"}, "no data yet"));
    }
    node.replaceChildren(...parts);
  }

  function ladderOptions(width, ticker, readout) {
    return {
      width, height: LADDER_HEIGHT,
      tzDate: tzUTC, // labels and ticks come from the city's clock (hhmmValues, hourSplits), never the browser's
      legend: {show: false},
      cursor: {
        sync: {key: "kwx-ladder"},
        drag: {x: true, y: false, setScale: true},
        points: {size: 5},
      },
      scales: {x: {time: true}, y: {auto: false, range: [0, 1]}},
      axes: [
        {stroke: C.axis, font: AXIS_FONT, size: 20, gap: 3, values: hhmmValues, splits: hourSplits,
          grid: {stroke: C.grid, width: 1}, ticks: {stroke: C.tick, width: 1, size: 3}},
        {stroke: C.axis, font: AXIS_FONT, size: 34, gap: 3,
          splits: () => [0, 0.25, 0.5, 0.75, 1],
          values: (u, vals) => vals.map((v) => probCents(v)),
          grid: {stroke: C.grid, width: 1}, ticks: {stroke: C.tick, width: 1, size: 3}},
      ],
      series: [
        {label: "time"},
        ...LADDER_SERIES.map((d) => ({label: d.key, stroke: d.stroke, width: d.width, dash: d.dash,
          spanGaps: true, points: {show: false}})),
      ],
      hooks: {
        init: [(u) => {
          u.kwxTicker = ticker;
          u.kwxReadout = readout;
        }],
        drawClear: [drawLock, drawDayMarks],
        setCursor: [updateReadout],
        setSelect: [() => {
          ui.ladderZoomed = true;
          $("ladder-zoom").hidden = false;
        }],
      },
    };
  }

  function marketBadges(m) {
    const out = [];
    if (m.result === "yes" || m.result === "no") {
      out.push(el("span", {class: `badge settled-${m.result}`}, `settled ${m.result.toUpperCase()}`));
    }
    if (m.locked_at) {
      const d = new Date(m.locked_at);
      const known = !Number.isNaN(d.getTime());
      const at = known ? ` from ${hms(d).slice(0, 5)}` : "";
      const o = m.locked_outcome ? m.locked_outcome.toUpperCase() : "";
      out.push(el("span", {class: `badge locked-${m.locked_outcome || "unknown"}`, title: known ? utcTitle(d) : null},
        `locked ${o}${at}`.replace(/\s+/g, " ")));
    }
    return out;
  }

  function chartWidth(body) {
    return Math.max(200, Math.floor(body.getBoundingClientRect().width));
  }

  function destroyCharts(map) {
    for (const k of Object.keys(map)) {
      map[k].destroy();
      delete map[k];
    }
  }

  function renderLadder(data) {
    const grid = $("ladder-grid");
    const markets = data && Array.isArray(data.markets) ? data.markets : [];
    const series = (data && data.series) || {};
    const settlement = (data && data.settlement) || {};
    ui.markets = new Map(markets.map((m) => [m.ticker, m]));
    // 3 columns for the usual 6 brackets; wider ladders get 4 (a CSS variable: CSP-safe, no style attribute)
    grid.style.setProperty("--ladder-cols", String(Math.max(1, Math.min(markets.length, markets.length <= 6 ? 3 : 4))));
    $("ladder-title").textContent = data ? `${data.city || ""} ${data.day || ""}` : "";
    $("ladder-empty").hidden = markets.length > 0;

    const st = $("settlement");
    const tmax = settlement.tmax_f;
    st.hidden = tmax === null || tmax === undefined;
    st.textContent = st.hidden ? "" : `settled high ${tmax}°F`;

    const key = `${data ? data.city : ""}|${data ? data.day : ""}|${markets.map((m) => m.ticker).join(",")}`;
    if (key !== ui.ladderKey) {
      destroyCharts(kwx.charts);
      ui.ladderZoomed = false;
      $("ladder-zoom").hidden = true;
      const cards = markets.map((m) => {
        const readout = el("div", {class: "readout"});
        const card = el("div", {class: "ladder-chart", "data-ticker": m.ticker},
          el("div", {class: "chart-head"},
            el("span", {class: "chart-label"}, m.label || m.ticker),
            el("span", {class: "badges"}),
            el("span", {class: "chart-ticker", title: m.ticker}, m.ticker)),
          readout,
          el("div", {class: "chart-body"}));
        return {m, card, readout};
      });
      grid.replaceChildren(...cards.map((c) => c.card));
      for (const {m, card, readout} of cards) {
        const body = card.querySelector(".chart-body");
        kwx.charts[m.ticker] = new uPlot(ladderOptions(chartWidth(body), m.ticker, readout),
          ladderData(series[m.ticker]), body);
      }
      ui.ladderKey = key;
    }

    // one time range for every chart, so the small multiples line up: the climate day, 00:00 to 24:00 on the
    // city's clock (and the close, should the markets close after it)
    const axis = (data && data.axis) || {};
    ui.dayMarks = axis;
    ladderAxis.end = Number.isFinite(axis.day_end) ? axis.day_end : null;
    ui.ladderX = Number.isFinite(axis.day_start) && Number.isFinite(axis.day_end)
      ? [axis.day_start, Math.max(axis.day_end, Number.isFinite(axis.close) ? axis.close : -Infinity)] : null;

    for (const m of markets) {
      const card = grid.querySelector(`.ladder-chart[data-ticker="${CSS.escape(m.ticker)}"]`);
      const winner = settlement.winner === m.ticker;
      card.classList.toggle("winner", winner);
      card.classList.toggle("settled-no", m.result === "no");
      card.classList.toggle("locked", !!m.locked_at);
      card.querySelector(".badges").replaceChildren(...marketBadges(m));
      card.title = winner ? "settlement winner" : "";
      const u = kwx.charts[m.ticker];
      u.setData(ladderData(series[m.ticker]), !ui.ladderZoomed);
      if (!ui.ladderZoomed) alignX(u);
      updateReadout(u);
    }
    if (ui.focusTicker) focusChart();
  }

  function alignX(u) {
    if (ui.ladderX && (u.scales.x.min !== ui.ladderX[0] || u.scales.x.max !== ui.ladderX[1])) {
      u.setScale("x", {min: ui.ladderX[0], max: ui.ladderX[1]});
    }
  }

  function resetLadderZoom() {
    ui.ladderZoomed = false;
    $("ladder-zoom").hidden = true;
    for (const u of Object.values(kwx.charts)) alignX(u);
  }

  function focusChart() {
    const t = ui.focusTicker;
    const card = t && $("ladder-grid").querySelector(`.ladder-chart[data-ticker="${CSS.escape(t)}"]`);
    if (!card) return;
    ui.focusTicker = null;
    card.scrollIntoView({block: "nearest", behavior: "smooth"});
    card.classList.remove("flash");
    void card.offsetWidth; // restart the animation
    card.classList.add("flash");
  }

  function buildLegend() {
    const items = LADDER_SERIES.map((d) => {
      const sw = el("span", {class: `swatch ${d.dash ? "dashed" : ""}`});
      sw.style.borderTopColor = d.stroke;
      return el("span", {class: "item"}, sw, d.key);
    });
    const lockYes = el("span", {class: "swatch block yes"});
    const lockNo = el("span", {class: "swatch block no"});
    $("ladder-legend").replaceChildren(...items, el("span", {class: "item"}, lockYes, lockNo, "locked"),
      el("button", {id: "ladder-zoom", type: "button", class: "linkish", hidden: true,
        title: "drag on a chart to zoom; double-click to reset"}, "reset zoom"));
    $("ladder-zoom").addEventListener("click", resetLadderZoom);
  }

  // ---------------------------------------------------------------- calibration

  function calOptions(width, keys) {
    return {
      width, height: CAL_HEIGHT,
      tzDate: tzUTC,
      legend: {show: true, live: true},
      cursor: {sync: {key: "kwx-calibration"}, drag: {x: true, y: false}, points: {size: 5}},
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(0.05, (Number.isFinite(max) ? max : 0) * 1.1)]}},
      axes: [
        {stroke: C.axis, font: AXIS_FONT, size: 20, gap: 3, values: dayValues, splits: daySplits,
          grid: {stroke: C.grid, width: 1}, ticks: {stroke: C.tick, width: 1, size: 3}},
        {stroke: C.axis, font: AXIS_FONT, size: 38, gap: 3,
          grid: {stroke: C.grid, width: 1}, ticks: {stroke: C.tick, width: 1, size: 3}},
      ],
      series: [
        {label: "day", value: (u, v) => (v === null || v === undefined ? "–" : new Date(v * 1000).toISOString().slice(0, 10))},
        ...keys.map((k, i) => ({label: k, stroke: CAL_PALETTE[i % CAL_PALETTE.length], width: 1.5, spanGaps: true,
          dash: /market/i.test(k) ? [5, 3] : undefined,
          points: {show: true, size: 3}, value: (u, v) => (v === null || v === undefined ? "–" : v.toFixed(4))})),
      ],
    };
  }

  function calData(fam, keys) {
    const t = Array.isArray(fam.t) ? fam.t : [];
    return [t, ...keys.map((k) => {
      const a = Array.isArray(fam.series[k]) ? fam.series[k] : [];
      return t.map((_, i) => (a[i] === undefined ? null : a[i]));
    })];
  }

  function renderCalibration(data, city) {
    const fams = data && Array.isArray(data.families) ? data.families : [];
    const grid = $("calibration-grid");
    $("calibration-title").textContent = city ? `${city}, by day` : "";
    $("calibration-empty").hidden = fams.length > 0;
    const famId = (f) => `${f.city}/${f.bracket}`;
    const keysOf = (f) => Object.keys((f && f.series) || {});
    const key = fams.map((f) => `${famId(f)}:${keysOf(f).join("|")}:${(f.t || []).length ? 1 : 0}`).join(",");
    if (key !== ui.calKey) {
      destroyCharts(kwx.calibrationCharts);
      const cards = fams.map((f) => {
        const body = el("div", {class: "chart-body"});
        const card = el("div", {class: "calibration-chart", "data-family": famId(f)},
          el("div", {class: "chart-head"}, el("span", {class: "chart-label"}, f.bracket || ""),
            el("span", {class: "chart-ticker"}, famId(f))), body);
        return {f, card, body};
      });
      grid.replaceChildren(...cards.map((c) => c.card));
      for (const {f, body} of cards) {
        if (!(f.t || []).length) {
          body.append(el("p", {class: "empty"}, "no realized evaluation yet"));
          continue;
        }
        const keys = keysOf(f);
        kwx.calibrationCharts[famId(f)] = new uPlot(calOptions(chartWidth(body), keys), calData(f, keys), body);
      }
      ui.calKey = key;
    } else {
      for (const f of fams) {
        const u = kwx.calibrationCharts[famId(f)];
        if (u) u.setData(calData(f, keysOf(f)));
      }
    }
  }

  // ---------------------------------------------------------------- resizing

  let resizeQueued = false;
  function resizeCharts() {
    resizeQueued = false;
    for (const group of [kwx.charts, kwx.calibrationCharts]) {
      for (const u of Object.values(group)) {
        const body = u.root.parentElement;
        const w = chartWidth(body);
        if (Math.abs(w - u.width) > 1) u.setSize({width: w, height: u.height});
      }
    }
  }

  // ---------------------------------------------------------------- selection (city, day, filters) and the URL hash

  function readHash() {
    const p = new URLSearchParams(window.location.hash.slice(1));
    ui.city = p.get("city") || null;
    ui.day = p.get("day") || null;
    ui.filters.city = p.get("scity") || "all";
    ui.filters.bracket = p.get("sbracket") || "all";
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (ui.city) p.set("city", ui.city);
    if (ui.day) p.set("day", ui.day);
    if (ui.filters.city !== "all") p.set("scity", ui.filters.city);
    if (ui.filters.bracket !== "all") p.set("sbracket", ui.filters.bracket);
    const h = p.toString();
    if (h !== window.location.hash.slice(1)) {
      history.replaceState(null, "", `${window.location.pathname}${window.location.search}${h ? `#${h}` : ""}`);
    }
  }

  function setCity(city) {
    if (!city || city === ui.city) return;
    ui.city = city;
    ui.selVersion += 1;
    writeHash();
    refreshNow();
  }

  function setDay(day) {
    ui.day = day || null;
    ui.selVersion += 1;
    writeHash();
    refreshNow();
  }

  // ---------------------------------------------------------------- start

  function start() {
    if (typeof window.uPlot === "undefined") {
      ui.clientBanners = [{level: "error", kind: "assets", text: "static/vendor/uPlot.iife.min.js did not load"}];
      renderBanners();
      return;
    }
    readHash();
    buildLegend();
    $("city-select").addEventListener("change", (e) => setCity(e.target.value));
    $("day-select").addEventListener("change", (e) => setDay(e.target.value));
    $("signals-city").addEventListener("change", onSignalsFilter);
    $("signals-bracket").addEventListener("change", onSignalsFilter);
    $("signals-table").addEventListener("click", onSignalsClick);
    const grid = $("ladder-grid");
    grid.addEventListener("dblclick", () => resetLadderZoom()); // after uPlot's own (synced) dblclick reset
    if (typeof ResizeObserver !== "undefined") {
      const ro = new ResizeObserver(() => {
        if (!resizeQueued) {
          resizeQueued = true;
          requestAnimationFrame(resizeCharts);
        }
      });
      ro.observe(grid);
      ro.observe($("calibration-grid"));
    }
    schedule(0);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
