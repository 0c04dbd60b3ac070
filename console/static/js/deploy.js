// The deploy form: it starts from a deploy template's serving draft, asks the portal for a preflight
// (capacity, memory fit, model files, policies) and a preview (the manifest diff) while you edit, and
// once submitted follows the stack update live.

import { api, request, uuid } from "./api.js";
import { clearErrors, el, flash, showError, t } from "./ui.js";
import { followRequest } from "./jobs.js";

const form = document.getElementById("deploy-form");
if (form) {
  const ws = document.body.dataset.ws;
  const model = form.dataset.model;
  const $ = (sel) => form.querySelector(sel);
  const input = (name) => form.querySelector(`[name="${name}"]`);
  const submit = $("[data-deploy-submit]");
  const status = $("[data-deploy-status]");
  const preflightPanel = document.getElementById("preflight-panel");
  const previewPanel = document.getElementById("preview-panel");
  const edited = new Set();
  let draft = null;
  let timer = null;
  let seq = 0;
  let idem = { body: "", key: "" };

  $("[data-model-select]").addEventListener("change", (e) => {
    location.search = `?model=${encodeURIComponent(e.target.value)}`;
  });
  $("[data-template-select]").addEventListener("change", () => { fillPools(); loadDraft(); });
  $("[data-pool-select]").addEventListener("change", loadDraft);
  form.addEventListener("input", (e) => {
    if (e.target.name && !e.target.name.startsWith("_")) edited.add(e.target.name);
    schedule();
  });

  function fillPools() {
    const option = $("[data-template-select]").selectedOptions[0];
    const pools = JSON.parse(option?.dataset.pools || "[]");
    const labels = JSON.parse(form.dataset.poolLabels || "{}");
    $("[data-pool-select]").replaceChildren(...pools.map((p) => el("option", { value: p, text: labels[p] || p })));
  }

  async function loadDraft() {
    const tid = $("[data-template-select]").value;
    const pool = $("[data-pool-select]").value;
    try {
      draft = await api.get(`/api/plaza/models/${encodeURIComponent(model)}/deploy-templates/${tid}/serving-draft?pool=${encodeURIComponent(pool)}`);
    } catch (err) { showError(form, err); return; }
    const set = (name, value) => { if (!edited.has(name)) input(name).value = value ?? ""; };
    set("name", draft.name);
    set("public_model_name", draft.public_model_name);
    set("max_model_len", draft.max_model_len);
    set("extra_args", (draft.extra_args || []).join(" "));
    set("replicas", draft.placements?.[0]?.replicas ?? 1);
    schedule(0);
  }

  function body() {
    const replicas = Number(input("replicas").value || 0);
    const maxLen = input("max_model_len").value.trim();
    const args = input("extra_args").value.trim();
    return {
      ...draft,
      name: input("name").value.trim(),
      public_model_name: input("public_model_name").value.trim() || null,
      max_model_len: maxLen ? Number(maxLen) : null,
      extra_args: args ? args.split(/\s+/) : [],
      placements: draft.placements.map((p) => ({ ...p, replicas })),
    };
  }

  function schedule(delay = 350) {
    if (input("name").disabled) return; // deployed: the form is done
    clearTimeout(timer);
    submit.disabled = true;
    status.textContent = t("deploy.checking");
    preflightPanel.querySelector("[data-preflight-badge]").replaceChildren(); // stale until checked again
    timer = setTimeout(check, delay);
  }

  async function check() {
    if (!draft) return;
    const mine = ++seq;
    const payload = body();
    clearErrors(form);
    const [pre, prev] = await Promise.allSettled([
      api.post(`/api/workspaces/${ws}/servings:preflight?action=create`, payload), // as Deploy will judge it
      api.post(`/api/workspaces/${ws}/servings:preview`, payload),
    ]);
    if (mine !== seq) return; // a newer edit is being checked
    if (pre.status === "rejected") {
      showError(form, pre.reason); // once: next to its field, else in the banner
      renderPreflight(null);
      status.textContent = t("deploy.blocked");
    } else {
      // What blocks and belongs to a field of this form (a taken name …) is shown next to that field,
      // and only there: an error prints once.
      const onField = (c) => {
        const field = c.subject.replace(/^servings\[[^\]]*\]\.?/, "");
        return c.level === "mandatory" && field && form.querySelector(`[name="${CSS.escape(field)}"]`) ? field : null;
      };
      const fields = pre.value.checks.filter(onField).map((c) => ({ field: onField(c), message: c.message }));
      renderPreflight({ ...pre.value, checks: pre.value.checks.filter((c) => !onField(c)) });
      submit.disabled = !pre.value.ok;
      status.textContent = pre.value.ok ? t("deploy.ready") : t("deploy.blocked");
      if (fields.length) showError(form, { message: "", fields });
    }
    renderPreview(prev.status === "fulfilled" ? prev.value : null, prev.reason);
  }

  function renderPreflight(result) {
    const badge = preflightPanel.querySelector("[data-preflight-badge]");
    const facts = preflightPanel.querySelector("[data-facts]");
    const checks = preflightPanel.querySelector("[data-checks]");
    facts.replaceChildren();
    checks.replaceChildren();
    if (!result) { badge.replaceChildren(); return; }
    badge.replaceChildren(el("span", { class: `badge ${result.ok ? "badge-ok" : "badge-bad"}`, "data-testid": "preflight-result", text: result.ok ? t("deploy.ok") : t("deploy.refused") }));
    const f = result.facts || {};
    const add = (label, value) => facts.append(el("dt", { text: label }), el("dd", { text: value }));
    if (f.action) add(t("deploy.fact_action"), t(`deploy.action_${f.action}`));
    for (const p of f.placements || []) {
      const mem = p.memory_gib || {};
      add(t("deploy.fact_layout"), `${p.pool}: ${p.replicas} × ${p.devices_per_replica} ${t("deploy.devices")} (TP ${p.parallelism?.tensor ?? "?"}, PP ${p.parallelism?.pipeline ?? "?"})`);
      if (mem.required !== undefined) add(t("deploy.fact_memory"), `${mem.required.toFixed(1)} / ${mem.budget.toFixed(1)} GiB ${t("deploy.per_replica")}`);
    }
    for (const [name, pool] of Object.entries(f.pools || {})) {
      add(t("deploy.fact_pool", { pool: name }), t("deploy.pool_use", { used: pool.used, capacity: pool.capacity, free: pool.free }));
    }
    for (const [region, store] of Object.entries(f.model_store || {})) {
      add(t("deploy.fact_store", { region }), `${t(`store.${store.status}`)}${store.files ? ` · ${store.files} ${t("deploy.files")}` : ""}`);
    }
    if (!result.checks.length && result.ok) checks.append(el("li", { class: "muted", text: t("deploy.no_findings") }));
    for (const c of result.checks) {
      checks.append(el("li", {}, el("span", { class: `level level-${c.level}`, text: t(`level.${c.level}`) }),
        el("div", {}, el("strong", { text: c.rule }), " ", el("span", { class: "muted small", text: c.subject }), el("div", { class: "small", text: c.message }))));
    }
  }

  function renderPreview(result, error) {
    const diff = previewPanel.querySelector("[data-diff]");
    const summary = previewPanel.querySelector("[data-preview-summary]");
    if (!result) {
      summary.textContent = "";
      diff.replaceChildren(el("span", { class: "del", text: error ? error.message : "" }));
      return;
    }
    summary.textContent = result.summary;
    const lines = (result.text || t("deploy.no_changes")).split("\n").slice(0, 4000);
    diff.replaceChildren(...lines.map((l) => el("span", {
      class: l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : l.startsWith("@@") ? "hunk" : null,
      text: `${l}\n`,
    })));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = body();
    const text = JSON.stringify(payload);
    if (idem.body !== text) idem = { body: text, key: uuid() }; // a retry of the same body is the same deploy
    submit.disabled = true;
    try {
      const queued = await request("POST", `/api/workspaces/${ws}/servings`, payload, { headers: { "Idempotency-Key": idem.key } });
      flash(t("job.queued"), "info");
      const panel = document.getElementById("follow-panel");
      panel.addEventListener("job:done", () => {
        status.replaceChildren(el("a", { href: `/console/services/${encodeURIComponent(payload.name)}`, "data-testid": "open-service", text: t("deploy.open_service") }));
      });
      const final = await followRequest(queued, panel, { reload: false });
      if (final !== "applied" && final !== "proposed") submit.disabled = false;
      else form.querySelectorAll("input, select").forEach((i) => { i.disabled = true; });
    } catch (err) {
      showError(form, err);
      submit.disabled = false;
    }
  });

  const preset = new URLSearchParams(location.search).get("pool");
  if (preset) $("[data-pool-select]").value = preset;
  loadDraft();
}
