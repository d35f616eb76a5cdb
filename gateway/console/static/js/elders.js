// Elders: a searchable list, and one elder's page with latest values and readings charts.

import { api, query } from "./api.js";
import { lineChart } from "./chart.js";
import {
  conditionName, deviceTypeName, formatAgo, formatDateTime, formatTime, kindName, onLangChange, relationName,
  severityName, stateName, t,
} from "./i18n.js";
import { isWaiting, store } from "./store.js";
import { clear, h } from "./ui.js";

const PAGE = 100;
// 24 h: 5-minute points from the readings; 7 days: hourly and 30 days: daily, from the rollups
const RANGES = { "24h": 24 * 3600 * 1000, "7d": 7 * 24 * 3600 * 1000, "30d": 30 * 24 * 3600 * 1000 };
const CHARTS = [
  { key: "hr", metrics: ["hr"], label: "elder.hr", unit: "unit.bpm", band: [50, 110], colors: ["#e0475b"], floor: 0,
    continuous: true },
  { key: "spo2", metrics: ["spo2"], label: "elder.spo2", unit: "unit.pct", band: [94, 100], colors: ["#2f7ee6"], ceil: 100,
    continuous: true },
  { key: "glucose", metrics: ["glucose_mmol"], label: "elder.glucose", unit: "unit.mmol", band: [3.9, 10], colors: ["#8b5cf6"], decimals: 1, floor: 0 },
  { key: "bp", metrics: ["systolic", "diastolic"], label: "elder.bp", unit: "unit.mmHg", band: [60, 140],
    colors: ["#d9480f", "#0f766e"], seriesLabels: ["elder.systolic", "elder.diastolic"] },
];

export class EldersView {
  constructor(section) {
    this.section = section;
    this.offset = 0;
    this.q = "";
    this.total = 0;
    this.search = h("input.search", { type: "search", id: "elder-search", autocomplete: "off" });
    this.totalEl = h("span.muted");
    this.body = h("tbody");
    this.headRow = h("tr");
    this.pager = h("div.pager");
    this.section.append(
      h("div.page-head", h("h2.page-title", { dataset: { i18n: "nav.elders" } }), this.search, this.totalEl),
      h("div.table-wrap.card", h("table.etable", h("thead", this.headRow), this.body)),
      this.pager,
    );
    let timer = 0;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        this.q = this.search.value.trim();
        this.offset = 0;
        this.load();
      }, 250);
    });
    this.body.addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-elder-id]");
      if (tr) location.hash = `#/elder/${encodeURIComponent(tr.dataset.elderId)}`;
    });
    onLangChange(() => this.render());
  }

  async show() {
    await this.load();
  }

  async load() {
    const data = await api(`/api/elders${query({ q: this.q, limit: PAGE, offset: this.offset })}`);
    this.elders = data.elders || [];
    this.total = data.total ?? this.elders.length;
    this.render();
  }

  render() {
    this.search.placeholder = t("elders.search");
    this.totalEl.textContent = t("elders.total", { n: this.total });
    this.headRow.replaceChildren(...["elders.col.name", "elders.col.place", "elders.col.alerts"].map((k) => h("th", t(k))));
    const rows = (this.elders || []).map((e) => h("tr", { dataset: { elderId: e.elder_id }, tabIndex: 0 },
      h("td", h("strong", e.name), h("span.muted", ` ${e.elder_id}`)),
      h("td", [e.community, e.grid].filter(Boolean).join(" · ")),
      h("td", e.open_alerts ? h(`span.sev-badge.sev-${e.worst_severity || "info"}`, `${e.open_alerts} · ${severityName(e.worst_severity)}`) : "—")));
    this.body.replaceChildren(...(rows.length ? rows : [h("tr", h("td.muted", { colSpan: 3 }, t("elders.none")))]));
    const pages = Math.ceil(this.total / PAGE);
    const page = Math.floor(this.offset / PAGE) + 1;
    this.pager.replaceChildren(
      h("button.btn.btn-small.btn-ghost", { type: "button", disabled: this.offset === 0, onclick: () => { this.offset -= PAGE; this.load(); } }, "‹"),
      h("span.muted", `${page} / ${Math.max(1, pages)}`),
      h("button.btn.btn-small.btn-ghost", { type: "button", disabled: page >= pages, onclick: () => { this.offset += PAGE; this.load(); } }, "›"),
    );
  }
}

export class ElderPage {
  constructor(section) {
    this.section = section;
    this.range = "24h";
    this.id = null;
    store.subscribe((change) => {
      if (this.id && change.alert?.elder_id === this.id) this.renderAlerts();
    });
    onLangChange(() => this.id && this.render());
    new ResizeObserver(() => this.id && this.renderCharts()).observe(section);
  }

  async show(id, { canGoBack = true } = {}) {
    this.canGoBack = canGoBack;
    if (id !== this.id) {
      this.id = id;
      this.elder = null;
      this.readings = {};
      clear(this.section).append(h("p.muted.pad", t("detail.loading")));
    }
    try {
      this.elder = await api(`/api/elders/${encodeURIComponent(id)}`);
    } catch (error) {
      clear(this.section).append(h("p.error.pad", error.detail || error.message));
      return;
    }
    this.render();
    await this.loadReadings();
  }

  async loadReadings() {
    const id = this.id;
    const range = this.range;
    const metrics = CHARTS.flatMap((c) => c.metrics);
    const results = await Promise.all(metrics.map((metric) =>
      api(`/api/elders/${encodeURIComponent(id)}/readings${query({ metric, range })}`).catch(() => ({ points: [] }))));
    if (id !== this.id || range !== this.range) return;
    this.readings = Object.fromEntries(metrics.map((m, i) => [m, results[i]?.points || []]));
    this.renderCharts();
  }

  render() {
    const e = this.elder;
    if (!e) return;
    // address, conditions and living alone: top-level fields when the API gives them, else in the profile
    const profile = { ...(e.profile || {}), ...Object.fromEntries(["address", "conditions", "lives_alone"]
      .filter((k) => e[k] !== undefined && e[k] !== null).map((k) => [k, e[k]])) };
    const latest = e.latest || {};
    const tile = (label, value, unit, extra, small) => h(`div.tile${small ? ".tile-small" : ""}`, h("div.tile-label", label),
      h("div.tile-value", value ?? "—", value !== null && value !== undefined ? h("span.tile-unit", unit) : null),
      extra ? h("div.tile-extra", extra) : null);
    const num = (v, d = 0) => (v === null || v === undefined ? null : Number(v).toFixed(d));
    const bp = latest.systolic ? `${num(latest.systolic)}/${num(latest.diastolic)}` : null;
    const position = Number.isFinite(latest.lat) ? `${latest.lat.toFixed(5)}, ${latest.lon.toFixed(5)}` : null;
    this.rangeButtons = Object.keys(RANGES).map((r) => h(`button.seg-btn${r === this.range ? ".active" : ""}`, {
      type: "button", dataset: { range: r }, onclick: () => {
        this.range = r;
        for (const b of this.rangeButtons) b.classList.toggle("active", b.dataset.range === r);
        this.loadReadings();
      },
    }, t(`elder.range${r}`)));
    this.chartHosts = {};
    const charts = CHARTS.map((c) => {
      this.chartHosts[c.key] = h("div.chart-host", { dataset: { chart: c.key } });
      return h("div.chart-card.card", h("div.chart-title", h("strong", t(c.label)), h("span.muted", t(c.unit))), this.chartHosts[c.key]);
    });
    this.alertsBox = h("div.elder-alerts");
    clear(this.section).append(
      h("div.elder-head.card",
        this.canGoBack ? h("a.back-link", { href: "#/elders" }, `‹ ${t("action.back")}`) : null,
        h("div.elder-name", h("h2", e.name), h("span.muted", e.elder_id)),
        h("div.elder-meta", [e.community, e.grid].filter(Boolean).join(" · "),
          profile.lives_alone ? h("span.chip-static.warn", t("elder.livesAlone")) : null,
          ...(profile.conditions || []).map((c) => h("span.chip-static", conditionName(c)))),
        profile.address ? h("div.elder-address", `${t("elder.address")}：${profile.address}`) : null),
      h("div.tiles",
        tile(t("elder.hr"), num(latest.hr), t("unit.bpm")),
        tile(t("elder.spo2"), num(latest.spo2), t("unit.pct")),
        tile(t("elder.glucose"), num(latest.glucose_mmol, 1), t("unit.mmol")),
        tile(t("elder.bp"), bp, t("unit.mmHg")),
        tile(t("elder.battery"), num(latest.battery), "%"),
        tile(t("elder.position"), position, "", latest.time ? `${formatTime(latest.time)} · ${formatAgo(Date.now() - Date.parse(latest.time))}` : null, true)),
      h("section.card.pad", h("h3", t("elder.alerts")), this.alertsBox),
      h("div.charts-head", h("h3", t("elder.trends")), h("div.seg", ...this.rangeButtons)),
      h("div.charts", ...charts),
      h("div.elder-lists",
        this.listCard(t("elder.devices"), (e.devices || []).map((d) => h("li",
          h(`span.dot.${d.online ? "online" : "offline"}`), h("div", h("strong", deviceTypeName(d.device_type)), ` ${d.device_id}`),
          h("div.muted", [d.online ? t("elder.online") : t("elder.offline"),
            d.battery !== null && d.battery !== undefined ? `${Math.round(d.battery)}%` : null,
            d.last_seen ? `${t("elder.lastSeen")} ${formatDateTime(d.last_seen)}` : null].filter(Boolean).join(" · "))))),
        this.listCard(t("elder.contacts"), (e.contacts || []).map((c) => h("li",
          h("span.dot.contact"), h("div", h("strong", c.name), c.relation ? h("span.muted", ` · ${relationName(c.relation)}`) : null),
          c.phone ? h("div.muted", c.phone) : null))),
        this.listCard(t("elder.fences"), (e.fences?.features || []).map((f) => h("li",
          h("span.legend-fence"), h("div", h("strong", f.properties?.name || f.id)),
          h("div.muted", [f.geometry?.type === "Point" ? `⌀ ${Math.round(2 * (f.properties?.radius_m || 0))} m` : t("elder.polygon"),
            f.properties?.active_hours || t("elder.fenceAlways"), f.properties?.severity ? severityName(f.properties.severity) : null]
            .filter(Boolean).join(" · ")))))),
    );
    this.renderAlerts();
    this.renderCharts();
  }

  listCard(title, items) {
    return h("section.card.pad", h("h3", title), items.length ? h("ul.plain-list", ...items) : h("p.muted", "—"));
  }

  renderAlerts() {
    if (!this.alertsBox) return;
    const mine = store.open.list.filter((a) => a.elder_id === this.id);
    this.alertsBox.replaceChildren(...(mine.length ? mine.map((a) => h("a.mini-alert", { href: `#/board/${a.alert_id}` },
      h(`span.sev-badge.sev-${a.severity}`, severityName(a.severity)), h("strong", kindName(a.kind)),
      h("span.muted", ` ${a.code} · ${formatTime(a.opened_at)} · `), isWaiting(a) ? h("span.waiting-text", stateName(a.state)) : stateName(a.state)))
      : [h("p.muted", t("elder.noAlerts"))]));
  }

  renderCharts() {
    if (!this.chartHosts) return;
    for (const c of CHARTS) {
      const host = this.chartHosts[c.key];
      if (!host.isConnected) continue;
      lineChart(host, {
        series: c.metrics.map((m, i) => ({
          label: c.seriesLabels ? t(c.seriesLabels[i]) : t(c.label), color: c.colors[i], points: this.readings?.[m] || [],
          continuous: c.continuous,
        })),
        rangeMs: RANGES[this.range], band: c.band, unit: t(c.unit), decimals: c.decimals, floor: c.floor, ceil: c.ceil,
        emptyText: this.readings ? t("elder.noData") : t("detail.loading"),
      });
    }
  }
}
