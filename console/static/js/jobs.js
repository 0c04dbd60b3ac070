// Following a stack update live: a stack request is queued (202), a worker picks it into a job, and the
// job's progress arrives as server-sent events (/api/jobs/{id}/events; EventSource sends the session
// cookie, which the portal's console bridge turns into the user's token).

import { api } from "./api.js";
import { el, flash, flashNext, t } from "./ui.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Each line shows when its event happened (`at`, from the server), not when the page read it: a page
// opened after the job shows the job's own times.
export function line(log, kind, text, at = null) {
  const when = at ? new Date(at) : new Date();
  const stamp = Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString();
  log.append(el("div", { class: `ev-${kind}`, "data-at": at || null }, `${stamp}  ${text}`));
  log.scrollTop = log.scrollHeight;
}

// Streams a job's events into `log`; resolves with the job's final status.
export function streamJob(jobId, log, onEvent = () => {}) {
  return new Promise((resolve) => {
    const source = new EventSource(`/api/jobs/${jobId}/events`);
    let status = null;
    const handle = (kind) => (message) => {
      let data = {};
      try { data = JSON.parse(message.data); } catch { /* keep-alive */ }
      if (kind === "end") { source.close(); resolve(data.status || status); return; }
      if (kind === "status") status = data.data?.status || data.message;
      const failed = kind === "request" && data.data?.status === "failed";
      line(log, failed || status === "failed" ? "error" : kind, data.message || kind, data.at);
      if (failed && data.data?.error) line(log, "error", `  ${data.data.error}`, data.at);
      onEvent(kind, data);
    };
    for (const kind of ["status", "log", "request", "pull_request", "preview", "step", "summary", "up", "end"]) {
      source.addEventListener(kind, handle(kind));
    }
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) resolve(status); };
  });
}

// After a servings call answered 202: wait for a worker to take the request, then stream its job.
export async function followRequest(requestOut, panel, { reload = true } = {}) {
  panel.hidden = false;
  const log = panel.querySelector("[data-log]");
  line(log, "status", t("job.request_queued", { id: requestOut.id, action: t(`action.${requestOut.action}`) }));
  let current = requestOut;
  for (let i = 0; !current.job_id && i < 600; i++) {
    await sleep(i < 20 ? 250 : 1000);
    current = await api.get(requestOut.links.request);
    if (["failed", "rejected"].includes(current.status)) break;
  }
  if (!current.job_id) {
    line(log, "error", current.error || t("job.not_taken"));
    flash(current.error || t("job.not_taken"), "error");
    return current.status;
  }
  line(log, "status", t("job.taken", { id: current.job_id }));
  const status = await streamJob(current.job_id, log);
  const final = await api.get(requestOut.links.request);
  if (final.status === "applied" || final.status === "proposed") {
    flash(t("job.done", { id: current.job_id }), "ok");
    panel.dispatchEvent(new CustomEvent("job:done", { detail: final, bubbles: true }));
    if (reload) {
      flashNext(t("job.done", { id: current.job_id }));
      // A deleted service has no page any more: go back to the list.
      setTimeout(() => (final.action === "delete" ? location.assign("/console/services") : location.reload()), 1200);
    }
  } else {
    flash(final.error || t("job.failed", { status }), "error");
  }
  return final.status;
}

// The job page: its log, live while it runs.
const jobLog = document.querySelector("[data-job-log]");
if (jobLog) {
  const id = jobLog.dataset.events.match(/jobs\/(\d+)/)[1];
  streamJob(id, jobLog).then((status) => {
    const badge = document.querySelector("[data-job-state] .state");
    if (badge && status) { badge.className = `state state-${status}`; badge.textContent = t(`state.${status}`); }
  });
}
