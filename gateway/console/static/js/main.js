// The console's entry: sign-in, the top bar, the hash router and the live feed.

import { ApiError, api, query, setToken, setUnauthorizedHandler } from "./api.js";
import { AlertBoard, stats as boardStats } from "./board.js";
import { AlertDetail } from "./detail.js";
import { ElderPage, EldersView } from "./elders.js";
import { applyStatic, initialLang, kindName, lang, roleName, setLang, shanghaiParts, t } from "./i18n.js";
import { LiveFeed, liveStats } from "./live.js";
import { MapView } from "./mapview.js";
import { alarm, isMuted, setMuted, soundStats, unlockAudio } from "./sound.js";
import { store } from "./store.js";
import { toast } from "./ui.js";

const PAGE = 1000;
const REMIND_MS = 30000;

const $ = (id) => document.getElementById(id);
const app = {
  user: null, settings: { tile_url: null }, board: null, detail: null, map: null, elders: null, elder: null,
  feed: null, lastReminder: 0, connected: false,
};

window.eldercareConsole = {
  stats: { board: boardStats, live: liveStats, sound: soundStats, map: () => app.map && { ...app.map.stats,
    draws: app.map.map.drawCount, drawMs: app.map.map.drawMs, shown: app.map.map.shownElders,
    readyAt: app.map.map.firstDataDrawAt } },
  store,
};

function showLogin(message) {
  app.feed?.stop();
  $("app").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-form").username.focus();
}

async function signIn(event) {
  event.preventDefault();
  unlockAudio();
  const form = event.currentTarget;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const data = await api("/api/login", { method: "POST", quiet401: true,
      body: { username: form.username.value.trim(), password: form.password.value } });
    setToken(data.token);
    form.password.value = "";
    await start(data.user);
  } catch (error) {
    const bad = error instanceof ApiError && (error.status === 401 || error.status === 400 || error.status === 422);
    const throttled = error instanceof ApiError && error.status === 429;
    $("login-error").textContent = bad ? t("login.failed") : throttled ? t("login.throttled")
      : (error instanceof ApiError && error.detail) || t("login.offline");
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await api("/api/logout", { method: "POST", quiet401: true });
  } catch {
    // already signed out
  }
  setToken(null);
  app.user = null;
  app.feed?.stop();
  store.resetOpen([]);
  store.resolvedLoaded = false;
  app.map?.reset();
  location.hash = "";
  showLogin();
}

function buildViews() {
  if (app.board) return;
  app.board = new AlertBoard($("view-board"), { onSelect: (id) => { location.hash = `#/board/${id}`; } });
  app.board.onNeedResolved = loadResolved;
  app.board.onCounts = (c) => {
    document.title = c.waitingCritical ? `(${c.waitingCritical}) ${t("app.title")}` : t("app.title");
    const badge = $("nav-board-count");
    badge.textContent = c.all || "";
    badge.classList.toggle("hot", c.waitingCritical > 0);
  };
  app.map = new MapView($("view-map"), { tileUrl: app.settings.tile_url });
  app.detail = new AlertDetail(app.board.detailHost, {
    onClose: () => { location.hash = "#/board"; },
    fencesFor: (elderId) => (app.map.loaded ? app.map.map.fences.filter((f) => f.elder === elderId) : []),
  });
  app.elders = new EldersView($("view-elders"));
  app.elder = new ElderPage($("view-elder"));
  store.subscribe((change) => {
    if (!change.live || change.type !== "new") return;
    const a = change.alert;
    if (a.state === "resolved") return;
    if (a.severity === "critical") alarm("new");
    else if (a.severity === "warning") alarm("reminder");
    toast(t("toast.newAlert", { elder: a.elder_name || a.elder_id || a.device_id, kind: kindName(a.kind) }),
      a.severity === "critical" ? "critical" : "info", 6000);
  });
  setInterval(() => {
    if (!app.user) return;
    const c = store.counts();
    if (c.waitingCritical && Date.now() - app.lastReminder > REMIND_MS) {
      app.lastReminder = Date.now();
      alarm("reminder");
    }
  }, 5000);
}

async function loadOpenAlerts() {
  // open alerts come in board order, paged by offset; a change between pages is fixed by the live feed
  const all = [];
  for (let offset = 0; offset < 20 * PAGE; offset += PAGE) {
    const data = await api(`/api/alerts${query({ state: "open", limit: PAGE, offset })}`);
    const alerts = data.alerts || [];
    all.push(...alerts);
    if (alerts.length < PAGE || (data.total !== undefined && all.length >= data.total)) break;
  }
  store.resetOpen(all);
}

async function loadResolved() {
  const data = await api(`/api/alerts${query({ state: "resolved", limit: 200 })}`);
  store.resetResolved(data.alerts || []);
}

function setLive(connected = app.connected) {
  app.connected = connected;
  const el = $("live");
  el.classList.toggle("on", connected);
  el.lastChild.textContent = connected ? t("top.live") : t("top.reconnecting");
}

function renderUser() {
  const u = app.user;
  $("user-name").textContent = u.display_name || u.username;
  const scope = u.role === "grid_worker" ? u.grid : u.role === "post_station" ? u.community : "";
  $("user-role").textContent = [roleName(u.role), scope].filter(Boolean).join(" · ");
  const family = u.role === "family";
  $("nav-elders").hidden = family;
  $("nav-my-elder").hidden = !family;
  if (family && u.elder_id) $("nav-my-elder").href = `#/elder/${encodeURIComponent(u.elder_id)}`;
  $("mute").textContent = isMuted() ? t("top.unmute") : t("top.mute");
  $("mute").classList.toggle("muted", isMuted());
  $("lang").textContent = lang() === "zh" ? "EN" : "中文";
  setLive();
}

async function start(user) {
  app.user = user;
  const url = new URLSearchParams(location.search).get("lang");
  if (!url && !localStorage.getItem("eldercare.lang") && user.language) setLang(user.language);
  $("login-view").hidden = true;
  $("app").hidden = false;
  document.body.dataset.role = user.role;
  buildViews();
  renderUser();
  app.feed ??= new LiveFeed({
    onAlert: (summary) => {
      if (boardStats.pendingSince === null) boardStats.pendingSince = performance.now();
      store.upsert(summary, true);
    },
    onStatus: setLive,
    onLogout: () => {
      setToken(null);
      app.user = null;
      showLogin(t("login.expired"));
    },
    onResync: () => loadOpenAlerts().catch(() => {}),
    onClosed: async () => {
      try {
        await api("/api/me");
        app.feed.start();
      } catch {
        // the 401 handler shows the sign-in form
      }
    },
  });
  app.feed.start();
  await loadOpenAlerts();
  route();
  // fetch the map's data while the operator reads the board, so the map tab opens at once
  setTimeout(() => app.user && app.map.load().catch(() => {}), 800);
}

function route() {
  if (!app.user) return;
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, arg] = hash.split("/").map(decodeURIComponent);
  const family = app.user.role === "family";
  const name = view || "board";
  for (const section of document.querySelectorAll("main > .view")) section.hidden = true;
  for (const link of document.querySelectorAll(".tabs a")) link.classList.remove("active");
  const activate = (id, nav) => {
    $(id).hidden = false;
    $(nav)?.classList.add("active");
  };
  if (name === "map") {
    activate("view-map", "nav-map");
    app.map.show(arg ? Number(arg) : null).catch((e) => toast(t("toast.error", { detail: e.detail || e.message }), "error"));
  } else if (name === "elders" && !family) {
    activate("view-elders", "nav-elders");
    app.elders.show().catch((e) => toast(t("toast.error", { detail: e.detail || e.message }), "error"));
  } else if (name === "elder" && arg) {
    activate("view-elder", family ? "nav-my-elder" : "nav-elders");
    app.elder.show(arg, { canGoBack: !family });
  } else {
    activate("view-board", "nav-board");
    const id = name === "board" && arg ? Number(arg) : null;
    app.board.select(id);
    if (id !== null) app.detail.open(id);
    else app.detail.close();
  }
}

function tickClock() {
  const p = shanghaiParts(Date.now());
  const pad = (n) => String(n).padStart(2, "0");
  $("clock").textContent = `${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
}

async function boot() {
  setLang(initialLang(null));
  setUnauthorizedHandler(() => {
    if (app.user) {
      app.user = null;
      showLogin();
    }
  });
  $("login-form").addEventListener("submit", signIn);
  for (const button of document.querySelectorAll(".lang-switch")) {
    button.addEventListener("click", () => {
      setLang(lang() === "zh" ? "en" : "zh", true);
      if (app.user) renderUser();
      for (const b of document.querySelectorAll(".lang-switch")) b.textContent = lang() === "zh" ? "EN" : "中文";
    });
    button.textContent = lang() === "zh" ? "EN" : "中文";
  }
  $("logout").addEventListener("click", signOut);
  $("mute").addEventListener("click", () => {
    unlockAudio();
    setMuted(!isMuted());
    renderUser();
  });
  document.addEventListener("pointerdown", unlockAudio, { once: true });
  window.addEventListener("hashchange", route);
  tickClock();
  setInterval(tickClock, 1000);
  try {
    app.settings = await fetch("settings.json").then((r) => (r.ok ? r.json() : app.settings));
  } catch {
    // no settings: no tile layer
  }
  applyStatic(document);
  try {
    const me = await api("/api/me", { quiet401: true });
    await start(me.user ?? me);
  } catch {
    showLogin();
  }
}

boot();
