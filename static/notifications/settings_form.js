// Provider presets: picking one fills host, port, security and the published sending limits
// (and, for Office 365, the sign-in method), and shows what the provider demands. The sign-in method shows only its own fields.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const providers = JSON.parse(document.getElementById("smtp-providers").textContent);
  const byKey = Object.fromEntries(providers.map((p) => [p.key, p]));
  const select = document.getElementById("id_provider");
  const note = document.getElementById("provider-note");
  const method = document.getElementById("id_auth_method");
  const passwordLabel = document.querySelector("label[for=id_password]");
  const defaultPasswordLabel = passwordLabel ? passwordLabel.textContent : "";
  if (!select) return;

  // Which rows each sign-in method uses; every row named here is hidden for the other methods.
  const ROWS = {
    password: ["password", "password_status", "remove_password", "keep_password", "auth_mechanism"],
    "microsoft-oauth2": [
      "tenant_id", "client_id", "client_secret", "client_secret_status",
      "client_secret_expires", "token_url", "scope",
    ],
    "google-oauth2": ["service_account", "service_account_status", "token_url", "scope"],
  };
  const allRows = new Set(Object.values(ROWS).flat());

  function showMethod() {
    if (!method) return;
    const shown = new Set(ROWS[method.value] || []);
    for (const name of allRows) {
      for (const row of document.querySelectorAll(`.form-row.field-${name}`)) {
        row.hidden = !shown.has(name);
      }
    }
    const oauth = document.querySelector("fieldset.oauth2");
    if (oauth) oauth.hidden = method.value === "password";
  }

  // Right under the select it describes, and announced with it.
  select.closest(".flex-container").after(note);
  select.setAttribute("aria-describedby", note.id);

  function showNote(provider) {
    note.replaceChildren();
    if (provider && provider.note) note.append(provider.note);
    if (provider && provider.checklist.length) {
      const list = document.createElement("ol");
      list.className = "provider-checklist";
      for (const step of provider.checklist) {
        const item = document.createElement("li");
        item.textContent = step;
        list.append(item);
      }
      note.append(list);
    }
    if (provider && provider.limits_note) {
      const limits = document.createElement("p");
      limits.textContent = provider.limits_note;
      note.append(limits);
    }
    note.hidden = !note.textContent;
    if (passwordLabel) {
      const label = provider && provider.password_label;
      passwordLabel.textContent = label ? `${label}:` : defaultPasswordLabel;
    }
  }

  select.addEventListener("change", () => {
    const provider = byKey[select.value];
    if (provider && provider.host) {
      document.getElementById("id_host").value = provider.host;
      document.getElementById("id_port").value = provider.port;
      document.getElementById("id_security").value = provider.security;
      // Another provider's limits would not apply: take this one's (0 where none is published).
      const limits = { rate_per_minute: provider.rate_per_minute, rate_per_hour: 0, rate_per_day: provider.rate_per_day };
      for (const [name, value] of Object.entries(limits)) {
        const input = document.getElementById(`id_${name}`);
        if (input) input.value = value;
      }
    }
    if (provider && provider.auth_method && method) {
      method.value = provider.auth_method;
      showMethod();
    }
    showNote(provider);
  });
  // A host typed by hand is no longer the preset's: the preset (and its note) gives way to Custom.
  document.getElementById("id_host")?.addEventListener("input", (event) => {
    const provider = byKey[select.value];
    if (provider && provider.host && event.target.value.trim() !== provider.host) {
      select.value = "custom";
      showNote(byKey.custom);
    }
  });
  method?.addEventListener("change", showMethod);
  showNote(byKey[select.value]);
  showMethod();
});
