// Experience: a streamed chat with one model through the gateway (/v1/chat/completions), with the
// tokens, time to first token and total time of every answer; an attached image goes with the next
// message as an `image_url` part (a data: URL), for vision models.

import { errorFrom, events, headers } from "./api.js";
import { copy, el, fmt, t } from "./ui.js";
import { bindKeyPanel, currentKey } from "./keypanel.js";

const root = document.getElementById("chat");
if (root) {
  const $ = (s) => root.querySelector(s);
  bindKeyPanel(root.querySelector("[data-key-panel]"));
  const list = $("[data-messages]");
  const composer = $("[data-composer]");
  const prompt = composer.querySelector("textarea");
  const stopButton = $("[data-stop]");
  const attach = $("[data-attach]");
  const attached = $("[data-attached]");
  attach?.addEventListener("change", () => {
    attached.textContent = attach.files[0] ? t("chat.attached", { name: attach.files[0].name }) : "";
  });
  const dataUrl = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  let history = []; // {role, content}
  let controller = null;

  root.querySelectorAll("[data-param]").forEach((input) => input.addEventListener("input", () => {
    const out = root.querySelector(`[data-out="${input.dataset.param}"]`);
    if (out) out.textContent = input.value;
  }));
  const params = () => {
    const out = {};
    root.querySelectorAll("[data-param]").forEach((i) => { if (i.value !== "") out[i.dataset.param] = Number(i.value); });
    return out;
  };

  function bubble(role, text) {
    $("[data-chat-empty]")?.remove();
    const node = el("div", { class: `msg msg-${role}`, "data-role": role }, el("div", { class: "msg-text", text }));
    list.append(node);
    list.scrollTop = list.scrollHeight;
    return node;
  }

  async function answer() {
    const key = currentKey();
    if (!key) { bubble("error", t("chat.need_key")); return; }
    const node = bubble("assistant", "");
    node.setAttribute("data-testid", "assistant-message");
    const text = node.querySelector(".msg-text");
    const system = $("[data-system]").value.trim();
    const body = {
      model: $("[data-model]").value,
      messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
      stream: true,
      stream_options: { include_usage: true },
      ...params(),
    };
    controller = new AbortController();
    stopButton.hidden = false;
    const started = performance.now();
    let ttft = null;
    let usage = null;
    let content = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ Authorization: `Bearer ${key}`, Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw await errorFrom(response);
      for await (const ev of events(response)) {
        if (ev.data === "[DONE]") break;
        const chunk = JSON.parse(ev.data);
        if (chunk.error) throw new Error(chunk.error.message || "stream error");
        const delta = chunk.choices?.[0]?.delta || {};
        const piece = (delta.reasoning_content || "") + (delta.content || "");
        if (piece) {
          if (ttft === null) ttft = performance.now() - started;
          content += piece;
          text.textContent = content;
          list.scrollTop = list.scrollHeight;
        }
        if (chunk.usage) usage = chunk.usage;
      }
    } catch (err) {
      if (err.name !== "AbortError") {
        node.className = "msg msg-error";
        text.textContent = err.message;
        return;
      }
    } finally {
      controller = null;
      stopButton.hidden = true;
    }
    const total = performance.now() - started;
    history.push({ role: "assistant", content });
    const meta = el("div", { class: "msg-meta", "data-testid": "answer-meta" },
      el("span", { "data-metric": "tokens", text: usage ? t("chat.tokens", { prompt: usage.prompt_tokens, completion: usage.completion_tokens }) : t("chat.tokens_unknown") }),
      el("span", { "data-metric": "ttft", text: t("chat.ttft", { ms: fmt.ms(ttft) }) }),
      el("span", { text: t("chat.total", { ms: fmt.ms(total) }) }),
      usage && total > 0 ? el("span", { text: t("chat.speed", { n: (usage.completion_tokens / (total / 1000)).toFixed(1) }) }) : null,
      el("button", { type: "button", class: "btn-link", onclick: (e) => copy(content, e.currentTarget), text: t("common.copy") }),
      el("button", { type: "button", class: "btn-link", "data-regenerate": "", onclick: regenerate, text: t("chat.regenerate") }),
    );
    node.append(meta);
    list.querySelectorAll("[data-regenerate]").forEach((b) => { b.hidden = b !== meta.querySelector("[data-regenerate]"); });
  }

  function regenerate() {
    if (controller || history.at(-1)?.role !== "assistant") return;
    history.pop();
    list.lastElementChild?.remove(); // the answer being regenerated is the last bubble
    answer();
  }

  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = prompt.value.trim();
    if (!value || controller) return;
    const image = attach?.files[0];
    if (image) {
      const url = await dataUrl(image);
      history.push({ role: "user", content: [{ type: "text", text: value }, { type: "image_url", image_url: { url } }] });
      bubble("user", value).append(el("img", { class: "try-image", src: url, alt: image.name }));
      attach.value = "";
      attached.textContent = "";
    } else {
      history.push({ role: "user", content: value });
      bubble("user", value);
    }
    prompt.value = "";
    answer();
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  stopButton.addEventListener("click", () => controller?.abort());
  $("[data-clear]").addEventListener("click", () => {
    controller?.abort();
    history = [];
    list.replaceChildren(el("div", { class: "empty", "data-chat-empty": "" }, el("p", { class: "empty-title", text: t("chat.cleared") })));
  });
}
