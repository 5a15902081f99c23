// Browser voice client: microphone -> capture worklet -> WebSocket (protocol v1) -> playback worklet.
// Exposes window.voiceStats (counters) and window.voiceApp (actions) for tests and debugging.
import { drawLatencyChart, median } from "./chart.js";

const PROTOCOL_VERSION = 1;
const SEND_RATE_HZ = 16000;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// A server bound off loopback requires a token: open the page as /?token=... ; it is passed on
// to /ws and /healthz and removed from the address bar.
const token = params.get("token");
if (token) {
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}${params.toString() ? `?${params}` : ""}${location.hash}`);
}
function withToken(url) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set("token", token);
  return u.toString();
}
const serverUrl = params.get("server") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

const stats = window.voiceStats = {
  state: "idle", connected: false, chunksSent: 0, samplesSent: 0, audioChunksReceived: 0,
  samplesReceived: 0, samplesPlayed: 0, bufferedSamples: 0, underruns: 0, droppedSamples: 0,
  clears: 0, flushedSamples: 0, turns: [], latenciesMs: [], errors: [], events: 0,
};
let session = null;   // {ws, ctx, stream, capture, playback, captureOrigin, turns: Map, audioTurn, muted}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
  if (message) stats.errors.push(message);
}

function setState(state) {
  stats.state = state;
  const el = $("state");
  el.textContent = state;
  el.className = `state ${state}`;
}

async function loadPipelines() {
  $("server").textContent = serverUrl;
  try {
    const health = await (await fetch(withToken(new URL("/healthz", serverUrl.replace(/^ws/, "http")).toString()))).json();
    const select = $("pipeline");
    select.replaceChildren(...health.pipelines.map((name) => new Option(name, name, false, name === health.default_pipeline)));
    const wanted = params.get("pipeline");
    if (wanted && health.pipelines.includes(wanted)) select.value = wanted;
  } catch (err) {
    showError(`Cannot reach the server at ${serverUrl}: is \`voice serve\` running?`);
  }
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This page cannot use the microphone here: open it over https or on localhost.");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new Error("Microphone access was denied. Allow the microphone for this site in the browser's settings, then connect again.");
    }
    if (err.name === "NotFoundError") throw new Error("No microphone was found.");
    throw new Error(`Cannot open the microphone: ${err.message || err.name}`);
  }
}

async function setUpAudio(stream) {
  const ctx = new AudioContext({ latencyHint: "interactive" });
  await ctx.audioWorklet.addModule("capture-worklet.js");
  await ctx.audioWorklet.addModule("playback-worklet.js");
  const capture = new AudioWorkletNode(ctx, "capture", {
    numberOfInputs: 1, numberOfOutputs: 0, processorOptions: { targetRate: SEND_RATE_HZ, chunkMs: 20 },
  });
  const playback = new AudioWorkletNode(ctx, "playback", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { startMs: 60, maxMs: 30000, fadeMs: 5 },
  });
  ctx.createMediaStreamSource(stream).connect(capture);
  playback.connect(ctx.destination);
  await ctx.resume();
  return { ctx, capture, playback };
}

function openSocket(pipeline) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(withToken(serverUrl));
    ws.binaryType = "arraybuffer";
    let settled = false;
    ws.onopen = () => ws.send(JSON.stringify({
      type: "hello", version: PROTOCOL_VERSION, sample_rate: SEND_RATE_HZ, pipeline, options: {},
    }));
    ws.onmessage = (e) => {
      if (settled) return;
      const msg = JSON.parse(e.data);
      settled = true;
      if (msg.type === "ready") resolve({ ws, ready: msg });
      else reject(new Error(`The server refused the session: ${msg.code}: ${msg.message}`));
    };
    ws.onclose = () => { if (!settled) { settled = true; reject(new Error(`Cannot reach the server at ${serverUrl}: is \`voice serve\` running?`)); } };
  });
}

async function connect() {
  showError("");
  $("connect").disabled = true;
  setState("connecting");
  let stream = null;
  try {
    stream = await openMicrophone();
    const audio = await setUpAudio(stream);
    const { ws, ready } = await openSocket($("pipeline").value);
    session = { ...audio, ws, stream, turns: new Map(), audioTurn: 0, muted: false, captureOrigin: null };
    session.playback.port.postMessage({ type: "format", sampleRate: ready.sample_rate });
    wireSession(session);
    stats.connected = true;
    setState("listening");
    $("connect").textContent = "Disconnect";
    $("mute").disabled = $("interrupt").disabled = false;
  } catch (err) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    showError(err.message);
    setState("idle");
  } finally {
    $("connect").disabled = false;
  }
}

function wireSession(s) {
  s.capture.port.onmessage = (e) => {
    const m = e.data;
    if (m.type === "chunk" && s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(m.pcm.buffer);
      stats.chunksSent += 1;
      stats.samplesSent += m.pcm.length;
    } else if (m.type === "level") {
      $("level").style.width = `${Math.max(0, Math.min(100, (m.rmsDb + 60) * 100 / 60))}%`;
    } else if (m.type === "start") {
      s.captureOrigin = m.ctxTime;
    }
  };
  s.playback.port.onmessage = (e) => onPlaybackMessage(s, e.data);
  s.ws.onmessage = (e) => {
    if (typeof e.data === "string") onEvent(s, JSON.parse(e.data));
    else {
      const pcm = new Int16Array(e.data);
      stats.audioChunksReceived += 1;
      stats.samplesReceived += pcm.length;
      s.playback.port.postMessage({ type: "audio", pcm, turn: s.audioTurn }, [pcm.buffer]);
    }
  };
  s.ws.onclose = (e) => {
    if (session === s) {
      if (e.code !== 1000) showError(`The connection closed (${e.code} ${e.reason || "no reason given"}).`);
      disconnect();
    }
  };
}

function onEvent(s, ev) {
  stats.events += 1;
  const turn = ev.turn !== undefined ? turnRecord(s, ev.turn) : null;
  switch (ev.type) {
    case "speech_started": turn.speechStart = ev.t; renderTurn(turn); break;
    case "speech_stopped": turn.speechEnd = ev.t; turn.waiting = true; renderTurn(turn); break;
    case "transcript": turn.userText = ev.text; renderTurn(turn); break;
    case "assistant_text": turn.assistantText = (turn.assistantText || "") + ev.text; renderTurn(turn); break;
    case "audio_start": s.audioTurn = ev.turn; turn.audio = true; renderTurn(turn); break;
    case "clear":
      flushPlayback(s);
      for (const id of ev.turns || []) markInterrupted(s, id);
      break;
    case "turn_end":
      turn.waiting = false;
      turn.interrupted = ev.interrupted;
      turn.timings = ev.timings_ms;
      s.playback.port.postMessage({ type: "end", turn: ev.turn });
      renderTurn(turn);
      break;
    case "error": showError(`Server error ${ev.code}: ${ev.message}`); break;
    default: break;
  }
  updateState(s);
}

function turnRecord(s, id) {
  if (!s.turns.has(id)) {
    const rec = { id };
    s.turns.set(id, rec);
    stats.turns.push(rec);
  }
  return s.turns.get(id);
}

function onPlaybackMessage(s, m) {
  if (m.type === "stats") {
    stats.samplesPlayed = m.played;
    stats.bufferedSamples = m.buffered;
    stats.underruns = m.underruns;
    stats.droppedSamples = m.dropped;
    stats.flushedSamples = m.flushed;
    stats.playing = m.playing;
    $("buffer").textContent = `playback buffer ${Math.round(m.buffered / s.ctx.sampleRate * 1000)} ms, underruns ${m.underruns}`;
    updateState(s);
  } else if (m.type === "first_audio") {
    const turn = turnRecord(s, m.turn);
    if (turn.speechEnd === undefined || s.captureOrigin === null || turn.latencyMs !== undefined) return;
    // Both times are on the AudioContext clock: capture origin + stream time vs. the playout time.
    const endCtx = s.captureOrigin + turn.speechEnd;
    turn.latencyMs = Math.round((m.ctxTime + (s.ctx.outputLatency || 0) - endCtx) * 1000);
    stats.latenciesMs.push(turn.latencyMs);
    renderTurn(turn);
    renderLatencies();
  }
}

function markInterrupted(s, id) {
  const turn = turnRecord(s, id);
  turn.interrupted = true;
  renderTurn(turn);
}

function flushPlayback(s) {
  if (stats.playing || stats.bufferedSamples > 0) markInterrupted(s, s.audioTurn);
  s.playback.port.postMessage({ type: "clear" });
  stats.clears += 1;
}

function updateState(s) {
  if (session !== s) return;
  const waiting = [...s.turns.values()].some((t) => t.waiting);
  setState(stats.playing || stats.bufferedSamples > 0 ? "speaking" : waiting ? "thinking" : "listening");
}

function renderTurn(turn) {
  let li = document.querySelector(`#turns li[data-turn="${turn.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.turn = turn.id;
    $("turns").append(li);
  }
  const you = turn.userText || (turn.speechEnd !== undefined
    ? `(speech ${turn.speechStart.toFixed(2)}–${turn.speechEnd.toFixed(2)} s)` : "(speaking…)");
  const bot = turn.assistantText || (turn.audio ? "(audio)" : turn.waiting ? "…" : "");
  li.innerHTML = "";
  const latency = document.createElement("span");
  latency.className = "latency";
  latency.textContent = turn.latencyMs !== undefined ? `${turn.latencyMs} ms` : "";
  li.append(latency, line("You", you), line("Assistant", bot));
  if (turn.interrupted) {
    const tag = document.createElement("span");
    tag.className = "interrupted";
    tag.textContent = "interrupted";
    li.lastChild.append(tag);
  }
  li.scrollIntoView({ block: "nearest" });
}

function line(who, text) {
  const div = document.createElement("div");
  const b = document.createElement("span");
  b.className = "who";
  b.textContent = `${who}:`;
  div.append(b, document.createTextNode(text));
  return div;
}

function renderLatencies() {
  drawLatencyChart($("chart"), stats.latenciesMs);
  const v = [...stats.latenciesMs].sort((a, b) => a - b);
  const p95 = v[Math.min(v.length - 1, Math.ceil(0.95 * v.length) - 1)];
  $("latency-summary").textContent = v.length
    ? `${v.length} turn(s): median ${Math.round(median(v))} ms, p95 ${p95} ms, last ${stats.latenciesMs.at(-1)} ms` : "No turns yet.";
}

function disconnect() {
  const s = session;
  session = null;
  if (s) {
    if (s.ws.readyState === WebSocket.OPEN) { s.ws.send(JSON.stringify({ type: "bye" })); s.ws.close(1000); }
    s.stream.getTracks().forEach((t) => t.stop());
    s.ctx.close();
  }
  stats.connected = false;
  setState("idle");
  $("connect").textContent = "Connect";
  $("mute").disabled = $("interrupt").disabled = true;
  $("mute").classList.remove("on");
}

function toggleMute() {
  if (!session) return;
  session.muted = !session.muted;
  session.capture.port.postMessage({ type: "mute", muted: session.muted });
  $("mute").textContent = session.muted ? "Unmute" : "Mute";
  $("mute").classList.toggle("on", session.muted);
}

function interrupt() {
  if (!session) return;
  flushPlayback(session);   // stop at once; the server's clear follows
  session.ws.send(JSON.stringify({ type: "interrupt" }));
}

$("connect").onclick = () => (session ? disconnect() : connect());
$("mute").onclick = toggleMute;
$("interrupt").onclick = interrupt;
window.voiceApp = { connect, disconnect, interrupt, toggleMute };
drawLatencyChart($("chart"), []);
loadPipelines();
