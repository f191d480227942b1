// The live page. Data from the server (attributes above all: untrusted model output) only
// ever reaches the DOM through textContent / setAttribute of numbers; never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SHOWN = 500; // attributes rendered at once (the search covers all of them)
  const STATUS_ACTIVE = ["starting", "running", "stopping"];

  let S = null; // the state: {seq, heartbeat, prefect, run}
  let es = null; // the EventSource
  let lastMessage = Date.now();
  let reconnectDelay = 500;
  let reconnectTimer = null;
  let renderTimer = null;
  let formRun = undefined; // the run whose settings the form shows (undefined: none yet)
  let listKey = null; // what the attribute list shows: run id + search text
  let listUpTo = 0; // attributes already in the list (when listKey is unchanged)

  // -- connection --------------------------------------------------------------------

  function setConnection(kind, text) {
    const el = $("connection");
    el.textContent = text;
    el.className = "badge conn-" + kind;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (es) es.close();
    setConnection(S ? "reconnecting" : "connecting", S ? "reconnecting…" : "connecting…");
    lastMessage = Date.now();
    es = new EventSource("/api/events");
    es.addEventListener("state", (e) => onState(JSON.parse(e.data)));
    for (const kind of ["batch", "run-error", "status", "summary", "providers", "prefect"]) {
      es.addEventListener(kind, (e) => onDelta(kind, JSON.parse(e.data)));
    }
    es.addEventListener("heartbeat", (e) => {
      lastMessage = Date.now();
      const d = JSON.parse(e.data);
      if (S && d.seq !== S.seq) resync("heartbeat seq " + d.seq + " != " + S.seq);
    });
    es.onerror = () => {
      setConnection("reconnecting", "reconnecting…");
      if (es.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
  }

  function resync(why) {
    console.warn("resynchronising:", why);
    connect(); // every new connection starts with the full state
  }

  // A stream that is open but silent is dead: the server sends a heartbeat every few seconds.
  setInterval(() => {
    const beat = (S && S.heartbeat) || 2;
    if (es && Date.now() - lastMessage > (beat * 3 + 2) * 1000) {
      setConnection("reconnecting", "reconnecting…");
      connect();
    }
  }, 1000);

  function onState(state) {
    lastMessage = Date.now();
    reconnectDelay = 500;
    S = state;
    listKey = null;
    setConnection("live", "live");
    if (formRun === undefined && !(S.run && S.run.form) && S.defaults && S.defaults.routing_config) {
      $("routing_config").value = S.defaults.routing_config;
      formRun = null;
    }
    render(true);
  }

  function onDelta(kind, d) {
    lastMessage = Date.now();
    if (!S) return;
    if (d.seq !== S.seq + 1) {
      resync(kind + " seq " + d.seq + " after " + S.seq);
      return;
    }
    S.seq = d.seq;
    const run = S.run;
    if (kind === "prefect") {
      S.prefect = d.prefect;
    } else if (kind === "status") {
      S.run = Object.assign(run || {}, d.run);
      if (!run) Object.assign(S.run, { attributes: [], chart: [], providers: {}, errors: [] });
    } else if (!run || run.id !== d.run) {
      return; // a delta for another run cannot happen in order; ignore it
    } else if (kind === "batch") {
      for (const a of d.new) run.attributes.push(a);
      run.metrics = d.metrics;
      addPoint(run.chart, d.point);
      run.providers[d.route] = d.provider;
    } else if (kind === "run-error") {
      run.errors.push(d.error);
      if (run.errors.length > 30) run.errors.shift();
      if (d.provider && d.error.route !== null) run.providers[d.error.route] = d.provider;
      if (d.metrics) run.metrics = d.metrics;
    } else if (kind === "summary") {
      run.summary = d.summary;
    } else if (kind === "providers") {
      run.providers = d.providers;
    }
    scheduleRender();
  }

  function addPoint(chart, point) {
    chart.push(point.slice());
    if (chart.length > 1200) {
      const merged = [];
      for (let i = 0; i + 1 < chart.length; i += 2) {
        merged.push([chart[i + 1][0], chart[i][1] + chart[i + 1][1], chart[i][2] + chart[i + 1][2]]);
      }
      if (chart.length % 2) merged.push(chart[chart.length - 1]);
      chart.length = 0;
      chart.push(...merged);
    }
  }

  // -- rendering ---------------------------------------------------------------------

  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(() => render(false), 120);
  }

  function text(id, value) {
    const el = $(id);
    const s = String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtNum = (n, digits) =>
    n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
  const fmtCost = (n, known) => (n === null || n === undefined || known === false ? "unknown" : "$" + Number(n).toFixed(4));

  function fmtElapsed(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    const m = Math.floor(s / 60);
    return m ? m + "m " + String(s % 60).padStart(2, "0") + "s" : s + "s";
  }

  function render(full) {
    clearTimeout(renderTimer);
    renderTimer = null;
    if (!S) return;
    const run = S.run;
    const status = run ? run.status : "idle";
    const active = STATUS_ACTIVE.includes(status);
    const st = $("run-status");
    st.textContent = status;
    st.className = "badge status-" + status;
    $("start").disabled = active;
    $("stop").disabled = !active || status === "stopping";
    // The form shows the settings of the run that goes (or, on a fresh page, of the last
    // one), never defaults that are not running; a finished run's form stays editable.
    if (run && run.form && run.id !== formRun && (active || formRun === undefined)) {
      fillForm(run.form);
      formRun = run.id;
    }
    for (const name of [...FIELDS, "fresh"]) $(name).disabled = active;

    const p = S.prefect || {};
    const ps = $("prefect-status");
    ps.textContent = p.error ? "failed" : p.ready ? (p.api_url ? "server" : "ephemeral") : "starting…";
    ps.className = "badge " + (p.error ? "status-failed" : p.ready ? "conn-live" : "conn-connecting");
    if (p.error) ps.title = p.error;

    renderRunInfo(run);
    renderMetrics(run && run.metrics);
    renderChart(run ? run.chart : []);
    renderProviders(run ? run.providers : {});
    renderErrors(run ? run.errors : []);
    renderAttributes(run, full);
    renderRejected(run && run.rejected);
    const note = run ? runNote(run) : null;
    if (note && note.key !== lastNote) {
      lastNote = note.key;
      showMessage(note.text, note.info);
    } else if (!note && lastNote !== null) {
      lastNote = null; // e.g. "waiting for Prefect's API to start": the run has started since
      showMessage("", false);
    }
  }
  let lastNote = null;

  function runNote(run) {
    const key = run.id + "/" + run.status + "/" + (run.message || "");
    if (run.message) return { key, text: run.message, info: run.status !== "failed" };
    const s = run.summary;
    if ((run.status === "finished" || run.status === "stopped") && s) {
      return { key, info: true, text: run.status + ": " + fmtInt(s.unique) + " unique attributes (" + fmtInt(s.new_this_run) + " new) from " + fmtInt(s.batches) + " batches" };
    }
    return null;
  }

  function renderRunInfo(run) {
    text("output-dir", run ? run.output_dir : "–");
    const files = (run && run.files) || [];
    $("downloads").className = files.length ? "" : "off";
    for (const a of document.querySelectorAll("#downloads a[data-file]")) {
      a.hidden = !files.includes(a.dataset.file);
    }
    const link = $("flow-run-link");
    const url = run && run.flow_run_url;
    if (url && /^https?:\/\//.test(url)) {
      if (link.getAttribute("href") !== url) link.setAttribute("href", url);
      link.hidden = false;
      $("flow-run-none").hidden = true;
    } else {
      link.hidden = true;
      $("flow-run-none").hidden = false;
      text("flow-run-none", S.prefect && S.prefect.api_url ? "–" : "no Prefect server configured (PREFECT_API_URL)");
    }
  }

  function renderRejected(rejected) {
    const el = $("rejected");
    const reasons = Object.entries(rejected || {});
    el.hidden = !reasons.length;
    if (!reasons.length) return;
    text("rejected", "rejected: " + fmtInt(reasons.reduce((sum, [, n]) => sum + n, 0)));
    el.title = "answer lines that are not attributes: " + reasons.map(([why, n]) => why + " " + fmtInt(n)).join(", ");
  }

  function renderMetrics(m) {
    m = m || {};
    text("m-upm", fmtNum(m.unique_per_minute, 1));
    text("m-cpm", m.cost_known === false ? "unknown" : m.cost_per_minute === undefined ? "–" : "$" + Number(m.cost_per_minute).toFixed(4));
    text("m-unique", fmtInt(m.unique));
    text("m-new", fmtInt(m.new_this_run));
    text("m-total", fmtInt(m.total_items));
    text("m-dup", m.duplicate_rate === undefined ? "–" : (m.duplicate_rate * 100).toFixed(1) + "%");
    text("m-batches", fmtInt(m.batches));
    text("m-requests", fmtInt(m.requests));
    text("m-failed", fmtInt(m.failures));
    text("m-cost", m.cost === undefined ? "–" : fmtCost(m.cost, m.cost_known));
    text("m-elapsed", fmtElapsed(m.elapsed_seconds));
  }

  const SVG = "http://www.w3.org/2000/svg";
  const W = 640, H = 200, PAD_L = 34, PAD_B = 18, PAD_T = 8, PAD_R = 8;

  function renderChart(chart) {
    const grid = $("chart-grid"), labels = $("chart-labels");
    grid.replaceChildren();
    labels.replaceChildren();
    if (!chart || !chart.length) {
      $("chart-line").setAttribute("points", "");
      $("chart-avg").setAttribute("points", "");
      return;
    }
    // x: batches accepted so far (points are [seconds, new, batches]; merged points hold
    // several batches), so "per batch" on y matches the axis.
    const xs = [];
    let done = 0;
    for (const p of chart) xs.push((done += p[2]));
    const ys = chart.map((p) => p[1] / Math.max(1, p[2]));
    const maxT = Math.max(1, done);
    const maxY = Math.max(1, ...ys);
    const x = (t) => PAD_L + (t / maxT) * (W - PAD_L - PAD_R);
    const y = (v) => H - PAD_B - (v / maxY) * (H - PAD_B - PAD_T);
    for (const f of [0, 0.5, 1]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", PAD_L); line.setAttribute("x2", W - PAD_R);
      line.setAttribute("y1", y(maxY * f)); line.setAttribute("y2", y(maxY * f));
      grid.appendChild(line);
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", 2); label.setAttribute("y", y(maxY * f) + 3);
      label.textContent = (maxY * f).toFixed(maxY < 4 ? 1 : 0);
      labels.appendChild(label);
    }
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", Math.min(W - 30, x(maxT * f)));
      label.setAttribute("y", H - 4);
      label.textContent = fmtInt(Math.round(maxT * f));
      labels.appendChild(label);
    }
    $("chart-line").setAttribute("points", xs.map((b, i) => x(b).toFixed(1) + "," + y(ys[i]).toFixed(1)).join(" "));
    const avg = [];
    let sumNew = 0, sumBatches = 0;
    const win = [];
    chart.forEach((p, i) => {
      win.push(p); sumNew += p[1]; sumBatches += p[2];
      if (win.length > 20) { const o = win.shift(); sumNew -= o[1]; sumBatches -= o[2]; }
      avg.push(x(xs[i]).toFixed(1) + "," + y(sumNew / Math.max(1, sumBatches)).toFixed(1));
    });
    $("chart-avg").setAttribute("points", avg.join(" "));
  }

  function cell(tr, value) {
    const td = document.createElement("td");
    td.textContent = value;
    tr.appendChild(td);
  }

  function renderProviders(providers) {
    const body = $("providers").tBodies[0];
    const rows = [];
    for (const [route, s] of Object.entries(providers || {})) {
      const tr = document.createElement("tr");
      const tokens = s.prompt_tokens === null || s.prompt_tokens === undefined ? "–" : fmtInt(s.prompt_tokens + s.completion_tokens);
      const error = s.last_error ? (s.last_status ? "HTTP " + s.last_status + ": " : "") + s.last_error : "";
      for (const v of [route, fmtInt(s.requests), fmtInt(s.batches), fmtInt(s.failures), fmtInt(s.items), fmtInt(s.new), tokens, fmtCost(s.cost), error]) cell(tr, v);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function renderErrors(errors) {
    const list = $("errors");
    if (!errors || !errors.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "none";
      list.replaceChildren(li);
      return;
    }
    list.replaceChildren(...errors.slice().reverse().map((e) => {
      const li = document.createElement("li");
      const who = e.crashed ? "producer " + e.producer + " crashed" : (e.route || "?") + " (producer " + e.producer + ")";
      li.textContent = e.time.slice(11, 19) + " " + who + ": " + (e.status ? "HTTP " + e.status + ": " : "") + e.error;
      return li;
    }));
  }

  function attributeItem(run, index) {
    const li = document.createElement("li");
    li.value = index + 1;
    li.textContent = run.attributes[index]; // untrusted: text only
    if (index < run.known) li.className = "old";
    return li;
  }

  function renderAttributes(run, full) {
    const list = $("attributes");
    const all = run ? run.attributes : [];
    const q = $("search").value.trim().toLowerCase();
    const key = (run ? run.id : "-") + "\u0000" + q;
    const matches = (a) => !q || a.toLowerCase().includes(q);
    if (full || key !== listKey || all.length < listUpTo) {
      listKey = key;
      const items = [];
      for (let i = all.length - 1; i >= 0 && items.length < SHOWN; i--) {
        if (matches(all[i])) items.push(attributeItem(run, i));
      }
      list.replaceChildren(...items);
    } else if (all.length > listUpTo) {
      const fresh = [];
      for (let i = all.length - 1; i >= listUpTo && fresh.length < SHOWN; i--) {
        if (matches(all[i])) fresh.push(attributeItem(run, i));
      }
      list.prepend(...fresh);
      while (list.children.length > SHOWN) list.lastElementChild.remove();
    }
    listUpTo = all.length;
    let count = all.length;
    if (q) {
      count = 0;
      for (const a of all) if (matches(a)) count++;
    }
    text("attr-count", q ? count + " of " + all.length + " match" : all.length + (run && run.known ? " (" + run.known + " from earlier runs)" : ""));
    const more = $("attr-more");
    more.hidden = count <= SHOWN;
    more.textContent = "showing the newest " + SHOWN + " of " + count + "; search to narrow down";
  }

  // -- the form ----------------------------------------------------------------------

  const FIELDS = ["topic", "producers", "iterations", "max_requests", "routing_strategy", "routing_config", "seed", "similarity", "max_tokens"];

  function fillForm(form) {
    for (const name of FIELDS) {
      const v = form[name];
      $(name).value = v === null || v === undefined ? "" : String(v);
    }
    $("fresh").checked = false;
  }

  function readForm() {
    const form = {};
    for (const name of FIELDS) form[name] = $(name).value;
    form.fresh = $("fresh").checked;
    return form;
  }

  function showMessage(message, info) {
    const el = $("message");
    el.textContent = message;
    el.className = info ? "info" : "";
    el.hidden = !message;
  }

  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      showMessage("the server cannot be reached: " + err.message);
      return null;
    }
    let data = {};
    try { data = await response.json(); } catch (err) { data = {}; }
    if (!response.ok) {
      showMessage(data.error || "the server answered " + response.status);
      return null;
    }
    return data;
  }

  $("run-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showMessage("", false);
    $("start").disabled = true;
    const result = await post("/api/start", readForm());
    if (result) {
      showMessage("started: files go to " + result.output_dir, true);
      lastNote = null; // a note of the run's that came first (e.g. waiting for Prefect) wins
    }
    if (S) render(false);
  });

  $("stop").addEventListener("click", async () => {
    $("stop").disabled = true;
    const result = await post("/api/stop", {});
    if (result) showMessage("stopping: flushing the output files…", true);
  });

  $("search").addEventListener("input", () => renderAttributes(S && S.run, false));

  connect();
})();
