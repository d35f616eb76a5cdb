// The community map, drawn from the data itself on a canvas (Web Mercator, like XYZ tiles, so an
// optional online tile layer lines up): grid areas, fences, elders as dots, an alert's trail.

import { formatTime } from "./i18n.js";
import { SEVERITY_COLORS } from "./ui.js";

const TILE = 256;
const EARTH_M = 40075016.686;
const MAX_ZOOM = 20;
const SEV_INDEX = { critical: 0, warning: 1, info: 2 };
const SEV_BY_INDEX = ["critical", "warning", "info", null];
const DOT_COLORS = [SEVERITY_COLORS.critical, SEVERITY_COLORS.warning, SEVERITY_COLORS.info, SEVERITY_COLORS.none];
const GRID_HUES = [205, 150, 32, 280, 350, 95, 185, 250, 60, 320];

/** lon/lat (degrees) to world coordinates at zoom 0 (0..256). */
export function project(lon, lat) {
  const s = Math.sin((Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180);
  return [((lon + 180) / 360) * TILE, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * TILE];
}

export function unproject(x, y) {
  const lon = (x / TILE) * 360 - 180;
  const n = Math.PI - (2 * Math.PI * y) / TILE;
  return [lon, (180 / Math.PI) * Math.atan(Math.sinh(n))];
}

/** Metres per world unit (zoom 0) at a world y. */
function metresPerUnit(y) {
  const lat = unproject(0, y)[1];
  return (EARTH_M * Math.cos((lat * Math.PI) / 180)) / TILE;
}

/** A viewport: world (zoom 0) point (cx, cy) at the centre of a w×h CSS-pixel box at zoom z. */
class View {
  constructor(cx, cy, z, w, h) {
    this.set(cx, cy, z, w, h);
  }

  set(cx, cy, z, w, h) {
    Object.assign(this, { cx, cy, z, w, h });
    this.scale = 2 ** z;
    this.ox = cx - w / 2 / this.scale;
    this.oy = cy - h / 2 / this.scale;
  }

  sx(x) {
    return (x - this.ox) * this.scale;
  }

  sy(y) {
    return (y - this.oy) * this.scale;
  }

  toWorld(px, py) {
    return [this.ox + px / this.scale, this.oy + py / this.scale];
  }

  /** The view that shows world box [x0, y0, x1, y1] with `pad` CSS pixels around it. */
  static fitting(box, w, h, pad = 40, maxZoom = 18) {
    const [x0, y0, x1, y1] = box;
    const bw = Math.max(x1 - x0, 1e-7);
    const bh = Math.max(y1 - y0, 1e-7);
    const z = Math.min(maxZoom, Math.log2(Math.min((w - 2 * pad) / bw, (h - 2 * pad) / bh)));
    return new View((x0 + x1) / 2, (y0 + y1) / 2, Math.max(1, z), w, h);
  }
}

function ringToWorld(ring) {
  const out = new Float64Array(ring.length * 2);
  ring.forEach(([lon, lat], i) => {
    const [x, y] = project(lon, lat);
    out[2 * i] = x;
    out[2 * i + 1] = y;
  });
  return out;
}

function bboxOf(flat) {
  let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
  for (let i = 0; i < flat.length; i += 2) {
    x0 = Math.min(x0, flat[i]); x1 = Math.max(x1, flat[i]);
    y0 = Math.min(y0, flat[i + 1]); y1 = Math.max(y1, flat[i + 1]);
  }
  return [x0, y0, x1, y1];
}

/** GeoJSON features (Polygon, MultiPolygon, Point + radius_m, and the registry's circle form) in world units. */
export function fencesToWorld(collection) {
  const out = [];
  for (const f of collection?.features || []) {
    const g = f.geometry || {};
    const props = f.properties || {};
    const base = { id: f.id, name: props.name || f.id, elder: props.elder_id };
    if (g.type === "Polygon") {
      const rings = g.coordinates.map(ringToWorld);
      out.push({ ...base, kind: "poly", rings, bbox: bboxOf(rings[0]) });
    } else if (g.type === "MultiPolygon") {
      for (const poly of g.coordinates) {
        const rings = poly.map(ringToWorld);
        out.push({ ...base, kind: "poly", rings, bbox: bboxOf(rings[0]) });
      }
    } else if (g.type === "Point" && props.radius_m) {
      const [x, y] = project(g.coordinates[0], g.coordinates[1]);
      const r = props.radius_m / metresPerUnit(y);
      out.push({ ...base, kind: "circle", x, y, r, bbox: [x - r, y - r, x + r, y + r] });
    }
  }
  return out;
}

function cross(o, a, b) {
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

/** Convex hull (monotone chain) of [x, y] points. */
function hull(points) {
  if (points.length < 3) return points;
  const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const lower = [];
  for (const q of p) {
    while (lower.length >= 2 && cross(lower.at(-2), lower.at(-1), q) <= 0) lower.pop();
    lower.push(q);
  }
  const upper = [];
  for (let i = p.length - 1; i >= 0; i--) {
    while (upper.length >= 2 && cross(upper.at(-2), upper.at(-1), p[i]) <= 0) upper.pop();
    upper.push(p[i]);
  }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

function niceMetres(m) {
  const p = 10 ** Math.floor(Math.log10(m));
  const f = m / p;
  return (f >= 5 ? 5 : f >= 2 ? 2 : 1) * p;
}

function paintBackground(ctx, view) {
  ctx.fillStyle = "#eef2f5";
  ctx.fillRect(0, 0, view.w, view.h);
  // a 100 m / 1 km street-plan grid, so distances read at a glance without a base map
  const mpu = metresPerUnit(view.cy);
  const stepM = niceMetres((80 / view.scale) * mpu);
  const step = stepM / mpu;
  ctx.strokeStyle = "rgba(120, 140, 160, 0.14)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let x = Math.floor(view.ox / step) * step; view.sx(x) < view.w; x += step) {
    const sx = Math.round(view.sx(x)) + 0.5;
    ctx.moveTo(sx, 0);
    ctx.lineTo(sx, view.h);
  }
  for (let y = Math.floor(view.oy / step) * step; view.sy(y) < view.h; y += step) {
    const sy = Math.round(view.sy(y)) + 0.5;
    ctx.moveTo(0, sy);
    ctx.lineTo(view.w, sy);
  }
  ctx.stroke();
}

function visible(view, bbox, margin = 0) {
  return view.sx(bbox[2]) >= -margin && view.sx(bbox[0]) <= view.w + margin
    && view.sy(bbox[3]) >= -margin && view.sy(bbox[1]) <= view.h + margin;
}

const FENCES_IN_VIEW_MAX = 400;

/** Fences in view; past a few hundred only those of alerting elders (`keep`), so the map stays legible. */
function paintFences(ctx, view, fences, highlight, keep) {
  if (!fences.length) return;
  ctx.save();
  ctx.lineWidth = 1.5;
  ctx.setLineDash([6, 4]);
  let light = [];
  const strong = [];
  for (const f of fences) {
    if (!visible(view, f.bbox)) continue;
    if (view.sx(f.bbox[2]) - view.sx(f.bbox[0]) < 3) continue; // smaller than a dot: noise
    (highlight && f.elder === highlight ? strong : light).push(f);
  }
  if (light.length > FENCES_IN_VIEW_MAX && keep) light = light.filter((f) => keep(f.elder));
  for (const [list, fill, stroke] of [[light, "rgba(109, 76, 230, 0.06)", "rgba(109, 76, 230, 0.55)"],
    [strong, "rgba(109, 76, 230, 0.14)", "rgba(88, 54, 214, 0.95)"]]) {
    if (!list.length) continue;
    ctx.beginPath();
    for (const f of list) {
      if (f.kind === "circle") {
        ctx.moveTo(view.sx(f.x) + f.r * view.scale, view.sy(f.y));
        ctx.arc(view.sx(f.x), view.sy(f.y), f.r * view.scale, 0, Math.PI * 2);
      } else {
        for (const ring of f.rings) {
          ctx.moveTo(view.sx(ring[0]), view.sy(ring[1]));
          for (let i = 2; i < ring.length; i += 2) ctx.lineTo(view.sx(ring[i]), view.sy(ring[i + 1]));
          ctx.closePath();
        }
      }
    }
    ctx.fillStyle = fill;
    ctx.fill("evenodd");
    ctx.strokeStyle = stroke;
    ctx.stroke();
  }
  ctx.restore();
}

function haloText(ctx, text, x, y, color = "#1f2937") {
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(255,255,255,0.92)";
  ctx.strokeText(text, x, y);
  ctx.fillStyle = color;
  ctx.fillText(text, x, y);
}

function paintTrail(ctx, view, trail, position, severity, labels) {
  const color = SEVERITY_COLORS[severity] || SEVERITY_COLORS.critical;
  const pts = (trail || []).map((p) => project(p.lon, p.lat));
  if (pts.length) {
    ctx.save();
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(view.sx(x), view.sy(y)) : ctx.moveTo(view.sx(x), view.sy(y))));
    ctx.strokeStyle = "rgba(255,255,255,0.95)";
    ctx.lineWidth = 7;
    ctx.stroke();
    ctx.strokeStyle = "#1d3b73";
    ctx.lineWidth = 3.5;
    ctx.stroke();
    // direction arrows every ~70 px
    let carry = 0;
    ctx.fillStyle = "#1d3b73";
    for (let i = 1; i < pts.length; i++) {
      const ax = view.sx(pts[i - 1][0]); const ay = view.sy(pts[i - 1][1]);
      const bx = view.sx(pts[i][0]); const by = view.sy(pts[i][1]);
      const len = Math.hypot(bx - ax, by - ay);
      carry += len;
      if (carry > 70 && len > 14) {
        carry = 0;
        const ang = Math.atan2(by - ay, bx - ax);
        const mx = (ax + bx) / 2; const my = (ay + by) / 2;
        ctx.beginPath();
        ctx.moveTo(mx + Math.cos(ang) * 7, my + Math.sin(ang) * 7);
        ctx.lineTo(mx + Math.cos(ang + 2.5) * 7, my + Math.sin(ang + 2.5) * 7);
        ctx.lineTo(mx + Math.cos(ang - 2.5) * 7, my + Math.sin(ang - 2.5) * 7);
        ctx.fill();
      }
    }
    for (const [x, y] of pts) {
      ctx.beginPath();
      ctx.arc(view.sx(x), view.sy(y), 2.6, 0, Math.PI * 2);
      ctx.fillStyle = "#ffffff";
      ctx.fill();
      ctx.lineWidth = 1.4;
      ctx.strokeStyle = "#1d3b73";
      ctx.stroke();
    }
    const [fx, fy] = pts[0];
    ctx.beginPath();
    ctx.arc(view.sx(fx), view.sy(fy), 6, 0, Math.PI * 2);
    ctx.fillStyle = "#ffffff";
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#1d3b73";
    ctx.stroke();
    const last = trail[trail.length - 1];
    const [lx, ly] = pts[pts.length - 1];
    if (pts.length > 1) {
      // the latest fix: where to go now
      ctx.beginPath();
      ctx.arc(view.sx(lx), view.sy(ly), 7, 0, Math.PI * 2);
      ctx.fillStyle = "#1d3b73";
      ctx.fill();
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    if (last.gps_acc_m) {
      const r = (last.gps_acc_m / metresPerUnit(ly)) * view.scale;
      if (r > 8) {
        ctx.beginPath();
        ctx.arc(view.sx(lx), view.sy(ly), r, 0, Math.PI * 2);
        ctx.fillStyle = "rgba(29, 59, 115, 0.10)";
        ctx.fill();
      }
    }
    if (labels) {
      ctx.font = "600 12px system-ui, 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      haloText(ctx, formatTime(trail[0].time, { seconds: false }), view.sx(fx) + 10, view.sy(fy), "#1d3b73");
      if (pts.length > 1) haloText(ctx, formatTime(last.time, { seconds: false }), view.sx(lx) + 14, view.sy(ly) + 14, "#1d3b73");
    }
    ctx.restore();
  }
  const at = position ? project(position.lon, position.lat) : pts[pts.length - 1];
  if (at) {
    const x = view.sx(at[0]);
    const y = view.sy(at[1]);
    ctx.save();
    ctx.beginPath();
    ctx.arc(x, y, 17, 0, Math.PI * 2);
    ctx.fillStyle = `${color}33`;
    ctx.fill();
    // a pin: the alert's position
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.bezierCurveTo(x - 3, y - 8, x - 11, y - 13, x - 11, y - 22);
    ctx.arc(x, y - 22, 11, Math.PI, 0);
    ctx.bezierCurveTo(x + 11, y - 13, x + 3, y - 8, x, y);
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x, y - 22, 4, 0, Math.PI * 2);
    ctx.fillStyle = "#ffffff";
    ctx.fill();
    ctx.restore();
  }
}

function trailBox(trail, position) {
  const pts = (trail || []).map((p) => project(p.lon, p.lat));
  if (position) pts.push(project(position.lon, position.lat));
  if (!pts.length) return null;
  return bboxOf(pts.flat());
}

function setupCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** A small static map of one alert's trail (the alert detail panel). */
export function drawTrailThumbnail(canvas, { trail, position, severity, fences }) {
  const w = canvas.clientWidth || 320;
  const hgt = canvas.clientHeight || 180;
  const ctx = setupCanvas(canvas, w, hgt);
  let box = trailBox(trail, position);
  if (!box) return false;
  // show the elder's fences too when they are about the trail's size (not a 5 km zone around a walk)
  const size = (b) => Math.max(b[2] - b[0], b[3] - b[1], 1e-6);
  for (const f of fences || []) {
    const union = [Math.min(box[0], f.bbox[0]), Math.min(box[1], f.bbox[1]), Math.max(box[2], f.bbox[2]),
      Math.max(box[3], f.bbox[3])];
    if (size(union) <= 2.5 * size(box)) box = union;
  }
  const view = View.fitting(box, w, hgt, 34, 17);
  paintBackground(ctx, view);
  if (fences?.length) paintFences(ctx, view, fences, null);
  paintTrail(ctx, view, trail, position, severity, true);
  const mpu = metresPerUnit(view.cy);
  const metres = niceMetres((70 / view.scale) * mpu);
  const px = (metres / mpu) * view.scale;
  ctx.fillStyle = "#334155";
  ctx.fillRect(10, hgt - 12, px, 3);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  haloText(ctx, metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, 10, hgt - 15, "#334155");
  return true;
}

export class CommunityMap {
  /**
   * @param {HTMLElement} host element to fill; the canvas and controls go inside
   * @param {{onPick: (elder: object|null, x: number, y: number) => void, tileUrl?: string}} options
   */
  constructor(host, { onPick, tileUrl }) {
    this.host = host;
    this.onPick = onPick;
    this.tileUrl = tileUrl || null;
    this.tiles = new Map();
    this.canvas = document.createElement("canvas");
    this.canvas.className = "map-canvas";
    this.canvas.tabIndex = 0;
    host.append(this.canvas);
    this.view = new View(TILE / 2, TILE / 2, 2, 1, 1);
    this.n = 0;
    this.fences = [];
    this.grids = [];
    this.trail = null;
    this.frame = 0;
    this.drawMs = 0;
    this.drawCount = 0;
    this.firstDataDrawAt = null;
    this.fitted = false;
    this.pointers = new Map();
    this.bindInput();
    new ResizeObserver(() => {
      this.resize();
    }).observe(host);
  }

  resize() {
    const w = this.host.clientWidth;
    const hgt = this.host.clientHeight;
    if (!w || !hgt) return;
    const v = this.view;
    this.view.set(v.cx, v.cy, v.z, w, hgt);
    if (!this.fitted && this.n) this.fit();
    this.schedule();
  }

  /** Load /api/map's answer. */
  setData(data) {
    const elders = (data.elders || []).filter((e) => Number.isFinite(e.lat) && Number.isFinite(e.lon));
    const n = elders.length;
    this.n = n;
    this.xs = new Float64Array(n);
    this.ys = new Float64Array(n);
    this.sev = new Uint8Array(n);
    this.ids = new Array(n);
    this.names = new Array(n);
    this.gridOf = new Array(n);
    this.index = new Map();
    const byGrid = new Map();
    elders.forEach((e, i) => {
      const [x, y] = project(e.lon, e.lat);
      this.xs[i] = x;
      this.ys[i] = y;
      this.sev[i] = SEV_INDEX[e.worst_severity] ?? 3;
      this.ids[i] = e.elder_id;
      this.names[i] = e.name;
      this.gridOf[i] = e.grid || "";
      this.index.set(e.elder_id, i);
      if (!byGrid.has(this.gridOf[i])) byGrid.set(this.gridOf[i], []);
      byGrid.get(this.gridOf[i]).push([x, y]);
    });
    this.grids = [...byGrid.entries()].filter(([g]) => g).sort(([a], [b]) => a.localeCompare(b))
      .map(([grid, pts], k) => {
        const ring = hull(pts);
        const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
        const cy = pts.reduce((s, p) => s + p[1], 0) / pts.length;
        return { grid, ring, cx, cy, hue: GRID_HUES[k % GRID_HUES.length], count: pts.length };
      });
    this.fences = fencesToWorld(data.fences);
    this.bounds = data.bounds && data.bounds.length === 4 ? data.bounds : null;
    this.fitted = false;
    this.firstDataDrawAt = null;
    this.resize();
  }

  elderAt(i) {
    return { elder_id: this.ids[i], name: this.names[i], grid: this.gridOf[i], worst_severity: SEV_BY_INDEX[this.sev[i]] };
  }

  setSeverity(elderId, severity) {
    const i = this.index?.get(elderId);
    if (i === undefined) return;
    const next = SEV_INDEX[severity] ?? 3;
    if (this.sev[i] !== next) {
      this.sev[i] = next;
      this.schedule();
    }
  }

  setTrail(trail) {
    this.trail = trail;
    if (trail) {
      const box = trailBox(trail.trail, trail.position);
      if (box) {
        const v = View.fitting(box, this.view.w, this.view.h, 80, 17);
        this.view.set(v.cx, v.cy, Math.min(v.z, 17), this.view.w, this.view.h);
      }
    }
    this.schedule();
  }

  fit() {
    let box = null;
    if (this.n) {
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (let i = 0; i < this.n; i++) {
        x0 = Math.min(x0, this.xs[i]); x1 = Math.max(x1, this.xs[i]);
        y0 = Math.min(y0, this.ys[i]); y1 = Math.max(y1, this.ys[i]);
      }
      box = [x0, y0, x1, y1];
    } else if (this.bounds) {
      const [a, b] = project(this.bounds[0], this.bounds[3]);
      const [c, d] = project(this.bounds[2], this.bounds[1]);
      box = [a, b, c, d];
    }
    if (!box || !this.view.w) return;
    const v = View.fitting(box, this.view.w, this.view.h, 48, 17);
    this.view.set(v.cx, v.cy, v.z, this.view.w, this.view.h);
    this.fitted = true;
    this.schedule();
  }

  zoomBy(factor, px = this.view.w / 2, py = this.view.h / 2) {
    const v = this.view;
    const [wx, wy] = v.toWorld(px, py);
    const z = Math.max(2, Math.min(MAX_ZOOM, v.z + Math.log2(factor)));
    const scale = 2 ** z;
    v.set(wx - (px - v.w / 2) / scale, wy - (py - v.h / 2) / scale, z, v.w, v.h);
    this.schedule();
  }

  panBy(dx, dy) {
    const v = this.view;
    v.set(v.cx - dx / v.scale, v.cy - dy / v.scale, v.z, v.w, v.h);
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = 0;
    const start = performance.now();
    const v = this.view;
    if (!v.w || !v.h) return;
    const ctx = setupCanvas(this.canvas, v.w, v.h);
    paintBackground(ctx, v);
    if (this.tileUrl) this.paintTiles(ctx, v);
    this.paintGrids(ctx, v);
    paintFences(ctx, v, this.fences, this.trail?.elder_id, (elder) => {
      const i = this.index?.get(elder);
      return i !== undefined && this.sev[i] < 3;
    });
    this.paintElders(ctx, v);
    if (this.trail) paintTrail(ctx, v, this.trail.trail, this.trail.position, this.trail.severity, true);
    this.drawMs = performance.now() - start;
    this.drawCount += 1;
    if (this.n && this.firstDataDrawAt === null) this.firstDataDrawAt = performance.now();
    this.onDraw?.(v);
  }

  paintTiles(ctx, v) {
    const tz = Math.max(0, Math.min(19, Math.round(v.z)));
    const size = TILE * 2 ** (v.z - tz);
    const worldTiles = 2 ** tz;
    const x0 = Math.floor((v.ox * 2 ** tz) / TILE);
    const y0 = Math.floor((v.oy * 2 ** tz) / TILE);
    const x1 = Math.floor(((v.ox + v.w / v.scale) * 2 ** tz) / TILE);
    const y1 = Math.floor(((v.oy + v.h / v.scale) * 2 ** tz) / TILE);
    for (let x = x0; x <= x1; x++) {
      for (let y = y0; y <= y1; y++) {
        if (y < 0 || y >= worldTiles) continue;
        const wx = ((x % worldTiles) + worldTiles) % worldTiles;
        const key = `${tz}/${wx}/${y}`;
        let img = this.tiles.get(key);
        if (!img) {
          img = new Image();
          img.onload = () => this.schedule();
          img.src = this.tileUrl.replace("{z}", tz).replace("{x}", wx).replace("{y}", y)
            .replace("{s}", "abc"[(wx + y) % 3]);
          this.tiles.set(key, img);
        }
        if (img.complete && img.naturalWidth) {
          ctx.drawImage(img, v.sx((x * TILE) / 2 ** tz), v.sy((y * TILE) / 2 ** tz), size + 0.5, size + 0.5);
        }
      }
    }
    ctx.fillStyle = "rgba(255,255,255,0.35)";
    ctx.fillRect(0, 0, v.w, v.h);
  }

  paintGrids(ctx, v) {
    ctx.save();
    ctx.lineJoin = "round";
    for (const g of this.grids) {
      if (g.ring.length < 3) continue;
      ctx.beginPath();
      g.ring.forEach(([x, y], i) => (i ? ctx.lineTo(v.sx(x), v.sy(y)) : ctx.moveTo(v.sx(x), v.sy(y))));
      ctx.closePath();
      ctx.fillStyle = `hsla(${g.hue}, 55%, 60%, 0.10)`;
      ctx.strokeStyle = `hsla(${g.hue}, 55%, 60%, 0.10)`;
      ctx.lineWidth = 36; // pads the hull so edge dots sit inside the area
      ctx.stroke();
      ctx.fill();
      ctx.strokeStyle = `hsla(${g.hue}, 45%, 42%, 0.45)`;
      ctx.lineWidth = 1.2;
      ctx.setLineDash([2, 4]);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.font = "600 13px system-ui, 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    const placed = [];
    for (const g of this.grids) {
      const top = g.ring.reduce((m, p) => (p[1] < m[1] ? p : m), g.ring[0]);
      const x = v.sx(g.cx);
      const y = v.sy(top[1]) - 26;
      const w = ctx.measureText(g.grid).width / 2 + 6;
      if (placed.some(([px, py, pw]) => Math.abs(px - x) < pw + w && Math.abs(py - y) < 18)) continue;
      placed.push([x, y, w]);
      haloText(ctx, g.grid, x, y, `hsl(${g.hue}, 45%, 32%)`);
    }
    ctx.restore();
  }

  paintElders(ctx, v) {
    const n = this.n;
    if (!n) return;
    const r = Math.max(2.5, Math.min(7, 2.5 + (v.z - 13) * 0.9));
    const many = n > 3000 && v.z < 15;
    const { xs, ys, sev } = this;
    const w = v.w + r; const hgt = v.h + r;
    let shown = 0;
    for (let layer = 3; layer >= 0; layer--) {
      const rr = layer === 3 && many ? r * 0.8 : r + (layer < 3 ? 1 : 0);
      ctx.beginPath();
      if (layer < 3) {
        // halo under alerting elders
        for (let i = 0; i < n; i++) {
          if (sev[i] !== layer) continue;
          const x = (xs[i] - v.ox) * v.scale; const y = (ys[i] - v.oy) * v.scale;
          if (x < -20 || y < -20 || x > w + 20 || y > hgt + 20) continue;
          ctx.moveTo(x + rr * 2.6, y);
          ctx.arc(x, y, rr * 2.6, 0, Math.PI * 2);
        }
        ctx.fillStyle = `${DOT_COLORS[layer]}2e`;
        ctx.fill();
        ctx.beginPath();
      }
      for (let i = 0; i < n; i++) {
        if (sev[i] !== layer) continue;
        const x = (xs[i] - v.ox) * v.scale; const y = (ys[i] - v.oy) * v.scale;
        if (x < -r || y < -r || x > w || y > hgt) continue;
        shown += 1;
        ctx.moveTo(x + rr, y);
        ctx.arc(x, y, rr, 0, Math.PI * 2);
      }
      ctx.fillStyle = DOT_COLORS[layer];
      ctx.fill();
      if (!(layer === 3 && many)) {
        ctx.lineWidth = layer < 3 ? 1.5 : 1;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      }
    }
    this.shownElders = shown;
    if (shown <= 250 && v.z >= 15) {
      ctx.font = "12px system-ui, 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      for (let i = 0; i < n; i++) {
        const x = (xs[i] - v.ox) * v.scale; const y = (ys[i] - v.oy) * v.scale;
        if (x < 0 || y < 0 || x > v.w || y > v.h) continue;
        haloText(ctx, this.names[i], x + r + 4, y, sev[i] < 3 ? DOT_COLORS[sev[i]] : "#334155");
      }
    }
  }

  /** The elder drawn nearest to a CSS-pixel point, within reach of a finger. */
  pick(px, py) {
    const v = this.view;
    let best = -1;
    let bestD = 14 * 14;
    for (let i = 0; i < this.n; i++) {
      const dx = (this.xs[i] - v.ox) * v.scale - px;
      const dy = (this.ys[i] - v.oy) * v.scale - py;
      const d = dx * dx + dy * dy;
      if (d < bestD || (d === bestD && best >= 0 && this.sev[i] < this.sev[best])) {
        bestD = d;
        best = i;
      }
    }
    return best;
  }

  screenOf(elderId) {
    const i = this.index?.get(elderId);
    if (i === undefined) return null;
    return [this.view.sx(this.xs[i]), this.view.sy(this.ys[i])];
  }

  bindInput() {
    const c = this.canvas;
    let moved = 0;
    let pinch = null;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.pointers.set(e.pointerId, [e.offsetX, e.offsetY]);
      moved = 0;
      pinch = null;
    });
    c.addEventListener("pointermove", (e) => {
      const last = this.pointers.get(e.pointerId);
      if (!last) return;
      const now = [e.offsetX, e.offsetY];
      if (this.pointers.size === 1) {
        moved += Math.abs(now[0] - last[0]) + Math.abs(now[1] - last[1]);
        this.panBy(now[0] - last[0], now[1] - last[1]);
        this.pointers.set(e.pointerId, now);
      } else if (this.pointers.size === 2) {
        this.pointers.set(e.pointerId, now);
        const [a, b] = [...this.pointers.values()];
        const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
        const dist = Math.hypot(a[0] - b[0], a[1] - b[1]);
        if (pinch) {
          this.panBy(mid[0] - pinch.mid[0], mid[1] - pinch.mid[1]);
          if (pinch.dist > 0) this.zoomBy(dist / pinch.dist, mid[0], mid[1]);
        }
        pinch = { mid, dist };
        moved += 10;
      }
    });
    const up = (e) => {
      const had = this.pointers.delete(e.pointerId);
      if (had && this.pointers.size === 0 && moved < 5 && e.type === "pointerup") {
        const i = this.pick(e.offsetX, e.offsetY);
        this.onPick(i >= 0 ? this.elderAt(i) : null, e.offsetX, e.offsetY);
      }
      if (this.pointers.size < 2) pinch = null;
    };
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoomBy(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0022)), e.offsetX, e.offsetY);
    }, { passive: false });
    c.addEventListener("dblclick", (e) => this.zoomBy(2, e.offsetX, e.offsetY));
    c.addEventListener("keydown", (e) => {
      const step = 80;
      const keys = { "+": () => this.zoomBy(2), "=": () => this.zoomBy(2), "-": () => this.zoomBy(0.5),
        ArrowLeft: () => this.panBy(step, 0), ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step), ArrowDown: () => this.panBy(0, -step) };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }

  /** Scale bar: metres for a bar of about 100 CSS pixels at the map's centre. */
  scaleBar() {
    const mpu = metresPerUnit(this.view.cy);
    const metres = niceMetres((100 / this.view.scale) * mpu);
    return { metres, px: (metres / mpu) * this.view.scale };
  }
}
