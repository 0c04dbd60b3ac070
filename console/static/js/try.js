// The playground: images, speech to text, text to speech, rerank and embeddings through the gateway
// (/v1), with the API key of the panel; each answer is shown the way it is meant to be used (images
// drawn, audio played, scores ranked) with its time and usage.

import { errorFrom, headers } from "./api.js";
import { el, fmt, t } from "./ui.js";
import { bindKeyPanel, currentKey } from "./keypanel.js";

const root = document.getElementById("try");
if (root) {
  bindKeyPanel(root.querySelector("[data-key-panel]"));
  const tab = root.dataset.tab;
  const form = root.querySelector("[data-try-form]");
  const result = root.querySelector("[data-try-result]");
  const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);

  function show(...nodes) {
    result.hidden = false;
    result.replaceChildren(...nodes);
  }

  async function call(path, init) {
    const key = currentKey();
    if (!key) throw new Error(t("chat.need_key"));
    const response = await fetch(path, { method: "POST", ...init, headers: { ...init.headers, Authorization: `Bearer ${key}` } });
    if (!response.ok) throw await errorFrom(response);
    return response;
  }
  const json = (body) => ({ headers: headers(), body: JSON.stringify(body) });

  const runs = {
    async images(data) {
      const body = { model: data.get("model"), prompt: data.get("prompt"), size: data.get("size") || "auto", n: Number(data.get("n") || 1), response_format: "b64_json" };
      const answer = await (await call("/v1/images/generations", json(body))).json();
      const pictures = (answer.data || []).map((d) => el("img", { class: "try-image", alt: body.prompt, src: d.b64_json ? `data:image/png;base64,${d.b64_json}` : d.url, "data-testid": "try-image" }));
      return [el("div", { class: "try-images" }, pictures), t("try.images_done", { n: pictures.length })];
    },
    async transcription(data) {
      const upload = new FormData();
      upload.append("model", data.get("model"));
      upload.append("file", data.get("file"));
      if (data.get("language")) upload.append("language", data.get("language"));
      const answer = await (await call("/v1/audio/transcriptions", { headers: headers({}, false), body: upload })).json();
      const seconds = answer.usage?.seconds;
      return [el("p", { class: "try-text", text: answer.text, "data-testid": "try-transcript" }), seconds ? t("try.seconds", { n: seconds }) : ""];
    },
    async speech(data) {
      const body = { model: data.get("model"), input: data.get("input"), voice: data.get("voice"), response_format: "wav" };
      const audio = await (await call("/v1/audio/speech", json(body))).blob();
      const url = URL.createObjectURL(audio);
      return [
        el("audio", { controls: true, src: url, "data-testid": "try-audio" }),
        el("a", { class: "btn-link", href: url, download: "speech.wav", text: t("try.download") }),
        t("try.characters", { n: body.input.length }),
      ];
    },
    async rerank(data) {
      const documents = lines(data.get("documents"));
      const body = { model: data.get("model"), query: data.get("query"), documents };
      const answer = await (await call("/v1/rerank", json(body))).json();
      const rows = (answer.results || []).map((r) => el("tr", {},
        el("td", { text: String(r.index + 1) }),
        el("td", { text: Number(r.relevance_score).toFixed(4) }),
        el("td", { text: r.document?.text ?? documents[r.index] ?? "" })));
      const table = el("table", { class: "table", "data-testid": "try-ranking" },
        el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: t("try.score") }), el("th", { text: t("try.documents") }))),
        el("tbody", {}, rows));
      return [table, answer.usage ? t("try.tokens", { n: answer.usage.total_tokens }) : ""];
    },
    async embeddings(data) {
      const body = { model: data.get("model"), input: lines(data.get("input")), encoding_format: "float" };
      if (data.get("dimensions")) body.dimensions = Number(data.get("dimensions"));
      const answer = await (await call("/v1/embeddings", json(body))).json();
      const items = (answer.data || []).map((d) => el("li", { text: `${d.embedding.length} × [${d.embedding.slice(0, 6).map((v) => v.toFixed(4)).join(", ")}, …]` }));
      return [el("ol", { "data-testid": "try-vectors" }, items), answer.usage ? t("try.tokens", { n: answer.usage.prompt_tokens }) : ""];
    },
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("[type=submit]");
    button.classList.add("busy");
    const started = performance.now();
    try {
      const [shown, ...notes] = await runs[tab](new FormData(form));
      const meta = el("div", { class: "msg-meta", "data-testid": "try-meta" },
        el("span", { text: t("chat.total", { ms: fmt.ms(performance.now() - started) }) }),
        ...notes.filter(Boolean).map((n) => (typeof n === "string" ? el("span", { text: n }) : n)));
      show(shown, meta);
    } catch (err) {
      show(el("div", { class: "alert alert-error", "data-testid": "try-error", text: err.message }));
    } finally {
      button.classList.remove("busy");
    }
  });
}
