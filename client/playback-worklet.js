// Playback worklet: a jitter buffer between the network and the speakers.
// Messages in:  {type: "format", sampleRate}  the server's output rate (resampled to the context's)
//               {type: "audio", pcm: Int16Array, turn}   answer audio, appended
//               {type: "end", turn}                        no more audio for now: play even below the start threshold
//               {type: "clear"}                            drop everything buffered, at once (interrupt)
// Messages out: {type: "first_audio", turn, ctxTime, arrivedCtxTime}   when a turn's first non-silent
//                                                       sample is played (and when it had arrived)
//               {type: "underrun", turn, atMs}          the buffer ran dry inside an answer, `atMs` of it played
//               {type: "cleared", flushed}              after a clear: the samples it dropped (context rate)
//               {type: "stats", ...counters}            about 10 times a second, and right after a clear
// Policy: start once `startMs` is buffered (or the turn has ended), drop the oldest audio when
// `maxMs` is exceeded, fade in on start, fade out on underrun and on clear. The start threshold
// adapts: it begins small (a local server streams faster than real time, and a first frame that
// plays at once is heard at once) and doubles after each underrun, up to `maxStartMs`.
import { StreamResampler } from "./resampler.js";

const SILENCE = 0.01;   // |sample| above this counts as audible (about -40 dBFS)

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.startSamples = Math.round(sampleRate * (opts.startMs || 20) / 1000);
    this.maxStartSamples = Math.max(this.startSamples, Math.round(sampleRate * (opts.maxStartMs || 240) / 1000));
    this.ring = new Float32Array(Math.round(sampleRate * (opts.maxMs || 30000) / 1000));
    this.fadeSamples = Math.max(1, Math.round(sampleRate * (opts.fadeMs || 5) / 1000));
    this.read = 0;          // absolute sample counters; ring index = counter % ring.length
    this.write = 0;
    this.playing = false;
    this.fadeIn = 0;        // samples of fade-in still to apply
    this.lastOut = 0;       // last sample output, for the fade after a clear
    this.tailFade = 0;
    this.ended = false;
    this.marks = [];        // [{turn, at, arrived}]: absolute index of a turn's first audible sample, its arrival time
    this.answer = null;     // {turn, at}: the answer playing, from the mark of its first audible sample
    this.seenTurns = new Set();
    this.resampler = null;
    this.sourceRate = sampleRate;
    this.stats = { received: 0, played: 0, underruns: 0, dropped: 0, clears: 0, flushed: 0, buffered: 0 };
    this.sinceStats = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "format") {
      this.sourceRate = msg.sampleRate;
      this.resampler = new StreamResampler(msg.sampleRate, sampleRate);
    } else if (msg.type === "audio") {
      this.append(msg.pcm, msg.turn);
    } else if (msg.type === "end") {
      this.ended = true;
    } else if (msg.type === "clear") {
      this.clear();
    }
  }

  append(pcm16, turn) {
    const x = new Float32Array(pcm16.length);
    for (let i = 0; i < pcm16.length; i++) x[i] = pcm16[i] / 32768;
    const samples = this.resampler ? this.resampler.process(x) : x;
    this.stats.received += pcm16.length;
    this.ended = false;
    if (!this.seenTurns.has(turn)) {
      const i = samples.findIndex((v) => Math.abs(v) > SILENCE);
      if (i >= 0) {
        this.seenTurns.add(turn);
        this.marks.push({ turn, at: this.write + i, arrived: currentTime });
      }
    }
    const overflow = this.write - this.read + samples.length - this.ring.length;
    if (overflow > 0) {                         // drop the oldest audio
      this.read += overflow;
      this.stats.dropped += overflow;
    }
    for (let i = 0; i < samples.length; i++) this.ring[(this.write + i) % this.ring.length] = samples[i];
    this.write += samples.length;
  }

  clear() {
    this.port.postMessage({ type: "cleared", flushed: this.write - this.read });
    this.stats.flushed += this.write - this.read;
    this.read = this.write;
    this.marks = [];
    this.answer = null;
    if (this.playing) this.tailFade = this.fadeSamples;
    this.playing = false;
    this.stats.clears += 1;
    this.postStats();
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    const buffered = this.write - this.read;
    if (!this.playing && buffered > 0 && (buffered >= this.startSamples || this.ended)) {
      this.playing = true;
      this.fadeIn = this.fadeSamples;
    }
    out.fill(0);
    if (this.playing) this.playBlock(out, buffered);
    else if (this.tailFade > 0) this.fadeTail(out);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.lastOut = out[n - 1];
    this.sinceStats += n;
    if (this.sinceStats >= sampleRate / 10) this.postStats();
    return true;
  }

  playBlock(out, buffered) {
    const n = out.length;
    const take = Math.min(n, buffered);
    for (let i = 0; i < take; i++) {
      let v = this.ring[(this.read + i) % this.ring.length];
      if (this.fadeIn > 0) { v *= 1 - this.fadeIn / this.fadeSamples; this.fadeIn--; }
      if (take < n) v *= 1 - i / take;          // underrun: fade out what is left
      out[i] = v;
    }
    while (this.marks.length && this.marks[0].at < this.read + take) {
      const m = this.marks.shift();
      this.answer = { turn: m.turn, at: m.at };
      if (m.at >= this.read) {
        this.port.postMessage({ type: "first_audio", turn: m.turn, ctxTime: currentTime + (m.at - this.read) / sampleRate,
          arrivedCtxTime: m.arrived });
      }
    }
    this.read += take;
    this.stats.played += take;
    if (take < n) {
      this.playing = false;
      if (!this.ended) {
        this.stats.underruns += 1;
        if (this.answer) {
          this.port.postMessage({ type: "underrun", turn: this.answer.turn,
            atMs: Math.round((this.read - this.answer.at) / sampleRate * 1000) });
        }
        this.startSamples = Math.min(this.maxStartSamples, this.startSamples * 2);   // wait for more next time
      }
    }
  }

  fadeTail(out) {
    const n = Math.min(out.length, this.tailFade);
    for (let i = 0; i < n; i++) out[i] = this.lastOut * (1 - (i + 1) / n);
    this.tailFade = 0;
  }

  postStats() {
    this.sinceStats = 0;
    this.stats.buffered = this.write - this.read;
    this.port.postMessage({ type: "stats", ctxTime: currentTime, playing: this.playing,
      startMs: Math.round(this.startSamples / sampleRate * 1000), ...this.stats });
  }
}

registerProcessor("playback", PlaybackProcessor);
