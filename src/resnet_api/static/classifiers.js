// Custom classifiers page: one drop box per label -> POST /v1/classifiers -> POST /v1/predict?classifier=id.
// Plain browser JavaScript, no build step and no network access beyond this server.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { classifiers: [], classifyRun: 0 }; // classifyRun: a newer photo's answer wins over a slower older one

function pct(x) {
  return `${(x * 100).toFixed(1)}%`;
}

function problemText(xhrOrBody, status) {
  const body = typeof xhrOrBody === "object" && xhrOrBody !== null ? xhrOrBody : null;
  if (body && body.detail) return `${body.title || "Error"}: ${body.detail}`;
  return `The server answered ${status || "nothing"}.`;
}

function setStatus(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`.trim();
}

// ---- label boxes ----------------------------------------------------------------------------

function addLabelBox(name = "") {
  const node = $("#label-box-template").content.firstElementChild.cloneNode(true);
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
  return node;
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
  const n = box.files.length;
  $(".count", box).textContent = `${n} photo${n === 1 ? "" : "s"}`;
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

function collectTrainingSet() {
  const name = $("#clf-name").value.trim();
  if (!name) throw new Error("Give the classifier a name.");
  const boxes = [...document.querySelectorAll(".label-box")];
  const used = boxes.filter((b) => b.files.length || $(".label-name", b).value.trim());
  const seen = new Set();
  for (const box of used) {
    const label = $(".label-name", box).value.trim();
    if (!label) throw new Error("Every box with photos needs a label name.");
    if (!box.files.length) throw new Error(`Add at least one photo to "${label}".`);
    if (seen.has(label)) throw new Error(`The label "${label}" appears twice.`);
    seen.add(label);
  }
  if (used.length < 2) throw new Error("A classifier needs at least two labels with photos.");
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
    setStatus(status, err.message, "error");
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
      setStatus(status, `Uploading ${set.count} photos… ${Math.round((e.loaded / e.total) * 100)}%`);
    }
  };
  xhr.upload.onload = () => {
    progress.removeAttribute("value"); // indeterminate while the server embeds and trains
    const tick = () => {
      const s = ((performance.now() - started) / 1000).toFixed(1);
      setStatus(status, `Embedding ${set.count} photos with ResNet-18 and training the head… ${s} s`);
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
    if (xhr.status !== 201) {
      setStatus(status, problemText(xhr.response, xhr.status), "error");
      return;
    }
    const c = xhr.response;
    setStatus(status, `Trained “${c.name}” in ${((performance.now() - started) / 1000).toFixed(1)} s.`, "ok");
    showResult(c);
    await refreshList(c.id);
  };
  xhr.onerror = () => {
    done();
    setStatus(status, "Could not reach the server.", "error");
  };
  xhr.send(set.form);
}

function showResult(c) {
  const el = $("#train-result");
  el.hidden = false;
  el.dataset.accuracy = String(c.accuracy.accuracy);
  el.replaceChildren();
  const big = document.createElement("div");
  big.className = "big";
  big.id = "accuracy";
  big.textContent = `Accuracy estimate: ${pct(c.accuracy.accuracy)}`;
  const how = document.createElement("p");
  how.className = "muted";
  const t = c.training;
  how.textContent =
    `${c.accuracy.method} over ${c.accuracy.evaluated} examples` +
    (t ? ` · embedding ${Math.round(t.embed_ms)} ms, training ${Math.round(t.train_ms)} ms` : "");
  const labels = document.createElement("p");
  labels.textContent = c.labels.map((l) => `${l.label} (${l.examples})`).join(" · ");
  el.append(big, how, labels);
}

// ---- list -----------------------------------------------------------------------------------

async function refreshList(selectId) {
  const response = await fetch("/v1/classifiers");
  if (!response.ok) return;
  const body = await response.json();
  state.classifiers = body.classifiers;
  const tbody = $("#clf-table tbody");
  tbody.replaceChildren();
  for (const c of body.classifiers) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    const cells = [
      c.name,
      c.labels.map((l) => `${l.label} (${l.examples})`).join(", "),
      `${pct(c.accuracy.accuracy)} (${c.accuracy.method})`,
      new Date(c.updated_at).toLocaleString(),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    if (!c.compatible) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "other weights";
      badge.title = `Trained on ${c.backbone.weights}; it refuses to run on the weights this server has.`;
      tr.firstChild.append(" ", badge);
    }
    const actions = document.createElement("td");
    const use = document.createElement("button");
    use.type = "button";
    use.className = "secondary use";
    use.textContent = "Use";
    use.disabled = !c.compatible;
    use.addEventListener("click", () => {
      $("#clf-select").value = c.id;
      $("#use").scrollIntoView({ behavior: "smooth" });
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "secondary delete";
    del.textContent = "Delete";
    del.addEventListener("click", async () => {
      if (del.dataset.armed !== "1") {
        del.dataset.armed = "1";
        del.textContent = "Really delete?";
        return;
      }
      const r = await fetch(`/v1/classifiers/${encodeURIComponent(c.id)}`, { method: "DELETE" });
      if (r.status === 204) await refreshList();
    });
    actions.append(use, del);
    tr.append(actions);
    tbody.append(tr);
  }
  $("#clf-empty").hidden = body.classifiers.length > 0;
  const skipped = $("#skipped");
  skipped.hidden = body.skipped.length === 0;
  skipped.textContent = body.skipped.length
    ? `Skipped at start-up: ${body.skipped.map((s) => `${s.path} (${s.reason})`).join("; ")}`
    : "";

  const select = $("#clf-select");
  const previous = selectId || select.value;
  select.replaceChildren();
  const usable = body.classifiers.filter((c) => c.compatible);
  if (!usable.length) select.append(new Option("(create one first)", ""));
  for (const c of usable) select.append(new Option(`${c.name} — ${c.labels.map((l) => l.label).join(", ")}`, c.id));
  if (usable.some((c) => c.id === previous)) select.value = previous;
  updateLabelChoices();
}

// ---- classify -------------------------------------------------------------------------------

async function classify(file) {
  const run = ++state.classifyRun;
  const status = $("#predict-status");
  const list = $("#predictions");
  const id = $("#clf-select").value;
  if (!id) {
    setStatus(status, "Create a classifier first.", "error");
    return;
  }
  const preview = $("#predict-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = file.name;
  preview.hidden = false;
  list.replaceChildren();
  setStatus(status, "Classifying…");
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
    if (run === state.classifyRun) setStatus(status, "Could not reach the server.", "error");
    return;
  }
  const body = await response.json().catch(() => null);
  if (run !== state.classifyRun) return; // another photo was dropped meanwhile: its answer is the one to show
  if (!response.ok) {
    setStatus(status, problemText(body, response.status), "error");
    return;
  }
  setStatus(status, `${body.predictions[0].label} · ${Math.round(body.timings.total_ms)} ms`, "ok");
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
  if (!id) return setStatus(status, "Create a classifier first.", "error");
  if (!label) return setStatus(status, "Name the label these photos show.", "error");
  if (!improve.files.length) return setStatus(status, "Add at least one photo.", "error");
  const form = new FormData();
  for (const file of improve.files) {
    form.append("labels", label);
    form.append("files", file, file.name);
  }
  $("#improve-submit").disabled = true;
  const started = performance.now();
  const timer = setInterval(() => {
    const s = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(status, `Embedding ${improve.files.length} photos and retraining… ${s} s`);
  }, 200);
  try {
    const response = await fetch(`/v1/classifiers/${encodeURIComponent(id)}/examples`, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    clearInterval(timer); // before the answer is shown: a late tick would overwrite it with "Embedding…"
    if (!response.ok) {
      setStatus(status, problemText(body, response.status), "error");
      return;
    }
    setStatus(
      status,
      `Retrained (revision ${body.revision}): accuracy estimate ${pct(body.accuracy.accuracy)} over ${body.examples} examples.`,
      "ok",
    );
    improve.files = [];
    dropThumbs($("#improve-thumbs"));
    await refreshList(id);
  } catch {
    setStatus(status, "Could not reach the server.", "error");
  } finally {
    clearInterval(timer);
    $("#improve-submit").disabled = false;
  }
}

// ---- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (let i = 0; i < 3; i += 1) addLabelBox();
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
  refreshList();
});
