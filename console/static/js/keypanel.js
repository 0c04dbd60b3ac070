// The "API key for this tab" panel of the chat and compare pages. /v1 takes API keys, not user tokens:
// paste one of yours, or create a key named "console" on the spot (shown once, then kept only in this
// tab's sessionStorage).

import { api } from "./api.js";
import { flash, secretDialog, t } from "./ui.js";
import { forgetKey, loadKey, mask, storeKey } from "./keystore.js";

const ws = document.body.dataset.ws;

export function currentKey() { return loadKey(ws)?.secret || null; }

export function bindKeyPanel(panel) {
  if (!panel) return;
  const show = () => {
    const key = loadKey(ws);
    panel.querySelector("[data-key-current]").textContent = key
      ? t("keypanel.using", { key: key.masked, name: key.name || t("keypanel.pasted") })
      : t("keypanel.none");
    panel.querySelector("[data-key-forget]").hidden = !key;
  };
  panel.querySelector("[data-key-use]").addEventListener("click", () => {
    const input = panel.querySelector("[data-key-input]");
    const value = input.value.trim();
    if (!value.startsWith("sk-")) { flash(t("keypanel.bad_key"), "error"); return; }
    storeKey(ws, value, "");
    input.value = "";
    show();
  });
  panel.querySelector("[data-key-create]").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.classList.add("busy");
    try {
      const created = await api.post(`/api/workspaces/${ws}/api-keys`, { name: "console" });
      storeKey(ws, created.secret_key, created.name);
      show();
      await secretDialog(created.secret_key, { offerUse: false });
    } catch (err) {
      flash(err.message, "error");
    } finally {
      button.classList.remove("busy");
    }
  });
  panel.querySelector("[data-key-forget]").addEventListener("click", () => { forgetKey(ws); show(); });
  show();
}

export { mask };
