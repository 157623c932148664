// The page of `nlpipe serve`: reads the model's metadata from GET / (JSON), sends the text to the task's
// endpoint and shows the answer. Everything is built with textContent (never innerHTML): model output
// and user text are shown as text.
"use strict";

// displaCy's colours for the CoNLL types; other types get one from the palette, stable per name.
const COLOURS = { PER: "#aa9cfc", ORG: "#7aecec", LOC: "#feca74", MISC: "#c887fb" };
const PALETTE = ["#bfe1d9", "#e4e7d2", "#ffeb80", "#ff8197", "#bfeeb7", "#9cc9cc", "#ff9561", "#c4d4e2"];
const LABELS = {
  entities: "Text to tag",
  translation: "Text to translate",
  summary: "Text to summarize",
  continuation: "Prompt to continue",
};
const EXAMPLES = {
  entities: "Peter Blackburn met EU officials in Brussels on Monday.",
  translation: "Ein Hund läuft über eine Wiese.",
  summary: "Anna: Are we still on for lunch?\nTom: Yes, 12:30 at the usual place.",
  continuation: "the company said",
};

let endpoint = null;

function colourFor(type) {
  if (COLOURS[type]) return COLOURS[type];
  let hash = 0;
  for (const ch of type) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function showEntities(result, output) {
  const box = el("div", { class: "result", id: "result" });
  const text = result.text;
  // Offsets count UTF-16 code units in JavaScript but code points in Python: slice an array of code points.
  const chars = Array.from(text);
  let at = 0;
  const types = new Set();
  for (const entity of [...result.entities].sort((a, b) => a.start - b.start)) {
    if (entity.start < at) continue;  // overlapping entities cannot happen with IOB2; be safe anyway
    box.append(document.createTextNode(chars.slice(at, entity.start).join("")));
    const mark = el("mark", { class: "entity", "data-type": entity.entity_group,
                              title: `${entity.entity_group} (score ${entity.score.toFixed(3)})` });
    mark.style.background = colourFor(entity.entity_group);
    mark.append(document.createTextNode(chars.slice(entity.start, entity.end).join("")));
    mark.append(el("span", { class: "entity-label" }, entity.entity_group));
    box.append(mark);
    types.add(entity.entity_group);
    at = entity.end;
  }
  box.append(document.createTextNode(chars.slice(at).join("")));
  output.append(box);
  const legend = document.getElementById("legend");
  legend.replaceChildren(el("span", { class: "muted" },
    result.entities.length ? `${result.entities.length} entities: ${[...types].join(", ")}` : "no entities found"));
}

function showGenerated(result, key, output) {
  const box = el("div", { class: "result generated", id: "result" });
  if (key === "continuation") {
    box.append(el("span", { class: "prompt" }, result.text));
    box.append(el("span", { class: "generated-text" }, result.continuation));
  } else {
    box.append(el("span", { class: "generated-text" }, result[key]));
  }
  output.append(box);
}

async function submit(event) {
  event.preventDefault();
  const text = document.getElementById("input").value;
  const output = document.getElementById("output");
  const status = document.getElementById("status");
  const button = document.getElementById("submit");
  output.replaceChildren();
  document.getElementById("legend").replaceChildren();
  if (!endpoint) return;
  button.disabled = true;
  status.textContent = "running…";
  const started = performance.now();
  try {
    const response = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ texts: [text] }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    const result = body.results[0];
    const key = endpoint.slice(1);
    if (key === "entities") showEntities(result, output);
    else showGenerated(result, key, output);
    status.textContent = `${Math.round(performance.now() - started)} ms`;
  } catch (error) {
    output.append(el("div", { class: "error", id: "error" }, String(error.message || error)));
    status.textContent = "";
  } finally {
    button.disabled = false;
  }
}

async function start() {
  document.getElementById("form").addEventListener("submit", submit);
  try {
    const response = await fetch("/", { headers: { Accept: "application/json" }, cache: "no-store" });
    const info = await response.json();
    endpoint = info.endpoint;
    const key = endpoint.slice(1);
    document.title = `${info.name || "nlpipe"} · nlpipe serve`;
    document.getElementById("title").textContent = info.name || "nlpipe";
    const parts = [info.task, info.model && info.model.type, info.data && info.data.dataset].filter(Boolean);
    const test = info.metrics && info.metrics.test;
    if (test) {
      for (const [name, value] of Object.entries(test)) parts.push(`test ${name} ${Number(value).toFixed(2)}`);
    }
    document.getElementById("summary").textContent = parts.join(" · ");
    document.getElementById("input-label").textContent = LABELS[key] || "Text";
    document.getElementById("input").placeholder = EXAMPLES[key] || "";
    document.getElementById("api-hint").textContent = `POST ${endpoint}`;
  } catch (error) {
    document.getElementById("summary").textContent = `cannot read the model's metadata: ${error}`;
  }
}

start();
