// Streaming band-limited resampler (windowed sinc), shared by the capture and playback worklets.
// Output sample k sits at input position k * inRate / outRate (exact integer arithmetic), so any
// chunking of the input gives the same output as one whole pass. The signal is taken as silent
// before its start. Latency: `half` input samples of lookahead (well under 2 ms).

function gcd(a, b) { while (b) { [a, b] = [b, a % b]; } return a; }

export class StreamResampler {
  constructor(inRate, outRate, zeroCrossings = 8) {
    this.inRate = Math.round(inRate);
    this.outRate = Math.round(outRate);
    const g = gcd(this.inRate, this.outRate);
    this.phases = this.outRate / g;
    const cutoff = Math.min(1, this.outRate / this.inRate) * 0.97;   // a little below Nyquist
    this.half = Math.ceil(zeroCrossings / cutoff);
    this.taps = 2 * this.half;
    this.weights = new Float32Array(this.phases * this.taps);        // [phases, taps]
    for (let p = 0; p < this.phases; p++) {
      const frac = ((p * this.inRate) % this.outRate) / this.outRate;
      let sum = 0;
      for (let t = 0; t < this.taps; t++) {
        const d = frac - (t - this.half + 1);                           // distance to the tap
        const x = cutoff * d;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const w = Math.abs(d) >= this.half ? 0
          : 0.42 + 0.5 * Math.cos(Math.PI * d / this.half) + 0.08 * Math.cos(2 * Math.PI * d / this.half);
        const v = cutoff * sinc * w;
        this.weights[p * this.taps + t] = v;
        sum += v;
      }
      for (let t = 0; t < this.taps; t++) this.weights[p * this.taps + t] /= sum;
    }
    this.buf = new Float32Array(this.half);   // input history; absolute index of buf[0] is bufStart
    this.bufStart = -this.half;
    this.nextOut = 0;
  }

  process(input) {
    if (this.inRate === this.outRate) return Float32Array.from(input);
    const merged = new Float32Array(this.buf.length + input.length);
    merged.set(this.buf);
    merged.set(input, this.buf.length);
    this.buf = merged;
    const end = this.bufStart + this.buf.length;
    let kMax = Math.floor(((end - 1 - this.half) * this.outRate) / this.inRate);
    if (Math.floor((kMax * this.inRate) / this.outRate) + this.half >= end) kMax -= 1;
    if (kMax < this.nextOut) return new Float32Array(0);
    const out = new Float32Array(kMax + 1 - this.nextOut);
    for (let k = this.nextOut, j = 0; k <= kMax; k++, j++) {
      const base = Math.floor((k * this.inRate) / this.outRate) - this.half + 1 - this.bufStart;
      const w = (k % this.phases) * this.taps;
      let acc = 0;
      for (let t = 0; t < this.taps; t++) acc += this.buf[base + t] * this.weights[w + t];
      out[j] = acc;
    }
    this.nextOut = kMax + 1;
    const keepFrom = Math.floor((this.nextOut * this.inRate) / this.outRate) - this.half + 1;
    const drop = keepFrom - this.bufStart;
    if (drop > 0) {
      this.buf = this.buf.slice(drop);
      this.bufStart = keepFrom;
    }
    return out;
  }
}
