// The API key the console uses for /v1 (chat, compare, examples). Secrets are shown once by the portal,
// so the key lives only in this tab's sessionStorage, per workspace: never in a cookie, never on the
// server, gone when the tab closes.

const slot = (ws) => `mf-console-key:${ws}`;

export function loadKey(ws) {
  try { return JSON.parse(sessionStorage.getItem(slot(ws)) || "null"); } catch { return null; }
}

export function storeKey(ws, secret, name = "") {
  if (!ws || !secret) return;
  sessionStorage.setItem(slot(ws), JSON.stringify({ secret, name, masked: mask(secret) }));
}

export function forgetKey(ws) { sessionStorage.removeItem(slot(ws)); }

export function mask(secret) { return secret.length > 20 ? `${secret.slice(0, 15)}…${secret.slice(-4)}` : "…"; }
