// Browser voice client: microphone -> capture worklet -> WebSocket (protocol v1) -> playback worklet.
// Exposes window.voiceStats (counters) and window.voiceApp (actions) for tests and debugging.
import { drawLatencyChart, median } from "./chart.js";
import { Backoff, ConnectError, closeProblem, probeProblem, probeServer } from "./connection.js";
import { TurnList } from "./turns.js";

const PROTOCOL_VERSION = 1;
const SEND_RATE_HZ = 16000;
const STATE_LABELS = {
  idle: "idle", connecting: "connecting…", reconnecting: "reconnecting…", listening: "listening",
  hearing: "hearing you", muted: "muted", thinking: "thinking", speaking: "speaking",
};
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
const healthUrl = withToken(new URL("/healthz", serverUrl.replace(/^ws/, "http")).toString());

const stats = window.voiceStats = {
  state: "idle", connected: false, chunksSent: 0, samplesSent: 0, audioChunksReceived: 0,
  samplesReceived: 0, samplesPlayed: 0, bufferedSamples: 0, underruns: 0, droppedSamples: 0,
  clears: 0, flushedSamples: 0, turns: [], latenciesMs: [], errors: [], events: 0, sessions: 0, conversations: 0,
};
const turns = new TurnList($("turns"), stats.turns);
const backoff = new Backoff();
let session = null;   // {ws, ctx, stream, capture, playback, captureOrigin, audioTurn, cutTurn, muted, serverRate}
let connecting = false;
let retry = null;     // {timer, at, text}: a reconnect is scheduled

function showError(message, { canRetry = false, record = true } = {}) {
  $("error-text").textContent = message;
  $("error").hidden = !message;
  $("reconnect").hidden = !canRetry;
  if (message && record) stats.errors.push(message);
}

function setState(state) {
  stats.state = state;
  const el = $("state");
  el.textContent = STATE_LABELS[state] || state;
  el.className = `state ${state}`;
}

function fillPipelines(health) {
  const select = $("pipeline");
  const chosen = select.value || params.get("pipeline");
  select.replaceChildren(...health.pipelines.map((name) => new Option(name, name, false, name === health.default_pipeline)));
  if (chosen && health.pipelines.includes(chosen)) select.value = chosen;
}

async function loadPipelines() {
  $("server").textContent = serverUrl;
  const probe = await probeServer(healthUrl);
  if (probe.status === "ok") fillPipelines(probe.health);
  else showError(probeProblem(probe.status, serverUrl, !!token).message);
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ConnectError("This page cannot use the microphone here: open it over https or on localhost.");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new ConnectError("Microphone access was denied. Allow the microphone for this site in the browser's settings, then connect again.");
    }
    if (err.name === "NotFoundError") throw new ConnectError("No microphone was found.");
    throw new ConnectError(`Cannot open the microphone: ${err.message || err.name}`);
  }
}

// The AudioContext and both worklets; on any failure the context is closed again.
async function setUpAudio(stream) {
  const ctx = new AudioContext({ latencyHint: "interactive" });
  try {
    await ctx.audioWorklet.addModule("capture-worklet.js");
    await ctx.audioWorklet.addModule("playback-worklet.js");
  } catch (err) {
    ctx.close();
    // the worklets come from the page's own server: when that is the voice server, it is gone
    const sameServer = new URL(healthUrl).host === location.host;
    throw sameServer ? probeProblem("unreachable", serverUrl, !!token)
      : new ConnectError(`Cannot load this page's audio code from ${location.origin}: ${err.message}`, true);
  }
  const capture = new AudioWorkletNode(ctx, "capture", {
    numberOfInputs: 1, numberOfOutputs: 0, processorOptions: { targetRate: SEND_RATE_HZ, chunkMs: 20 },
  });
  const playback = new AudioWorkletNode(ctx, "playback", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { startMs: 20, maxStartMs: 240, maxMs: 30000, fadeMs: 5 },
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
      else reject(new ConnectError(`The server refused the session: ${msg.code}: ${msg.message}`, msg.code === "server_full"));
    };
    ws.onclose = async () => {
      if (settled) return;
      settled = true;
      // a browser does not say why a handshake failed (refused Origin or token, or no server): ask /healthz
      const probe = await probeServer(healthUrl);
      reject(probe.status === "ok" ? new ConnectError("The server closed the connection before the session started.", true)
        : probeProblem(probe.status, serverUrl, !!token));
    };
  });
}

// Open a session. A user's Connect reports a failure; an automatic reconnect tries again later.
async function connect({ auto = false } = {}) {
  if (connecting || session) return;
  cancelRetry();
  connecting = true;
  $("connect").setAttribute("aria-busy", "true");   // stays enabled: Enter keeps the focus on it
  if (!auto) showError("");
  setState(auto ? "reconnecting" : "connecting");
  let stream = null;
  let audio = null;
  try {
    const probe = await probeServer(healthUrl);
    if (probe.status !== "ok") throw probeProblem(probe.status, serverUrl, !!token);
    if (!$("pipeline").options.length) fillPipelines(probe.health);
    stream = await openMicrophone();
    audio = await setUpAudio(stream);
    const { ws, ready } = await openSocket($("pipeline").value);
    session = { ...audio, ws, stream, audioTurn: 0, cutTurn: 0, muted: false, captureOrigin: null, serverRate: ready.sample_rate };
    stats.ready = ready;
    session.playback.port.postMessage({ type: "format", sampleRate: ready.sample_rate });
    turns.startSession();
    wireSession(session);
    stats.connected = true;
    stats.sessions += 1;
    backoff.reset();
    showError("");
    setState("listening");
    $("connect").textContent = "Disconnect";
    $("pipeline").disabled = true;   // a pipeline is chosen per session
    $("mute").disabled = $("interrupt").disabled = $("new-conversation").disabled = false;
  } catch (err) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (audio) audio.ctx.close();
    if (auto && err.retry) scheduleRetry(err.message);
    else {
      showError(err.message || String(err));
      setState("idle");
    }
  } finally {
    connecting = false;
    $("connect").removeAttribute("aria-busy");
  }
}

function scheduleRetry(text) {
  const delayMs = backoff.next();
  stats.errors.push(text);
  const at = performance.now() + delayMs;
  const tick = () => {
    const left = Math.max(0, Math.ceil((at - performance.now()) / 1000));
    showError(`${text} Reconnecting in ${left} s…`, { canRetry: true, record: false });
    if (performance.now() >= at) {
      cancelRetry();
      connect({ auto: true });
    }
  };
  retry = { timer: setInterval(tick, 250), text };
  setState("reconnecting");
  $("connect").textContent = "Stop reconnecting";
  tick();
}

function cancelRetry() {
  if (!retry) return;
  clearInterval(retry.timer);
  retry = null;
  $("connect").textContent = "Connect";
}

function wireSession(s) {
  s.capture.port.onmessage = (e) => {
    const m = e.data;
    if (m.type === "chunk" && s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(m.pcm.buffer);
      stats.chunksSent += 1;
      stats.samplesSent += m.pcm.length;
    } else if (m.type === "level") {
      showLevel(m.rmsDb);
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
      if (s.audioTurn) turns.get(s.audioTurn).audioSamples += pcm.length;
      s.playback.port.postMessage({ type: "audio", pcm, turn: s.audioTurn }, [pcm.buffer]);
    }
  };
  s.ws.onclose = (e) => {
    if (session !== s) return;
    const problem = e.code === 1000 ? { text: "The server closed the session.", retry: false } : closeProblem(e.code, e.reason);
    endSession();
    if (problem.retry) scheduleRetry(problem.text);
    else showError(problem.text);
  };
}

function showLevel(rmsDb) {
  const db = Math.max(-60, Math.min(0, Math.round(rmsDb)));
  $("level").style.width = `${(db + 60) * 100 / 60}%`;
  $("meter").setAttribute("aria-valuenow", String(db));
  $("meter").setAttribute("aria-valuetext", `${db} dB`);
}

function onEvent(s, ev) {
  stats.events += 1;
  const turn = ev.turn !== undefined ? turns.get(ev.turn) : null;
  switch (ev.type) {
    case "speech_started": turn.speechStart = ev.t; turns.render(turn); break;
    case "speech_stopped":
      turn.speechEnd = ev.t;
      turn.endReason = ev.reason;
      turn.stoppedCtx = s.ctx.currentTime;   // when the end of the turn was heard of, on the audio clock
      turn.waiting = true;
      turns.render(turn);
      break;
    case "transcript": turn.userText = ev.text; turns.render(turn); break;
    case "assistant_text": turn.assistantText = (turn.assistantText || "") + ev.text; turns.render(turn); break;
    case "audio_start": s.audioTurn = ev.turn; turn.audio = true; turns.render(turn); break;
    case "clear":
      flushPlayback(s);
      for (const id of ev.turns || []) markInterrupted(id);
      break;
    case "turn_end":
      turn.waiting = false;
      turn.interrupted = turn.interrupted || ev.interrupted;
      turn.complete = !ev.interrupted;
      turn.timings = ev.timings_ms;
      if (turn.complete) turns.learnRate(turn, s.serverRate);
      s.playback.port.postMessage({ type: "end", turn: ev.turn });
      turns.render(turn);
      break;
    case "conversation_reset": stats.conversations += 1; turns.newConversation(); break;
    case "error": showError(`Server error ${ev.code}: ${ev.message}`); break;
    default: break;
  }
  updateState(s);
}

function onPlaybackMessage(s, m) {
  if (session !== s) return;
  if (m.type === "stats") {
    stats.samplesPlayed = m.played;
    stats.bufferedSamples = m.buffered;
    stats.underruns = m.underruns;
    stats.droppedSamples = m.dropped;
    stats.flushedSamples = m.flushed;
    stats.playing = m.playing;
    stats.jitterStartMs = m.startMs;
    $("buffer").textContent = `playback buffer ${Math.round(m.buffered / s.ctx.sampleRate * 1000)} ms, underruns ${m.underruns}`;
    updateState(s);
  } else if (m.type === "underrun") {
    // the answer that ran dry, and how far into it (ms of it played): at its start, the first chunks came too
    // slowly for the jitter buffer's start; later, the answer is made slower than it plays
    const turn = turns.get(m.turn);
    turn.underruns = (turn.underruns || 0) + 1;
    (turn.underrunAtMs = turn.underrunAtMs || []).push(m.atMs);
  } else if (m.type === "cleared") {
    const id = s.cutTurn;
    s.cutTurn = 0;
    if (!id || m.flushed <= 0) return;
    // what of the cut turn was heard: its audio so far minus what the clear dropped
    const turn = turns.get(id);
    turns.cut(turn, turn.audioSamples / s.serverRate - m.flushed / s.ctx.sampleRate, s.serverRate, !!turn.complete);
    turns.render(turn);
  } else if (m.type === "first_audio") {
    const turn = turns.get(m.turn);
    if (turn.speechEnd === undefined || s.captureOrigin === null || turn.latencyMs !== undefined) return;
    // Both times are on the AudioContext clock: capture origin + stream time vs. the playout time.
    const endCtx = s.captureOrigin + turn.speechEnd;
    const outputS = s.ctx.outputLatency || 0;
    turn.latencyMs = Math.round((m.ctxTime + outputS - endCtx) * 1000);
    // where it went: until the end of turn was decided (part of arrived), until the sound reached the
    // page, waiting in the jitter buffer, the output device
    turn.latencyParts = { decidedMs: Math.round((turn.stoppedCtx - endCtx) * 1000),
      arrivedMs: Math.round((m.arrivedCtxTime - endCtx) * 1000),
      bufferedMs: Math.round((m.ctxTime - m.arrivedCtxTime) * 1000), outputMs: Math.round(outputS * 1000),
      baseMs: Math.round((s.ctx.baseLatency || 0) * 1000) };
    stats.latenciesMs.push(turn.latencyMs);
    turns.render(turn);
    renderLatencies();
  }
}

function markInterrupted(id) {
  const turn = turns.get(id);
  turn.interrupted = true;
  turns.render(turn);
}

function flushPlayback(s) {
  if (stats.playing || stats.bufferedSamples > 0) {
    markInterrupted(s.audioTurn);
    s.cutTurn = s.audioTurn;
  }
  s.playback.port.postMessage({ type: "clear" });
  stats.clears += 1;
}

function updateState(s) {
  if (session !== s) return;
  const all = [...turns.values()];
  const waiting = all.some((t) => t.waiting);
  const hearing = all.some((t) => t.speechStart !== undefined && t.speechEnd === undefined);
  if (stats.playing || stats.bufferedSamples > 0) setState("speaking");
  else if (s.muted) setState(waiting ? "thinking" : "muted");
  else setState(hearing ? "hearing" : waiting ? "thinking" : "listening");
}

function renderLatencies() {
  drawLatencyChart($("chart"), stats.latenciesMs);
  const v = [...stats.latenciesMs].sort((a, b) => a - b);
  const p95 = v[Math.min(v.length - 1, Math.ceil(0.95 * v.length) - 1)];
  const summary = v.length
    ? `${v.length} turn(s): median ${Math.round(median(v))} ms, p95 ${p95} ms, last ${stats.latenciesMs.at(-1)} ms` : "No turns yet.";
  $("latency-summary").textContent = summary;
  $("chart").setAttribute("aria-label", `Voice-to-voice latency per turn. ${summary}`);
}

// Close the session and its audio; the page is back to idle (a shown error stays).
function endSession() {
  const s = session;
  session = null;
  if (s) {
    if (s.ws.readyState === WebSocket.OPEN) { s.ws.send(JSON.stringify({ type: "bye" })); s.ws.close(1000); }
    s.stream.getTracks().forEach((t) => t.stop());
    s.ctx.close();
  }
  stats.connected = false;
  stats.playing = false;
  stats.bufferedSamples = 0;
  $("buffer").textContent = "";
  showLevel(-60);
  setState("idle");
  $("connect").textContent = "Connect";
  $("pipeline").disabled = false;
  $("mute").disabled = $("interrupt").disabled = $("new-conversation").disabled = true;
  $("mute").textContent = "Mute";
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").classList.remove("on");
}

function disconnect() {
  if (retry) showError("");
  cancelRetry();
  endSession();
}

function toggleMute() {
  if (!session) return;
  session.muted = !session.muted;
  session.capture.port.postMessage({ type: "mute", muted: session.muted });
  $("mute").textContent = session.muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(session.muted));
  $("mute").classList.toggle("on", session.muted);
  updateState(session);
}

// Stop the answer at once (the server's clear follows) and tell the server why: `interrupt`, or
// `new_conversation` (it also forgets the dialogue: the next question is the first of a new conversation).
function stopAnswer(type) {
  if (!session) return;
  flushPlayback(session);
  session.ws.send(JSON.stringify({ type }));
}
const interrupt = () => stopAnswer("interrupt");
const newConversation = () => stopAnswer("new_conversation");

$("connect").onclick = () => (session || retry ? disconnect() : connect());
$("reconnect").onclick = () => { cancelRetry(); connect({ auto: true }); };
$("mute").onclick = toggleMute;
$("interrupt").onclick = interrupt;
$("new-conversation").onclick = newConversation;
window.voiceApp = { connect, disconnect, interrupt, newConversation, toggleMute };
drawLatencyChart($("chart"), []);
loadPipelines();
