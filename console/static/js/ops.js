// Ops pages: checking a deploy template against the stack before saving it, importing models from an
// index with a preview, and the MaaS model form's list of targets.

import { api } from "./api.js";
import { clearErrors, el, flashNext, showError, t } from "./ui.js";
import { serialize } from "./forms.js";

// -- deploy template: what the core says, per pool, without saving ------------------------------------
const templateForm = document.querySelector("[data-template-form]");
if (templateForm) {
  templateForm.querySelector("[data-template-check]").addEventListener("click", async () => {
    clearErrors(templateForm);
    const out = templateForm.querySelector("[data-check-result]");
    out.replaceChildren(el("p", { class: "muted", text: t("deploy.checking") }));
    try {
      const result = await api.post(`/api/plaza/models/${encodeURIComponent(templateForm.dataset.model)}/deploy-templates:check`, serialize(templateForm));
      out.replaceChildren(
        el("p", {}, el("span", { class: `badge ${result.ok ? "badge-ok" : "badge-bad"}`, text: result.ok ? t("deploy.ok") : t("deploy.refused") }), ` ${result.engine} ${result.engine_version} @ ${result.commit.slice(0, 12)}`),
        el("ul", { class: "checks" }, result.pools.map((p) => el("li", {},
          el("span", { class: `level ${p.fits ? "level-info" : "level-mandatory"}`, text: p.fits ? t("ops.fits") : t("ops.does_not_fit") }),
          el("div", {}, el("strong", { text: `${p.region}/${p.pool}` }), " ",
            el("span", { class: "muted small", text: p.required_gib ? `${p.required_gib.toFixed(1)} / ${p.budget_gib.toFixed(1)} GiB · TP ${p.tensor} PP ${p.pipeline}` : "" }),
            ...p.problems.map((m) => el("div", { class: "small warn", text: m })),
            ...p.advisories.map((m) => el("div", { class: "small muted", text: m })))))),
      );
    } catch (err) { out.replaceChildren(); showError(templateForm, err); }
  });
}

// -- import from an index: parse, preview, pick, create ----------------------------------------------
const importForm = document.getElementById("import-form");
if (importForm) {
  const preview = document.getElementById("import-preview");
  let parsed = null;
  importForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(importForm);
    const body = serialize(importForm);
    try { parsed = await api.post("/api/plaza/models:parse", body); } catch (err) { showError(importForm, err); return; }
    preview.hidden = false;
    preview.querySelector("[data-summary]").textContent = t("ops.importable", { n: parsed.importable, total: parsed.models.length });
    preview.querySelector("[data-warnings]").replaceChildren(...parsed.warnings.map((w) => el("div", { class: "alert alert-warn", text: w })));
    preview.querySelector("[data-rows]").replaceChildren(...parsed.models.map((m, i) => {
      const ok = m.model && !m.error && !m.exists;
      const state = m.error ? el("span", { class: "warn", text: m.error }) : m.exists ? el("span", { class: "muted", text: t("ops.exists") }) : el("span", { class: "badge badge-ok", text: t("ops.new") });
      return el("tr", {},
        el("td", {}, el("input", { type: "checkbox", "data-index": i, checked: ok, disabled: !ok })),
        el("td", {}, el("code", { text: m.model?.id || "—" })),
        el("td", { text: m.model?.name || "" }),
        el("td", { text: m.model?.provider || "" }),
        el("td", { text: (m.model?.capabilities || []).join(", ") }),
        el("td", {}, state, ...m.fields.map((f) => el("div", { class: "small warn", text: `${f.field}: ${f.message}` }))));
    }));
  });
  preview.querySelector("[data-import-run]").addEventListener("click", async () => {
    const picked = [...preview.querySelectorAll("input[data-index]:checked")].map((c) => parsed.models[Number(c.dataset.index)]);
    if (!picked.length) return;
    const providers = picked.map((m) => m.provider).filter(Boolean);
    try {
      const result = await api.post("/api/plaza/models:batch_create", { models: picked.map((m) => m.model), providers });
      flashNext(t("ops.imported", { n: result.created.length, skipped: result.skipped.length }));
      location.assign("/console/ops/plaza?published=false");
    } catch (err) { showError(importForm, err); }
  });
}

// -- MaaS model form: targets ---------------------------------------------------------------------------
const maasForm = document.getElementById("maas-form");
if (maasForm) {
  const list = maasForm.querySelector("[data-targets]");
  const renumber = () => {
    [...list.querySelectorAll("[data-target-row]")].forEach((row, i) => {
      row.querySelectorAll("[name]").forEach((input) => { input.name = input.name.replace(/^targets\.[^.]+\./, `targets.${i}.`); });
    });
  };
  const showKind = (row) => {
    const kind = row.querySelector("[data-target-kind]").value;
    row.querySelectorAll("[data-kind]").forEach((f) => {
      f.hidden = f.dataset.kind !== kind;
      f.querySelectorAll("[name]").forEach((i) => { i.disabled = f.hidden; });
    });
  };
  list.querySelectorAll("[data-target-row]").forEach(showKind);
  maasForm.addEventListener("change", (e) => { if (e.target.matches("[data-target-kind]")) showKind(e.target.closest("[data-target-row]")); });
  maasForm.querySelector("[data-target-add]").addEventListener("click", () => {
    const fragment = document.getElementById("target-template").content.cloneNode(true);
    list.append(fragment);
    renumber();
    showKind(list.lastElementChild);
  });
  maasForm.addEventListener("click", (e) => {
    if (e.target.matches("[data-target-remove]")) { e.target.closest("[data-target-row]").remove(); renumber(); }
  });
}
