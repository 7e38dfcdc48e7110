// The preview page: one multipart stream (GET /preview/feed) carries every source's newest JPEG frame, with
// that frame's prediction in its X-Meta header, and about twice a second a JSON part with the sources' state.
// Plain JavaScript, no build step, nothing from outside this server.
"use strict";

const tiles = new Map();  // source name -> {el, parts, url}
const grid = document.getElementById("tiles");
const statusEl = document.getElementById("status");
const CRLF2 = [13, 10, 13, 10];
let controller = null;

function setStatus(text) { setText(statusEl, text); }

function tileFor(name) {
  let t = tiles.get(name);
  if (t) return t;
  const el = document.getElementById("tile").content.firstElementChild.cloneNode(true);
  el.dataset.source = name;
  el.querySelector(".name").textContent = name;
  const parts = {};
  for (const key of ["kind", "state", "frame", "topk", "index", "fps", "latency", "dropped"]) {
    parts[key] = el.querySelector("." + key);
  }
  grid.appendChild(el);
  document.getElementById("empty").hidden = true;
  t = {el, parts, received: 0, drawn: 0};
  tiles.set(name, t);
  return t;
}

function showState(state) {
  setText(document.getElementById("phase"), state.phase);
  setText(document.getElementById("model"), state.model);
  for (const s of state.sources) {
    const t = tileFor(s.name);
    const health = s.end ? `ended (${s.end})` : s.state;
    if (t.el.dataset.state !== s.state) t.el.dataset.state = s.state;
    setText(t.parts.kind, s.kind);
    setText(t.parts.state, health);
    setText(t.parts.fps, `${s.fps.toFixed(1)} fps`);
    setText(t.parts.dropped, `${s.dropped} dropped` + (s.skipped ? ` · ${s.skipped} skipped` : ""));
  }
  document.getElementById("empty").hidden = state.sources.length > 0;
}

function showTopk(t, topk) {
  // rows are made once per length and then updated in place: no new elements per frame
  const list = t.parts.topk;
  while (list.children.length < topk.length) {
    const li = document.createElement("li");
    li.innerHTML = '<span class="label"></span><span class="bar"><i></i></span><span class="score"></span>';
    list.appendChild(li);
  }
  while (list.children.length > topk.length) list.lastElementChild.remove();
  topk.forEach((k, i) => {
    const li = list.children[i];
    setText(li.children[0], k.label);
    const width = `${Math.round(100 * Math.min(1, Math.max(0, k.score)))}%`;
    const fill = li.children[1].firstElementChild;
    if (fill.style.width !== width) fill.style.width = width;
    setText(li.children[2], k.score.toFixed(2));
  });
}

function setText(el, text) {  // an unchanged text is not set again: no layout, no repaint for it
  if (el.textContent !== text) el.textContent = text;
}

async function showFrame(meta, jpeg) {
  const t = tileFor(meta.source);
  const order = ++t.received;
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([jpeg], {type: "image/jpeg"}));  // decoded off the main thread
  } catch (err) {
    return;
  }
  if (order < t.drawn) { bitmap.close(); return; }  // a newer frame of this source is already up
  t.drawn = order;
  let canvas = t.parts.frame.querySelector("canvas");
  if (!canvas) {
    canvas = document.createElement("canvas");
    t.parts.frame.replaceChildren(canvas);
  }
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.classList.toggle("small", bitmap.width < 320);
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);  // picture and its prediction change together
  bitmap.close();
  t.el.dataset.frame = String(meta.frame);
  t.el.dataset.label = meta.topk.length ? meta.topk[0].label : "";
  showTopk(t, meta.topk);
  setText(t.parts.index, `#${meta.frame}`);
  setText(t.parts.latency, meta.latency_ms === null ? "" : `${meta.latency_ms.toFixed(1)} ms`);
}

function find(buf, pattern) {
  outer: for (let i = 0; i + pattern.length <= buf.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function headersOf(bytes) {
  const headers = {};
  for (const line of new TextDecoder("latin1").decode(bytes).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

function handle(headers, body) {
  const type = headers["content-type"] || "";
  if (type.startsWith("application/json")) {
    showState(JSON.parse(new TextDecoder().decode(body)));
  } else if (type.startsWith("image/jpeg") && headers["x-meta"]) {
    showFrame(JSON.parse(headers["x-meta"]), body);
  }
}

async function stream() {
  controller = new AbortController();
  const response = await fetch("/preview/feed", {signal: controller.signal, cache: "no-store"});
  if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
  setStatus("live");
  const reader = response.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    for (;;) {  // every complete part in the buffer
      const end = find(buf, CRLF2);
      if (end < 0) break;
      const headers = headersOf(buf.subarray(0, end));
      const length = parseInt(headers["content-length"] || "-1", 10);
      if (length < 0) throw new Error("a part without Content-Length");
      const start = end + 4;
      if (buf.length < start + length + 2) break;
      handle(headers, buf.slice(start, start + length));
      buf = buf.slice(start + length + 2);
    }
    const {value, done} = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  let retry = 500;
  for (;;) {
    while (document.hidden) await sleep(500);  // a hidden tab asks for nothing: nothing is encoded
    try {
      await stream();
      setStatus("the stream ended (the run is over?): reconnecting");
      retry = 500;
    } catch (err) {
      if (!document.hidden) setStatus(`disconnected (${err.message}): retrying`);
    }
    await sleep(retry);
    retry = Math.min(5000, retry * 2);
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden && controller) controller.abort();
});
main();
