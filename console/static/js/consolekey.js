// The model page: put the console's API key (if this tab has one) into the examples' export line.
import { loadKey } from "./keystore.js";

const key = loadKey(document.body.dataset.ws);
if (key) document.querySelectorAll("[data-key-slot]").forEach((n) => { n.textContent = key.secret; });
