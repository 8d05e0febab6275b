// The resnet-api Web UI: one image, many images (a grid) or the live camera, against this server's /v1 API.
// Plain ES module, no build step and no third-party code, so the page works offline from the package.

import { keepFocus } from "./focus.js";
import { currentLang, errorText, pickLang, t, useLang, wireLanguageMenu } from "./i18n.js";

const REQUEST_TIMEOUT_MS = 60_000;
const FRAME_INTERVAL_MS = 250; // the camera sends at most 4 frames a second, and only one at a time
const FRAME_MAX_SIDE = 320; // frames are downscaled before upload: the model sees 224 x 224 anyway
// Measured (README, "Web UI"): one /v1/predict/batch request for 8 images beats 8 parallel /v1/predict calls.
const GRID_STRATEGY = "batch";
const BATCH_CHUNK = 16; // files per batch request (the server accepts up to RESNET_API_MAX_BATCH_FILES, 32 by default)

const $ = (sel) => document.querySelector(sel);
const state = {
  model: null,
  modelError: null, // an i18n key while /v1/model cannot be read: loading, or the server unreachable
  modelTimer: null, // the next /v1/model check, while there is an error
  modelLoading: false,
  topK: 3,
  files: [], // the current selection: [{file, url}]
  items: [], // one per file: {status: "pending" | "done" | "error", data, error, rtt}
  run: 0, // increases with each classification run, so late answers of an old run are dropped
  gridMs: null,
  // session increases with each start and stop, so a late getUserMedia or an old frame loop knows it is not wanted
  camera: { stream: null, running: false, error: null, preds: null, fps: 0, ms: 0, starting: false, session: 0 },
};

// ---------- i18n (i18n.js, shared with the classifiers page) ----------

async function setLang(lang) {
  if (!(await useLang(lang))) return; // server unreachable: keep the language already shown
  renderModel();
  renderResults();
  renderCamera();
}

const pct = (score) =>
  new Intl.NumberFormat(currentLang(), { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(score);
const ms = (value) => new Intl.NumberFormat(currentLang(), { maximumFractionDigits: value < 10 ? 1 : 0 }).format(value);

// ---------- DOM helper ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style") Object.assign(el.style, value); // CSSOM: allowed by the page's CSP, unlike style=""
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

// ---------- talking to the API ----------

// Every failure becomes {status, code, detail, retryAfter}; status 0 means the server was not reached.
async function problemOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's HTML page, say): the status alone decides the message
  }
  return {
    status: response.status,
    code: body.code || "",
    detail: body.detail || response.statusText || "",
    retryAfter: Number(response.headers.get("Retry-After")) || 1,
  };
}

async function post(path, form) {
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method: "POST", body: form, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const code = err && err.name === "TimeoutError" ? "timeout" : "network";
    if (code === "network") lostServer();
    return { ok: false, error: { status: 0, code, detail: String(err && err.message), retryAfter: 1 } };
  }
  if (state.modelError) loadModel(); // the server answers again: the status chip says so at once
  if (!response.ok) return { ok: false, error: await problemOf(response), rtt: performance.now() - started };
  let data;
  try {
    data = await response.json();
  } catch {
    // A 200 that is not this API's JSON (a proxy's login page, say): an error with a retry, not an endless spinner.
    return { ok: false, error: { status: response.status, code: "unreadable", detail: "", retryAfter: 1 } };
  }
  return { ok: true, data, rtt: performance.now() - started };
}

function predictOne(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  return post(`v1/predict?top_k=${state.topK}`, form);
}

function predictBatch(files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  return post(`v1/predict/batch?top_k=${state.topK}`, form);
}

// Worth another try: the server was busy, unreachable or failed; a bad file stays bad.
const retryable = (error) => error.status === 0 || error.status === 503 || error.status >= 500 || error.code === "unreadable";

// This page's own failures (set by `post`) come first; the rest are the shared messages.
const errorMessage = (error) => errorText(error, { timeout: "error.timeout", unreadable: "error.unreadable" });

// ---------- model info and the untrained banner ----------

async function loadModel() {
  if (state.modelLoading) return;
  state.modelLoading = true;
  try {
    const response = await fetch("v1/model", { signal: AbortSignal.timeout(10_000) });
    if (response.status === 401) throw Object.assign(new Error("needs a key"), { kind: "needsKey" });
    if (!response.ok) throw Object.assign(new Error("not ready"), { kind: "notReady" });
    state.model = await response.json();
    state.modelError = null;
  } catch (err) {
    // A server with API keys: this page cannot send one, so checking again would never help.
    state.modelError = { needsKey: "error.needsKey", notReady: "model.notReady" }[err.kind] || "model.offline";
    if (err.kind !== "needsKey") checkModelLater();
  } finally {
    state.modelLoading = false;
  }
  renderModel();
}

function checkModelLater() {
  if (!state.modelTimer) state.modelTimer = setTimeout(() => { state.modelTimer = null; loadModel(); }, 2000);
}

// A request could not reach the server: the status chip stops saying "Ready" until /v1/model answers again.
function lostServer() {
  if (state.modelError === "model.offline") return;
  state.modelError = "model.offline";
  renderModel();
  checkModelLater();
}

function renderModel() {
  const box = $("#model");
  const m = state.model;
  if (!m) {
    box.replaceChildren(
      h("div", { class: "chip chip-status" }, h("dt", { class: "visually-hidden" }, t("model.status")),
        h("dd", { id: "model-status" }, t(state.modelError || "model.loading")))
    );
    return;
  }
  const chip = (label, value, extra = "") =>
    h("div", { class: `chip ${extra}` }, h("dt", {}, label), h("dd", {}, value));
  const status = state.modelError
    ? h("div", { class: "chip chip-status chip-warn" }, h("dt", { class: "visually-hidden" }, t("model.status")),
      h("dd", { id: "model-status" }, t(state.modelError)))
    : h("div", { class: "chip chip-ready" }, h("dt", { class: "visually-hidden" }, t("model.status")),
      h("dd", { id: "model-status" }, h("span", { class: "dot", "aria-hidden": "true" }), t("model.ready")));
  box.replaceChildren(
    status,
    chip(t("model.name"), m.name),
    chip(t("model.weights"), m.untrained ? `${m.weights} (${t("model.untrained")})` : m.weights, m.untrained ? "chip-warn" : ""),
    // The runtime only where it is not the backend's own name: "int8 (openvino) · int8", but "torch · fp32".
    chip(t("model.backend"), `${m.backend}${m.runtime && m.runtime !== m.backend ? ` (${m.runtime})` : ""} · ${m.precision}`),
    chip(t("model.version"), m.version)
  );
  $("#banner").hidden = !m.untrained;
  $("#footer-version").textContent = `resnet-api ${m.version}`;
}

// ---------- images: one result or a grid ----------

function predList(predictions, { compact = false } = {}) {
  if (!predictions.length) return h("p", { class: "muted" }, t("result.none"));
  return h(
    "ol",
    { class: compact ? "preds preds-compact" : "preds" },
    predictions.map((p, rank) =>
      h(
        "li",
        { class: rank === 0 ? "pred pred-top" : "pred" },
        h("span", { class: "pred-label", title: `#${p.index}` }, p.label),
        h("span", { class: "pred-score" }, pct(p.score)),
        h("span", { class: "bar", "aria-hidden": "true" },
          h("span", { class: "bar-fill", style: { width: `${Math.max(0.5, p.score * 100).toFixed(2)}%` } }))
      )
    )
  );
}

function errorBox(error, retry) {
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("p", { class: "error-text" }, errorMessage(error)),
    error.detail && error.status !== 0
      ? h("details", {}, h("summary", { "data-focus": "details" }, t("result.details")), h("p", { class: "error-detail" }, error.detail))
      : null,
    retry ? h("button", { type: "button", class: "button-quiet", "data-focus": "retry", onclick: retry }, t("result.retry")) : null
  );
}

function spinner() {
  return h("p", { class: "pending" }, h("span", { class: "spinner", "aria-hidden": "true" }), t("result.classifying"));
}

function timingList(item) {
  const tm = item.data.timings;
  const rows = [
    [t("result.roundTrip"), `${ms(item.rtt)} ms`, "rtt"],
    [t("result.server"), `${ms(tm.total_ms)} ms`],
    [t("result.decode"), `${ms(tm.decode_ms)} ms`],
    [t("result.queue"), `${ms(tm.queue_ms)} ms`],
    [t("result.inference"), `${ms(tm.inference_ms)} ms`],
    [t("result.batch"), String(tm.batch_size)],
  ];
  return h("dl", { class: "timings" },
    rows.map(([k, v, id]) => h("div", { class: id ? `timing timing-${id}` : "timing" }, h("dt", {}, k), h("dd", {}, v))));
}

function media(entry, compact) {
  const isImage = entry.file.type.startsWith("image/");
  return h(
    "figure",
    { class: compact ? "card-media" : "result-media" },
    isImage
      ? h("img", { src: entry.url, alt: entry.file.name, onerror: (e) => e.target.replaceWith(fileIcon()) })
      : fileIcon(),
    h("figcaption", { class: "file-name", title: entry.file.name }, entry.file.name)
  );
}

function fileIcon() {
  const icon = h("div", { class: "file-icon", "aria-hidden": "true" });
  icon.innerHTML =
    '<svg viewBox="0 0 48 48"><path d="M12 4h16l10 10v30H12z" fill="none" stroke="currentColor" stroke-width="2.5" stroke-linejoin="round"/><path d="M28 4v10h10" fill="none" stroke="currentColor" stroke-width="2.5" stroke-linejoin="round"/></svg>';
  return icon;
}

function itemBody(item, index, compact) {
  if (item.status === "pending") return spinner();
  if (item.status === "error") return errorBox(item.error, retryable(item.error) ? () => retryOne(index) : null);
  const d = item.data;
  return h(
    "div",
    {},
    predList(d.predictions, { compact }),
    compact
      ? h("p", { class: "stats" }, `${t("result.image", d.image)} · ${ms(d.timings.total_ms)} ms`)
      : [h("p", { class: "stats" }, t("result.image", d.image)), timingList(item)]
  );
}

function renderResults() {
  const results = $("#results");
  const n = state.files.length;
  $("#clear").disabled = n === 0;
  results.setAttribute("aria-busy", String(state.items.some((it) => it.status === "pending")));
  if (n === 0) {
    results.replaceChildren();
    $("#summary").textContent = "";
    return;
  }
  if (n === 1) {
    const item = state.items[0];
    // Redraws come while the user may be on a Retry button or a Details summary: keepFocus puts them back there.
    keepFocus(results, () => results.replaceChildren(
      h("article", { class: `result result-${item.status}`, "data-status": item.status, "data-focus-scope": "0" },
        media(state.files[0], false),
        h("div", { class: "result-body" }, h("h2", { class: "section-title" }, t("result.heading")), itemBody(item, 0, false)))
    ));
    $("#summary").textContent = "";
    return;
  }
  keepFocus(results, () => results.replaceChildren(
    h("ul", { class: "grid" },
      state.files.map((entry, i) =>
        h("li", { class: `card card-${state.items[i].status}`, "data-status": state.items[i].status, "data-focus-scope": String(i) },
          media(entry, true), h("div", { class: "card-body" }, itemBody(state.items[i], i, true)))))
  ));
  const done = state.items.filter((it) => it.status === "done").length;
  const failed = state.items.filter((it) => it.status === "error").length;
  if (done + failed < n) $("#summary").textContent = t("grid.working", { total: n });
  else {
    const vars = { done, total: n, failed, ms: ms(state.gridMs || 0) };
    $("#summary").textContent = failed ? t("grid.summaryFailed", vars) : t("grid.summary", vars);
  }
}

function setFiles(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  for (const entry of state.files) URL.revokeObjectURL(entry.url);
  state.files = files.map((file) => ({ file, url: URL.createObjectURL(file) }));
  classifyAll();
}

async function classifyAll() {
  const run = ++state.run;
  const files = state.files.map((e) => e.file);
  state.items = files.map(() => ({ status: "pending" }));
  state.gridMs = null;
  renderResults();
  const started = performance.now();
  if (files.length === 1) {
    const r = await predictOne(files[0], files[0].name);
    if (run !== state.run) return;
    state.items[0] = r.ok ? { status: "done", data: r.data, rtt: r.rtt } : { status: "error", error: r.error };
  } else if (GRID_STRATEGY === "batch") {
    const chunks = [];
    for (let i = 0; i < files.length; i += BATCH_CHUNK) chunks.push(i);
    // Two batch requests in flight at most: the next one uploads and decodes while the model runs.
    const worker = async () => {
      // A newer run (new files, or "Classes to show" changed) stops this one sending its remaining chunks.
      for (let offset = chunks.shift(); offset !== undefined && run === state.run; offset = chunks.shift()) await runChunk(offset);
    };
    const runChunk = async (offset) => {
      const r = await predictBatch(files.slice(offset, offset + BATCH_CHUNK));
      if (run !== state.run) return;
      const size = Math.min(BATCH_CHUNK, files.length - offset);
      if (!r.ok && r.error.status === 413 && (r.error.code === "too_many_files" || r.error.code === "payload_too_large")) {
        // This server takes fewer files a request (RESNET_API_MAX_BATCH_FILES) or fewer bytes
        // (RESNET_API_MAX_REQUEST_BYTES): the whole request was refused, not a file. One request per file instead.
        for (let j = offset; j < offset + size && run === state.run; j++) await retryOne(j);
        return;
      }
      for (let j = 0; j < size; j++) {
        const res = r.ok ? r.data.results[j] : null;
        state.items[offset + j] = !r.ok
          ? { status: "error", error: r.error }
          : res.ok
            ? { status: "done", data: res, rtt: r.rtt }
            : { status: "error", error: { status: res.error.status, code: res.error.code, detail: res.error.detail, retryAfter: 1 } };
      }
      renderResults();
    };
    await Promise.all([worker(), worker()]);
  } else {
    await Promise.all(files.map(async (file, i) => {
      const r = await predictOne(file, file.name);
      if (run !== state.run) return;
      state.items[i] = r.ok ? { status: "done", data: r.data, rtt: r.rtt } : { status: "error", error: r.error };
      renderResults();
    }));
  }
  if (run !== state.run) return;
  state.gridMs = performance.now() - started;
  renderResults();
}

async function retryOne(index) {
  const run = state.run;
  const file = state.files[index].file;
  state.items[index] = { status: "pending" };
  renderResults();
  const r = await predictOne(file, file.name);
  if (run !== state.run) return;
  state.items[index] = r.ok ? { status: "done", data: r.data, rtt: r.rtt } : { status: "error", error: r.error };
  renderResults();
}

function clearAll() {
  state.run++;
  for (const entry of state.files) URL.revokeObjectURL(entry.url);
  state.files = [];
  state.items = [];
  $("#file").value = "";
  renderResults();
}

// ---------- camera ----------

function cameraError(err) {
  const name = (err && err.name) || "Error";
  if (name === "NotAllowedError" || name === "SecurityError") return t("camera.denied");
  if (name === "NotFoundError" || name === "OverconstrainedError") return t("camera.notFound");
  if (name === "NotReadableError") return t("camera.busy");
  if (name === "Insecure") return t("camera.insecure");
  return t("camera.failed", { name });
}

async function startCamera() {
  const cam = state.camera;
  cam.error = null;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cam.error = { name: "Insecure" };
    renderCamera();
    return;
  }
  const session = ++cam.session;
  cam.starting = true;
  renderCamera();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "environment", width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (err) {
    if (session !== cam.session) return; // stopped meanwhile: nothing to report
    cam.starting = false;
    cam.error = { name: err.name };
    renderCamera();
    return;
  }
  // Stopped (or the tab left) while the browser was starting the camera: release it at once.
  if (session !== cam.session) {
    for (const track of stream.getTracks()) track.stop();
    return;
  }
  cam.stream = stream;
  const video = $("#video");
  video.srcObject = cam.stream;
  await video.play().catch(() => {});
  if (session !== cam.session) return; // stopped during play(): stopCamera already released the stream
  cam.starting = false;
  cam.running = true;
  cam.preds = null;
  renderCamera();
  cameraLoop(session);
}

function stopCamera() {
  const cam = state.camera;
  cam.session++; // ends this session's frame loop and turns away a getUserMedia still pending
  cam.running = false;
  cam.starting = false;
  if (cam.stream) for (const track of cam.stream.getTracks()) track.stop();
  cam.stream = null;
  $("#video").srcObject = null;
  renderCamera();
}

function grabFrame(video, canvas) {
  const scale = Math.min(1, FRAME_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

const sleep = (millis) => new Promise((resolve) => setTimeout(resolve, millis));

// One frame in flight at a time: the next frame is grabbed only after the previous answer arrived.
async function cameraLoop(session) {
  const cam = state.camera;
  const live = () => cam.running && cam.session === session; // a Stop then Start must end this loop, not add one
  const video = $("#video");
  const canvas = document.createElement("canvas");
  let lastSent = null;
  while (live()) {
    const started = performance.now();
    if (!video.videoWidth || document.hidden) {
      await sleep(100);
      continue;
    }
    // The rate is measured between frames sent, which the loop keeps at most 1000 / FRAME_INTERVAL_MS a second.
    const interval = lastSent === null ? null : started - lastSent;
    lastSent = started;
    const blob = await grabFrame(video, canvas);
    const r = blob ? await predictOne(blob, "frame.jpg") : null;
    if (!live()) break;
    let wait = FRAME_INTERVAL_MS - (performance.now() - started);
    if (r && r.ok) {
      cam.preds = r.data.predictions;
      cam.ms = r.rtt;
      if (interval !== null) cam.fps = cam.fps ? 0.7 * cam.fps + 0.3 * (1000 / interval) : 1000 / interval;
      cam.error = null;
    } else if (r) {
      cam.error = r.error;
      wait = Math.max(wait, r.error.status === 503 ? r.error.retryAfter * 1000 : 1000);
    }
    renderCamera();
    if (wait > 0) await sleep(wait);
  }
}

function renderCamera() {
  const cam = state.camera;
  const button = $("#camera-toggle");
  button.textContent = cam.starting ? t("camera.starting") : cam.running ? t("camera.stop") : t("camera.start");
  button.disabled = cam.starting;
  button.setAttribute("aria-pressed", String(cam.running));
  $("#camera-placeholder").hidden = cam.running;
  $("#live-badge").hidden = !cam.running;
  const box = $("#camera-error");
  if (cam.error) {
    box.hidden = false;
    box.textContent = "status" in cam.error ? errorMessage(cam.error) : cameraError(cam.error);
  } else {
    box.hidden = true;
    box.textContent = "";
  }
  const list = $("#camera-preds");
  if (cam.running && cam.preds) {
    list.replaceWith(Object.assign(predList(cam.preds), { id: "camera-preds" }));
    $("#camera-stats").textContent = t("camera.stats", { fps: cam.fps.toFixed(1), ms: ms(cam.ms) });
  } else {
    list.replaceChildren();
    $("#camera-stats").textContent = cam.running ? t("camera.waiting") : "";
  }
}

// ---------- tabs (WAI-ARIA tabs pattern: arrow keys move, Tab enters the panel) ----------

function selectTab(tab, focus = false) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id !== "tab-camera" && (state.camera.running || state.camera.starting)) stopCamera();
}

// ---------- wiring ----------

function wire() {
  const input = $("#file");
  const zone = $("#dropzone");
  input.addEventListener("change", () => {
    setFiles(input.files);
    input.value = ""; // so that choosing the same file again is a change too
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) zone.addEventListener(type, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) setFiles(e.dataTransfer.files);
  });
  // A file dropped outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      selectTab($("#tab-images"));
      setFiles(files);
    }
  });

  const topk = $("#topk");
  topk.addEventListener("change", () => {
    // Out of range is clamped (0 gives 1, 99 gives 10); an empty or unreadable field keeps the current value.
    const n = Math.round(Number(topk.value));
    const value = topk.value.trim() === "" || !Number.isFinite(n) ? state.topK : Math.min(10, Math.max(1, n));
    topk.value = value;
    if (value === state.topK) return;
    state.topK = value;
    if (state.files.length) classifyAll();
  });
  $("#clear").addEventListener("click", clearAll);

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) selectTab(tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length], true);
      else if (e.key === "Home") selectTab(tabs[0], true);
      else if (e.key === "End") selectTab(tabs[tabs.length - 1], true);
    });
  }
  $("#camera-toggle").addEventListener("click", () => (state.camera.running ? stopCamera() : startCamera()));
  wireLanguageMenu(setLang);
}

wire();
await setLang(pickLang());
document.body.dataset.ready = "true";
loadModel();
