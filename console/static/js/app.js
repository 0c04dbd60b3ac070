// Loaded by every page: declarative forms and buttons, auto-submitting filter forms, tabs, copy buttons
// and the flash message left by the previous page.

import "./forms.js";
import { copy, showPendingFlash } from "./ui.js";

showPendingFlash();

document.addEventListener("change", (event) => {
  const form = event.target.closest("form[data-autosubmit]");
  if (form && !event.target.hasAttribute("data-no-autosubmit")) form.requestSubmit();
});

document.addEventListener("click", (event) => {
  const copyButton = event.target.closest("[data-copy-from]");
  if (copyButton) {
    const source = document.querySelector(copyButton.dataset.copyFrom);
    if (source) copy(source.textContent, copyButton);
    return;
  }
  const tab = event.target.closest("[data-tab]");
  if (tab) {
    const scope = tab.closest("[data-examples], [data-tabs]") || document;
    scope.querySelectorAll("[data-tab]").forEach((b) => b.setAttribute("aria-selected", String(b === tab)));
    scope.querySelectorAll("[data-tabpanel]").forEach((p) => { p.hidden = p.dataset.tabpanel !== tab.dataset.tab; });
  }
});
