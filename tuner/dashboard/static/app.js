// gpu-tuner results dashboard: one page, three views (hash routes), live while trials run.
//
//   #/                      experiments list
//   #/experiment/ID         one experiment (charts, worker lanes, trials table, detail)
//   #/compare/ID,ID,...     two or more experiments on one best-so-far chart
//
// Every value that comes from the database is put on the page with textContent or, for
// Plotly (which renders a subset of HTML in labels), passed through esc(). Nothing is
// built with innerHTML from data.
"use strict";

const REFRESH_RUNNING_MS = 2000;   // while an experiment runs
const REFRESH_IDLE_MS = 10000;     // finished experiments: only the summary is re-read
const REFRESH_LIST_MS = 3000;
const POINTS_CAP = 3000;           // points kept in the browser before asking for a fresh sample
const PAGE_SIZE = 25;
const COLORS = ["#3056d3", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285",
                "#a61e4d", "#5c940d", "#1864ab", "#d9480f"];
const STATE_COLORS = {ok: "#1f9d55", fail: "#d64545", running: "#e8a317", queued: "#8a94a6",
                      cancelled: "#a0a0a0"};
// no mode bar (it covers titles of small charts): drag zooms, a double click resets
const PLOT_CONFIG = {displaylogo: false, responsive: true, displayModeBar: false};

window.__dashboard = {ticks: 0, errors: []};
window.addEventListener("error", (e) => window.__dashboard.errors.push(String(e.message)));

// -- small helpers -------------------------------------------------------------------------

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmtNum(v) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return (a !== 0 && (a < 1e-3 || a >= 1e6)) ? v.toExponential(4) : String(+v.toPrecision(6));
}

function fmtCell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return fmtNum(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function fmtTime(t) {
  return t ? new Date(t * 1000).toLocaleString() : "";
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function shortAlgo(algo) {
  if (!algo) return "";
  const parts = String(algo).split(".");
  return parts.length >= 2 ? parts[parts.length - 2] : algo;
}

function badge(state) {
  return el("span", {class: `badge ${state || ""}`, text: state || "?"});
}

function fact(key, value, id) {
  return el("div", {class: "fact"}, el("span", {class: "k", text: key}),
            el("span", {class: "v", id, text: value}));
}

async function api(path) {
  const response = await fetch(path, {headers: {"Accept": "application/json"}});
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(err) {
  const box = document.getElementById("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = `Could not load data: ${err.message || err}`;
}

function setStatus(text, live) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("live", !!live);
}

function plot(div, traces, layout) {
  const base = {margin: {l: 56, r: 16, t: 28, b: 44}, font: {size: 11},
                paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff", showlegend: false};
  return Plotly.react(div, traces, Object.assign(base, layout), PLOT_CONFIG);
}

function axisTitle(text) { return {text: esc(text)}; }

// [low, high] showing the interesting part of a loss axis: from the best to the q-quantile,
// so that a few diverged trials do not flatten everything else.
function robustRange(values, q = 0.95) {
  const v = values.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const low = v[0], high = v[Math.min(v.length - 1, Math.floor(q * (v.length - 1)))];
  const pad = (high - low) * 0.05 || Math.abs(low) * 0.05 || 1;
  return [low - pad, high + pad];
}

// A parallel-coordinates axis. Log-scaled parameters are drawn as log10; trials in which a
// conditional parameter has no value (another hp.choice branch) sit on an "n/a" tick below.
function dimension(label, values, log) {
  const useLog = log && values.every((v) => v === null || v > 0);
  const shown = values.map((v) => v === null ? null : (useLog ? Math.log10(v) : v));
  const present = shown.filter((v) => v !== null);
  const dim = {label: esc(useLog ? `log10 ${label}` : label)};
  if (present.length === shown.length || !present.length) return {...dim, values: shown.map((v) => v ?? 0)};
  const low = Math.min(...present), high = Math.max(...present);
  const missing = low - (high - low || 1) * 0.15;
  const ticks = [low, (low + high) / 2, high];
  return {...dim, values: shown.map((v) => v ?? missing), range: [missing, high],
          tickvals: [missing, ...ticks], ticktext: ["n/a", ...ticks.map((t) => fmtNum(t))]};
}

// -- router --------------------------------------------------------------------------------

let current = null;

function route() {
  if (current) current.stop();
  closeDetail();
  showError(null);
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const parts = hash.split("/").filter(Boolean);
  const main = document.getElementById("view");
  main.replaceChildren();
  let view;
  if (parts[0] === "experiment" && parts[1]) view = new ExperimentView(main, parts[1]);
  else if (parts[0] === "compare") view = new CompareView(main, (parts[1] || "").split(",").filter(Boolean));
  else view = new ListView(main);
  document.querySelectorAll("[data-nav]").forEach((a) =>
    a.classList.toggle("active", a.dataset.nav === view.nav));
  document.body.dataset.view = view.nav;
  document.body.dataset.ticks = "0";  // per view: tests wait for the new view's first tick
  delete document.body.dataset.loaded;
  current = view;
  view.start();
}

class Poller {
  constructor() { this.timer = null; this.stopped = false; this.ticks = 0; }
  start() { this.tickSafely(); }
  stop() { this.stopped = true; clearTimeout(this.timer); }
  async tickSafely() {
    let delay = REFRESH_RUNNING_MS;
    try {
      delay = await this.tick();
      showError(null);
      window.__dashboard.ticks += 1;
      this.ticks += 1;
      if (!this.stopped) document.body.dataset.ticks = String(this.ticks);
    } catch (err) {
      showError(err);
      delay = REFRESH_IDLE_MS;
    }
    if (!this.stopped) this.timer = setTimeout(() => this.tickSafely(), delay);
  }
}

// -- experiments list ----------------------------------------------------------------------

class ListView extends Poller {
  constructor(root) {
    super();
    this.nav = "experiments";
    this.selected = new Set();
    this.compareButton = el("button", {class: "primary", disabled: true, id: "compare-selected",
      onclick: () => { location.hash = `#/compare/${[...this.selected].join(",")}`; }},
      "Compare selected");
    this.tbody = el("tbody");
    root.append(el("div", {class: "panel"},
      el("div", {class: "toolbar"}, el("h2", {text: "Experiments"}), el("span", {class: "spacer"}),
         el("span", {class: "muted", text: "select two or more to compare"}), this.compareButton),
      el("div", {class: "table-wrap"}, el("table", {id: "experiments"},
        el("thead", {}, el("tr", {}, ["", "name", "state", "algorithm", "done", "failed",
          "running", "queued", "best loss", "started", "duration"].map((h) => el("th", {text: h})))),
        this.tbody))));
  }

  async tick() {
    const data = await api("/api/experiments");
    const rows = data.experiments.map((e) => {
      const box = el("input", {type: "checkbox", "aria-label": `select ${e.name}`,
        checked: this.selected.has(e.id), onchange: (ev) => {
          if (ev.target.checked) this.selected.add(e.id); else this.selected.delete(e.id);
          this.compareButton.disabled = this.selected.size < 2;
        }});
      return el("tr", {dataset: {id: e.id}},
        el("td", {}, box),
        el("td", {}, el("a", {href: `#/experiment/${encodeURIComponent(e.id)}`, text: e.name})),
        el("td", {}, badge(e.state)),
        el("td", {text: shortAlgo(e.algo), title: e.algo || ""}),
        el("td", {text: e.counts.ok}), el("td", {text: e.counts.fail}),
        el("td", {text: e.counts.running}), el("td", {text: e.counts.queued}),
        el("td", {text: fmtNum(e.best_loss)}), el("td", {text: fmtTime(e.started_at)}),
        el("td", {text: fmtDuration(e.duration_s)}));
    });
    if (!rows.length) {
      rows.push(el("tr", {}, el("td", {colspan: 11, class: "muted",
        text: "No experiments yet: run one with hyper_tune or `python -m tuner hyperparameters run`."})));
    }
    this.tbody.replaceChildren(...rows);
    this.compareButton.disabled = this.selected.size < 2;
    const running = data.experiments.some((e) => e.state === "running");
    setStatus(running ? "live" : `${data.experiments.length} experiments`, running);
    return REFRESH_LIST_MS;
  }
}

// -- one experiment ------------------------------------------------------------------------

class ExperimentView extends Poller {
  constructor(root, id) {
    super();
    this.nav = "experiment";
    this.id = id;
    this.base = `/api/experiments/${encodeURIComponent(id)}`;
    this.points = new Map();   // tid -> [tid, loss, ...values]
    this.pointsCursor = null;  // {epoch, seq}
    this.lastKey = null;
    this.table = {state: "", sort: "tid", desc: true, offset: 0};
    this.space = [];
    this.build(root);
  }

  build(root) {
    this.head = el("div", {class: "panel", id: "experiment-head"});
    const chart = (id, cls = "chart") => el("div", {class: cls, id});
    this.charts = {
      byTrial: chart("chart-best-trial"), byTime: chart("chart-best-time"),
      importance: chart("chart-importance"), lanes: chart("chart-lanes", "chart tall"),
      parcoords: chart("chart-parcoords", "chart tall"),
    };
    this.multiples = el("div", {class: "small-multiples", id: "chart-params"});
    this.stateFilter = el("select", {id: "state-filter", "aria-label": "filter by state",
      onchange: (ev) => { this.table.state = ev.target.value; this.table.offset = 0; this.loadTable(); }},
      ["", "queued", "running", "ok", "fail", "cancelled"].map((s) =>
        el("option", {value: s, text: s || "all states"})));
    this.pager = el("span", {class: "muted", id: "pager"});
    this.prev = el("button", {text: "‹ prev", onclick: () => this.page(-1)});
    this.next = el("button", {text: "next ›", onclick: () => this.page(1)});
    this.thead = el("thead");
    this.tbody = el("tbody");
    const panel = (title, ...body) => el("div", {class: "panel"}, el("h2", {text: title}), ...body);
    root.append(this.head, el("div", {class: "grid"},
      panel("Best loss so far, by trial", this.charts.byTrial),
      panel("Best loss so far, by wall time", this.charts.byTime),
      panel("Parameter importance", this.charts.importance,
        el("p", {class: "muted", text: "Share of the variation in loss ranks that each " +
          "parameter explains on its own (binned main effect, bias-corrected). " +
          "Hover for the rank correlation."})),
      panel("Worker lanes (recent trials)", this.charts.lanes),
      el("div", {class: "panel wide"}, el("h2", {text: "Loss against each parameter"}),
         this.multiples),
      el("div", {class: "panel wide"}, el("h2", {text: "Parallel coordinates"}),
         this.charts.parcoords),
      el("div", {class: "panel wide"},
        el("div", {class: "toolbar"}, el("h2", {text: "Trials"}), this.stateFilter,
           el("span", {class: "spacer"}), this.pager, this.prev, this.next),
        el("div", {class: "table-wrap"}, el("table", {id: "trials"}, this.thead, this.tbody)))));
  }

  async tick() {
    const summary = await api(this.base);
    this.summary = summary;
    this.space = summary.space;
    this.renderHead(summary);
    const c = summary.counts;
    const key = [summary.epoch, summary.seq, c.running, c.queued].join("/");
    const live = summary.experiment.state === "running" || c.running > 0 || c.queued > 0;
    if (key !== this.lastKey) {
      this.lastKey = key;
      // the curve chart also plots the points: read them first
      await Promise.all([this.loadPoints().then(() => this.loadCurve()), this.loadTable(),
                         this.loadLanes(), this.loadImportance()]);
    } else if (live) {
      await this.loadLanes();  // running bars grow
    }
    setStatus(live ? "live" : summary.experiment.state, live);
    if (!this.stopped) document.body.dataset.loaded = "1";
    return live ? REFRESH_RUNNING_MS : REFRESH_IDLE_MS;
  }

  renderHead(s) {
    const e = s.experiment, c = s.counts;
    const finished = c.ok + c.fail;
    const started = e.started_at, ended = e.state === "running" ? null : e.ended_at;
    const duration = started ? ((ended || s.now) - started) : null;
    const pct = e.max_evals ? Math.min(100, 100 * finished / e.max_evals) : 0;
    this.head.replaceChildren(
      el("h1", {}, e.name, " ", badge(e.state)),
      el("div", {class: "facts"},
        fact("finished", `${finished} / ${e.max_evals ?? "?"}`, "finished-count"),
        fact("ok", c.ok, "ok-count"), fact("failed", c.fail, "fail-count"),
        fact("running", c.running, "running-count"), fact("queued", c.queued),
        fact("best loss", s.best ? fmtNum(s.best.loss) : "–", "best-loss"),
        fact("best trial", s.best ? `#${s.best.tid}` : "–"),
        fact("algorithm", shortAlgo(e.algo)), fact("started", fmtTime(started)),
        fact("duration", fmtDuration(duration))),
      el("div", {class: "progress"}, el("div", {style: `width: ${pct}%`})));
    this.head.dataset.finished = String(finished);
  }

  async loadPoints() {
    let query = "";
    if (this.pointsCursor && this.points.size < POINTS_CAP) {
      query = `?after=${this.pointsCursor.seq}&epoch=${encodeURIComponent(this.pointsCursor.epoch)}`;
    }
    const data = await api(`${this.base}/points${query}`);
    if (data.reset) this.points.clear();
    for (const row of data.rows) this.points.set(row[0], row);
    this.pointsCursor = {seq: data.seq, epoch: data.epoch};
    this.labels = data.labels;
    this.renderParams(data.total);
  }

  async loadCurve() {
    const curve = await api(`${this.base}/curve`);
    const rows = [...this.points.values()];
    const scatter = {x: rows.map((r) => r[0]), y: rows.map((r) => r[1]), mode: "markers",
      type: "scatter", marker: {size: 4, color: "rgba(48,86,211,.25)"}, name: "trial",
      hovertemplate: "trial %{x}<br>loss %{y}<extra></extra>"};
    const step = (pairs, lastX) => {
      const xs = pairs.map((p) => p[0]), ys = pairs.map((p) => p[1]);
      if (pairs.length && lastX !== null && lastX > xs[xs.length - 1]) {
        xs.push(lastX); ys.push(ys[ys.length - 1]);
      }
      return {xs, ys};
    };
    const t = step(curve.by_trial, curve.last_tid);
    this.bestRange = robustRange([...t.ys, ...scatter.y], 0.5);
    plot(this.charts.byTrial, [scatter, {x: t.xs, y: t.ys, mode: "lines+markers",
      line: {shape: "hv", color: COLORS[0], width: 2}, marker: {size: 5}, name: "best so far",
      hovertemplate: "trial %{x}<br>best %{y}<extra></extra>"}],
      {xaxis: {title: axisTitle("trial number (tid)")},
       yaxis: {title: axisTitle("loss"), range: this.bestRange}});
    const w = step(curve.by_time, curve.last_time);
    plot(this.charts.byTime, [{x: w.xs.map((x) => new Date(x * 1000)), y: w.ys,
      mode: "lines+markers", line: {shape: "hv", color: COLORS[1], width: 2}, marker: {size: 5},
      hovertemplate: "%{x}<br>best %{y}<extra></extra>"}],
      {xaxis: {type: "date", title: axisTitle("wall time")},
       yaxis: {title: axisTitle("best loss"), range: this.bestRange}});
  }

  renderParams(total) {
    const rows = [...this.points.values()];
    const losses = rows.map((r) => r[1]);
    this.lossRange = robustRange(losses);
    const divs = this.labels.map((label) =>
      this.multiples.querySelector(`[data-label="${CSS.escape(label)}"]`) ||
      el("div", {class: "chart", dataset: {label}}));
    this.multiples.replaceChildren(...divs);  // in the page before Plotly measures them
    const dims = [];
    this.labels.forEach((label, i) => {
      const p = this.space.find((s) => s.label === label) || {};
      const xs = [], ys = [], tids = [];
      for (const r of rows) {
        if (r[i + 2] === null) continue;
        xs.push(r[i + 2]); ys.push(r[1]); tids.push(r[0]);
      }
      const logAxis = !!p.log && xs.every((x) => x > 0);
      plot(divs[i], [{x: xs, y: ys, text: tids.map((t) => `trial ${t}`), mode: "markers",
        type: "scatter", marker: {size: 5, color: ys, colorscale: "Viridis", reversescale: true,
        opacity: 0.7}, hovertemplate: `%{text}<br>${esc(label)} %{x}<br>loss %{y}<extra></extra>`}],
        {title: {text: `${esc(label)} <span style="font-size:10px">(${esc(p.dist || "?")})</span>`,
                 font: {size: 12}},
         xaxis: {type: logAxis ? "log" : "linear",
                 title: axisTitle(p.categorical ? `${label} (option index)` : label),
                 dtick: p.categorical ? 1 : undefined},
         yaxis: {title: axisTitle("loss"), range: this.lossRange},
         margin: {l: 50, r: 10, t: 30, b: 40}});
      divs[i].dataset.log = String(logAxis);
      dims.push(dimension(label, rows.map((r) => r[i + 2]), !!p.log));
    });
    if (rows.length) {
      dims.push({label: "loss", values: losses, range: this.lossRange});
      plot(this.charts.parcoords, [{type: "parcoords", dimensions: dims,
        line: {color: losses, colorscale: "Viridis", reversescale: true, showscale: true,
               cmin: this.lossRange[0], cmax: this.lossRange[1],
               colorbar: {title: {text: "loss"}}}}],
        {margin: {l: 60, r: 60, t: 40, b: 24}});
    }
    this.charts.parcoords.dataset.points = String(rows.length);
    this.charts.parcoords.title = `${rows.length} of ${total} successful trials shown`;
  }

  async loadImportance() {
    const data = await api(`${this.base}/importance`);
    const scores = [...data.scores].reverse();
    plot(this.charts.importance, [{type: "bar", orientation: "h",
      x: scores.map((s) => s.score), y: scores.map((s) => esc(s.label)),
      text: scores.map((s) => `n=${s.n}, groups=${s.groups}, rank corr=${s.rho === null ? "–" : s.rho}`),
      marker: {color: COLORS[0]}, textposition: "none",
      hovertemplate: "%{y}: %{x:.3f}<br>%{text}<extra></extra>"}],
      {xaxis: {title: axisTitle("importance (0–1)"), range: [0, Math.max(0.05, ...scores.map((s) => s.score)) * 1.1]},
       yaxis: {automargin: true}, margin: {l: 90, r: 16, t: 10, b: 44}});
    this.charts.importance.dataset.labels = scores.map((s) => s.label).join(",");
  }

  async loadLanes() {
    const data = await api(`${this.base}/lanes`);
    const laneName = (lane) => {
      const where = lane.gpu !== null && lane.gpu !== undefined ? `${lane.host} · GPU ${lane.gpu}` : (lane.host || "");
      return `${where} (${lane.id})${lane.alive ? "" : " – gone"}`;
    };
    const names = new Map(data.lanes.map((lane) => [lane.id, esc(laneName(lane))]));
    const byState = {};
    for (const [laneId, tid, start, end, state] of data.bars) {
      const t = byState[state] || (byState[state] = {y: [], base: [], x: [], text: []});
      const stop = end === null ? data.now : end;
      t.y.push(names.get(laneId)); t.base.push(new Date(start * 1000));
      t.x.push(Math.max(1, (stop - start) * 1000)); t.text.push(`trial ${tid} · ${state}`);
    }
    const traces = Object.entries(byState).map(([state, t]) => ({type: "bar", orientation: "h",
      y: t.y, base: t.base, x: t.x, text: t.text, name: state, textposition: "none",
      marker: {color: STATE_COLORS[state] || "#888"}, hovertemplate: "%{text}<extra></extra>"}));
    // an idle lane still needs a row: an invisible point per lane keeps every worker drawn
    traces.push({type: "scatter", mode: "markers", y: [...names.values()],
      x: [...names.values()].map(() => new Date(data.now * 1000)), marker: {opacity: 0},
      hoverinfo: "skip", showlegend: false});
    plot(this.charts.lanes, traces, {barmode: "overlay", showlegend: true,
      legend: {orientation: "h", y: 1.12}, xaxis: {type: "date"},
      yaxis: {automargin: true, categoryorder: "array", categoryarray: [...names.values()].reverse()},
      margin: {l: 10, r: 16, t: 30, b: 30}});
    this.charts.lanes.dataset.lanes = String(data.lanes.length);
  }

  page(direction) {
    const next = this.table.offset + direction * PAGE_SIZE;
    if (next < 0 || next >= (this.tableTotal || 0)) return;
    this.table.offset = next;
    this.loadTable();
  }

  async loadTable() {
    const t = this.table;
    const query = new URLSearchParams({sort: t.sort, desc: t.desc ? "1" : "0",
      offset: String(t.offset), limit: String(PAGE_SIZE)});
    if (t.state) query.set("state", t.state);
    const data = await api(`${this.base}/trials?${query}`);
    this.tableTotal = data.total;
    const columns = data.columns;
    this.thead.replaceChildren(el("tr", {}, columns.map((c) => el("th", {
      class: `sortable${c === t.sort ? (t.desc ? " sorted-desc" : " sorted-asc") : ""}`,
      text: c.replace(/^param\./, ""), title: `sort by ${c}`,
      onclick: () => { t.desc = t.sort === c ? !t.desc : false; t.sort = c; t.offset = 0; this.loadTable(); },
    }))));
    const tidIdx = columns.indexOf("tid"), stateIdx = columns.indexOf("state");
    const startedIdx = columns.indexOf("started_at");
    this.tbody.replaceChildren(...data.rows.map((row) => el("tr", {class: "clickable",
      dataset: {tid: row[tidIdx]}, onclick: () => openDetail(this.base, row[tidIdx])},
      row.map((v, i) => i === stateIdx ? el("td", {}, badge(v))
        : el("td", {text: i === startedIdx ? fmtTime(v) : fmtCell(v), title: fmtCell(v)})))));
    const last = Math.min(data.total, t.offset + data.rows.length);
    this.pager.textContent = data.total ? `${t.offset + 1}–${last} of ${data.total}` : "no trials";
    this.prev.disabled = t.offset === 0;
    this.next.disabled = last >= data.total;
  }
}

// -- trial detail --------------------------------------------------------------------------

async function openDetail(base, tid) {
  const panel = document.getElementById("detail");
  const body = document.getElementById("detail-body");
  document.getElementById("detail-title").textContent = `Trial ${tid}`;
  body.replaceChildren(el("p", {class: "muted", text: "Loading…"}));
  panel.hidden = false;
  try {
    const t = await api(`${base}/trials/${encodeURIComponent(tid)}`);
    const kv = (pairs) => el("dl", {class: "kv"}, pairs.flatMap(([k, v]) =>
      [el("dt", {text: k}), el("dd", {text: v})]));
    const json = (v) => el("pre", {text: JSON.stringify(v, null, 2)});
    const result = t.result || {};
    const failure = result.failure || null;
    body.replaceChildren(...[
      el("p", {}, badge(t.state), " ", result.loss !== undefined ? `loss ${fmtNum(result.loss)}` : ""),
      kv([["host", t.host || "–"], ["GPU", t.gpu ?? "–"], ["worker", t.worker || "–"],
          ["attempt", t.attempt ?? ""],
          ["queued", fmtTime(t.timings.queued_at)], ["started", fmtTime(t.timings.started_at)],
          ["ended", fmtTime(t.timings.ended_at)], ["duration", fmtDuration(t.timings.duration_s)]]),
      el("h2", {text: "Parameters (as the objective received them)"}), json(t.params ?? t.vals),
      el("h2", {text: "Raw values (hp labels; choices as option index)"}), json(t.vals),
      el("h2", {text: "Result"}),
      json(failure && failure.traceback ? {...result, failure: {...failure, traceback: "(below)"}} : result),
      failure && failure.traceback ? el("pre", {id: "traceback", text: failure.traceback}) : null,
      t.attempts.length ? el("h2", {text: "Lost runs"}) : null,
      t.attempts.length ? json(t.attempts) : null,
      el("h2", {text: "Log tail"}), el("pre", {id: "log-tail", text: t.log_tail || "(empty)"}),
    ].filter(Boolean));
  } catch (err) {
    body.replaceChildren(el("p", {class: "error", text: String(err.message || err)}));
  }
}

function closeDetail() { document.getElementById("detail").hidden = true; }

// -- comparison ----------------------------------------------------------------------------

class CompareView extends Poller {
  constructor(root, ids) {
    super();
    this.nav = "compare";
    this.ids = ids;
    this.axis = "trial";
    this.picker = el("div", {class: "picker", id: "compare-picker"});
    this.chart = el("div", {class: "chart tall", id: "chart-compare"});
    this.thead = el("thead");
    this.tbody = el("tbody");
    const toggle = el("select", {id: "compare-axis", "aria-label": "x axis", onchange: (ev) => {
      this.axis = ev.target.value; this.render(); }},
      el("option", {value: "trial", text: "x: trial number"}),
      el("option", {value: "time", text: "x: time since start"}));
    root.append(
      el("div", {class: "panel"}, el("h2", {text: "Experiments to compare"}), this.picker),
      el("div", {class: "grid"},
        el("div", {class: "panel wide"}, el("div", {class: "toolbar"},
          el("h2", {text: "Best loss so far"}), el("span", {class: "spacer"}), toggle), this.chart),
        el("div", {class: "panel wide"}, el("h2", {text: "Best trial of each"}),
          el("div", {class: "table-wrap"}, el("table", {id: "compare-table"}, this.thead, this.tbody)))));
  }

  async tick() {
    const list = await api("/api/experiments");
    this.picker.replaceChildren(...list.experiments.map((e) => el("label", {},
      el("input", {type: "checkbox", checked: this.ids.includes(e.id), onchange: (ev) => {
        const ids = this.ids.filter((i) => i !== e.id);
        if (ev.target.checked) ids.push(e.id);
        location.hash = `#/compare/${ids.join(",")}`;
      }}), " ", e.name)));
    if (this.ids.length < 1) {
      this.tbody.replaceChildren(el("tr", {}, el("td", {class: "muted",
        text: "Pick two or more experiments above."})));
      return REFRESH_IDLE_MS;
    }
    const query = this.ids.map((id) => `e=${encodeURIComponent(id)}`).join("&");
    this.data = await api(`/api/compare?${query}`);
    this.render();
    if (!this.stopped) document.body.dataset.loaded = "1";
    const live = this.data.experiments.some((e) => e.state === "running");
    setStatus(live ? "live" : "", live);
    return live ? REFRESH_RUNNING_MS * 2 : REFRESH_IDLE_MS;
  }

  render() {
    if (!this.data) return;
    const exps = this.data.experiments;
    const traces = exps.map((e, i) => {
      const byTime = this.axis === "time";
      const pts = byTime ? e.curve.by_time : e.curve.by_trial;
      const xs = pts.map((p) => byTime ? p[0] - e.started_at : p[0]);
      const ys = pts.map((p) => p[1]);
      const lastX = byTime ? (e.curve.last_time === null ? null : e.curve.last_time - e.started_at)
                           : e.curve.last_tid;
      if (xs.length && lastX !== null && lastX > xs[xs.length - 1]) { xs.push(lastX); ys.push(ys[ys.length - 1]); }
      return {x: xs, y: ys, mode: "lines+markers", name: esc(e.name),
              line: {shape: "hv", width: 2, color: COLORS[i % COLORS.length]}, marker: {size: 5}};
    });
    // a first, poor trial of one experiment should not flatten every other curve
    const range = robustRange(traces.flatMap((t) => t.y), 0.75);
    plot(this.chart, traces, {showlegend: true, legend: {orientation: "h", y: 1.1},
      xaxis: {title: axisTitle(this.axis === "time" ? "seconds since the experiment started" : "trial number (tid)")},
      yaxis: {title: axisTitle("best loss so far"), range}});
    this.chart.dataset.traces = String(traces.length);
    const fixed = ["name", "state", "algo", "ok", "fail", "best_loss", "best_tid", "best_after_s"];
    const params = [];
    for (const e of exps) for (const k of Object.keys(e)) {
      if ((k.startsWith("param.") || k.startsWith("val.")) && !params.includes(k)) params.push(k);
    }
    const columns = [...fixed, ...params];
    this.thead.replaceChildren(el("tr", {}, columns.map((c) => el("th", {text: c.replace(/^param\./, "")}))));
    this.tbody.replaceChildren(...exps.map((e, i) => el("tr", {}, columns.map((c) => {
      if (c === "name") return el("td", {}, el("a", {href: `#/experiment/${encodeURIComponent(e.id)}`,
        text: e.name, style: `color: ${COLORS[i % COLORS.length]}`}));
      if (c === "state") return el("td", {}, badge(e.state));
      if (c === "algo") return el("td", {text: shortAlgo(e.algo)});
      return el("td", {text: fmtCell(e[c])});
    }))));
  }
}

// -- start -----------------------------------------------------------------------------------

document.getElementById("detail-close").addEventListener("click", closeDetail);
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeDetail(); });
window.addEventListener("hashchange", route);
route();
