// genie-jax play: keys -> one model step per press over a WebSocket; frames drawn upscaled.
// window.playStats exposes what the page measured (the browser test reads it):
//   keyToFrameMs: per step, ms from keydown (performance.now) to the new frame painted
//   frames: frames shown; errors: error messages shown; gallery: frames in the last gallery;
//   stepMs: server time of the WorldModel.step of each key press; galleryMs: server time of each
//   gallery (one batched step over every action)
"use strict";

const $ = (id) => document.getElementById(id);
const stats = { keyToFrameMs: [], stepMs: [], galleryMs: [], frames: 0, errors: [], gallery: 0, galleryStep: -1,
                step: 0, session: null, ready: false, frameSeq: 0 };
window.playStats = stats;

const GALLERY_PAUSE_MS = 150;
let galleryTimer = null;
let hello = null;
let nextId = 1;
const pending = new Map();   // request id -> {t0: keydown time, action}
let inFlightSteps = 0;
const shownAt = [];          // performance.now() of recent frames, for frames/s

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (v) => (v === null || v === undefined ? "-" : v.toFixed(1));

const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");

function send(msg) {
  if (ws.readyState !== WebSocket.OPEN) { showError("not connected to the server"); return null; }
  const id = nextId++;
  ws.send(JSON.stringify({ ...msg, id }));
  return id;
}

function showError(text) {
  stats.errors.push(text);
  $("error").textContent = text;
}

function step(action, t0) {
  $("error").textContent = "";
  clearTimeout(galleryTimer);
  const id = send({ type: "step", action });
  if (id === null) return;
  pending.set(id, { t0, action });
  inFlightSteps++;
  $("action").textContent = action;
  highlight(action);
}

function highlight(action) {
  for (const b of $("controls").querySelectorAll("button")) {
    b.classList.toggle("active", b.dataset.action === action);
  }
}

function requestGallery() {
  // The gallery is a preview: asked for only after a short pause with no step waiting, so that
  // quick presses do not queue behind it (a press made while it computes still waits for it).
  clearTimeout(galleryTimer);
  galleryTimer = setTimeout(() => {
    if ($("show-gallery").checked && inFlightSteps === 0) send({ type: "gallery" });
  }, GALLERY_PAUSE_MS);
}

function afterPaint(cb) {
  // rAF runs just before the next paint; a task queued from it runs after that paint.
  requestAnimationFrame(() => setTimeout(cb, 0));
}

async function showFrame(msg) {
  const img = $("screen");
  img.src = msg.frame;
  try { await img.decode(); } catch (e) { /* an undecodable frame still counts as shown */ }
  const req = msg.id !== null ? pending.get(msg.id) : undefined;
  if (req) pending.delete(msg.id);
  afterPaint(() => {
    const now = performance.now();
    if (req && req.t0 !== null) {
      const ms = now - req.t0;
      stats.keyToFrameMs.push(ms);
      $("k2f-ms").textContent = `${fmt(ms)} / ${fmt(median(stats.keyToFrameMs))} ms`;
    }
    shownAt.push(now);
    while (shownAt.length && now - shownAt[0] > 3000) shownAt.shift();
    const span = shownAt.length > 1 ? (shownAt[shownAt.length - 1] - shownAt[0]) / 1000 : 0;
    $("fps").textContent = span > 0 ? ((shownAt.length - 1) / span).toFixed(1) : "-";
    stats.frames++;
    stats.frameSeq++;
  });
  stats.step = msg.step;
  if (req && req.t0 !== null && msg.step_ms !== null) stats.stepMs.push(msg.step_ms);
  $("step").textContent = msg.step;
  $("step-ms").textContent = msg.step_ms === null ? "-" : `${fmt(msg.step_ms)} / ${fmt(msg.step_ms_p50)} ms`;
  $("back").disabled = !msg.can_back;
  $("prompt").textContent = msg.prompt ? `prompt: ${msg.prompt}` : "";
  if (msg.action) $("action").textContent = msg.action;
  stats.ready = true;
}

function showGallery(msg) {
  if (msg.step !== stats.step) return;   // stale: the world moved on since it was asked for
  const g = $("gallery");
  g.replaceChildren();
  for (const f of msg.frames) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "frame";
    img.src = f.frame;
    img.alt = `next frame for ${f.name}`;
    const cap = document.createElement("figcaption");
    cap.textContent = f.name;
    fig.append(img, cap);
    fig.title = `latent action ${f.latent}`;
    fig.addEventListener("click", () => step(String(f.latent), performance.now()));
    g.append(fig);
  }
  stats.gallery = msg.frames.length;
  stats.galleryStep = msg.step;
  stats.galleryMs.push(msg.ms);
  $("gallery-ms").textContent = `(one batched step over ${msg.frames.length} actions: ${fmt(msg.ms)} ms)`;
}

function setUp(h) {
  hello = h;
  stats.session = h.session;
  $("workdir").textContent = h.workdir;
  const keysByControl = {};
  for (const [k, name] of Object.entries(h.keys)) (keysByControl[name] ||= []).push(k);
  // JS objects list integer-like keys first; show arrows and letters before digit keys.
  for (const ks of Object.values(keysByControl)) ks.sort((a, b) => /^\d$/.test(a) - /^\d$/.test(b));
  const keyName = (k) => ({ " ": "Space", ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓" }[k] || k);
  const help = [];
  for (const c of h.controls) {
    const b = document.createElement("button");
    b.dataset.action = c.name;
    const ks = (keysByControl[c.name] || []).map(keyName);
    b.textContent = ks.length ? `${c.name} (${ks.join(" ")})` : c.name;
    b.title = `latent action ${c.latent}`;
    b.addEventListener("click", () => step(c.name, performance.now()));
    $("controls").append(b);
    if (ks.length) help.push(`${c.name}: ${ks.join(" ")}`);
  }
  $("keyhelp").textContent = help.join(", ");
  $("download-gif").href = `/session/${h.session}/download.gif`;
  $("download-mp4").href = `/session/${h.session}/download.mp4`;
  $("reset").disabled = !h.random_prompts;
}

ws.addEventListener("message", async (ev) => {
  const msg = JSON.parse(ev.data);
  if (msg.type === "hello") setUp(msg);
  else if (msg.type === "frame") {
    if (pending.has(msg.id) && pending.get(msg.id).t0 !== null) inFlightSteps = Math.max(0, inFlightSteps - 1);
    await showFrame(msg);
    requestGallery();
  } else if (msg.type === "gallery") showGallery(msg);
  else if (msg.type === "error") {
    if (pending.has(msg.id)) {
      if (pending.get(msg.id).t0 !== null) inFlightSteps = Math.max(0, inFlightSteps - 1);
      pending.delete(msg.id);
    }
    showError(msg.message);
  } else if (msg.type === "bye") showError(msg.message);
});
ws.addEventListener("close", () => { if (!$("error").textContent) showError("disconnected from the server; reload the page"); });

document.addEventListener("keydown", (ev) => {
  if (!hello || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const name = hello.keys[ev.key];
  if (name === undefined) return;
  ev.preventDefault();   // arrows and space would scroll the page
  // A held key repeats; drop repeats while a step is still computing so presses never pile up.
  if (ev.repeat && inFlightSteps > 0) return;
  step(name, performance.now());
});

$("reset").addEventListener("click", () => {
  const id = send({ type: "reset" });
  if (id !== null) pending.set(id, { t0: null, action: null });
});
$("back").addEventListener("click", () => {
  const id = send({ type: "back" });
  if (id !== null) pending.set(id, { t0: null, action: null });
});
$("upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  if (hello && file.size > hello.max_upload_bytes) {
    showError(`${file.name}: ${(file.size / 1e6).toFixed(1)} MB is too large (at most ${hello.max_upload_bytes / 1e6} MB)`);
  } else if (ws.readyState === WebSocket.OPEN) {
    ws.send(await file.arrayBuffer());
  }
  ev.target.value = "";
});
$("show-gallery").addEventListener("change", () => {
  $("gallery").style.display = $("show-gallery").checked ? "" : "none";
  requestGallery();
});
