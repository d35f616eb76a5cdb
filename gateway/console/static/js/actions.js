// What an operator does to an alert: take it, resolve it with an outcome, add a note.

import { api } from "./api.js";
import { outcomeName, t } from "./i18n.js";
import { store } from "./store.js";
import { toast } from "./ui.js";

async function act(path, body, success) {
  try {
    const summary = await api(path, { method: "POST", body });
    if (summary && summary.alert_id !== undefined) store.upsert(summary);
    if (success) toast(success(summary), "success");
    return summary;
  } catch (error) {
    toast(t("toast.error", { detail: error.detail || error.message }), "error", 6000);
    return null;
  }
}

export function takeAlert(alert, { etaMin, note } = {}) {
  const body = {};
  if (etaMin) body.eta_min = etaMin;
  if (note) body.note = note;
  return act(`/api/alerts/${alert.alert_id}/ack`, body, () => t("toast.taken", { code: alert.code }));
}

export function markOnScene(alert) {
  return act(`/api/alerts/${alert.alert_id}/on-scene`, undefined, () => t("toast.onScene", { code: alert.code }));
}

export function resolveAlert(alert, outcome, note) {
  const body = { outcome };
  if (note) body.note = note;
  return act(`/api/alerts/${alert.alert_id}/resolve`, body,
    () => t("toast.resolved", { code: alert.code, outcome: outcomeName(outcome) }));
}

export async function addNote(alert, text) {
  try {
    await api(`/api/alerts/${alert.alert_id}/notes`, { method: "POST", body: { text } });
    toast(t("toast.noteAdded"), "success");
    return true;
  } catch (error) {
    toast(t("toast.error", { detail: error.detail || error.message }), "error", 6000);
    return false;
  }
}
