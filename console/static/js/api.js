// Calls to the portal's JSON API from the console. The session cookie authenticates /api/* (the portal's
// console bridge turns it into a bearer token); every call carries X-Modelfleet-Console: 1, which the
// bridge requires on changes made with the cookie (CSRF defence). Errors become ApiError with the API's
// own message and fields, in either of the two shapes the portal speaks (its own, and OpenAI's on /v1).

export class ApiError extends Error {
  constructor(status, message, fields = [], code = "") {
    super(message);
    this.status = status;
    this.fields = fields;
    this.code = code;
  }
}

export async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const e = body && body.error;
  if (e && typeof e === "object") {
    const fields = Array.isArray(e.fields) ? e.fields : (e.param ? [{ field: e.param, message: e.message }] : []);
    return new ApiError(response.status, e.message || `HTTP ${response.status}`, fields, e.code || e.type || "");
  }
  return new ApiError(response.status, `HTTP ${response.status} ${response.statusText}`);
}

export function headers(extra = {}, json = true) {
  // The page's language reaches the API, which answers its messages in it.
  return { "X-Modelfleet-Console": "1", Accept: "application/json", "Accept-Language": document.documentElement.lang || "en", ...(json ? { "Content-Type": "application/json" } : {}), ...extra };
}

export async function request(method, path, body, { headers: extra = {}, signal } = {}) {
  const response = await fetch(path, {
    method,
    headers: headers(extra, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (response.status === 401 && !extra.Authorization) {
    location.assign(`/console/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const api = {
  get: (path, opts) => request("GET", path, undefined, opts),
  post: (path, body, opts) => request("POST", path, body ?? {}, opts),
  put: (path, body, opts) => request("PUT", path, body ?? {}, opts),
  patch: (path, body, opts) => request("PATCH", path, body ?? {}, opts),
  del: (path, opts) => request("DELETE", path, undefined, opts),
};

// Server-sent events from a fetch response (EventSource cannot POST nor send a header):
// yields {event, data, id} for every event of the stream.
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const ev = { event: "message", data: "", id: null };
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "data") data.push(val);
        else if (field === "event") ev.event = val;
        else if (field === "id") ev.id = val;
      }
      ev.data = data.join("\n");
      if (data.length) yield ev;
    }
  }
}

export function uuid() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
