// Provider presets: picking one fills host, port and security and shows what the provider demands.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const providers = JSON.parse(document.getElementById("smtp-providers").textContent);
  const byKey = Object.fromEntries(providers.map((p) => [p.key, p]));
  const select = document.getElementById("id_provider");
  const note = document.getElementById("provider-note");
  if (!select) return;

  // Right under the select it describes, and announced with it.
  select.closest(".flex-container").after(note);
  select.setAttribute("aria-describedby", note.id);

  function showNote(provider) {
    note.textContent = provider && provider.note ? provider.note : "";
    note.hidden = !note.textContent;
  }

  select.addEventListener("change", () => {
    const provider = byKey[select.value];
    if (provider && provider.host) {
      document.getElementById("id_host").value = provider.host;
      document.getElementById("id_port").value = provider.port;
      document.getElementById("id_security").value = provider.security;
    }
    showNote(provider);
  });
  showNote(byKey[select.value]);
});
