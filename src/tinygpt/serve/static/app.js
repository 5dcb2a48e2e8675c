// tinygpt serve's page: stream a reply from /api/generate, and for a clicked token ask
// /api/inspect for its next-token probabilities, attention (layer, head) and logit lens.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, controller: null, picked: null, inspected: null };

function show(text) {  // a token's text, with whitespace made visible where it is all there is
  return text.replace(/\n/g, "\u21b5\n") || "\u2205";
}

function percent(p) {  // three significant digits: a flat distribution's tiny values differ too
  return (100 * p).toPrecision(3) + "%";
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  state.info = info;
  $("model-name").textContent = info.model;
  $("model-style").textContent = "chat format: " + info.style;
  $("mode").value = info.mode;
  $("max_tokens").max = info.max_tokens;
  $("max_tokens").value = Math.min(64, info.max_tokens);
  for (let i = 0; i < info.n_layers; i++) $("layer").add(new Option("layer " + i, i));
  $("head").add(new Option("average of heads", "avg"));
  for (let h = 0; h < info.n_heads; h++) $("head").add(new Option("head " + h, h));
  $("head").value = "avg";
}

function numberField(id) {
  const raw = $(id).value.trim();
  return raw === "" ? null : Number(raw);
}

function request() {
  const body = { prompt: $("prompt").value, mode: $("mode").value };
  for (const id of ["temperature", "top_k", "top_p", "max_tokens", "seed"]) {
    const value = numberField(id);
    if (value !== null) body[id] = value;
  }
  if (body.top_p === 1) delete body.top_p;
  return body;
}

function tokenSpan(exchange, position, text, kind) {
  const span = document.createElement("span");
  span.className = "tok " + kind;
  span.textContent = show(text);
  span.title = "token " + position + (kind === "opening" ? ", the prompt's end that opens the reply" : "") +
               " (click to inspect)";
  span.addEventListener("click", () => pick(exchange, position, span));
  return span;
}

function handleEvent(exchange, event) {
  if (event.error) throw new Error(event.error.message);
  if (event.prompt) {
    // the last `opening` prompt tokens start the reply (Olmo 3 Think's <think>): shown as reply
    const replyFrom = event.prompt.length - (event.opening || 0);
    event.prompt.forEach(([id, text], i) => {
      const kind = i < replyFrom ? "prompt" : "opening";
      exchange.el.append(tokenSpan(exchange, exchange.ids.length, text, kind));
      exchange.ids.push(id);
    });
  } else if (event.token) {
    const [id, text] = event.token;
    exchange.el.append(tokenSpan(exchange, exchange.ids.length, text, "gen"));
    exchange.ids.push(id);
    exchange.generated += 1;
    status("generating: " + exchange.generated + " tokens");
  } else if (event.done) {
    const u = event.done.usage;
    status("done (" + event.done.finish_reason + "): " + u.prompt_tokens + " prompt tokens, " +
           u.completion_tokens + " generated. Click a token to inspect it.");
  }
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
    }
  }
}

async function send(e) {
  e.preventDefault();
  if (state.controller || !$("prompt").value.trim()) return;
  const exchange = { ids: [], generated: 0, el: document.createElement("div") };
  exchange.el.className = "exchange";
  $("transcript").append(exchange.el);
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  status("waiting for the model ...");
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request()), signal: state.controller.signal });
    if (!response.ok) throw new Error((await response.json()).error.message);
    await readEvents(response, (event) => handleEvent(exchange, event));
  } catch (err) {
    if (err.name === "AbortError") status("stopped after " + exchange.generated + " tokens");
    else status(err.message, true);
  } finally {
    state.controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

function pick(exchange, position, span) {
  document.querySelectorAll(".tok.picked").forEach((el) => el.classList.remove("picked"));
  span.classList.add("picked");
  state.picked = { exchange, position };
  inspect();
}

async function inspect() {
  if (!state.picked) return;
  const { exchange, position } = state.picked;
  const body = { ids: exchange.ids.slice(0, position + 1 + (position + 1 < exchange.ids.length)),
                 position, layer: Number($("layer").value), k: 10 };
  try {
    const response = await fetch("/api/inspect", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error.message);
    state.inspected = data;
    render(data);
  } catch (err) {
    status("inspection failed: " + err.message, true);
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderProbs(data) {
  const body = $("probs").tBodies[0];
  body.replaceChildren();
  const nextId = data.next ? data.next.id : null;
  for (const entry of data.top) {
    const row = body.insertRow();
    if (entry.id === nextId) row.className = "sampled";
    cell(row, percent(entry.prob));
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(1, Math.round(120 * entry.prob / data.top[0].prob)) + "px";
    row.insertCell().append(bar);
    const token = row.insertCell();
    token.append(Object.assign(document.createElement("code"), { textContent: show(entry.text) }));
    cell(row, entry.id === nextId ? "\u2190 came next" : "");
  }
  let note = "The softmax over the whole vocabulary sums to " + data.prob_sum.toFixed(6) + ".";
  if (data.next) {
    note += " The token that came next, " + JSON.stringify(data.next.text) + ", had " +
            percent(data.next.prob) + " (rank " + data.next.rank + ").";
  }
  $("prob-note").textContent = note;
}

function shade(weight, top, depth = 62) {  // white (0) to blue (the largest weight shown)
  const light = 100 - depth * Math.min(1, Math.max(0, weight / (top || 1)));
  return "hsl(225, 75%, " + light.toFixed(1) + "%)";
}

function renderAttention(data) {
  const head = $("head").value;
  const rows = data.attention.map((w, h) => ["head " + h, w, String(h) === head]);
  rows.push(["average", data.average, head === "avg"]);
  const chosen = head === "avg" ? data.average : data.attention[Number(head)];
  const top = Math.max(...rows.map(([, weights]) => Math.max(...weights)));
  const text = $("attn-text");
  text.replaceChildren();
  data.context.forEach((piece, i) => {
    const span = document.createElement("span");
    span.textContent = show(piece);
    span.style.background = shade(chosen[i], top, 38);  // text stays readable
    span.title = percent(chosen[i]);
    text.append(span);
  });
  const body = $("heatmap").tBodies[0];
  body.replaceChildren();
  for (const [label, weights, isChosen] of rows) {
    const row = body.insertRow();
    if (isChosen) row.className = "chosen";
    row.append(Object.assign(document.createElement("th"), { textContent: label }));
    weights.forEach((w, i) => {
      const td = row.insertCell();
      td.style.background = shade(w, top);
      td.title = label + " \u2192 " + JSON.stringify(data.context[i]) + ": " + percent(w);
    });
  }
  const keys = body.insertRow();
  keys.append(document.createElement("th"));
  for (const piece of data.context) {
    keys.append(Object.assign(document.createElement("th"), { className: "key", textContent: show(piece) }));
  }
}

function renderLens(data) {
  const body = $("lens").tBodies[0];
  body.replaceChildren();
  for (const entry of data.lens) {
    const row = body.insertRow();
    cell(row, "after layer " + entry.layer);
    row.insertCell().append(Object.assign(document.createElement("code"), { textContent: show(entry.text) }));
    cell(row, percent(entry.prob));
  }
}

function render(data) {
  $("picked").textContent = "token " + data.position + ": " + JSON.stringify(data.token.text) +
                            " (id " + data.token.id + "), layer " + data.layer;
  renderProbs(data);
  renderAttention(data);
  renderLens(data);
}

function stop() {
  if (state.controller) state.controller.abort();
}

$("ask").addEventListener("submit", send);
$("stop").addEventListener("click", stop);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e);
});
$("layer").addEventListener("change", inspect);
$("head").addEventListener("change", () => { if (state.inspected) renderAttention(state.inspected); });
loadInfo().catch((err) => status("could not reach the server: " + err.message, true));
