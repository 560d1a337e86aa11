// Secrets: names and dates from GET /secrets; PUT sets a value, DELETE removes one. No value is
// ever read back, so none can be shown.
import { api, el, errorText, onSecondPress, setChildren, showAlert, takeOver, timeEl } from "/static/aob/api.js";

const rows = document.querySelector("#secrets tbody");
const alertBox = document.getElementById("secrets-alert");
const status = document.getElementById("secret-status");

// A value is never read back: Remove asks a second press, as the run page's Cancel and Delete do.
function removeButton(secret) {
  const button = el("button", { type: "button", class: "btn small danger" }, "Remove");
  onSecondPress(button, "Confirm: remove this secret", async () => {
    await api(`/secrets/${secret.name}`, { method: "DELETE" });
    await load();
  }, (err) => showAlert(alertBox, errorText(err)));
  return button;
}

async function load() {
  try {
    const items = await api("/secrets");
    setChildren(rows, items.length ? items.map((s) => el("tr", {},
      el("td", { class: "mono" }, s.name), el("td", {}, timeEl(s.created_at)), el("td", {}, timeEl(s.updated_at)),
      el("td", {}, removeButton(s)))) : el("tr", {}, el("td", { colspan: "4", class: "empty" }, "No secrets yet.")));
    showAlert(alertBox, "");
  } catch (err) { showAlert(alertBox, errorText(err)); }
}

takeOver(document.getElementById("secret-form"), async (ev) => {
  ev.preventDefault();
  const name = document.getElementById("secret-name");
  const value = document.getElementById("secret-value");
  try {
    await api(`/secrets/${encodeURIComponent(name.value)}`, { method: "PUT", body: { value: value.value } });
    status.textContent = `${name.value} saved.`;
    value.value = "";
    await load();
  } catch (err) { status.textContent = errorText(err); }
});

load();
