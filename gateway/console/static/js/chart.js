// Readings charts drawn as SVG: time on x (Asia/Shanghai), a shaded normal range, a hover read-out.

import { formatTime, shanghaiParts } from "./i18n.js";
import { svg } from "./ui.js";

const HOUR = 3600 * 1000;
const SHANGHAI_OFFSET_MS = 8 * HOUR;
const pad2 = (n) => String(n).padStart(2, "0");

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f >= 5 ? 10 : f >= 2 ? 5 : f >= 1 ? 2 : 1) * p;
}

/**
 * @param {HTMLElement} host
 * @param {{series: {label: string, color: string, points: {time: string, value: number}[]}[],
 *          rangeMs: number, now?: number, band?: [number, number], unit: string, decimals?: number,
 *          floor?: number, ceil?: number, emptyText: string}} spec
 */
export function lineChart(host, spec) {
  const width = Math.max(260, host.clientWidth || 600);
  const height = 190;
  const m = { l: 40, r: 12, t: 12, b: 24 };
  const now = spec.now ?? Date.now();
  const x0 = now - spec.rangeMs;
  const series = spec.series.map((s) => ({
    ...s, pts: s.points.map((p) => [Date.parse(p.time), p.value]).filter(([x, v]) => x >= x0 && Number.isFinite(v)),
  }));
  const values = series.flatMap((s) => s.pts.map((p) => p[1]));
  let lo = Math.min(...values, ...(spec.band || []));
  let hi = Math.max(...values, ...(spec.band || []));
  if (!Number.isFinite(lo)) [lo, hi] = spec.band || [0, 1];
  const padY = (hi - lo) * 0.12 || 1;
  lo = spec.floor !== undefined ? Math.max(spec.floor, lo - padY) : lo - padY;
  hi = spec.ceil !== undefined ? Math.min(spec.ceil, hi + padY) : hi + padY;
  const step = niceStep(hi - lo, 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const X = (t) => m.l + ((t - x0) / spec.rangeMs) * (width - m.l - m.r);
  const Y = (v) => m.t + (1 - (v - lo) / (hi - lo || 1)) * (height - m.t - m.b);

  const root = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (spec.band) {
    const [a, b] = spec.band;
    root.append(svg("rect", { class: "chart-band", x: m.l, width: width - m.l - m.r,
      y: Y(Math.min(hi, b)), height: Math.max(0, Y(Math.max(lo, a)) - Y(Math.min(hi, b))) }));
  }
  const grid = svg("g", { class: "chart-grid" });
  for (let v = lo; v <= hi + step / 2; v += step) {
    grid.append(svg("line", { x1: m.l, x2: width - m.r, y1: Y(v), y2: Y(v) }));
    grid.append(svg("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(step < 1 ? 1 : 0)));
  }
  // x ticks on Shanghai wall-clock boundaries: every 3 h for a day, every midnight for a week
  const tickEvery = spec.rangeMs <= 26 * HOUR ? 3 * HOUR : 24 * HOUR;
  let tick = Math.ceil((x0 + SHANGHAI_OFFSET_MS) / tickEvery) * tickEvery - SHANGHAI_OFFSET_MS;
  const labelEvery = Math.ceil(46 / (X(x0 + tickEvery) - X(x0))); // on a phone, every other label
  for (let k = 0; tick <= now; tick += tickEvery, k++) {
    const p = shanghaiParts(tick);
    grid.append(svg("line", { class: "vtick", x1: X(tick), x2: X(tick), y1: m.t, y2: height - m.b }));
    if ((tickEvery < 24 * HOUR ? p.h / 3 : p.d) % labelEvery) continue;
    const label = tickEvery < 24 * HOUR ? `${pad2(p.h)}:00` : `${pad2(p.mo)}-${pad2(p.d)}`;
    grid.append(svg("text", { x: X(tick), y: height - 6, "text-anchor": "middle" }, label));
  }
  root.append(grid);

  for (const s of series) {
    if (!s.pts.length) continue;
    // a band's continuous series breaks where data is missing (no straight line across hours
    // without readings); spot measurements (glucose, blood pressure) join their points
    // (the 30-day chart has one point a day: a missing day breaks it, not every day)
    const span = spec.rangeMs > 8 * 24 * HOUR ? 1.5 * 24 * HOUR : Math.max(spec.rangeMs / 60, 20 * 60 * 1000);
    const gap = s.continuous ? span : Infinity;
    let d = "";
    let prev = null;
    for (const [x, v] of s.pts) {
      d += `${prev === null || x - prev > gap ? "M" : "L"}${X(x).toFixed(1)},${Y(v).toFixed(1)}`;
      prev = x;
    }
    root.append(svg("path", { class: "chart-line", d, stroke: s.color }));
    if (s.pts.length <= 40) {
      const dots = svg("g", { fill: s.color });
      for (const [x, v] of s.pts) dots.append(svg("circle", { cx: X(x), cy: Y(v), r: 2.5 }));
      root.append(dots);
    }
    const [lx, lv] = s.pts[s.pts.length - 1];
    root.append(svg("circle", { class: "chart-last", cx: X(lx), cy: Y(lv), r: 4, stroke: s.color }));
  }
  if (!values.length) {
    root.append(svg("text", { class: "chart-empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, spec.emptyText));
  }

  const cursor = svg("g", { class: "chart-cursor", visibility: "hidden" });
  const cursorLine = svg("line", { y1: m.t, y2: height - m.b });
  const tipBox = svg("rect", { rx: 4, height: 20 + 16 * series.length });
  const tipTime = svg("text", { class: "tip-time" });
  const tipLines = series.map((s) => svg("text", { fill: s.color }));
  cursor.append(cursorLine, tipBox, tipTime, ...tipLines);
  root.append(cursor);
  const decimals = spec.decimals ?? 0;
  root.addEventListener("pointermove", (e) => {
    const box = root.getBoundingClientRect();
    const px = e.clientX - box.left;
    const at = x0 + ((px - m.l) / (width - m.l - m.r)) * spec.rangeMs;
    let best = null;
    for (const s of series) {
      for (const p of s.pts) if (!best || Math.abs(p[0] - at) < Math.abs(best[0] - at)) best = p;
    }
    if (!best) return;
    const cx = X(best[0]);
    cursor.setAttribute("visibility", "visible");
    cursorLine.setAttribute("x1", cx);
    cursorLine.setAttribute("x2", cx);
    const left = cx > width - 150 ? cx - 138 : cx + 8;
    tipBox.setAttribute("x", left);
    tipBox.setAttribute("y", m.t);
    tipBox.setAttribute("width", 130);
    tipTime.setAttribute("x", left + 8);
    tipTime.setAttribute("y", m.t + 15);
    tipTime.textContent = formatTime(best[0], { seconds: false });
    series.forEach((s, i) => {
      const near = s.pts.reduce((q, p) => (!q || Math.abs(p[0] - best[0]) < Math.abs(q[0] - best[0]) ? p : q), null);
      tipLines[i].setAttribute("x", left + 8);
      tipLines[i].setAttribute("y", m.t + 31 + 16 * i);
      tipLines[i].textContent = near ? `${s.label} ${near[1].toFixed(decimals)} ${spec.unit}` : "";
    });
  });
  root.addEventListener("pointerleave", () => cursor.setAttribute("visibility", "hidden"));
  host.replaceChildren(root);
}
