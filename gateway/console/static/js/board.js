// The live alert board: open alerts by severity then age, a windowed list updated in place.

import { resolveAlert, takeAlert } from "./actions.js";
import {
  OUTCOMES, formatAgo, formatDuration, formatTime, kindName, onLangChange, outcomeName, severityName,
  stateName, t,
} from "./i18n.js";
import { isWaiting, store } from "./store.js";
import { h } from "./ui.js";
import { VirtualList } from "./vlist.js";

export const stats = { renders: 0, firstRenderAt: null, lastApplyMs: null, pendingSince: null, applied: 0 };

const FRESH_MS = 12000;

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export class AlertBoard {
  constructor(section, { onSelect }) {
    this.section = section;
    this.onSelect = onSelect;
    this.mode = "open";
    this.filter = { severity: null, waiting: false, text: "" };
    this.selectedId = null;
    this.fresh = new Map();
    this.frame = 0;
    this.build();
    this.list = new VirtualList(this.scroller, {
      create: () => this.createRow(),
      update: (el, a) => this.updateRow(el, a),
      key: (a) => a.alert_id,
      version: (a) => a._v,
    });
    store.subscribe((change) => {
      if (change.type === "new" && change.live) this.fresh.set(change.alert.alert_id, Date.now() + FRESH_MS);
      this.schedule();
    });
    onLangChange(() => {
      this.applyLabels();
      this.list.refresh();
      this.schedule();
    });
    setInterval(() => this.tick(), 250); // each alert's seconds tick at their own phase
    document.addEventListener("click", (e) => {
      if (!this.menu.hidden && !this.menu.contains(e.target) && !e.target.closest(".act-resolve")) this.closeMenu();
    });
    document.addEventListener("keydown", (e) => e.key === "Escape" && this.closeMenu());
  }

  build() {
    const chip = (key, label) => h("button.chip", { type: "button", dataset: { filter: key } },
      h("span.chip-label", label), h("span.chip-count", "0"));
    this.modeButtons = {
      open: h("button.seg-btn.active", { type: "button", dataset: { mode: "open" } }),
      resolved: h("button.seg-btn", { type: "button", dataset: { mode: "resolved" } }),
    };
    this.chips = {
      all: chip("all"), critical: chip("critical"), warning: chip("warning"), info: chip("info"),
      waiting: chip("waiting"),
    };
    this.chips.all.classList.add("active");
    for (const sev of ["critical", "warning", "info"]) this.chips[sev].classList.add(`chip-${sev}`);
    this.chips.waiting.classList.add("chip-waiting");
    this.search = h("input.search", { type: "search", autocomplete: "off", id: "board-search" });
    this.bannerCount = h("strong", "0");
    this.bannerTimer = h("span.banner-timer", "0:00");
    this.banner = h("div.critical-banner", { hidden: true, role: "alert" },
      h("span.banner-icon", { "aria-hidden": "true" }), h("span.banner-text"), this.bannerCount,
      h("span.banner-sep", "·"), h("span.banner-wait"), this.bannerTimer);
    this.scroller = h("div.vlist", { id: "alert-list", role: "table" });
    this.empty = h("div.board-empty", { hidden: true });
    this.cols = h("div.board-cols", { role: "row" },
      ...["severity", "alert", "elder", "opened", "wait", "actions"].map((c) => h(`div.col-${c}`, { dataset: { col: c } })));
    this.menu = h("div.outcome-menu", { hidden: true, role: "menu" });
    this.detailHost = h("aside.detail", { id: "alert-detail", hidden: true });
    this.section.append(
      h("div.board-head",
        h("div.seg", { role: "tablist" }, this.modeButtons.open, this.modeButtons.resolved),
        h("div.chips", ...Object.values(this.chips)),
        this.search),
      this.banner,
      h("div.board-body",
        h("div.board-table", this.cols, this.scroller, this.empty),
        this.detailHost),
      this.menu,
    );
    for (const [mode, button] of Object.entries(this.modeButtons)) {
      button.addEventListener("click", () => this.setMode(mode));
    }
    for (const [key, button] of Object.entries(this.chips)) {
      button.addEventListener("click", () => this.setChip(key));
    }
    this.search.addEventListener("input", () => {
      this.filter.text = this.search.value.trim().toLowerCase();
      this.schedule();
    });
    this.scroller.addEventListener("click", (e) => this.onListClick(e));
    this.applyLabels();
  }

  applyLabels() {
    this.modeButtons.open.textContent = t("board.open");
    this.modeButtons.resolved.textContent = t("board.resolved");
    this.chips.all.firstChild.textContent = t("board.all");
    for (const sev of ["critical", "warning", "info"]) this.chips[sev].firstChild.textContent = severityName(sev);
    this.chips.waiting.firstChild.textContent = t("board.waiting");
    this.search.placeholder = t("board.search");
    this.banner.querySelector(".banner-text").textContent = t("board.unackCritical");
    this.banner.querySelector(".banner-wait").textContent = t("detail.waiting");
    for (const col of this.cols.children) col.textContent = t(`board.col.${col.dataset.col}`);
  }

  setMode(mode) {
    this.mode = mode;
    for (const [m, b] of Object.entries(this.modeButtons)) b.classList.toggle("active", m === mode);
    this.section.classList.toggle("showing-resolved", mode === "resolved");
    if (mode === "resolved" && !store.resolvedLoaded) this.onNeedResolved?.();
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  setChip(key) {
    if (key === "all") this.filter = { ...this.filter, severity: null, waiting: false };
    else if (key === "waiting") this.filter.waiting = !this.filter.waiting;
    else this.filter.severity = this.filter.severity === key ? null : key;
    const f = this.filter;
    this.chips.all.classList.toggle("active", !f.severity && !f.waiting);
    for (const sev of ["critical", "warning", "info"]) this.chips[sev].classList.toggle("active", f.severity === sev);
    this.chips.waiting.classList.toggle("active", f.waiting);
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  createRow() {
    const row = h("div.arow", { role: "row", tabIndex: 0 });
    row.sevEl = h("span.sev-badge");
    row.kindEl = h("div.kind");
    row.codeEl = h("div.code");
    row.elderEl = h("div.elder");
    row.placeEl = h("div.place");
    row.openedEl = h("div.opened");
    row.agoEl = h("div.ago");
    row.timerEl = h("span.timer");
    row.stateEl = h("span.state");
    row.takeBtn = h("button.btn.btn-take.act-take", { type: "button" });
    row.resolveBtn = h("button.btn.btn-ghost.act-resolve", { type: "button" });
    row.append(
      h("div.cell.c-sev", row.sevEl),
      h("div.cell.c-alert", row.kindEl, row.codeEl),
      h("div.cell.c-elder", row.elderEl, row.placeEl),
      h("div.cell.c-opened", row.openedEl, row.agoEl),
      h("div.cell.c-wait", row.timerEl, row.stateEl),
      h("div.cell.c-actions", row.takeBtn, row.resolveBtn),
    );
    return row;
  }

  updateRow(row, a) {
    const waiting = isWaiting(a);
    const fresh = (this.fresh.get(a.alert_id) || 0) > Date.now();
    row.className = `arow sev-${a.severity} state-${a.state}${waiting ? " waiting" : ""}`
      + `${a.alert_id === this.selectedId ? " selected" : ""}${fresh ? " fresh" : ""}`;
    row.dataset.alertId = a.alert_id;
    row.dataset.severity = a.severity;
    row.dataset.state = a.state;
    row.sevEl.textContent = severityName(a.severity);
    row.kindEl.textContent = kindName(a.kind);
    row.codeEl.textContent = a.code || `#${a.alert_id}`;
    row.elderEl.textContent = a.elder_name || a.elder_id || a.device_id;
    row.placeEl.textContent = [a.community, a.grid].filter(Boolean).join(" · ");
    row.openedEl.textContent = formatTime(a.opened_at);
    row.takeBtn.textContent = t("action.take");
    row.resolveBtn.textContent = t("action.resolve");
    row.takeBtn.hidden = !waiting;
    row.resolveBtn.hidden = a.state === "resolved";
    this.updateTimer(row, a, Date.now());
  }

  updateTimer(row, a, now) {
    setText(row.agoEl, formatAgo(now - a._t));
    if (isWaiting(a)) {
      setText(row.timerEl, formatDuration(now - a._t));
      row.timerEl.hidden = false;
      setText(row.stateEl, stateName(a.state));
    } else {
      row.timerEl.hidden = true;
      let text = stateName(a.state);
      if (a.state === "acknowledged" && a.acknowledged_by) text = t("board.takenBy", { name: a.acknowledged_by });
      else if (a.state === "on_scene") text = t("board.onScene", { name: a.acknowledged_by || "" });
      else if (a.state === "resolved" && a.outcome) text = `${outcomeName(a.outcome)} · ${formatTime(a.resolved_at, { seconds: false })}`;
      setText(row.stateEl, text);
    }
  }

  tick() {
    const now = Date.now();
    for (const row of this.list.shownRows()) if (row._item) this.updateTimer(row, row._item, now);
    for (const [id, until] of this.fresh) {
      if (until <= now) {
        this.fresh.delete(id);
        for (const row of this.list.shownRows()) if (row._key === id) row.classList.remove("fresh");
      }
    }
    if (!this.banner.hidden && this.oldestWaitingCritical !== null) {
      setText(this.bannerTimer, formatDuration(now - this.oldestWaitingCritical));
    }
  }

  items() {
    const source = this.mode === "open" ? store.open.list : store.resolved.list;
    const { severity, waiting, text } = this.filter;
    if (!severity && !waiting && !text) return source;
    return source.filter((a) => (!severity || a.severity === severity) && (!waiting || isWaiting(a))
      && (!text || a._search.includes(text)));
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const items = this.items();
    this.list.items = items;
    this.list.render();
    const c = store.counts();
    this.chips.all.lastChild.textContent = c.all;
    for (const sev of ["critical", "warning", "info"]) this.chips[sev].lastChild.textContent = c[sev];
    this.chips.waiting.lastChild.textContent = c.waiting;
    this.oldestWaitingCritical = c.oldestWaitingCritical;
    this.banner.hidden = c.waitingCritical === 0;
    this.bannerCount.textContent = c.waitingCritical;
    if (c.oldestWaitingCritical !== null) this.bannerTimer.textContent = formatDuration(Date.now() - c.oldestWaitingCritical);
    this.onCounts?.(c);
    const filtered = this.filter.severity || this.filter.waiting || this.filter.text;
    this.empty.hidden = items.length > 0;
    this.empty.textContent = filtered ? t("board.emptyFilter")
      : t(this.mode === "open" ? "board.empty" : "board.emptyResolved");
    stats.renders += 1;
    const now = performance.now();
    if (stats.firstRenderAt === null && items.length) stats.firstRenderAt = now;
    if (stats.pendingSince !== null) {
      stats.lastApplyMs = now - stats.pendingSince;
      stats.pendingSince = null;
      stats.applied += 1;
    }
  }

  select(id) {
    this.selectedId = id;
    for (const row of this.list.shownRows()) row.classList.toggle("selected", row._key === id);
    this.section.classList.toggle("has-detail", id !== null);
    const index = this.list.items.findIndex((a) => a.alert_id === id);
    if (index >= 0) this.list.scrollToIndex(index);
  }

  onListClick(e) {
    const row = e.target.closest(".arow");
    if (!row || !row._item) return;
    const alert = store.get(row._item.alert_id) || row._item;
    if (e.target.closest(".act-take")) {
      e.stopPropagation();
      takeAlert(alert);
    } else if (e.target.closest(".act-resolve")) {
      e.stopPropagation();
      this.openMenu(alert, e.target.closest(".act-resolve"));
    } else {
      this.onSelect(alert.alert_id);
    }
  }

  openMenu(alert, anchor) {
    this.menu.replaceChildren(h("div.menu-title", t("detail.resolveWith")),
      ...OUTCOMES.map((o) => h("button.menu-item", {
        type: "button", role: "menuitem", dataset: { outcome: o },
        onclick: () => {
          this.closeMenu();
          resolveAlert(alert, o);
        },
      }, outcomeName(o))));
    this.menu.hidden = false;
    const box = anchor.getBoundingClientRect();
    const host = this.section.getBoundingClientRect();
    const menuH = this.menu.offsetHeight;
    const below = box.bottom - host.top + 4;
    const top = box.bottom + menuH + 8 > window.innerHeight ? box.top - host.top - menuH - 4 : below;
    this.menu.style.top = `${Math.max(0, top)}px`;
    this.menu.style.left = `${Math.max(8, Math.min(box.right - host.left - this.menu.offsetWidth, host.width - this.menu.offsetWidth - 8))}px`;
  }

  closeMenu() {
    this.menu.hidden = true;
  }
}
