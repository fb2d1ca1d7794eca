// Keel console: live inbox, edit markers, keyboard shortcuts. No framework, no build step.
// Everything the server sends is already escaped HTML; this file only swaps whole
// server-rendered fragments and sets textContent, never builds HTML from data.
(function () {
  "use strict";
  const body = document.body;
  const pollMs = parseInt(body.dataset.pollMs || "2000", 10);

  function every(fn) {
    let busy = false;
    setInterval(async function () {
      if (busy || document.hidden) return;
      busy = true;
      try { await fn(); } catch (e) { /* the next tick retries */ } finally { busy = false; }
    }, pollMs);
  }

  // -- live inbox: swap only the list, so nothing else on the page is touched ---------
  const inbox = document.getElementById("inbox");
  if (inbox && inbox.dataset.live) {
    let last = inbox.innerHTML.trim();
    every(async function () {
      const res = await fetch(inbox.dataset.live, { credentials: "same-origin", cache: "no-store" });
      if (res.redirected || !res.ok) return;
      const html = (await res.text()).trim();
      const count = res.headers.get("X-Keel-Count");
      if (count !== null) {
        const total = document.getElementById("inbox-total");
        if (total) total.textContent = count + " waiting";
        document.title = "Inbox (" + count + ") · Keel console";
      }
      if (html !== last) {
        last = html;
        inbox.innerHTML = html;
      }
    });
  }

  // -- a decision page learns if someone else decided while this reviewer works -------
  const liveStatus = body.dataset.liveStatus;
  if (liveStatus && body.dataset.status === "pending") {
    every(async function () {
      const res = await fetch(liveStatus, { credentials: "same-origin", cache: "no-store" });
      if (!res.ok) return;
      const data = await res.json();
      const waiting = document.getElementById("queue-live");
      if (waiting) waiting.textContent = String(data.waiting);
      if (data.status !== "pending") {
        const stale = document.getElementById("stale");
        if (stale) {
          stale.textContent = "Meanwhile this was " + data.status + " by " + data.decided_by +
            ". Your edits are kept below, but a decision is final: reload to see it.";
          stale.hidden = false;
        }
        document.querySelectorAll("#decide-form button, #reject-form button")
          .forEach(function (b) { b.disabled = true; });
      }
    });
  }

  // -- edited fields are marked, and Approve says it will approve the edits -----------
  const decide = document.getElementById("decide-form");
  const approve = document.getElementById("approve");
  function valueOf(el) {
    return el.type === "checkbox" ? (el.checked ? "true" : "false") : el.value;
  }
  function markEdits() {
    let edited = 0;
    decide.querySelectorAll("[data-original]").forEach(function (el) {
      const changed = valueOf(el).trim() !== (el.dataset.original || "").trim();
      el.closest(".field") && el.closest(".field").classList.toggle("edited", changed);
      if (changed && el.name && el.name.indexOf("arg.") === 0) edited += 1;
    });
    if (approve) approve.textContent = edited ? "Approve with edits" : "Approve";
  }
  if (decide) {
    decide.addEventListener("input", markEdits);
    decide.addEventListener("change", markEdits);
    markEdits();
  }

  // -- keyboard: a approves, r goes to the rejection reason, Ctrl+Enter rejects -------
  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  document.addEventListener("keydown", function (ev) {
    const reason = document.getElementById("reason");
    if (ev.target === reason && ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      const form = document.getElementById("reject-form");
      if (form) form.requestSubmit();
      return;
    }
    if (typing(ev.target) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "a" && decide) {
      ev.preventDefault();
      const submit = document.getElementById("approve") || document.getElementById("confirm");
      if (submit && !submit.disabled) decide.requestSubmit(submit);
    } else if (ev.key === "r" && reason) {
      ev.preventDefault();
      reason.focus();
    }
  });
})();
