// The console's only way to the gateway: same-origin JSON calls (see gateway/api/CONTRACT.md).
// Every call carries X-Requested-With, which no cross-site form can add: the server refuses a
// change made with the session cookie without it (request_checks.py).

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

let token = sessionStorage.getItem("eldercare.token");
let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem("eldercare.token", value);
  else sessionStorage.removeItem("eldercare.token");
}

export async function api(path, { method = "GET", body, signal, quiet401 = false } = {}) {
  const headers = { accept: "application/json", "x-requested-with": "eldercare-console" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method, headers, signal, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(response.status, data?.error, data?.detail);
  }
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
