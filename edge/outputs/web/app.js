// tir-edge live page: polls /stats.json, keeps the MJPEG <img>s connected, shows spot values.
"use strict";

const POLL_MS = 500;
const $ = (id) => document.getElementById(id);
// The run's token, put in the page by the server: POSTs carry it so no other site can send them.
const TOKEN = (document.querySelector('meta[name="tir-token"]') || {}).content || "";

// /stats.json is the stats schema's JSON form (edge/pipeline/stats.py, StatsSnapshot; described in
// docs/architecture.md "Stats schema"): every key is always there, null where there is no value.
// This page reads exactly those keys, always as full paths from `stats` (tests/test_stats_schema.py
// checks each path against the schema), and says so when the server speaks another schema version.
const SCHEMA_VERSION = 1;
const QUANTILES = ["p50", "p90", "p99", "mean", "max"]; // LatencySummary's fields, in the table's order

function fmt(v, digits = 1) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "-";
}
function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== String(value)) el.textContent = value;
}

// stats.latency_ms: stage name (and "e2e") -> LatencySummary {n, p50, p90, p99, mean, max} in ms.
function renderStages(stats) {
  const body = $("stages");
  const rows = [];
  for (const [name, summary] of Object.entries(stats.latency_ms)) {
    const cls = name === "e2e" ? ' class="e2e"' : "";
    const cells = QUANTILES.map((q) => `<td>${fmt(summary[q], 2)}</td>`);
    rows.push(`<tr${cls}><td>${name}</td>${cells.join("")}</tr>`);
  }
  const html = rows.length ? rows.join("") : '<tr><td colspan="6" class="dim">no latency stats yet</td></tr>';
  if (body.innerHTML !== html) body.innerHTML = html;
}

// stats.drops: where frames were dropped -> count; stats.corrupt: unusable frames (damaged
// file, other size or bit depth, ...) by kind, counted apart from the drops.
function renderDrops(stats) {
  let total = 0;
  const parts = [];
  for (const [where, n] of Object.entries(stats.drops)) {
    total += n;
    if (n) parts.push(`${where} ${n}`);
  }
  text("drops", total);
  if (stats.corrupt_total) {
    const kinds = Object.entries(stats.corrupt || {}).filter(([, n]) => n).map(([kind, n]) => `${kind} ${n}`);
    parts.push(`unusable frames ${stats.corrupt_total}` + (kinds.length ? ` (${kinds.join(", ")})` : ""));
  }
  // a recording that reached the largest file allowed (FAT32's 4 GiB) and went on in new files: no
  // frame lost, but the user should know the recording is split (as the status line says)
  const segments = stats.recording && stats.recording.segments;
  if (segments) parts.push(`recording went on in ${segments} new files (file size limit)`);
  text("drops-detail", parts.join(", "));
}

function renderStatus(stats) {
  const status = $("status");
  const lost = stats.no_signal === true;
  status.textContent = lost ? "NO SIGNAL" : "LIVE";
  status.className = "badge " + (lost ? "bad" : "live");
  $("banner").classList.toggle("hidden", !lost);
  // an output that stopped for good (a recording on a full disk): one line each, until the run ends
  const failures = Object.values(stats.output_failures);
  text("failure-banner", failures.map((f) => "FAILED: " + f).join(" | "));
  $("failure-banner").classList.toggle("hidden", failures.length === 0);
}

function render(stats) {
  if (stats.schema_version !== SCHEMA_VERSION) {
    text("status", `stats schema ${stats.schema_version}, page reads ${SCHEMA_VERSION}: reload the page`);
    $("status").className = "badge bad";
    return;
  }
  renderStatus(stats);
  text("fps", fmt(stats.fps, 1));
  text("e2e-p50", fmt(stats.latency_ms.e2e && stats.latency_ms.e2e.p50, 1));
  text("e2e-p99", fmt(stats.latency_ms.e2e && stats.latency_ms.e2e.p99, 1));
  text("frames", stats.frames);
  text("clients", stats.http ? stats.http.clients : "-");
  renderDrops(stats);
  renderStages(stats);

  text("source", stats.source.uri || "-");
  // the route, and what runs it when that is more than the route's name (tone+route, destripe …)
  const runs = stats.model && stats.model.runs;
  const plain = !runs || ["route", "student", "passthrough"].includes(runs);
  text("task", (stats.task ?? "-") + (plain ? "" : ` [${runs}]`));
  const conf = stats.confidence;
  text("confidence", typeof conf === "number" ? (conf <= 1 ? (100 * conf).toFixed(0) + " %" : fmt(conf, 2)) : "-");
  renderAdapt(stats);
  renderContrast(stats);
  renderFPN(stats);
  renderBlur(stats);
  renderBundle(stats);

  if (stats.scene && typeof stats.scene.min_c === "number") {
    text("scene", `${fmt(stats.scene.min_c, 1)} / ${fmt(stats.scene.max_c, 1)} °C`);
  } else if (stats.scene) {
    text("scene", `${stats.scene.min_counts} / ${stats.scene.max_counts} counts`);
  }
  renderCamera(stats);
  renderHistory(stats);
  renderCollect(stats);
  if (stats.frame) {
    text("raw-size", `${stats.frame.width}×${stats.frame.height}`);
    text("restored-size", `${stats.frame.width}×${stats.frame.height}`);
  }
  text("raw-stats", JSON.stringify(stats, null, 2));
  text("updated", new Date().toLocaleTimeString());
}

// Model bundle: version and task list (they change when a new version is swapped in), and why
// a reload failed (the running bundle is kept) or a file of the running bundle failed its check
// (frames pass through until it is restored). stats.model.bundle is written by the hot-swap
// restorer (engines/hotswap.py); hidden without one.
function renderBundle(stats) {
  const b = stats.model && stats.model.bundle;
  $("bundle-fact").classList.toggle("hidden", !b);
  if (!b) return;
  const tasks = Array.isArray(b.tasks) ? b.tasks.join(", ") : "-";
  const failed = [b.reload_error, b.file_error].filter((e) => typeof e === "string" && e).join("; ");
  text("bundle", `v${b.version ?? "-"}: ${tasks}` + (failed ? ` (${failed})` : ""));
  $("bundle").className = failed ? "bad" : "";
}

// Router adaptation (tir run --adapt N, or a bundle adapted by tir adapt): stats.adapt.state is
// "collecting k/N", "adapted" or "refused: reason"; hidden when the router is not adapted.
function renderAdapt(stats) {
  $("adapt-fact").classList.toggle("hidden", !stats.adapt);
  if (!stats.adapt) return;
  const state = stats.adapt.state;
  text("adapt", state.startsWith("refused") ? "not adapted (" + state + ")" : state);
  $("adapt").className = state.startsWith("refused") ? "bad" : "";
}

// Contrast gate (engines/contrast_gate.py): the camera's reference low-pass span (0..1 of full
// scale), the contrast verdicts it demoted and the verdicts it gave the contrast part (shown once
// there is one), how many verdicts in a row a contrast loss has lasted (shown while it lasts) and
// how often a loss was taken as the camera's look; hidden when the gate is off or there is no router.
function renderContrast(stats) {
  $("contrast-fact").classList.toggle("hidden", !stats.contrast);
  if (!stats.contrast) return;
  const promoted = stats.contrast.promoted ? ` · ${stats.contrast.promoted} promoted` : "";
  const held = (stats.contrast.holding ? ` · a loss for ${stats.contrast.holding} verdicts` : "") +
    (stats.contrast.adopted ? ` · a loss taken as its look ${stats.contrast.adopted}×` : "");
  text("contrast", `ref ${fmt(stats.contrast.reference, 2)} · ${stats.contrast.demoted} demoted` +
    promoted + held + ` · ${stats.contrast.aligned || 0} tone-aligned`);
}

// FPN gate (engines/fpn_gate.py): the last routed frame's column-FPN amplitude (% of the scene
// span), the verdicts it gave the noise part, the unknown verdicts it made the noise task because
// the frame's white noise was above the camera's floor, and the frames whose column FPN alone it
// removed (destripe); hidden when the gate is off or there is no router.
function renderFPN(stats) {
  $("fpn-fact").classList.toggle("hidden", !stats.fpn);
  if (!stats.fpn) return;
  text("fpn", `${fmt(100 * (stats.fpn.amplitude || 0), 2)} % · ${stats.fpn.promoted} promoted` +
    ` · ${stats.fpn.promoted_white || 0} unknown → noise · ${stats.fpn.demoted_white || 0} own noise kept` +
    ` · ${stats.fpn.destriped || 0} column FPN removed` +
    (stats.fpn.held ? ` · ${stats.fpn.held} held before the floor` : ""));
}

// Blur gate (engines/blur_gate.py): the last routed frame's drop (what a further 1 px blur takes
// from its fine detail) against the camera's threshold and the blur verdicts it demoted, then the
// noise-carrying verdicts whose blur part it changed; hidden when the gate is off or there is no router.
function renderBlur(stats) {
  $("blur-fact").classList.toggle("hidden", !stats.blur);
  if (!stats.blur) return;
  text("blur", `${fmt(stats.blur.drop, 2)} / ${fmt(stats.blur.threshold, 2)} · ${stats.blur.demoted} demoted` +
    ` · ${stats.blur.changed_noisy || 0} under noise` +
    (stats.blur.held ? ` · ${stats.blur.held} held before the reference` : ""));
}

// Open-world collection (tir run --collect DIR): kept count, raw counts, frames it could not
// store (a full disk) with the last reason, in red, and the last thumbnails.
function renderCollect(stats) {
  $("collect-card").classList.toggle("hidden", !stats.collect);
  if (!stats.collect) return;
  text("collect-count", `${stats.collect.frames} kept (${fmt(stats.collect.mb, 1)} MB)`);
  text("collect-detail", `router verdicts ${stats.collect.seen}, unknown ${stats.collect.unknown}, rate-limited ` +
    `${stats.collect.rate_limited}, queue full ${stats.collect.queue_full}, oldest dropped ` +
    `${stats.collect.evicted} -> ${stats.collect.folder || ""}` +
    (stats.collect.write_errors ? `; NOT STORED ${stats.collect.write_errors} (last: ${stats.collect.last_error})` : ""));
  $("collect-detail").classList.toggle("bad", !!stats.collect.write_errors);
  const box = $("collect-thumbs");
  const ids = stats.collect.thumbs.join(",");
  if (box.dataset.ids === ids) return;
  box.dataset.ids = ids;
  box.replaceChildren(...stats.collect.thumbs.map((id) => {
    const img = document.createElement("img");
    img.src = `/collect/${id}.jpg`;
    img.alt = `collected frame ${id}`;
    img.title = `collected frame ${id}`;
    return img;
  }));
}

// Camera control (tir run --camera-port): FPA temperature, FFC state, and the FFC button
// (shown when the server offers the "ffc" action: stats.http.actions).
function renderCamera(stats) {
  $("camera-card").classList.toggle("hidden", !stats.camera);
  $("ffc-button").classList.toggle("hidden", !(stats.http && stats.http.actions.includes("ffc")));
  if (!stats.camera) return;
  text("fpa", typeof stats.camera.fpa_temp_c === "number" ? `${fmt(stats.camera.fpa_temp_c, 1)} °C` : "-");
  const age = typeof stats.camera.last_ffc_age_s === "number" ? `, last ${fmt(stats.camera.last_ffc_age_s, 0)} s ago` : "";
  text("ffc-state", `FFC ${stats.camera.ffc_state || "-"}${age} (${stats.camera.ffc_count ?? 0} so far)`);
}
// POST one of the server's actions (stats.http.actions) from its button: the button is disabled
// for a second, and the server's refusal (or a failed request) is shown in the element `stateId`.
async function postAction(path, buttonId, stateId, failed) {
  const button = $(buttonId);
  button.disabled = true;
  try {
    const reply = await (await fetch(path, { method: "POST", headers: { "X-Tir-Token": TOKEN } })).json();
    if (reply.error) text(stateId, reply.error);
  } catch (err) {
    text(stateId, failed);
  } finally {
    setTimeout(() => { button.disabled = false; }, 1000);
  }
}
$("ffc-button").addEventListener("click", () => postAction("/ffc", "ffc-button", "ffc-state", "FFC request failed"));

// Camera history (the Restorer's gates): how often the camera changed and why; the button says
// the camera was swapped without a reconnect or a new frame size (POST /camera/new).
function renderHistory(stats) {
  const offered = !!(stats.http && stats.http.actions.includes("camera/new"));
  $("history-card").classList.toggle("hidden", !offered);
  if (!offered || !stats.model) return;
  text("camera-changes", typeof stats.model.camera_changes === "number" ? String(stats.model.camera_changes) : "-");
  const why = stats.model.camera_change;
  text("camera-change", Array.isArray(why) && why.length ? `last: ${why.join(", ")}` : "none since the start");
}
$("new-camera-button").addEventListener("click",
  () => postAction("/camera/new", "new-camera-button", "camera-change", "request failed"));

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
