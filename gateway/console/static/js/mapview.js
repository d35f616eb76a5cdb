// The map page: the canvas map, its controls and legend, open alerts to pick a trail from.

import { api } from "./api.js";
import { formatDuration, formatTime, kindName, onLangChange, severityName, stateName, t } from "./i18n.js";
import { CommunityMap } from "./map.js";
import { isWaiting, store } from "./store.js";
import { SEVERITY_COLORS, h } from "./ui.js";

const LIST_LIMIT = 60;

export class MapView {
  constructor(section, { tileUrl }) {
    this.section = section;
    this.loaded = false;
    this.loading = null;
    this.selected = null;
    this.frame = 0;
    this.stats = { loadMs: null, elders: 0, fences: 0 };
    this.build(tileUrl);
    store.subscribe((change) => {
      if (change.alert?.elder_id) this.map.setSeverity(change.alert.elder_id, store.worstFor(change.alert.elder_id));
      if (change.type === "reset") this.resyncSeverities();
      if (this.selected && change.alert?.alert_id === this.selected.alert_id) this.selected = { ...this.selected, ...change.alert };
      this.scheduleList();
    });
    onLangChange(() => {
      this.applyLabels();
      this.scheduleList();
      this.map.schedule();
    });
    setInterval(() => this.tickTimers(), 250);
  }

  build(tileUrl) {
    this.canvasHost = h("div.map-stage");
    this.map = new CommunityMap(this.canvasHost, { tileUrl, onPick: (elder, x, y) => this.showPopup(elder, x, y) });
    this.map.onDraw = () => this.updateScale();
    this.popup = h("div.map-popup", { hidden: true });
    this.scale = h("div.map-scale", h("div.map-scale-bar"), h("span.map-scale-text"));
    const zoomIn = h("button.map-btn", { type: "button", title: "+", onclick: () => this.map.zoomBy(2) }, "+");
    const zoomOut = h("button.map-btn", { type: "button", title: "−", onclick: () => this.map.zoomBy(0.5) }, "−");
    this.fitBtn = h("button.map-btn.map-btn-text", { type: "button", onclick: () => this.map.fit() });
    this.tileNote = tileUrl ? h("div.map-attrib", t("map.tiles")) : null;
    this.canvasHost.append(h("div.map-controls", zoomIn, zoomOut, this.fitBtn), this.scale, this.popup, this.tileNote);
    this.legend = h("div.map-legend");
    this.summary = h("div.map-summary");
    this.trailCard = h("div.trail-card", { hidden: true });
    this.listTitle = h("h3.side-title");
    this.alertList = h("ul.map-alerts", { id: "map-alert-list" });
    this.more = h("div.map-more");
    this.side = h("aside.map-side", this.summary, this.legend, this.trailCard, this.listTitle, this.alertList, this.more);
    this.section.append(h("div.map-layout", this.canvasHost, this.side));
    this.alertList.addEventListener("click", (e) => {
      const li = e.target.closest("li[data-alert-id]");
      if (li) location.hash = `#/map/${li.dataset.alertId}`;
    });
    this.applyLabels();
  }

  applyLabels() {
    this.fitBtn.textContent = t("map.fit");
    this.listTitle.textContent = t("map.openAlerts");
    const dot = (color, label, ring) => h("li", h(`span.legend-dot${ring ? ".ring" : ""}`), label);
    const items = [
      dot(SEVERITY_COLORS.critical, severityName("critical")),
      dot(SEVERITY_COLORS.warning, severityName("warning")),
      dot(SEVERITY_COLORS.info, severityName("info")),
      dot(SEVERITY_COLORS.none, t("map.noAlert")),
    ];
    const colors = [SEVERITY_COLORS.critical, SEVERITY_COLORS.warning, SEVERITY_COLORS.info, SEVERITY_COLORS.none];
    items.forEach((li, i) => {
      li.firstChild.style.background = colors[i];
    });
    items.push(h("li", h("span.legend-fence"), t("map.fence")));
    items.push(h("li", h("span.legend-grid"), t("map.grid")));
    items.push(h("li", h("span.legend-trail"), t("map.trail")));
    this.legend.replaceChildren(h("h3.side-title", t("map.legend")), h("ul.legend-list", ...items));
    this.renderSummary();
    this.renderTrailCard();
  }

  async show(alertId) {
    await this.load();
    if (alertId) await this.selectAlert(alertId);
    else if (this.selected) this.clearTrail(false);
    this.map.resize();
  }

  load(force = false) {
    if (this.loaded && !force) return Promise.resolve();
    if (this.loading) return this.loading;
    const started = performance.now();
    this.loading = api("/api/map").then((data) => {
      this.map.setData(data);
      this.loaded = true;
      this.stats = { loadMs: performance.now() - started, elders: this.map.n, fences: this.map.fences.length };
      this.resyncSeverities();
      this.renderSummary();
      this.scheduleList();
    }).finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  reset() {
    this.loaded = false;
    this.selected = null;
    this.map.setTrail(null);
  }

  /** Dots follow the live board: each elder with an open alert takes the worst severity the board holds. */
  resyncSeverities() {
    if (!this.loaded || !store.open.list.length) return;
    const worst = new Map();
    for (const a of store.open.list) if (!worst.has(a.elder_id)) worst.set(a.elder_id, a.severity);
    for (const [elder, severity] of worst) this.map.setSeverity(elder, severity);
  }

  async selectAlert(id) {
    const numeric = Number(id);
    try {
      const detail = await api(`/api/alerts/${numeric}`);
      this.selected = detail;
      this.map.setTrail({ trail: detail.trail || [], position: detail.position, severity: detail.severity,
        elder_id: detail.elder_id });
    } catch (error) {
      this.selected = null;
      this.map.setTrail(null);
    }
    this.renderTrailCard();
    this.scheduleList();
  }

  clearTrail(navigate = true) {
    this.selected = null;
    this.map.setTrail(null);
    this.renderTrailCard();
    this.scheduleList();
    if (navigate) location.hash = "#/map";
  }

  renderTrailCard() {
    const a = this.selected;
    if (!a) {
      this.trailCard.hidden = false;
      this.trailCard.className = "trail-card empty";
      this.trailCard.replaceChildren(t("map.selectAlert"));
      return;
    }
    this.trailCard.hidden = false;
    this.trailCard.className = `trail-card sev-${a.severity}`;
    const trail = a.trail || [];
    const span = trail.length > 1 ? `${formatTime(trail[0].time, { seconds: false })} – ${formatTime(trail.at(-1).time, { seconds: false })}` : "";
    this.trailCard.replaceChildren(
      h("div.trail-head", h(`span.sev-badge.sev-${a.severity}`, severityName(a.severity)),
        h("strong", kindName(a.kind)), h("span.muted", a.code)),
      h("div.trail-elder", a.elder_name || a.elder_id, h("span.muted", ` · ${[a.community, a.grid].filter(Boolean).join(" · ")}`)),
      h("div.trail-meta", `${formatTime(a.opened_at)} · ${stateName(a.state)}`),
      trail.length ? h("div.trail-meta", `${t("map.trail")}: ${trail.length} · ${span}`) : h("div.trail-meta", t("detail.noPosition")),
      h("div.trail-actions",
        h("a.btn.btn-small", { href: `#/board/${a.alert_id}` }, t("action.details")),
        h("button.btn.btn-small.btn-ghost", { type: "button", onclick: () => this.clearTrail() }, t("map.clearTrail"))),
    );
  }

  renderSummary() {
    if (!this.loaded) {
      this.summary.replaceChildren();
      return;
    }
    const c = store.counts();
    this.summary.replaceChildren(
      h("div.sum-item", h("strong", this.map.n.toLocaleString()), h("span", t("map.elders", { n: "" }).trim())),
      h("div.sum-item.sum-critical", h("strong", c.critical), h("span", severityName("critical"))),
      h("div.sum-item.sum-warning", h("strong", c.warning), h("span", severityName("warning"))),
      h("div.sum-item.sum-fence", h("strong", this.map.fences.length), h("span", t("map.fence"))),
    );
  }

  scheduleList() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.renderList());
  }

  renderList() {
    this.frame = 0;
    if (this.section.hidden) return;
    const list = store.open.list;
    const items = list.slice(0, LIST_LIMIT).map((a) => {
      const li = h("li", { dataset: { alertId: a.alert_id } },
        h(`span.dot.sev-${a.severity}`),
        h("div.ma-main", h("div.ma-title", h("strong", a.elder_name || a.elder_id), " ", kindName(a.kind)),
          h("div.ma-sub", `${a.code} · ${[a.community, a.grid].filter(Boolean).join(" · ")}`)),
        h("span.ma-time", isWaiting(a) ? formatDuration(Date.now() - a._t) : stateName(a.state)));
      if (isWaiting(a)) li.lastChild.classList.add("running");
      li._t = a._t;
      li._waiting = isWaiting(a);
      if (this.selected?.alert_id === a.alert_id) li.classList.add("selected");
      return li;
    });
    this.alertList.replaceChildren(...items);
    this.more.textContent = list.length > LIST_LIMIT ? `+ ${list.length - LIST_LIMIT}` : "";
    this.renderSummary();
  }

  tickTimers() {
    if (this.section.hidden) return;
    const now = Date.now();
    for (const li of this.alertList.children) {
      if (!li._waiting) continue;
      const text = formatDuration(now - li._t);
      if (li.lastChild.textContent !== text) li.lastChild.textContent = text;
    }
  }

  showPopup(elder, x, y) {
    if (!elder) {
      this.popup.hidden = true;
      return;
    }
    const alerts = store.open.list.filter((a) => a.elder_id === elder.elder_id).slice(0, 4);
    this.popup.replaceChildren(
      h("button.popup-close", { type: "button", "aria-label": t("action.close"), onclick: () => { this.popup.hidden = true; } }, "×"),
      h("div.popup-title", h(`span.dot.sev-${elder.worst_severity || "none"}`), elder.name),
      h("div.popup-sub", `${elder.elder_id}${elder.grid ? ` · ${elder.grid}` : ""}`),
      ...alerts.map((a) => h("a.popup-alert", { href: `#/map/${a.alert_id}` },
        h(`span.sev-badge.sev-${a.severity}`, severityName(a.severity)), kindName(a.kind), h("span.muted", ` ${a.code}`))),
      h("a.btn.btn-small", { href: `#/elder/${encodeURIComponent(elder.elder_id)}` }, t("map.elderPage")),
    );
    this.popup.hidden = false;
    const w = this.canvasHost.clientWidth;
    this.popup.style.left = `${Math.min(Math.max(8, x + 12), w - 240)}px`;
    this.popup.style.top = `${Math.max(8, y - 20)}px`;
  }

  updateScale() {
    const { metres, px } = this.map.scaleBar();
    this.scale.firstChild.style.width = `${px}px`;
    this.scale.lastChild.textContent = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
  }

  async elderFences(elderId) {
    if (!this.loaded) return [];
    return this.map.fences.filter((f) => f.elder === elderId);
  }
}
