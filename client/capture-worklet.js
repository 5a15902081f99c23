// Capture worklet: microphone at the AudioContext's rate -> PCM16 at the protocol rate, 20 ms chunks.
// Posts {type: "start", ctxTime} once (the context time of stream sample 0), {type: "chunk", pcm}
// (an Int16Array, transferred) and {type: "level", rmsDb} about 20 times a second.
// While muted it sends silence, so the stream's timeline stays continuous.
import { StreamResampler } from "./resampler.js";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.chunkSamples = Math.round(this.targetRate * (opts.chunkMs || 20) / 1000);
    this.resampler = new StreamResampler(sampleRate, this.targetRate);
    this.pending = new Float32Array(this.chunkSamples * 4);
    this.pendingCount = 0;
    this.muted = false;
    this.started = false;
    this.levelSum = 0;
    this.levelCount = 0;
    this.port.onmessage = (e) => { if (e.data && e.data.type === "mute") this.muted = !!e.data.muted; };
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    if (!this.started) {
      this.started = true;
      this.port.postMessage({ type: "start", ctxTime: currentTime });
    }
    const block = this.muted ? new Float32Array(input.length) : input;
    for (let i = 0; i < block.length; i++) this.levelSum += block[i] * block[i];
    this.levelCount += block.length;
    if (this.levelCount >= sampleRate / 20) {
      const rms = Math.sqrt(this.levelSum / this.levelCount);
      this.port.postMessage({ type: "level", rmsDb: 20 * Math.log10(Math.max(rms, 1e-6)) });
      this.levelSum = 0;
      this.levelCount = 0;
    }
    this.push(this.resampler.process(block));
    return true;
  }

  push(samples) {
    if (this.pendingCount + samples.length > this.pending.length) {
      const bigger = new Float32Array((this.pendingCount + samples.length) * 2);
      bigger.set(this.pending.subarray(0, this.pendingCount));
      this.pending = bigger;
    }
    this.pending.set(samples, this.pendingCount);
    this.pendingCount += samples.length;
    while (this.pendingCount >= this.chunkSamples) {
      const pcm = new Int16Array(this.chunkSamples);
      for (let i = 0; i < this.chunkSamples; i++) {
        const v = Math.max(-1, Math.min(1, this.pending[i]));
        pcm[i] = Math.round(v * 32767);
      }
      this.pending.copyWithin(0, this.chunkSamples, this.pendingCount);
      this.pendingCount -= this.chunkSamples;
      this.port.postMessage({ type: "chunk", pcm }, [pcm.buffer]);
    }
  }
}

registerProcessor("capture", CaptureProcessor);
