// Chinese (default) and English strings, and times shown in Asia/Shanghai.

export const TIME_ZONE = "Asia/Shanghai";
const SHANGHAI_OFFSET_MS = 8 * 3600 * 1000; // no daylight saving since 1991

const STRINGS = {
  zh: {
    "app.title": "社区养老应急值守台",
    "app.subtitle": "告警 · 地图 · 老人健康",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.failed": "用户名或密码不正确",
    "login.offline": "无法连接网关，请稍后重试",
    "login.throttled": "登录失败次数过多，请稍后再试",
    "login.expired": "登录已过期，请重新登录",
    "nav.board": "告警",
    "nav.map": "地图",
    "nav.elders": "老人",
    "nav.myElder": "我的家人",
    "top.logout": "退出",
    "top.mute": "静音",
    "top.unmute": "开启声音",
    "top.live": "实时",
    "top.reconnecting": "重连中…",
    "role.hotline": "热线值班",
    "role.post_station": "驿站值班",
    "role.grid_worker": "网格员",
    "role.family": "家属",
    "role.admin": "管理员",
    "role.volunteer": "志愿者",
    "board.open": "未结案",
    "board.resolved": "已结案",
    "board.search": "搜索姓名、编号、网格…",
    "board.all": "全部",
    "board.waiting": "待接单",
    "board.empty": "当前没有未结案的告警",
    "board.emptyResolved": "没有已结案的告警",
    "board.emptyFilter": "没有符合条件的告警",
    "board.col.severity": "级别",
    "board.col.alert": "告警",
    "board.col.elder": "老人",
    "board.col.opened": "发生时间",
    "board.col.wait": "等待/状态",
    "board.col.actions": "操作",
    "board.unackCritical": "紧急未接单",
    "board.takenBy": "{name} 已接单",
    "board.eta": "预计 {min} 分钟到达",
    "board.onScene": "{name} 已到场",
    "board.resolvedBy": "{outcome}",
    "action.take": "接单",
    "action.resolve": "结案",
    "action.details": "详情",
    "action.onMap": "在地图上查看",
    "action.addNote": "添加备注",
    "action.close": "关闭",
    "action.back": "返回",
    "action.more": "加载更多",
    "toast.taken": "已接单：{code}",
    "toast.resolved": "已结案：{code}（{outcome}）",
    "toast.onScene": "已到场：{code}",
    "action.onScene": "已到场",
    "toast.noteAdded": "备注已添加",
    "toast.newAlert": "新告警：{elder} {kind}",
    "toast.error": "操作失败：{detail}",
    "detail.elder": "老人",
    "detail.device": "设备",
    "detail.place": "社区/网格",
    "detail.opened": "发生时间",
    "detail.waiting": "已等待",
    "detail.state": "状态",
    "detail.position": "位置与轨迹",
    "detail.noPosition": "没有定位数据",
    "detail.timeline": "处置时间线",
    "detail.notifications": "通知记录",
    "detail.noNotifications": "尚无通知",
    "detail.resolveWith": "结案原因（点击即结案）",
    "detail.eta": "预计到达",
    "detail.etaNone": "不填",
    "detail.note": "备注（可选）",
    "detail.notePlaceholder": "现场情况、联系结果…",
    "detail.loading": "加载中…",
    "detail.outcome": "结案原因",
    "detail.detections": "触发证据",
    "detail.tier": "第 {n} 层",
    "detail.round": "第 {n} 轮",
    "detail.windowS": "等待 {n} 秒",
    "notif.recipient": "接收人",
    "notif.channel": "渠道",
    "notif.purpose": "用途",
    "notif.tier": "层级",
    "notif.status": "状态",
    "map.legend": "图例",
    "map.noAlert": "无告警",
    "map.fence": "电子围栏",
    "map.trail": "告警轨迹",
    "map.grid": "网格范围",
    "map.openAlerts": "未结案告警",
    "map.elders": "{n} 位老人",
    "map.fit": "全览",
    "map.selectAlert": "选择告警以显示轨迹",
    "map.clearTrail": "清除轨迹",
    "map.elderPage": "健康档案",
    "map.tiles": "在线底图",
    "elders.search": "搜索姓名或编号",
    "elders.total": "共 {n} 位",
    "elders.col.name": "姓名",
    "elders.col.place": "社区/网格",
    "elders.col.alerts": "未结案告警",
    "elders.none": "没有找到老人",
    "elder.latest": "最新数据",
    "elder.trends": "健康趋势",
    "elder.polygon": "多边形",
    "elder.hr": "心率",
    "elder.spo2": "血氧",
    "elder.glucose": "血糖",
    "elder.bp": "血压",
    "elder.battery": "手环电量",
    "elder.position": "最新定位",
    "elder.range24h": "24 小时",
    "elder.range7d": "7 天",
    "elder.range30d": "30 天",
    "elder.devices": "设备",
    "elder.contacts": "联系人",
    "elder.fences": "电子围栏",
    "elder.alerts": "未结案告警",
    "elder.noAlerts": "没有未结案告警",
    "elder.noData": "该时段没有数据",
    "elder.conditions": "健康状况",
    "elder.address": "住址",
    "elder.livesAlone": "独居",
    "elder.online": "在线",
    "elder.offline": "离线",
    "elder.lastSeen": "最后上报",
    "elder.systolic": "收缩压",
    "elder.diastolic": "舒张压",
    "elder.normal": "正常范围",
    "elder.fenceAlways": "全天",
    "unit.bpm": "次/分",
    "unit.pct": "%",
    "unit.mmol": "mmol/L",
    "unit.mmHg": "mmHg",
    "unit.min": "分钟",
  },
  en: {
    "app.title": "Eldercare Response Console",
    "app.subtitle": "Alerts · Map · Health",
    "login.username": "Username",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.failed": "Wrong username or password",
    "login.offline": "Cannot reach the gateway, try again shortly",
    "login.throttled": "Too many failed sign-ins, try again later",
    "login.expired": "Your session ended, please sign in again",
    "nav.board": "Alerts",
    "nav.map": "Map",
    "nav.elders": "Elders",
    "nav.myElder": "My family",
    "top.logout": "Sign out",
    "top.mute": "Mute",
    "top.unmute": "Sound on",
    "top.live": "Live",
    "top.reconnecting": "Reconnecting…",
    "role.hotline": "Hotline",
    "role.post_station": "Post station",
    "role.grid_worker": "Grid worker",
    "role.family": "Family",
    "role.admin": "Admin",
    "role.volunteer": "Volunteer",
    "board.open": "Open",
    "board.resolved": "Resolved",
    "board.search": "Search name, code, grid…",
    "board.all": "All",
    "board.waiting": "Not taken",
    "board.empty": "No open alerts",
    "board.emptyResolved": "No resolved alerts",
    "board.emptyFilter": "No alerts match",
    "board.col.severity": "Level",
    "board.col.alert": "Alert",
    "board.col.elder": "Elder",
    "board.col.opened": "Opened",
    "board.col.wait": "Waiting / state",
    "board.col.actions": "Actions",
    "board.unackCritical": "Critical, not taken:",
    "board.takenBy": "taken by {name}",
    "board.eta": "arriving in {min} min",
    "board.onScene": "{name} on scene",
    "board.resolvedBy": "{outcome}",
    "action.take": "Take",
    "action.resolve": "Resolve",
    "action.details": "Details",
    "action.onMap": "Show on map",
    "action.addNote": "Add note",
    "action.close": "Close",
    "action.back": "Back",
    "action.more": "Load more",
    "toast.taken": "Taken: {code}",
    "toast.resolved": "Resolved: {code} ({outcome})",
    "toast.onScene": "On scene: {code}",
    "action.onScene": "On scene",
    "toast.noteAdded": "Note added",
    "toast.newAlert": "New alert: {elder} {kind}",
    "toast.error": "Failed: {detail}",
    "detail.elder": "Elder",
    "detail.device": "Device",
    "detail.place": "Community / grid",
    "detail.opened": "Opened",
    "detail.waiting": "Waiting",
    "detail.state": "State",
    "detail.position": "Position and trail",
    "detail.noPosition": "No position data",
    "detail.timeline": "Timeline",
    "detail.notifications": "Notifications",
    "detail.noNotifications": "None yet",
    "detail.resolveWith": "Outcome (one click resolves)",
    "detail.eta": "ETA",
    "detail.etaNone": "none",
    "detail.note": "Note (optional)",
    "detail.notePlaceholder": "What you found, who you reached…",
    "detail.loading": "Loading…",
    "detail.outcome": "Outcome",
    "detail.detections": "Evidence",
    "detail.tier": "tier {n}",
    "detail.round": "round {n}",
    "detail.windowS": "waits {n} s",
    "notif.recipient": "Recipient",
    "notif.channel": "Channel",
    "notif.purpose": "Purpose",
    "notif.tier": "Tier",
    "notif.status": "Status",
    "map.legend": "Legend",
    "map.noAlert": "no alert",
    "map.fence": "Geofence",
    "map.trail": "Alert trail",
    "map.grid": "Grid area",
    "map.openAlerts": "Open alerts",
    "map.elders": "{n} elders",
    "map.fit": "Fit",
    "map.selectAlert": "Pick an alert to show its trail",
    "map.clearTrail": "Clear trail",
    "map.elderPage": "Health record",
    "map.tiles": "Online base map",
    "elders.search": "Search name or id",
    "elders.total": "{n} in total",
    "elders.col.name": "Name",
    "elders.col.place": "Community / grid",
    "elders.col.alerts": "Open alerts",
    "elders.none": "No elders found",
    "elder.latest": "Latest",
    "elder.trends": "Trends",
    "elder.polygon": "polygon",
    "elder.hr": "Heart rate",
    "elder.spo2": "SpO₂",
    "elder.glucose": "Glucose",
    "elder.bp": "Blood pressure",
    "elder.battery": "Band battery",
    "elder.position": "Last position",
    "elder.range24h": "24 h",
    "elder.range7d": "7 days",
    "elder.range30d": "30 days",
    "elder.devices": "Devices",
    "elder.contacts": "Contacts",
    "elder.fences": "Geofences",
    "elder.alerts": "Open alerts",
    "elder.noAlerts": "No open alerts",
    "elder.noData": "No data in this period",
    "elder.conditions": "Conditions",
    "elder.address": "Address",
    "elder.livesAlone": "lives alone",
    "elder.online": "online",
    "elder.offline": "offline",
    "elder.lastSeen": "last seen",
    "elder.systolic": "systolic",
    "elder.diastolic": "diastolic",
    "elder.normal": "normal range",
    "elder.fenceAlways": "always",
    "unit.bpm": "bpm",
    "unit.pct": "%",
    "unit.mmol": "mmol/L",
    "unit.mmHg": "mmHg",
    "unit.min": "min",
  },
};

// [Chinese, English]; the same words as the SMS templates (gateway/notify/templates.py).
const KINDS = {
  sos: ["紧急呼叫", "SOS call"],
  call: ["呼叫求助", "Call for help"],
  fall: ["跌倒", "Fall"],
  fall_no_recovery: ["跌倒后未起身", "Fall, not getting up"],
  geofence_exit: ["离开安全区域", "Left safe zone"],
  hypoglycaemia: ["低血糖", "Low blood sugar"],
  hyperglycaemia: ["高血糖", "High blood sugar"],
  hypertensive_crisis: ["高血压危象", "Hypertensive crisis"],
  hypotension: ["低血压", "Low blood pressure"],
  hr_high: ["心率过快", "Heart rate high"],
  hr_low: ["心率过慢", "Heart rate low"],
  spo2_low: ["血氧过低", "Low blood oxygen"],
  low_battery: ["设备电量低", "Battery low"],
  device_silent: ["设备离线", "Device offline"],
  not_worn: ["手环未佩戴", "Band not worn"],
  inactivity: ["长时间无活动", "No movement"],
  cancel_late: ["取消（超时）", "Late cancel"],
};
export const OUTCOMES = ["false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other"];
const OUTCOME_NAMES = {
  false_alarm: ["误报", "False alarm"],
  handled_at_home: ["已在家处理", "Handled at home"],
  sent_to_hospital: ["已送医", "Sent to hospital"],
  condition_cleared: ["情况已恢复", "Condition cleared"],
  other: ["其他", "Other"],
};
const SEVERITIES = { critical: ["紧急", "Critical"], warning: ["警告", "Warning"], info: ["提示", "Info"] };
const STATES = {
  confirming: ["确认中", "Confirming"],
  notifying: ["通知中", "Paging"],
  open: ["未处理", "Open"],
  notified: ["已通知", "Notified"],
  acknowledged: ["已接单", "Taken"],
  on_scene: ["已到场", "On scene"],
  resolved: ["已结案", "Resolved"],
};
const EVENTS = {
  opened: ["告警产生", "Opened"],
  notified: ["已通知", "Notified"],
  detection: ["再次检测到", "Detected again"],
  asked_elder: ["询问老人是否安好", "Asked the elder"],
  reassured_elder: ["告知老人救援在路上", "Reassured the elder"],
  device_received: ["设备已收到", "Device received"],
  confirmation_ended: ["确认期结束", "Confirmation ended"],
  tier_fired: ["逐级通知", "Tier paged"],
  tier_declined: ["该层无人可通知", "Tier had nobody"],
  acknowledged: ["接单", "Taken"],
  ack_after_taken: ["他人已接单后确认", "Ack after taken"],
  ack_lapsed: ["接单超时未到场", "Ack lapsed"],
  passed_on: ["转交下一层", "Passed on"],
  on_scene: ["到达现场", "On scene"],
  note: ["备注", "Note"],
  recovered: ["情况已恢复", "Recovered"],
  late_cancel: ["老人取消（超时）", "Late cancel"],
  escalation_stopped: ["停止升级", "Escalation stopped"],
  resolved: ["结案", "Resolved"],
  informed_taken: ["通知他人已接单", "Told others it was taken"],
  informed_retraction: ["发送撤回", "Retraction sent"],
  informed_resolved: ["通知已结案", "Told it was resolved"],
};
const CHANNELS = { sms: ["短信", "SMS"], voice: ["语音电话", "Voice"], webhook: ["Webhook", "Webhook"],
  console: ["值守台", "Console"], device: ["设备", "Device"], api: ["接口", "API"], cli: ["命令行", "CLI"] };
const PURPOSES = { page: ["呼叫", "Page"], taken: ["已接单", "Taken"], retraction: ["撤回", "Retraction"],
  resolved: ["已结案", "Resolved"], summary: ["汇总", "Summary"] };
const CONDITIONS = { dementia: ["认知障碍", "Dementia"], diabetes: ["糖尿病", "Diabetes"],
  hypertension: ["高血压", "Hypertension"], heart_disease: ["心脏病", "Heart disease"],
  copd: ["慢阻肺", "COPD"], fall_risk: ["跌倒风险", "Fall risk"] };
const DEVICE_TYPES = { wristband: ["智能手环", "Wristband"], pager: ["呼叫器", "Pager"],
  glucose: ["血糖仪", "Glucose meter"], bp: ["血压计", "BP monitor"] };
const RELATIONS = { son: ["儿子", "son"], daughter: ["女儿", "daughter"], spouse: ["配偶", "spouse"],
  neighbour: ["邻居", "neighbour"], neighbor: ["邻居", "neighbour"], other: ["其他", "other"] };

let language = "zh";
const listeners = new Set();

export function lang() {
  return language;
}

/** Switch the language; ``remember`` when the user chose it (it then wins over their profile's). */
export function setLang(next, remember = false) {
  language = next === "en" ? "en" : "zh";
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  if (remember) localStorage.setItem("eldercare.lang", language);
  applyStatic(document);
  for (const fn of listeners) fn(language);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

export function t(key, params) {
  let text = STRINGS[language][key] ?? STRINGS.zh[key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, String(v));
  return text;
}

function pick(table, key) {
  const entry = table[key];
  if (!entry) return key ?? "";
  return entry[language === "zh" ? 0 : 1];
}

export const kindName = (k) => (KINDS[k] ? pick(KINDS, k) : (language === "zh" ? "健康告警" : k));
export const outcomeName = (o) => pick(OUTCOME_NAMES, o);
export const severityName = (s) => pick(SEVERITIES, s);
export const stateName = (s) => pick(STATES, s);
export const eventName = (e) => pick(EVENTS, e);
export const channelName = (c) => (c ? pick(CHANNELS, c) : "");
export const purposeName = (p) => pick(PURPOSES, p);
export const roleName = (r) => t(`role.${r}`);
export const conditionName = (c) => pick(CONDITIONS, c);
export const deviceTypeName = (d) => pick(DEVICE_TYPES, d);
export const relationName = (r) => pick(RELATIONS, r);

/** Fill every [data-i18n] (text) and [data-i18n-placeholder] under root. */
export function applyStatic(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.title = t("app.title");
}

const pad = (n) => String(n).padStart(2, "0");

/** Wall-clock parts in Shanghai for epoch ms (fixed +08:00: cheap enough for thousands of rows). */
export function shanghaiParts(ms) {
  const d = new Date(ms + SHANGHAI_OFFSET_MS);
  return { y: d.getUTCFullYear(), mo: d.getUTCMonth() + 1, d: d.getUTCDate(), h: d.getUTCHours(),
    mi: d.getUTCMinutes(), s: d.getUTCSeconds() };
}

export function toMs(iso) {
  return iso ? Date.parse(iso) : NaN;
}

/** "14:05:09" today, "03-12 14:05" on other days, in Asia/Shanghai. */
export function formatTime(iso, { seconds = true, now = Date.now() } = {}) {
  const ms = typeof iso === "number" ? iso : toMs(iso);
  if (!Number.isFinite(ms)) return "—";
  const p = shanghaiParts(ms);
  const today = shanghaiParts(now);
  const hm = `${pad(p.h)}:${pad(p.mi)}`;
  if (p.y === today.y && p.mo === today.mo && p.d === today.d) return seconds ? `${hm}:${pad(p.s)}` : hm;
  return `${pad(p.mo)}-${pad(p.d)} ${hm}`;
}

export function formatDateTime(iso) {
  const ms = typeof iso === "number" ? iso : toMs(iso);
  if (!Number.isFinite(ms)) return "—";
  const p = shanghaiParts(ms);
  return `${p.y}-${pad(p.mo)}-${pad(p.d)} ${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
}

/** A running timer: "4:07", "1:02:03". */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** "5 分钟前" / "5 min ago" style for longer spans. */
export function formatAgo(ms) {
  const min = Math.floor(ms / 60000);
  if (language === "zh") {
    if (min < 1) return "刚刚";
    if (min < 60) return `${min} 分钟前`;
    if (min < 1440) return `${Math.floor(min / 60)} 小时前`;
    return `${Math.floor(min / 1440)} 天前`;
  }
  if (min < 1) return "just now";
  if (min < 60) return `${min} min ago`;
  if (min < 1440) return `${Math.floor(min / 60)} h ago`;
  return `${Math.floor(min / 1440)} d ago`;
}

export function initialLang(user) {
  const fromUrl = new URLSearchParams(location.search).get("lang");
  if (fromUrl === "en" || fromUrl === "zh") return fromUrl;
  const saved = localStorage.getItem("eldercare.lang");
  if (saved === "en" || saved === "zh") return saved;
  if (user && (user.language === "en" || user.language === "zh")) return user.language;
  return "zh";
}
