// Send test email / Test connection without leaving the page: POST the form's values, show the
// report in place, then refresh the health panel (its "Last test") from the server. Without this
// script a button posts the form itself and the page comes back with the report and the panel.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const buttons = ["test-email-button", "test-connection-button"]
    .map((id) => document.getElementById(id))
    .filter(Boolean);
  if (!buttons.length || !buttons[0].form) return;
  const form = buttons[0].form;
  const status = document.getElementById("test-email-status");
  const result = document.getElementById("test-email-result");
  const recipient = document.getElementById("id_test-to");
  const text = status.dataset; // translated messages, rendered by the template
  const FRAGMENT_STATUSES = [200, 400, 429]; // the result, invalid values, rate-limited

  function enableCopy() {
    for (const copy of result.querySelectorAll("[data-copy-target]")) {
      const source = document.getElementById(copy.dataset.copyTarget);
      copy.hidden = false;
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(source.textContent);
        } catch {
          // No clipboard API outside secure contexts: select the text and copy it the old way.
          source.closest("details").open = true;
          window.getSelection().selectAllChildren(source);
          document.execCommand("copy");
        }
        status.textContent = text.copied;
      });
    }
  }

  function disable(disabled) {
    for (const button of buttons) button.disabled = disabled;
  }

  function setBusy(busy) {
    disable(busy);
    result.setAttribute("aria-busy", String(busy));
    status.classList.toggle("test-email-busy", busy);
    status.textContent = busy ? text.busy : "";
  }

  // Over the per-minute limit: the buttons stay disabled, counting down, rather than failing.
  let countdown = null;
  function waitFor(seconds) {
    clearInterval(countdown);
    let left = Math.max(0, Math.ceil(seconds));
    const tick = () => {
      if (left <= 0) {
        clearInterval(countdown);
        disable(false);
        status.textContent = "";
        return;
      }
      disable(true);
      status.textContent = text.wait.replace("%(seconds)s", left);
      left -= 1;
    };
    tick();
    countdown = setInterval(tick, 1000);
  }

  // The panel as the server renders it now; on any failure the old one stays (a reload shows it).
  async function refreshPanel() {
    const panel = document.querySelector(".smtp-health[data-refresh-url]");
    if (!panel) return;
    try {
      const response = await fetch(panel.dataset.refreshUrl, {
        headers: { "X-Requested-With": "XMLHttpRequest" },
        credentials: "same-origin",
      });
      if (!response.ok || response.redirected) return;
      const html = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = html.querySelector(".smtp-health");
      if (fresh) panel.replaceWith(fresh);
    } catch {
      // Not worth a message: the test's own result is on the page.
    }
  }

  async function runTest(button) {
    setBusy(true);
    let message = "";
    let retryAfter = 0;
    let tested = false;
    try {
      const response = await fetch(button.formAction, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-Requested-With": "XMLHttpRequest" },
        credentials: "same-origin",
      });
      if (response.redirected) {
        message = text.expired; // the admin sends an expired session to its login page
      } else if (!FRAGMENT_STATUSES.includes(response.status)) {
        message = `${text.failed} (HTTP ${response.status})`;
      } else {
        result.innerHTML = await response.text(); // server-rendered and escaped by Django
        enableCopy();
        if (response.status === 429) retryAfter = Number(response.headers.get("Retry-After"));
        tested = response.status === 200; // a run was recorded (or could not start)
      }
    } catch {
      message = text.failed;
    } finally {
      setBusy(false);
    }
    status.textContent = message;
    const heading = document.getElementById("test-email-result-heading");
    if (!message && heading) {
      // The result starts at the top of the window, its heading focused for screen readers.
      heading.scrollIntoView({ block: "start" });
      heading.focus({ preventScroll: true });
    }
    if (retryAfter > 0) waitFor(retryAfter);
    if (tested) await refreshPanel();
  }

  form.addEventListener("submit", (event) => {
    if (!buttons.includes(event.submitter)) return;
    event.preventDefault();
    if (!event.submitter.disabled) runTest(event.submitter);
  });
  // Enter in the recipient field means "send the test", not the form's default "Save".
  recipient?.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      document.getElementById("test-email-button").click();
    }
  });
  enableCopy();
  const limited = Number(buttons[0].dataset.retryAfter);
  if (limited > 0) waitFor(limited);
});
