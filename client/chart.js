// A small canvas chart of voice-to-voice latency per turn (bars, with the median as a line).
// The median's label sits in a band above the plot, where no bar reaches.

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// Draws the chart; returns where things went: {bars: [{x, y, w, h}], label: {x, y, w, h} | null}.
export function drawLatencyChart(canvas, latenciesMs) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  const left = 44, bottom = 22, top = 24, right = 8;   // top: the band for the median's label
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  const values = latenciesMs.filter((v) => Number.isFinite(v));
  const maxMs = Math.max(500, ...values) * 1.15;
  const y = (ms) => top + (h - top - bottom) * (1 - ms / maxMs);
  const step = maxMs > 4000 ? 1000 : maxMs > 2000 ? 500 : 250;
  ctx.strokeStyle = "#e5e7eb";
  for (let ms = 0; ms <= maxMs; ms += step) {          // grid and axis labels
    ctx.beginPath(); ctx.moveTo(left, y(ms)); ctx.lineTo(w - right, y(ms)); ctx.stroke();
    ctx.fillText(`${ms}`, 4, y(ms) + 4);
  }
  ctx.fillText("ms", 4, h - 6);
  if (!values.length) { ctx.fillText("no turns yet", left + 8, h / 2); return { bars: [], label: null }; }
  const n = latenciesMs.length;
  const slot = (w - left - right) / Math.max(n, 8);
  const bars = [];
  latenciesMs.forEach((ms, i) => {
    const x = left + i * slot + slot * 0.15;
    if (!Number.isFinite(ms)) return;
    ctx.fillStyle = "#2563eb";
    ctx.fillRect(x, y(ms), slot * 0.7, y(0) - y(ms));
    bars.push({ x, y: y(ms), w: slot * 0.7, h: y(0) - y(ms) });
    ctx.fillStyle = "#6b7280";
    if (slot > 18) ctx.fillText(`${i + 1}`, x + slot * 0.2, h - 6);
  });
  const mid = median(values);
  ctx.strokeStyle = "#dc2626";
  ctx.setLineDash([4, 3]);
  ctx.beginPath(); ctx.moveTo(left, y(mid)); ctx.lineTo(w - right, y(mid)); ctx.stroke();
  ctx.setLineDash([]);
  // the label, in the band above the plot, with a dashed sample of the line
  const text = `median ${Math.round(mid)} ms`;
  const textW = ctx.measureText(text).width;
  const labelX = w - right - textW, baseline = top - 9;
  ctx.setLineDash([4, 3]);
  ctx.beginPath(); ctx.moveTo(labelX - 22, baseline - 4); ctx.lineTo(labelX - 4, baseline - 4); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#dc2626";
  ctx.fillText(text, labelX, baseline);
  return { bars, label: { x: labelX - 22, y: baseline - 10, w: textW + 22, h: 13 } };
}
