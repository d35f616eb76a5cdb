// One alert in full: take it, resolve it with an outcome, its trail, timeline and notifications.

import { addNote, markOnScene, resolveAlert, takeAlert } from "./actions.js";
import { api } from "./api.js";
import {
  OUTCOMES, channelName, eventName, formatDateTime, formatDuration, formatTime, kindName, onLangChange,
  outcomeName, purposeName, roleName, severityName, stateName, t,
} from "./i18n.js";
import { drawTrailThumbnail, fencesToWorld } from "./map.js";
import { isWaiting, store } from "./store.js";
import { clear, h } from "./ui.js";

const ETA_CHOICES = [0, 5, 10, 15, 30];

const NOISE = new Set(["kind", "policy", "severity", "summary", "roles", "reached", "tier", "round", "purpose"]);
const tidy = (text) => String(text).replace(/\d+\.\d{3,}/g, (n) => Number(n).toFixed(1));

/** One line saying what a timeline entry's detail means, per event. */
function detailText(event, detail) {
  if (!detail || typeof detail !== "object") return detail ? String(detail) : "";
  const tier = Number.isInteger(detail.tier) ? t("detail.tier", { n: detail.tier + 1 }) : null;
  const parts = [];
  if (event === "tier_fired") {
    parts.push(tier, (detail.roles || []).map(roleName).join("、"));
    if (detail.round > 1) parts.push(t("detail.round", { n: detail.round }));
    if (Array.isArray(detail.reached) && detail.reached.length) parts.push(`→ ${detail.reached.join("、")}`);
  } else if (event === "notified" || event.startsWith("informed_")) {
    parts.push(detail.purpose ? purposeName(detail.purpose) : null, tier);
  } else if (event === "asked_elder" && detail.window_s) {
    parts.push(detail.device, t("detail.windowS", { n: detail.window_s }));
  }
  if (detail.eta_min) parts.push(t("board.eta", { min: detail.eta_min }));
  if (detail.outcome) parts.push(outcomeName(detail.outcome));
  if (detail.text) parts.push(detail.text);
  if (detail.note) parts.push(detail.note);
  if (detail.reason && event !== "tier_fired") parts.push(tidy(detail.reason));
  if (!parts.some(Boolean)) {
    for (const [k, v] of Object.entries(detail)) {
      if (v === null || v === undefined || v === "" || NOISE.has(k) || typeof v === "object") continue;
      parts.push(`${k}: ${tidy(v)}`);
    }
  }
  return parts.filter(Boolean).join(" · ");
}

export class AlertDetail {
  constructor(host, { onClose, fencesFor }) {
    this.host = host;
    this.onClose = onClose;
    this.fencesFor = fencesFor;
    this.id = null;
    this.data = null;
    this.refetchTimer = 0;
    this.noteDraft = "";
    this.fences = new Map(); // elder id -> fences in world units, for the trail thumbnail
    store.subscribe((change) => {
      if (this.id !== null && change.alert?.alert_id === this.id) {
        this.data = { ...this.data, ...change.alert };
        this.render();
        clearTimeout(this.refetchTimer);
        this.refetchTimer = setTimeout(() => this.fetch(), 400);
      }
    });
    onLangChange(() => this.render());
    setInterval(() => this.tick(), 250);
  }

  async open(id) {
    if (this.id !== id) {
      this.id = id;
      this.data = store.get(id);
      this.noteDraft = "";
    }
    this.host.hidden = false;
    this.render();
    await this.fetch();
  }

  close() {
    this.id = null;
    this.data = null;
    this.host.hidden = true;
    clear(this.host);
  }

  async fetch() {
    const id = this.id;
    if (id === null) return;
    try {
      const data = await api(`/api/alerts/${id}`);
      if (this.id !== id) return;
      this.data = data;
      this.full = true;
      if (data.elder_id && !this.fences.has(data.elder_id)) {
        const fences = await api(`/api/elders/${encodeURIComponent(data.elder_id)}/fences`).catch(() => null);
        this.fences.set(data.elder_id, fencesToWorld(fences));
      }
      if (this.id !== id) return;
    } catch (error) {
      if (this.id !== id) return;
      this.error = error;
      if (!this.data) this.data = { alert_id: id, error: error.detail || error.message };
    }
    this.render();
  }

  tick() {
    if (this.timerEl && this.data && isWaiting(this.data)) {
      const text = formatDuration(Date.now() - Date.parse(this.data.opened_at));
      if (this.timerEl.textContent !== text) this.timerEl.textContent = text;
    }
  }

  render() {
    const a = this.data;
    if (this.id === null) return;
    const note = this.host.querySelector("textarea.note-input");
    if (note) this.noteDraft = note.value;
    const scroll = this.host.scrollTop;
    clear(this.host);
    const close = h("button.icon-btn.detail-close", { type: "button", "aria-label": t("action.close"), onclick: () => this.onClose() }, "×");
    if (!a || a.error || !a.kind) {
      this.host.append(h("div.detail-head", close), h("p.muted.pad", a?.error || t("detail.loading")));
      return;
    }
    const waiting = isWaiting(a);
    this.timerEl = waiting ? h("span.big-timer", formatDuration(Date.now() - Date.parse(a.opened_at))) : null;
    let status;
    if (waiting) {
      status = h("div.status-strip.waiting", h("span.state-pill", stateName(a.state)), h("span.muted", t("detail.waiting")), this.timerEl);
    } else if (a.state === "resolved") {
      status = h("div.status-strip.resolved", h("span.state-pill", stateName(a.state)),
        h("span", `${outcomeName(a.outcome)} · ${formatTime(a.resolved_at)}`));
    } else {
      status = h("div.status-strip.taken", h("span.state-pill", stateName(a.state)),
        h("span", a.state === "on_scene" ? t("board.onScene", { name: a.acknowledged_by || "" })
          : t("board.takenBy", { name: a.acknowledged_by || "" })),
        h("span.muted", formatTime(a.acknowledged_at)));
    }
    const fact = (label, ...value) => h("div.fact", h("dt", label), h("dd", ...value));
    const elderLink = a.elder_id
      ? h("a", { href: `#/elder/${encodeURIComponent(a.elder_id)}` }, a.elder_name || a.elder_id) : "—";
    this.host.append(
      h("div.detail-head", h(`span.sev-badge.sev-${a.severity}`, severityName(a.severity)),
        h("h2.detail-title", kindName(a.kind)), h("span.detail-code", a.code), close),
      status,
      h("dl.facts",
        fact(t("detail.elder"), elderLink),
        fact(t("detail.place"), [a.community, a.grid].filter(Boolean).join(" · ") || "—"),
        fact(t("detail.device"), a.device_id || "—"),
        fact(t("detail.opened"), formatDateTime(a.opened_at))),
      this.renderActions(a, waiting),
      this.renderPosition(a),
      this.renderTimeline(a),
      this.renderNotifications(a),
      this.renderNote(a),
    );
    this.host.scrollTop = scroll;
    const canvas = this.host.querySelector("canvas.trail-thumb");
    if (canvas) {
      requestAnimationFrame(() => drawTrailThumbnail(canvas, {
        trail: a.trail || [], position: a.position, severity: a.severity,
        fences: this.fences.get(a.elder_id) || this.fencesFor(a.elder_id),
      }));
    }
  }

  renderActions(a, waiting) {
    if (a.state === "resolved") return null;
    const box = h("div.actions-card");
    if (waiting) {
      const eta = h("select.eta-select", { id: "eta-select", "aria-label": t("detail.eta") },
        ...ETA_CHOICES.map((m) => h("option", { value: m }, m ? `${m} ${t("unit.min")}` : t("detail.etaNone"))));
      box.append(h("div.take-row",
        h("button.btn.btn-take.btn-large", { type: "button", id: "detail-take",
          onclick: (e) => {
            e.currentTarget.disabled = true;
            takeAlert(a, { etaMin: Number(eta.value) || undefined });
          } }, t("action.take")),
        h("label.eta-label", t("detail.eta"), eta)));
    }
    if (a.state === "acknowledged") {
      box.append(h("div.take-row", h("button.btn.btn-primary", { type: "button", id: "detail-on-scene",
        onclick: (e) => {
          e.currentTarget.disabled = true;
          markOnScene(a);
        } }, t("action.onScene"))));
    }
    box.append(h("div.outcome-title", t("detail.resolveWith")),
      h("div.outcomes", ...OUTCOMES.map((o) => h("button.btn.btn-outcome", {
        type: "button", dataset: { outcome: o },
        onclick: (e) => {
          e.currentTarget.disabled = true;
          const text = this.host.querySelector("textarea.note-input")?.value.trim();
          resolveAlert(a, o, text || undefined);
        },
      }, outcomeName(o)))));
    return box;
  }

  renderPosition(a) {
    const has = (a.trail && a.trail.length) || a.position;
    return h("section.detail-section",
      h("div.section-head", h("h3", t("detail.position")),
        has ? h("a.link", { href: `#/map/${a.alert_id}` }, t("action.onMap")) : null),
      has ? h("canvas.trail-thumb", { id: "trail-thumb" }) : h("p.muted", t("detail.noPosition")));
  }

  renderTimeline(a) {
    const rows = (a.timeline || []).map((e) => h(`li.tl-item.tl-${e.event}`,
      h("span.tl-time", formatTime(e.at)),
      h("div.tl-body", h("strong", eventName(e.event)),
        e.actor && e.actor !== "system" ? h("span.tl-actor", e.actor) : null,
        e.channel ? h("span.tl-channel", channelName(e.channel)) : null,
        detailText(e.event, e.detail) ? h("div.tl-detail", detailText(e.event, e.detail)) : null)));
    return h("section.detail-section", h("h3", t("detail.timeline")),
      rows.length ? h("ol.timeline", ...rows) : h("p.muted", this.full ? "—" : t("detail.loading")));
  }

  renderNotifications(a) {
    const list = a.notifications || [];
    const table = list.length ? h("div.table-wrap", h("table.ntable",
      h("thead", h("tr", ...["detail.opened", "notif.recipient", "notif.channel", "notif.purpose", "notif.tier", "notif.status"]
        .map((k) => h("th", k === "detail.opened" ? "" : t(k))))),
      h("tbody", ...list.map((n) => h("tr",
        h("td.nowrap", formatTime(n.at)),
        h("td", n.recipient_name, h("span.muted", ` ${roleName(n.role)}`)),
        h("td", channelName(n.channel)),
        h("td", purposeName(n.purpose)),
        h("td", Number.isInteger(n.tier) ? n.tier + 1 : ""),
        h(`td.nstatus.st-${n.status}`, n.status)))))) : h("p.muted", t("detail.noNotifications"));
    return h("section.detail-section", h("h3", t("detail.notifications")), table);
  }

  renderNote(a) {
    const input = h("textarea.note-input", { rows: 2, placeholder: t("detail.notePlaceholder"), value: this.noteDraft });
    return h("section.detail-section",
      h("h3", t("detail.note")), input,
      h("div.note-row", h("button.btn.btn-small", { type: "button", onclick: async () => {
        const text = input.value.trim();
        if (!text) return;
        if (await addNote(a, text)) {
          input.value = "";
          this.noteDraft = "";
          this.fetch();
        }
      } }, t("action.addNote"))));
  }
}
