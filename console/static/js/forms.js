// Declarative forms and buttons, so most pages need no script of their own:
//
//   <form data-api="POST /api/workspaces/{ws}/api-keys" data-then="secret:secret_key"> … </form>
//   <button data-api="PUT /api/maas-models/3/status" data-body='{"enabled": true}' data-then="reload">
//
// Inputs are read by name ("targets.0.weight" builds {targets: [{weight}]}) and typed by data-type:
// int, float, bool, list (multi-select or checkboxes), csv, lines, json, datetime; an empty input is
// left out, or sent as null with data-empty="null". {ws} in a path is the current workspace.
// data-then: reload | redirect:<url with {field}s from the answer> | secret:<field> | refresh:<id,id>
//            | follow (a stack request: follow its job live) | event (dispatch "api:done").

import { ApiError, request } from "./api.js";
import { clearFieldError, confirmDialog, flash, flashNext, refresh, secretDialog, showError, clearErrors, t } from "./ui.js";
import { storeKey } from "./keystore.js";

function read(input) {
  const type = input.dataset.type || "str";
  if (input.type === "checkbox" && type === "bool") return input.checked;
  if (input.tagName === "SELECT" && input.multiple) {
    const values = [...input.selectedOptions].map((o) => o.value);
    return values.length || input.dataset.empty !== "null" ? values : null;
  }
  const raw = (input.value ?? "").trim();
  if (raw === "") return input.dataset.empty === "null" ? null : undefined;
  switch (type) {
    case "int": return Number.isInteger(Number(raw)) ? Number(raw) : raw;
    case "float": return Number.isFinite(Number(raw)) ? Number(raw) : raw;
    case "csv": return raw.split(",").map((s) => s.trim()).filter(Boolean);
    case "lines": return raw.split("\n").map((s) => s.trim()).filter(Boolean);
    case "datetime": return new Date(raw).toISOString();
    case "json":
      try { return JSON.parse(raw); } catch (e) {
        throw new ApiError(0, t("form.bad_json"), [{ field: input.name, message: e.message }]);
      }
    default: return raw;
  }
}

function assign(target, path, value) {
  let node = target;
  path.forEach((key, i) => {
    const last = i === path.length - 1;
    if (last) { node[key] = value; return; }
    if (node[key] === undefined) node[key] = /^\d+$/.test(path[i + 1]) ? [] : {};
    node = node[key];
  });
}

function compact(value) {
  if (Array.isArray(value)) return value.filter((v) => v !== undefined).map(compact);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, compact(v)]));
  }
  return value;
}

export function serialize(form) {
  const out = {};
  for (const input of form.querySelectorAll("[name]")) {
    if (input.disabled || !input.name || input.closest("[data-skip]") || input.type === "submit") continue;
    if (input.type === "checkbox" && input.dataset.type === "list") {
      const path = input.name.split(".");
      let node = out;
      for (const k of path.slice(0, -1)) node = node[k] ??= {};
      const key = path.at(-1);
      node[key] ??= [];
      if (input.checked) node[key].push(input.value);
      continue;
    }
    if (input.type === "radio" && !input.checked) continue;
    const value = read(input);
    if (value !== undefined) assign(out, input.name.split("."), value);
  }
  return compact(out);
}

function target(spec) {
  const [method, ...rest] = spec.trim().split(/\s+/);
  const ws = document.body.dataset.ws || "";
  return [method.toUpperCase(), rest.join(" ").replaceAll("{ws}", encodeURIComponent(ws))];
}

function fill(template, data) {
  return template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(data?.[k] ?? ""));
}

export async function after(then, result, origin) {
  const done = origin.dataset.done || t("common.saved");
  if (!then || then === "reload") { flashNext(done); location.reload(); return; }
  if (then.startsWith("redirect:")) { flashNext(done); location.assign(fill(then.slice(9), result)); return; }
  if (then.startsWith("secret:")) {
    const secret = result[then.slice(7)];
    if (await secretDialog(secret)) storeKey(document.body.dataset.ws, secret, result.name || "");
    flashNext(done);
    location.reload();
    return;
  }
  if (then.startsWith("refresh:")) { await refresh(...then.slice(8).split(",")); flash(done); return; }
  if (then === "follow") {
    const { followRequest } = await import("./jobs.js");
    flash(t("job.queued"), "info");
    followRequest(result, document.getElementById("follow-panel"));
    return;
  }
  origin.dispatchEvent(new CustomEvent("api:done", { detail: result, bubbles: true }));
}

async function submit(form, event) {
  event.preventDefault();
  const button = event.submitter || form.querySelector('[type="submit"]');
  clearErrors(form);
  let body;
  try {
    body = { ...serialize(form), ...JSON.parse(form.dataset.extra || "{}") };
  } catch (err) { showError(form, err); return; }
  if (form.dataset.confirm && !(await confirmDialog({ title: form.dataset.confirm }))) return;
  const [method, path] = target(form.dataset.api);
  button?.classList.add("busy");
  try {
    const result = await request(method, path, method === "DELETE" ? undefined : body);
    await after(form.dataset.then, result, form);
  } catch (err) {
    showError(form, err);
  } finally {
    button?.classList.remove("busy");
  }
}

async function click(button) {
  const name = button.dataset.confirmName;
  if (button.dataset.confirm || name) {
    const ok = await confirmDialog({ title: button.dataset.confirm || t("confirm.delete"), text: button.dataset.confirmText, name, ok: button.textContent.trim() });
    if (!ok) return;
  }
  const [method, path] = target(button.dataset.api);
  const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
  button.classList.add("busy");
  try {
    const result = await request(method, path, method === "GET" ? undefined : (body ?? (method === "DELETE" ? undefined : {})));
    await after(button.dataset.then, result, button);
  } catch (err) {
    const scope = button.closest("[data-error-scope]") || document;
    if (scope === document) flash(err.message, "error"); else showError(scope, err);
  } finally {
    button.classList.remove("busy");
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-api]");
  if (form) submit(form, event);
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-api]");
  if (button) { event.preventDefault(); click(button); }
});
// Fixing a field clears its error (and, once none is left, the form's banner).
document.addEventListener("input", (event) => {
  const input = event.target;
  if (!input.closest?.(".has-error")) return;
  clearFieldError(input);
  const form = input.closest("form");
  if (form && !form.querySelector(".has-error")) {
    const banner = form.querySelector("[data-form-error]");
    if (banner) banner.hidden = true;
  }
});
