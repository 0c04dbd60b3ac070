// Compare: one prompt to up to three models at once through POST /v1/compare, one event stream with
// every model's chunks; per model: tokens, time to first token, latency and cost.

import { errorFrom, events, headers } from "./api.js";
import { clearErrors, el, fmt, showError, t } from "./ui.js";
import { bindKeyPanel, currentKey } from "./keypanel.js";

const root = document.getElementById("compare");
if (root) {
  bindKeyPanel(root.querySelector("[data-key-panel]"));
  const form = root.querySelector("[data-compare-form]");
  const cols = [...root.querySelectorAll("[data-col]")];

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const key = currentKey();
    if (!key) { showError(form, { message: t("chat.need_key"), fields: [] }); return; }
    const models = [...form.querySelectorAll("[data-compare-model]")].map((s) => s.value).filter(Boolean);
    const system = form.querySelector("[data-system]").value.trim();
    const prompt = form.querySelector('[name="prompt"]').value.trim();
    const body = {
      models,
      messages: [...(system ? [{ role: "system", content: system }] : []), { role: "user", content: prompt }],
    };
    form.querySelectorAll("[data-param]").forEach((i) => { if (i.value !== "") body[i.dataset.param] = Number(i.value); });
    const texts = {};
    cols.forEach((col, i) => {
      col.hidden = i >= models.length;
      col.querySelector("[data-col-model]").textContent = models[i] || "—";
      col.querySelector("[data-answer]").replaceChildren(el("span", { class: "muted", text: t("compare.waiting") }));
      col.querySelector("[data-metrics]").replaceChildren();
      col.removeAttribute("data-done");
      texts[i] = "";
    });
    const button = form.querySelector('[type="submit"]');
    button.disabled = true;
    try {
      const response = await fetch("/v1/compare", {
        method: "POST",
        headers: headers({ Authorization: `Bearer ${key}`, Accept: "text/event-stream" }),
        body: JSON.stringify(body),
      });
      if (!response.ok) throw await errorFrom(response);
      for await (const ev of events(response)) {
        if (ev.data === "[DONE]") break;
        const data = JSON.parse(ev.data);
        const col = cols[data.index];
        if (data.type === "chunk" && col) {
          const delta = data.chunk?.choices?.[0]?.delta || {};
          const piece = (delta.reasoning_content || "") + (delta.content || "");
          if (piece) { texts[data.index] += piece; col.querySelector("[data-answer]").textContent = texts[data.index]; }
        } else if (data.type === "done" && col) {
          const u = data.usage || {};
          const metric = (label, value) => [el("span", { text: label }), el("strong", { text: value })];
          col.querySelector("[data-metrics]").replaceChildren(
            ...metric(t("compare.status"), t(`compare.status_${data.status}`)),
            ...metric(t("compare.tokens"), u.prompt_tokens !== undefined ? `${u.prompt_tokens} + ${u.completion_tokens}` : "—"),
            ...metric(t("compare.ttft"), fmt.ms(data.ttft_ms)),
            ...metric(t("compare.latency"), fmt.ms(data.latency_ms)),
            ...metric(t("compare.cost"), data.cost ?? "—"),
          );
          if (data.error) col.querySelector("[data-answer]").append(el("div", { class: "alert alert-error", text: data.error.error?.message || data.error.message || JSON.stringify(data.error) }));
          col.setAttribute("data-done", data.status);
        }
      }
    } catch (err) {
      showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
}
