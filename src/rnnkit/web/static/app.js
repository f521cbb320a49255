// rnnkit serve: the page. Plain JavaScript, no build step. Text from the model is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const NEWLINE_MARK = "\u21b5";
let info = null;
let controller = null;
let shown = null; // the activations response on screen

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function status(id, message, isError = false) {
  $(id).textContent = message;
  $(id).classList.toggle("error", isError);
}

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function loadInfo() {
  info = await api("/api/info");
  $("model-info").textContent = `${info.run}: ${info.num_layers}\u00d7${info.hidden_size} ` +
    `${info.cell.toUpperCase()}, ${info.parameters.toLocaleString("en")} parameters, ` +
    `${info.vocab.length} characters`;
  for (let layer = 0; layer < info.num_layers; layer++) $("layer").add(new Option(String(layer), String(layer)));
  $("layer").value = String(info.num_layers - 1);
  const names = {h: "h (output)", c: "c (LSTM cell)"};
  for (const s of info.states) $("state").add(new Option(names[s], s));
  $("unit").max = String(info.hidden_size - 1);
  $("length").max = String(info.limits.max_length);
}

// -- generation: NDJSON lines, one character each, appended as they arrive -----------------------------------
async function generate() {
  const body = {
    prompt: $("prompt").value, length: numberOrNull("length") ?? 300, temperature: numberOrNull("temperature") ?? 0.8,
    top_k: numberOrNull("top-k"), top_p: numberOrNull("top-p"), seed: numberOrNull("seed"), stream: true,
  };
  const output = $("output");
  const text = $("output-text");
  $("output-prompt").textContent = body.prompt;
  text.textContent = "";
  output.dataset.messages = "0";
  output.dataset.done = "0";
  status("generate-status", "sampling…");
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  let messages = 0;
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let seed = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const message = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        if ("text" in message) {
          text.append(message.text);
          output.dataset.messages = String(++messages);
          output.scrollTop = output.scrollHeight;
        } else if ("seed" in message) {
          seed = message.seed;
        } else if (message.error) {
          throw new Error(message.error);
        } else if (message.done) {
          output.dataset.done = "1";
          status("generate-status", `${messages} characters, seed ${seed}`);
        }
      }
    }
  } catch (error) {
    status("generate-status", error.name === "AbortError" ? `stopped after ${messages} characters` : error.message,
      error.name !== "AbortError");
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    $("to-visualiser").disabled = (output.textContent.length === 0);
  }
}

// -- visualiser ----------------------------------------------------------------------------------------------
function colour(value, vmax) {
  const a = Math.min(1, Math.abs(value) / vmax);
  return value >= 0 ? `rgba(239, 83, 80, ${a.toFixed(3)})` : `rgba(66, 133, 244, ${a.toFixed(3)})`;
}

async function visualise() {
  const body = {
    text: $("vis-text").value, layer: Number($("layer").value), state: $("state").value, unit: numberOrNull("unit") ?? 0,
  };
  status("vis-status", "tracing…");
  try {
    shown = await api("/api/activations", body);
  } catch (error) {
    status("vis-status", error.message, true);
    return;
  }
  const out = $("vis-output");
  out.replaceChildren();
  const chars = Array.from(shown.text);
  chars.forEach((ch, i) => {
    const span = document.createElement("span");
    span.className = ch === "\n" ? "ch newline" : "ch";
    span.textContent = ch === "\n" ? NEWLINE_MARK : ch;
    span.dataset.i = String(i);
    span.style.backgroundColor = colour(shown.values[i], shown.vmax);
    out.append(span);
    if (ch === "\n") out.append(document.createElement("br"));
  });
  status("vis-status", `layer ${shown.layer}, ${shown.state}[${shown.unit}] over ${chars.length} characters; ` +
    `full colour at \u00b1${shown.vmax.toPrecision(3)}`);
}

function showTooltip(span) {
  const i = Number(span.dataset.i);
  const tip = $("tooltip");
  const rows = shown.top[i].map(([ch, p]) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = JSON.stringify(ch);
    const prob = document.createElement("td");
    prob.textContent = p.toFixed(3);
    const bar = document.createElement("td");
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = `${Math.round(p * 80)}px`;
    bar.append(fill);
    tr.append(name, prob, bar);
    return tr;
  });
  const head = document.createElement("div");
  head.textContent = `after ${JSON.stringify(Array.from(shown.text)[i])}: activation ${shown.values[i].toFixed(3)}`;
  const table = document.createElement("table");
  table.append(...rows);
  tip.replaceChildren(head, table);
  const box = span.getBoundingClientRect();
  tip.style.left = `${window.scrollX + box.left}px`;
  tip.style.top = `${window.scrollY + box.bottom + 4}px`;
  tip.hidden = false;
}

// -- units worth looking at ----------------------------------------------------------------------------------
function renderUnits(ranking) {
  $("units-source").textContent = ranking.source === "sample"
    ? `the model's own sample (${ranking.text.length} characters, seed 0)`
    : `the visualiser's text (${ranking.text.length} characters)`;
  const out = $("units");
  out.replaceChildren();
  for (const [name, feature] of Object.entries(ranking.features)) {
    const block = document.createElement("div");
    block.className = "feature";
    block.dataset.feature = name;
    const title = document.createElement("h3");
    title.textContent = feature.label;
    block.append(title);
    if (!feature.available) {
      const none = document.createElement("div");
      none.className = "absent";
      none.textContent = "does not vary in this text";
      block.append(none);
    } else {
      const list = document.createElement("ol");
      for (const u of feature.units) {
        const item = document.createElement("li");
        const link = document.createElement("button");
        link.type = "button";
        link.className = "unit-link";
        link.textContent = `layer ${u.layer} ${u.state}[${u.unit}]  r = ${u.r >= 0 ? "+" : ""}${u.r.toFixed(2)}`;
        link.addEventListener("click", () => {
          $("layer").value = String(u.layer);
          $("state").value = u.state;
          $("unit").value = String(u.unit);
          if (!$("vis-text").value) $("vis-text").value = ranking.text.slice(0, 600);
          visualise();
        });
        item.append(link);
        list.append(item);
      }
      block.append(list);
    }
    out.append(block);
  }
}

async function rank(text) {
  $("units-source").textContent = "…";
  try {
    renderUnits(await api("/api/units", text === undefined ? {} : {text}));
  } catch (error) {
    $("units-source").textContent = error.message;
  }
}

// -- wiring --------------------------------------------------------------------------------------------------
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
$("to-visualiser").addEventListener("click", () => {
  $("vis-text").value = $("output").textContent;
  visualise();
});
$("visualise").addEventListener("click", visualise);
$("rank").addEventListener("click", () => rank($("vis-text").value));
$("vis-output").addEventListener("mouseover", (event) => {
  if (event.target.classList.contains("ch")) showTooltip(event.target);
});
$("vis-output").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });

loadInfo().then(() => rank()).catch((error) => status("generate-status", error.message, true));
