// A service's page, live: the status stream (server-sent events) refreshes the observed state and the
// replicas table on every transition, and the log view shows a replica's last lines then follows it.
// EventSource sends the session cookie, which the portal's console bridge turns into the user's token.

import { api } from "./api.js";
import { refresh, t } from "./ui.js";

const TAIL = 200;

function watchStatus() {
  const panel = document.getElementById("observed-panel");
  const url = panel?.dataset.statusStream;
  if (!url) return;
  const source = new EventSource(url);
  let pending = null;
  const later = () => {
    clearTimeout(pending); // a burst of transitions: one refresh
    pending = setTimeout(
      () => refresh("service-badge", "service-actions", "observed-panel", "replicas-panel"),
      300,
    );
  };
  source.addEventListener("transition", later);
  // A transition between the page's rendering and the stream's (re)connection is sent by no stream:
  // every opening catches up once.
  source.addEventListener("open", later);
  // The server ends a stream after a while; EventSource reconnects by itself (with Last-Event-ID).
  window.addEventListener("pagehide", () => source.close());
}

let follower = null;

async function showLog(replica) {
  const panel = document.getElementById("log-panel");
  if (!panel) return;
  follower?.close();
  panel.hidden = false;
  const out = panel.querySelector("[data-live-log]");
  const note = panel.querySelector("[data-log-note]");
  panel.querySelector("[data-log-replica]").textContent = replica;
  out.textContent = "";
  note.textContent = t("services.log_loading");
  const base = `${panel.dataset.logs}?replica=${encodeURIComponent(replica)}`;
  // The tail first, through fetch: an error (a runtime without logs here) comes with its message.
  let log;
  try {
    log = await api.get(`${base}&tail=${TAIL}`);
  } catch (err) {
    note.textContent = err.message;
    return;
  }
  out.textContent = log.lines.length ? `${log.lines.join("\n")}\n` : "";
  note.textContent = log.note || t("services.log_following");
  // The stream sends the same last lines then each new one, from one offset (no line lost between the
  // two requests); on every (re)connection it starts over, so the view does too.
  follower = new EventSource(`${base}&follow=true&tail=${TAIL}`);
  follower.addEventListener("open", () => { out.textContent = ""; });
  follower.addEventListener("line", (message) => {
    const { line } = JSON.parse(message.data);
    const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.append(`${line}\n`);
    if (atEnd) out.scrollTop = out.scrollHeight;
  });
  panel.scrollIntoView({ block: "nearest" });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-show-log]");
  if (button) showLog(button.dataset.showLog);
});
window.addEventListener("pagehide", () => follower?.close());
watchStatus();
