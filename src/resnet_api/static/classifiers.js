// Custom classifiers page: one drop box per label -> POST /v1/classifiers -> POST /v1/predict?classifier=id.
// Plain ES module, no build step and no network access beyond this server; its strings are in i18n/*.json.

import { keepFocus } from "./focus.js";
import { currentLang, errorText, pickLang, t, translate, useLang, wireLanguageMenu } from "./i18n.js";

const $ = (sel, root = document) => root.querySelector(sel);
// classifyRun: a newer photo's answer wins over a slower older one. listing and trained: the last answers, kept
// so that a change of language redraws them.
const state = { classifiers: [], classifyRun: 0, listing: null, trained: null };

function pct(x) {
  return `${(x * 100).toFixed(1)}%`;
}

const seconds = (started) => ((performance.now() - started) / 1000).toFixed(1);

function methodName(method) {
  if (method === "leave-one-out") return t("clf.method.leaveOneOut");
  const folds = /^(\d+)-fold$/.exec(method);
  return folds ? t("clf.method.kFold", { k: folds[1] }) : method;
}

// A failed answer in plain words, by its code or status; the server's own (English) detail is one click away.
// This page's messages, by error code or status (photos in the plural); the others are the index page's.
const OWN_ERRORS = {
  backbone_mismatch: "clf.error.otherWeights",
  classifier_changed: "clf.error.changed",
  classifier_not_found: "clf.error.notFound",
  limit_exceeded: "clf.error.limit",
  invalid_training_set: "clf.error.trainingSet",
  storage_failed: "clf.error.storage",
  400: "clf.error.corrupt",
  413: "clf.error.tooLarge",
  415: "clf.error.notImage",
};

function problemMessage(body, status, retryAfter) {
  const message = errorText({ status, code: status === 0 ? "" : (body && body.code) || "", retryAfter }, OWN_ERRORS);
  const detail = body && body.detail;
  if (!detail || status === 0) return message;
  const more = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = t("result.details");
  summary.dataset.focus = "details"; // a redraw (a change of language) focuses it again
  const text = document.createElement("p");
  text.textContent = detail;
  more.append(summary, text);
  return [message, " ", more];
}

// The message for a refused fetch answer: its problem body (or null), status and Retry-After.
function answerProblem(response, body) {
  return problemMessage(body, response.status, Number(response.headers.get("Retry-After")));
}

// Status lines are drawn by a function, kept so that a change of language can draw them again.
const statusDrawers = new Map();

function setStatus(el, draw, kind = "") {
  statusDrawers.set(el, draw);
  const content = draw();
  keepFocus(el, () => el.replaceChildren(...(Array.isArray(content) ? content : [content])));
  el.className = `status ${kind}`.trim();
}

function redrawStatuses() {
  for (const [el, draw] of statusDrawers) {
    const content = draw();
    keepFocus(el, () => el.replaceChildren(...(Array.isArray(content) ? content : [content])));
  }
}

// ---- label boxes ----------------------------------------------------------------------------

function addLabelBox(name = "") {
  const node = $("#label-box-template").content.firstElementChild.cloneNode(true);
  translate(node);
  node.files = [];
  $(".label-name", node).value = name;
  const input = $(".label-files", node);
  input.addEventListener("change", () => {
    addFiles(node, input.files);
    input.value = "";
  });
  wireDropzone($(".dropzone", node), (files) => addFiles(node, files));
  $(".remove-label", node).addEventListener("click", () => {
    dropThumbs($(".thumbs", node));
    node.remove();
  });
  $("#label-boxes").append(node);
  drawCount(node);
  return node;
}

function drawCount(box) {
  const n = box.files.length;
  $(".count", box).textContent = n === 1 ? t("clf.photos.one", { n }) : t("clf.photos.other", { n });
}

function addFiles(box, fileList) {
  for (const file of fileList) {
    if (!file.type.startsWith("image/") && file.type !== "") continue;
    box.files.push(file);
    const img = document.createElement("img");
    img.alt = file.name;
    img.src = URL.createObjectURL(file);
    $(".thumbs", box).append(img);
  }
  drawCount(box);
}

// Thumbnails hold object URLs: release them with the images, or each photo stays in memory until the tab closes.
function dropThumbs(container) {
  for (const img of container.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  container.replaceChildren();
}

function wireDropzone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) onFiles(e.dataTransfer.files);
  });
}

// ---- training -------------------------------------------------------------------------------

class Mistake extends Error {
  constructor(key, vars = {}) {
    super(key);
    Object.assign(this, { key, vars });
  }
}

function collectTrainingSet() {
  const name = $("#clf-name").value.trim();
  if (!name) throw new Mistake("clf.check.name");
  const boxes = [...document.querySelectorAll(".label-box")];
  const used = boxes.filter((b) => b.files.length || $(".label-name", b).value.trim());
  const seen = new Set();
  for (const box of used) {
    const label = $(".label-name", box).value.trim();
    if (!label) throw new Mistake("clf.check.labelName");
    if (!box.files.length) throw new Mistake("clf.check.noPhotos", { label });
    if (seen.has(label)) throw new Mistake("clf.check.twice", { label });
    seen.add(label);
  }
  if (used.length < 2) throw new Mistake("clf.check.twoLabels");
  const form = new FormData();
  form.append("name", name);
  let count = 0;
  for (const box of used) {
    const label = $(".label-name", box).value.trim();
    for (const file of box.files) {
      form.append("labels", label);
      form.append("files", file, file.name);
      count += 1;
    }
  }
  return { form, count, labels: used.length };
}

function train(event) {
  event.preventDefault();
  const status = $("#train-status");
  const progress = $("#train-progress");
  let set;
  try {
    set = collectTrainingSet();
  } catch (err) {
    if (!(err instanceof Mistake)) throw err;
    setStatus(status, () => t(err.key, err.vars), "error");
    return;
  }
  $("#train").disabled = true;
  $("#train-result").hidden = true;
  progress.hidden = false;
  progress.value = 0;
  const started = performance.now();
  let timer = null;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/classifiers");
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      progress.value = (e.loaded / e.total) * 50;
      const percent = Math.round((e.loaded / e.total) * 100);
      setStatus(status, () => t("clf.train.uploading", { count: set.count, percent }));
    }
  };
  xhr.upload.onload = () => {
    progress.removeAttribute("value"); // indeterminate while the server embeds and trains
    const tick = () => {
      const s = seconds(started);
      setStatus(status, () => t("clf.train.embedding", { count: set.count, seconds: s }));
    };
    tick();
    timer = setInterval(tick, 200);
  };
  const done = () => {
    clearInterval(timer);
    $("#train").disabled = false;
    progress.hidden = true;
  };
  xhr.onload = async () => {
    done();
    const c = xhr.response; // null when the answer is not JSON (a proxy's page, say)
    if (xhr.status !== 201 || !c) {
      const retryAfter = Number(xhr.getResponseHeader("Retry-After"));
      setStatus(status, () => (xhr.status === 201 ? t("error.unreadable") : problemMessage(c, xhr.status, retryAfter)), "error");
      return;
    }
    const s = seconds(started);
    setStatus(status, () => t("clf.train.done", { name: c.name, seconds: s }), "ok");
    state.trained = c;
    showResult();
    await refreshList(c.id);
  };
  xhr.onerror = () => {
    done();
    setStatus(status, () => t("error.network"), "error");
  };
  xhr.send(set.form);
}

function showResult() {
  const c = state.trained;
  if (!c) return;
  const el = $("#train-result");
  el.hidden = false;
  el.dataset.accuracy = String(c.accuracy.accuracy);
  el.replaceChildren();
  const big = document.createElement("div");
  big.className = "big";
  big.id = "accuracy";
  big.textContent = t("clf.result.accuracy", { accuracy: pct(c.accuracy.accuracy) });
  const how = document.createElement("p");
  how.className = "muted";
  const tm = c.training;
  how.textContent = [
    t("clf.result.method", { method: methodName(c.accuracy.method), count: c.accuracy.evaluated }),
    ...(tm ? [t("clf.result.timings", { embed: Math.round(tm.embed_ms), train: Math.round(tm.train_ms) })] : []),
  ].join(" · ");
  const labels = document.createElement("p");
  labels.textContent = c.labels.map((l) => `${l.label} (${l.examples})`).join(" · ");
  el.append(big, how, labels);
}

// ---- list -----------------------------------------------------------------------------------

async function refreshList(selectId) {
  const response = await fetch("/v1/classifiers");
  if (!response.ok) return;
  state.listing = await response.json();
  drawList(selectId);
}

function drawList(selectId) {
  const body = state.listing;
  if (!body) return;
  state.classifiers = body.classifiers;
  const tbody = $("#clf-table tbody");
  // The rows are drawn anew (after a training, a deletion, a change of language): keepFocus puts a keyboard user
  // back on the same row's button, or on the table if that row is gone.
  keepFocus($("#clf-table"), () => drawRows(tbody, body.classifiers));
  $("#clf-empty").hidden = body.classifiers.length > 0;
  const skipped = $("#skipped");
  skipped.hidden = body.skipped.length === 0;
  skipped.textContent = body.skipped.length
    ? t("clf.list.skipped", { list: body.skipped.map((s) => `${s.path} (${s.reason})`).join("; ") })
    : "";

  const select = $("#clf-select");
  const previous = selectId || select.value;
  select.replaceChildren();
  const usable = body.classifiers.filter((c) => c.compatible);
  if (!usable.length) select.append(new Option(t("clf.use.none"), ""));
  for (const c of usable) select.append(new Option(`${c.name} — ${c.labels.map((l) => l.label).join(", ")}`, c.id));
  if (usable.some((c) => c.id === previous)) select.value = previous;
  updateLabelChoices();
}

function drawRows(tbody, classifiers) {
  tbody.replaceChildren();
  for (const c of classifiers) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    tr.dataset.focusScope = c.id;
    const cells = [
      c.name,
      c.labels.map((l) => `${l.label} (${l.examples})`).join(", "),
      t("clf.list.accuracyValue", { accuracy: pct(c.accuracy.accuracy), method: methodName(c.accuracy.method) }),
      new Date(c.updated_at).toLocaleString(currentLang()),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    if (!c.compatible) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = t("clf.list.otherWeights");
      badge.title = t("clf.list.otherWeightsHint", { weights: c.backbone.weights });
      tr.firstChild.append(" ", badge);
    }
    const actions = document.createElement("td");
    const use = document.createElement("button");
    use.type = "button";
    use.className = "secondary use";
    use.dataset.focus = "use";
    use.textContent = t("clf.list.use");
    use.disabled = !c.compatible;
    use.addEventListener("click", () => {
      $("#clf-select").value = c.id;
      updateLabelChoices(); // the "Improve it" suggestions follow, as when the menu itself is changed
      $("#use").scrollIntoView({ behavior: "smooth" });
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "secondary delete";
    del.dataset.focus = "delete";
    del.textContent = t("clf.list.delete");
    del.addEventListener("click", async () => {
      if (del.dataset.armed !== "1") {
        del.dataset.armed = "1";
        del.textContent = t("clf.list.confirmDelete");
        return;
      }
      const status = $("#list-status");
      let r;
      try {
        r = await fetch(`/v1/classifiers/${encodeURIComponent(c.id)}`, { method: "DELETE" });
      } catch {
        setStatus(status, () => t("error.network"), "error");
        return;
      }
      if (r.status === 204) {
        setStatus(status, () => "");
        await refreshList();
        return;
      }
      const body = await r.json().catch(() => null);
      setStatus(status, () => answerProblem(r, body), "error");
      if (r.status === 404) await refreshList(); // deleted elsewhere meanwhile: the list shows what is left
    });
    actions.append(use, del);
    tr.append(actions);
    tbody.append(tr);
  }
}

// ---- classify -------------------------------------------------------------------------------

async function classify(file) {
  const run = ++state.classifyRun;
  const status = $("#predict-status");
  const list = $("#predictions");
  const id = $("#clf-select").value;
  if (!id) {
    setStatus(status, () => t("clf.use.createFirst"), "error");
    return;
  }
  const preview = $("#predict-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = file.name;
  preview.hidden = false;
  list.replaceChildren();
  setStatus(status, () => t("result.classifying"));
  const c = state.classifiers.find((x) => x.id === id);
  const topK = c ? c.labels.length : 3;
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch(`/v1/predict?classifier=${encodeURIComponent(id)}&top_k=${topK}`, {
      method: "POST",
      body: form,
    });
  } catch {
    if (run === state.classifyRun) setStatus(status, () => t("error.network"), "error");
    return;
  }
  const body = await response.json().catch(() => null);
  if (run !== state.classifyRun) return; // another photo was dropped meanwhile: its answer is the one to show
  if (!response.ok || !body) {
    setStatus(status, () => (response.ok ? t("error.unreadable") : answerProblem(response, body)), "error");
    return;
  }
  const top = body.predictions[0].label;
  const ms = Math.round(body.timings.total_ms);
  setStatus(status, () => t("clf.use.answer", { label: top, ms }), "ok");
  for (const p of body.predictions) {
    const li = document.createElement("li");
    li.dataset.label = p.label;
    li.dataset.score = String(p.score);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = pct(p.score);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.label;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = pct(p.score);
    li.append(fill, name, score);
    list.append(li);
  }
}

// ---- improve: add examples and retrain -------------------------------------------------------

const improve = { files: [] };

function addImproveFiles(fileList) {
  for (const file of fileList) {
    if (!file.type.startsWith("image/") && file.type !== "") continue;
    improve.files.push(file);
    const img = document.createElement("img");
    img.alt = file.name;
    img.src = URL.createObjectURL(file);
    $("#improve-thumbs").append(img);
  }
}

function updateLabelChoices() {
  const c = state.classifiers.find((x) => x.id === $("#clf-select").value);
  const list = $("#improve-labels");
  list.replaceChildren(...(c ? c.labels.map((l) => new Option(l.label)) : []));
}

async function addExamples(event) {
  event.preventDefault();
  const status = $("#improve-status");
  const id = $("#clf-select").value;
  const label = $("#improve-label").value.trim();
  if (!id) return setStatus(status, () => t("clf.use.createFirst"), "error");
  if (!label) return setStatus(status, () => t("clf.improve.needLabel"), "error");
  if (!improve.files.length) return setStatus(status, () => t("clf.improve.needPhotos"), "error");
  const count = improve.files.length;
  const form = new FormData();
  for (const file of improve.files) {
    form.append("labels", label);
    form.append("files", file, file.name);
  }
  $("#improve-submit").disabled = true;
  const started = performance.now();
  const timer = setInterval(() => {
    const s = seconds(started);
    setStatus(status, () => t("clf.improve.working", { count, seconds: s }));
  }, 200);
  try {
    const response = await fetch(`/v1/classifiers/${encodeURIComponent(id)}/examples`, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    clearInterval(timer); // before the answer is shown: a late tick would overwrite it with "Embedding…"
    if (!response.ok || !body) {
      setStatus(status, () => (response.ok ? t("error.unreadable") : answerProblem(response, body)), "error");
      return;
    }
    const vars = { revision: body.revision, accuracy: pct(body.accuracy.accuracy), count: body.examples };
    setStatus(status, () => t("clf.improve.done", vars), "ok");
    improve.files = [];
    dropThumbs($("#improve-thumbs"));
    await refreshList(id);
  } catch {
    setStatus(status, () => t("error.network"), "error");
  } finally {
    clearInterval(timer);
    $("#improve-submit").disabled = false;
  }
}

// ---- start ----------------------------------------------------------------------------------

// A module runs once the document is parsed: no DOMContentLoaded needed.
async function setLang(lang) {
  if (!(await useLang(lang))) return; // server unreachable: keep the language already shown
  for (const box of document.querySelectorAll(".label-box")) drawCount(box);
  redrawStatuses();
  showResult();
  drawList();
}

$("#add-label").addEventListener("click", () => addLabelBox());
$("#create-form").addEventListener("submit", train);
const input = $("#predict-file");
input.addEventListener("change", () => {
  if (input.files.length) classify(input.files[0]);
  input.value = "";
});
wireDropzone($("#predict-drop"), (files) => classify(files[0]));
const more = $("#improve-files");
more.addEventListener("change", () => {
  addImproveFiles(more.files);
  more.value = "";
});
wireDropzone($("#improve-drop"), addImproveFiles);
$("#improve-form").addEventListener("submit", addExamples);
$("#clf-select").addEventListener("change", updateLabelChoices);
wireLanguageMenu(setLang);
await setLang(pickLang());
for (let i = 0; i < 3; i += 1) addLabelBox(); // after the language: a box's photo count is drawn with t()
document.body.dataset.ready = "true";
refreshList();
