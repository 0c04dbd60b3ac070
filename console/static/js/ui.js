// Small helpers every page uses: translations, the flash banner, field errors, copying, refreshing a
// fragment of the page from the server, and the confirm / show-once dialogs.

const catalog = JSON.parse(document.getElementById("i18n")?.textContent || "{}");

export function t(key, vars = {}) {
  if (vars.n === 1 && `${key}_one` in catalog) key = `${key}_one`; // "1 model", not "1 models"
  const text = catalog[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function flash(message, kind = "ok") {
  const box = document.getElementById("flash");
  if (!box) return;
  box.className = `flash alert alert-${kind}`;
  box.textContent = message;
  box.hidden = false;
  clearTimeout(flash.timer);
  if (kind === "ok") flash.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// A message to show after the next page load (e.g. after a reload that follows a change).
export function flashNext(message, kind = "ok") {
  sessionStorage.setItem("mf-flash", JSON.stringify({ message, kind }));
}

export function showPendingFlash() {
  const raw = sessionStorage.getItem("mf-flash");
  if (!raw) return;
  sessionStorage.removeItem("mf-flash");
  try { const { message, kind } = JSON.parse(raw); flash(message, kind); } catch { /* ignore */ }
}

// API field names (targets[1].region, allowed_models[0]) to form input names (targets.1.region).
function inputFor(form, field) {
  let name = field.replace(/\[(\d+)\]/g, ".$1").replace(/^\./, "");
  while (name) {
    const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (input) return input;
    const cut = name.lastIndexOf(".");
    if (cut < 0) break;
    name = name.slice(0, cut);
  }
  return null;
}

export function clearErrors(scope) {
  scope.querySelectorAll(".field-error").forEach((n) => n.remove());
  scope.querySelectorAll(".has-error").forEach((n) => n.classList.remove("has-error"));
  const banner = scope.querySelector("[data-form-error]");
  if (banner) banner.hidden = true;
}

// An error prints once: each field's message next to its field; the banner (or the flash) carries
// the message only when some part of it has no field on this form to sit next to.
export function showError(scope, err) {
  clearErrors(scope);
  const unplaced = [];
  for (const f of err.fields || []) {
    const input = scope.tagName === "FORM" || scope.querySelector ? inputFor(scope, f.field || "") : null;
    if (!input) { unplaced.push(f); continue; }
    const holder = input.closest(".field") || input.parentElement;
    holder.classList.add("has-error");
    holder.append(el("small", { class: "field-error", text: f.message }));
  }
  const placedAll = (err.fields || []).length > 0 && unplaced.length === 0;
  const banner = scope.querySelector("[data-form-error]");
  if (placedAll) {
    scope.querySelector(".has-error input, .has-error select, .has-error textarea")?.focus({ preventScroll: false });
    return;
  }
  const rest = unplaced.map((f) => (f.field ? `${f.field}: ${f.message}` : f.message));
  if (!banner) { flash(rest.length ? rest.join("; ") : err.message, "error"); return; }
  if (rest.length) banner.replaceChildren(el("ul", {}, rest.map((text) => el("li", { text }))));
  else banner.replaceChildren(el("strong", { text: err.message }));
  banner.hidden = false;
  banner.scrollIntoView({ block: "nearest" });
}

// A field's error goes once the field is edited (and the banner with the last one).
export function clearFieldError(input) {
  const holder = input.closest(".has-error");
  if (!holder) return;
  holder.classList.remove("has-error");
  holder.querySelectorAll(".field-error").forEach((n) => n.remove());
}

export async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (button) {
    const label = button.textContent;
    button.textContent = t("common.copied");
    setTimeout(() => { button.textContent = label; }, 1500);
  }
}

// Re-render parts of the page from the server without a full reload: fetch this URL, swap each #id.
export async function refresh(...ids) {
  const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const id of ids) {
    const fresh = doc.getElementById(id);
    const old = document.getElementById(id);
    if (fresh && old) old.replaceWith(document.importNode(fresh, true));
  }
  document.dispatchEvent(new CustomEvent("console:refreshed"));
}

// Resolves true when the user confirms; with `name`, only once they have typed it.
export function confirmDialog({ title, text, name = null, ok = t("common.confirm") }) {
  const dialog = document.getElementById("confirm-dialog");
  const slot = (s) => dialog.querySelector(`[data-slot="${s}"]`);
  slot("title").textContent = title;
  slot("text").textContent = text || "";
  slot("ok").textContent = ok;
  const typed = dialog.querySelector('input[name="typed"]');
  typed.value = "";
  slot("typed").hidden = !name;
  slot("name").textContent = name || "";
  const okButton = slot("ok");
  okButton.disabled = Boolean(name);
  typed.oninput = () => { okButton.disabled = typed.value !== name; };
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok" && (!name || typed.value === name));
    dialog.returnValue = "";
    dialog.showModal();
    if (name) typed.focus();
  });
}

// Shows a secret once; resolves with whether the user wants the console to keep it for this tab.
export function secretDialog(secret, { offerUse = true } = {}) {
  const dialog = document.getElementById("secret-dialog");
  dialog.querySelector('[data-slot="secret"]').textContent = secret;
  dialog.querySelector('[data-slot="use-wrap"]').hidden = !offerUse;
  return new Promise((resolve) => {
    dialog.onclose = () => {
      dialog.querySelector('[data-slot="secret"]').textContent = "";
      resolve(offerUse && dialog.querySelector('[data-slot="use"]').checked);
    };
    dialog.showModal();
  });
}

export const fmt = {
  ms: (v) => (v === null || v === undefined ? "—" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`),
  int: (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString()),
};
