// Open alerts in board order (severity, then oldest first), kept sorted incrementally:
// an SSE event moves one entry by binary search instead of re-sorting or re-rendering all.

import { toMs } from "./i18n.js";

const RANK = { critical: 0, warning: 1, info: 2 };
const WAITING_STATES = new Set(["confirming", "notifying", "open", "notified"]);

export const isWaiting = (a) => WAITING_STATES.has(a.state);
export const isResolved = (a) => a.state === "resolved";
export const severityRank = (s) => RANK[s] ?? 3;

function prepare(a, version) {
  a._rank = severityRank(a.severity);
  a._t = toMs(a.opened_at);
  a._r = toMs(a.resolved_at) || 0;
  a._v = version;
  a._search = [a.code, a.elder_name, a.elder_id, a.community, a.grid, a.device_id, a.kind]
    .filter(Boolean).join(" ").toLowerCase();
  return a;
}

const openOrder = (a, b) => a._rank - b._rank || a._t - b._t || a.alert_id - b.alert_id;
const resolvedOrder = (a, b) => b._r - a._r || b.alert_id - a.alert_id;

function indexOf(list, item, cmp) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cmp(list[mid], item) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

class SortedAlerts {
  constructor(cmp) {
    this.cmp = cmp;
    this.byId = new Map();
    this.list = [];
  }

  reset(alerts) {
    this.byId = new Map(alerts.map((a) => [a.alert_id, a]));
    this.list = [...this.byId.values()].sort(this.cmp);
  }

  remove(id) {
    const old = this.byId.get(id);
    if (!old) return null;
    const at = indexOf(this.list, old, this.cmp);
    if (this.list[at] === old) this.list.splice(at, 1);
    else this.list.splice(this.list.indexOf(old), 1);
    this.byId.delete(id);
    return old;
  }

  put(a) {
    const old = this.remove(a.alert_id);
    this.list.splice(indexOf(this.list, a, this.cmp), 0, a);
    this.byId.set(a.alert_id, a);
    return old;
  }
}

export class AlertStore {
  constructor() {
    this.open = new SortedAlerts(openOrder);
    this.resolved = new SortedAlerts(resolvedOrder);
    this.resolvedLoaded = false;
    this.version = 0;
    this.listeners = new Set();
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of this.listeners) fn(change);
  }

  get(id) {
    return this.open.byId.get(id) || this.resolved.byId.get(id) || null;
  }

  resetOpen(alerts) {
    this.open.reset(alerts.filter((a) => !isResolved(a)).map((a) => prepare(a, ++this.version)));
    this.emit({ type: "reset" });
  }

  resetResolved(alerts) {
    this.resolved.reset(alerts.filter(isResolved).map((a) => prepare(a, ++this.version)));
    this.resolvedLoaded = true;
    this.emit({ type: "reset" });
  }

  /** Apply one AlertSummary (from SSE or an action's answer); returns what changed. */
  upsert(raw, live = false) {
    const a = prepare({ ...raw }, ++this.version);
    const before = this.get(a.alert_id);
    if (isResolved(a)) {
      this.open.remove(a.alert_id);
      if (this.resolvedLoaded) this.resolved.put(a);
    } else {
      this.resolved.remove(a.alert_id);
      this.open.put(a);
    }
    const change = { type: before ? "update" : "new", alert: a, before, live };
    this.emit(change);
    return change;
  }

  /** Worst open severity of one elder, from what this user can see. */
  worstFor(elderId) {
    let best = null;
    for (const a of this.open.list) {
      if (a.elder_id === elderId && (best === null || a._rank < severityRank(best))) best = a.severity;
    }
    return best;
  }

  counts() {
    const c = { all: 0, critical: 0, warning: 0, info: 0, waiting: 0, waitingCritical: 0, oldestWaitingCritical: null };
    for (const a of this.open.list) {
      c.all += 1;
      if (c[a.severity] !== undefined) c[a.severity] += 1;
      if (isWaiting(a)) {
        c.waiting += 1;
        if (a.severity === "critical") {
          c.waitingCritical += 1;
          if (c.oldestWaitingCritical === null || a._t < c.oldestWaitingCritical) c.oldestWaitingCritical = a._t;
        }
      }
    }
    return c;
  }
}

export const store = new AlertStore();
