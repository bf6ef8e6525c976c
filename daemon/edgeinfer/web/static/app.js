// The status page: polls api/status once a second and redraws the tables; the live views are MJPEG <img>s.
// Plain browser JavaScript, no build step. URLs are relative, so the page also works behind a path prefix.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const $ = (id) => document.getElementById(id);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

const fmt = (v, digits = 1) => (typeof v === "number" ? v.toFixed(digits) : v);

function showState(state) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
  el.className = `state state-${state}`;
  document.title = `edgeinfer: ${state}`;
}

function renderViews(views) {
  const box = $("views");
  for (const v of views) {
    const id = `view-${v.model}-${v.source}`;
    let div = document.getElementById(id);
    if (!div) {
      div = document.createElement("div");
      div.className = "view";
      div.id = id;
      const img = document.createElement("img");
      img.alt = `${v.model} on ${v.source}`;
      img.src = withToken(v.stream);
      const caption = document.createElement("div");
      caption.className = "caption";
      div.append(img, caption);
      box.append(div);
    }
    div.querySelector(".caption").textContent =
      `${v.source} · ${v.model} · frame ${v.last_seq ?? "–"} · encoded ${v.encoded} · dropped ${v.dropped}` +
      ` · viewers ${v.viewers}`;
  }
}

function render(s) {
  const hb = s.heartbeat || {};
  const stats = s.stats || {};
  showState(s.state);
  const fps = Object.entries(hb.fps || {}).map(([m, f]) => `${m} ${fmt(f)} fps`).join(", ");
  $("summary").textContent = `cycle ${hb.cycle ?? "–"} · up ${fmt(s.uptime_s, 0)} s · ${fps}` +
    ` · newest frame ${fmt(hb.newest_frame_age_ms, 0) ?? "–"} ms old`;
  renderViews(s.views || []);

  const models = stats.models || {};
  fillTable("models", Object.entries(models).map(([id, m]) => {
    const info = (s.models || {})[id] || {};
    const serving = info.serving ? `${info.serving.backend || ""} ${info.serving.path || ""} (link ${info.serving.link})` : "";
    const errors = (m.infer_errors || 0) + (m.decode_errors || 0) + (m.bad_frames || 0);
    return [cell(id), cell(info.backend), cell(info.device), cell(serving), cell(fmt(m.fps), "num"),
      cell(m.inferred, "num"), cell(m.published, "num"), cell(m.stale_dropped, "num"), cell(errors, "num"),
      cell(fmt(m.last_infer_ms), "num"), cell(fmt(m.last_age_ms), "num")];
  }));

  const ages = hb.frame_age_ms || {};
  const drops = {};
  for (const m of Object.values(models)) {
    for (const [src, n] of Object.entries(m.drops || {})) drops[src] = (drops[src] || 0) + n;
  }
  fillTable("sources", Object.entries(stats.sources || {}).map(([id, src]) => [
    cell(id), cell(src.state), cell(fmt(src.fps), "num"), cell(src.frames, "num"), cell(fmt(ages[id], 0), "num"),
    cell(drops[id] ?? 0, "num"), cell(src.bad_frames, "num"), cell(src.reconnects, "num"), cell(src.last_error)]));

  fillTable("entities", Object.entries(hb.entities || {}).map(([id, e]) => [
    cell(id), cell(e.kind), cell(e.status, `st-${e.status}`), cell(e.safety_relevant ? "yes" : "no"),
    cell(e.faults, "num"), cell(e.violations, "num"), cell(e.last_violation || e.last_fault)]));

  const counters = hb.counters || {};
  fillTable("outputs", Object.entries(stats.outputs || {}).map(([id, o]) => [
    cell(id), cell(o.published, "num"), cell(o.errors, "num"),
    cell(counters[id] ? JSON.stringify(counters[id]) : "")]));
}

async function poll() {
  try {
    const response = await fetch("api/status", { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`api/status: HTTP ${response.status}`);
    render(await response.json());
    $("error").hidden = true;
  } catch (err) {
    showState("UNREACHABLE");
    $("error").textContent = `cannot reach the daemon: ${err.message}`;
    $("error").hidden = false;
  } finally {
    setTimeout(poll, 1000);
  }
}

$("reset").addEventListener("click", async () => {
  const response = await fetch("api/command", { method: "POST", headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify({ cmd: "reset" }) });
  const reply = await response.json();
  $("summary").textContent = reply.ok ? `reset: ${reply.reply || "done"}` : `reset refused: ${reply.error}`;
});
$("metrics-link").href = withToken("metrics");
$("status-link").href = withToken("api/status");
poll();
