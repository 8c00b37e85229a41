// tir-edge live page: polls /stats.json, keeps the MJPEG <img>s connected, shows spot values.
"use strict";

const POLL_MS = 500;
const $ = (id) => document.getElementById(id);
// The run's token, put in the page by the server: POSTs carry it so no other site can send them.
const TOKEN = (document.querySelector('meta[name="tir-token"]') || {}).content || "";

// A number from obj under any of the given keys ("p50" or "p50_ms" ...), else undefined.
function pick(obj, keys) {
  if (obj === null || typeof obj !== "object") return undefined;
  for (const k of keys) {
    if (typeof obj[k] === "number") return obj[k];
  }
  return undefined;
}
function fmt(v, digits = 1) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "-";
}
function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== String(value)) el.textContent = value;
}

// Latency summaries: stats.latency_ms / stats.latency / stats.stages, name -> {p50, p99, ...}.
function latencyTable(stats) {
  for (const key of ["latency_ms", "latency", "stages"]) {
    const t = stats[key];
    if (t && typeof t === "object" && !Array.isArray(t)) return t;
  }
  return {};
}
function e2eOf(stats, table) {
  return stats.e2e || stats.end_to_end || table.e2e || table.end_to_end || table.total || {};
}
const Q = {
  p50: ["p50", "p50_ms", "median", "median_ms"],
  p90: ["p90", "p90_ms"],
  p99: ["p99", "p99_ms"],
  mean: ["mean", "mean_ms", "avg"],
  max: ["max", "max_ms"],
};

function renderStages(table) {
  const body = $("stages");
  const rows = [];
  for (const [name, s] of Object.entries(table)) {
    if (!s || typeof s !== "object") continue;
    const cls = ["e2e", "end_to_end", "total"].includes(name) ? ' class="e2e"' : "";
    const cells = ["p50", "p90", "p99", "mean", "max"].map((q) => `<td>${fmt(pick(s, Q[q]), 2)}</td>`);
    rows.push(`<tr${cls}><td>${name}</td>${cells.join("")}</tr>`);
  }
  const html = rows.length ? rows.join("") : '<tr><td colspan="6" class="dim">no latency stats yet</td></tr>';
  if (body.innerHTML !== html) body.innerHTML = html;
}

function renderDrops(drops) {
  if (typeof drops === "number") { text("drops", drops); text("drops-detail", ""); return; }
  if (drops && typeof drops === "object") {
    let total = 0;
    const parts = [];
    for (const [k, v] of Object.entries(drops)) {
      if (typeof v === "number") { total += v; if (v) parts.push(`${k} ${v}`); }
    }
    text("drops", total);
    text("drops-detail", parts.join(", "));
    return;
  }
  text("drops", "-");
}

function renderStatus(stats) {
  const status = $("status");
  const lost = stats.no_signal === true;
  status.textContent = lost ? "NO SIGNAL" : "LIVE";
  status.className = "badge " + (lost ? "bad" : "live");
  $("banner").classList.toggle("hidden", !lost);
  // an output that stopped for good (a recording on a full disk): one line each, until the run ends
  const failures = Object.values(stats.output_failures || {});
  text("failure-banner", failures.map((f) => "FAILED: " + f).join(" | "));
  $("failure-banner").classList.toggle("hidden", failures.length === 0);
}

function render(stats) {
  renderStatus(stats);
  const table = latencyTable(stats);
  const e2e = e2eOf(stats, table);
  const fps = typeof stats.fps === "number" ? stats.fps : pick(stats.fps, ["output", "pipeline", "source"]);
  text("fps", fmt(fps, 1));
  text("e2e-p50", fmt(pick(e2e, Q.p50), 1));
  text("e2e-p99", fmt(pick(e2e, Q.p99), 1));
  const http = stats.http || {};
  text("frames", typeof stats.frames === "number" ? stats.frames : (http.frames_in ?? "-"));
  text("clients", http.clients ?? "-");
  renderDrops(stats.drops);
  renderStages(table);

  const src = stats.source;
  text("source", typeof src === "string" ? src : (src && (src.uri || src.name)) || "-");
  const task = stats.task;
  text("task", typeof task === "string" ? task : (task && (task.name || JSON.stringify(task))) || "-");
  const conf = stats.confidence;
  text("confidence", typeof conf === "number" ? (conf <= 1 ? (100 * conf).toFixed(0) + " %" : fmt(conf, 2)) : "-");
  renderAdapt(stats.model && stats.model.adapt);
  renderBundle(stats.model && stats.model.bundle);

  const scene = stats.scene;
  if (scene && typeof scene.min_c === "number") {
    text("scene", `${fmt(scene.min_c, 1)} / ${fmt(scene.max_c, 1)} °C`);
  } else if (scene && typeof scene.min_counts === "number") {
    text("scene", `${scene.min_counts} / ${scene.max_counts} counts`);
  }
  renderCamera(stats.camera, (stats.http && stats.http.actions) || []);
  renderCollect(stats.collect);
  const f = stats.frame;
  if (f) {
    text("raw-size", `${f.width}×${f.height}`);
    text("restored-size", `${f.width}×${f.height}`);
  }
  text("raw-stats", JSON.stringify(stats, null, 2));
  text("updated", new Date().toLocaleTimeString());
}

// Model bundle: version and task list (they change when a new version is swapped in), and why
// a reload failed (the running bundle is kept).
function renderBundle(b) {
  $("bundle-fact").classList.toggle("hidden", !b);
  if (!b) return;
  const tasks = Array.isArray(b.tasks) ? b.tasks.join(", ") : "-";
  const failed = typeof b.reload_error === "string" && b.reload_error;
  text("bundle", `v${b.version ?? "-"}: ${tasks}` + (failed ? ` (${b.reload_error})` : ""));
  $("bundle").className = failed ? "bad" : "";
}

// Router adaptation (tir run --adapt N, or a bundle adapted by tir adapt): "collecting k/N",
// "adapted" or "refused: reason"; hidden when the router is not adapted.
function renderAdapt(adapt) {
  $("adapt-fact").classList.toggle("hidden", !adapt);
  if (!adapt) return;
  const state = typeof adapt.state === "string" ? adapt.state : "-";
  text("adapt", state.startsWith("refused") ? "not adapted (" + state + ")" : state);
  $("adapt").className = state.startsWith("refused") ? "bad" : "";
}

// Open-world collection (tir run --collect DIR): kept count, raw counts, last thumbnails.
function renderCollect(c) {
  $("collect-card").classList.toggle("hidden", !c);
  if (!c) return;
  text("collect-count", `${c.frames ?? 0} kept (${fmt(c.mb, 1)} MB)`);
  text("collect-detail", `router verdicts ${c.seen ?? 0}, unknown ${c.unknown ?? 0}, rate-limited ` +
    `${c.rate_limited ?? 0}, queue full ${c.queue_full ?? 0}, oldest dropped ${c.evicted ?? 0} -> ${c.folder || ""}`);
  const box = $("collect-thumbs");
  const ids = (c.thumbs || []).join(",");
  if (box.dataset.ids === ids) return;
  box.dataset.ids = ids;
  box.replaceChildren(...(c.thumbs || []).map((id) => {
    const img = document.createElement("img");
    img.src = `/collect/${id}.jpg`;
    img.alt = `collected frame ${id}`;
    img.title = `collected frame ${id}`;
    return img;
  }));
}

// Camera control (tir run --camera-port): FPA temperature, FFC state, and the FFC button.
function renderCamera(cam, actions) {
  $("camera-card").classList.toggle("hidden", !cam);
  $("ffc-button").classList.toggle("hidden", !actions.includes("ffc"));
  if (!cam) return;
  text("fpa", typeof cam.fpa_temp_c === "number" ? `${fmt(cam.fpa_temp_c, 1)} °C` : "-");
  const age = typeof cam.last_ffc_age_s === "number" ? `, last ${fmt(cam.last_ffc_age_s, 0)} s ago` : "";
  text("ffc-state", `FFC ${cam.ffc_state || "-"}${age} (${cam.ffc_count ?? 0} so far)`);
}
async function requestFFC() {
  const button = $("ffc-button");
  button.disabled = true;
  try {
    const reply = await (await fetch("/ffc", { method: "POST", headers: { "X-Tir-Token": TOKEN } })).json();
    if (reply.error) text("ffc-state", reply.error);
  } catch (err) {
    text("ffc-state", "FFC request failed");
  } finally {
    setTimeout(() => { button.disabled = false; }, 1000);
  }
}
$("ffc-button").addEventListener("click", requestFFC);

async function poll() {
  try {
    const res = await fetch("/stats.json", { cache: "no-store" });
    render(await res.json());
  } catch (err) {
    const status = $("status");
    status.textContent = "server unreachable";
    status.className = "badge bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// Reconnect a stream that broke (server restarted, network blip).
function keepStreaming(img) {
  const base = img.getAttribute("src");
  img.addEventListener("error", () => {
    setTimeout(() => { img.src = base + "?t=" + Date.now(); }, 1000);
  });
}

// Spot readout: counts (and °C when the camera is radiometric) under the cursor.
let spotBusy = false;
function spotUnderCursor(img, view) {
  img.addEventListener("mousemove", async (ev) => {
    if (spotBusy || !img.naturalWidth) return;
    // The image is letterboxed (object-fit: contain): map through the drawn content box.
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const left = r.left + (r.width - img.naturalWidth * scale) / 2;
    const top = r.top + (r.height - img.naturalHeight * scale) / 2;
    const x = Math.floor((ev.clientX - left) / scale);
    const y = Math.floor((ev.clientY - top) / scale);
    if (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) return;
    spotBusy = true;
    try {
      const s = await (await fetch(`/spot.json?x=${x}&y=${y}&view=${view}`, { cache: "no-store" })).json();
      if (s.error) text("spot", s.error);
      else text("spot", `${view} (${s.x}, ${s.y}): ` + (s.celsius != null ? `${fmt(s.celsius, 1)} °C` : `${s.counts} counts`));
    } catch (err) {
      text("spot", "-");
    } finally {
      setTimeout(() => { spotBusy = false; }, 100);
    }
  });
}

for (const view of ["raw", "restored"]) {
  keepStreaming($(view));
  spotUnderCursor($(view), view);
}
poll();
