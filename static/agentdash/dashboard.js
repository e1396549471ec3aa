// agentdash's pages: the live connection's state, fragments applied in the right order,
// notices, the approval queue's keyboard shortcuts, deadline countdowns and browser
// notifications. Plain JavaScript, no framework;
// htmx and its websocket extension do the rest.
"use strict";

(() => {
  // --- The live connection ---------------------------------------------------------
  // #live-status[data-state]: connecting, live (the snapshot is in), offline, logged-out.
  const CLOSE_LOGIN_REQUIRED = 4401;
  const CLOSE_NOT_FOUND = 4404;

  function showStatus(state, text) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  document.addEventListener("htmx:wsConnecting", () => showStatus("connecting", "connecting…"));
  document.addEventListener("htmx:wsAfterMessage", () => showStatus("live", "live"));
  document.addEventListener("htmx:wsClose", (event) => {
    const code = event.detail.event.code;
    if (code === CLOSE_LOGIN_REQUIRED) showStatus("logged-out", "logged out: reload to log in");
    else if (code === CLOSE_NOT_FOUND) showStatus("offline", "this page no longer exists");
    else showStatus("offline", "offline: reconnecting…");
  });

  // --- Fragments in the right order --------------------------------------------------
  // Each card, row and message carries data-rev, the moment it last changed. Two
  // processes may push changes of one call in either order, and a reconnecting socket
  // resends what the page already shows: keep whichever version is newer.
  const rev = (element) => Number(element.dataset.rev || 0);

  document.addEventListener("htmx:oobBeforeSwap", (event) => {
    const { target, fragment } = event.detail;
    const incoming = fragment.firstElementChild;
    if (incoming && incoming.id && incoming.id === target.id) {
      // The element itself is replaced: a card, a header, or a whole list (a snapshot).
      if (target.dataset.rev && rev(incoming) < rev(target)) {
        event.detail.shouldSwap = false;
      } else if (target.hasAttribute("data-live-list")) {
        keepUnchanged(incoming);
      }
    } else if (target.hasAttribute("data-live-list")) {
      // Items appended to a list: one already shown is updated where it stands.
      for (const item of [...fragment.children]) upsert(item);
    }
  });

  function upsert(item) {
    const current = item.id && document.getElementById(item.id);
    if (!current) return;
    if (rev(item) >= rev(current)) {
      current.replaceWith(item);
      htmx.process(item);
    } else {
      item.remove();
    }
  }

  // A snapshot replaces a list wholesale; its items that did not change keep their
  // element, so a half-typed reason or an open editor survives a reconnect.
  function keepUnchanged(list) {
    const focused = document.activeElement;
    for (const item of [...list.children]) {
      const current = item.id && document.getElementById(item.id);
      if (current && current.dataset.rev === item.dataset.rev) item.replaceWith(current);
    }
    if (focused && focused !== document.activeElement) {
      requestAnimationFrame(() => document.body.contains(focused) && focused.focus());
    }
  }

  // --- Notices -----------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const dismiss = event.target.closest(".notice .dismiss");
    if (dismiss) dismiss.closest(".notice").remove();
  });
  // Success notices leave by themselves; errors stay until dismissed.
  const NOTICE_SECONDS = 8;
  new MutationObserver(() => {
    for (const notice of document.querySelectorAll("#notices .notice.success:not([data-timed])")) {
      notice.dataset.timed = "";
      setTimeout(() => notice.remove(), NOTICE_SECONDS * 1000);
    }
  }).observe(document.documentElement, { childList: true, subtree: true });

  // --- The approval queue ------------------------------------------------------------
  const queueCards = () => [...document.querySelectorAll("#queue-list > [data-call-card]")];
  let selectedId = null;
  let selectedIndex = 0;

  function select(card, { focus = true } = {}) {
    for (const other of document.querySelectorAll("#queue-list > .selected")) {
      other.classList.remove("selected");
    }
    if (!card) return;
    card.classList.add("selected");
    selectedId = card.id;
    selectedIndex = queueCards().indexOf(card);
    if (focus) {
      card.focus({ preventScroll: true });
      card.scrollIntoView({ block: "nearest" });
    }
  }

  function selected() {
    const cards = queueCards();
    return cards.find((card) => card.id === selectedId) || null;
  }

  // After any change, the count follows the cards, and a decided card's place goes to
  // the card that took it.
  function queueChanged() {
    const list = document.getElementById("queue-list");
    if (!list) return;
    const cards = queueCards();
    const count = document.getElementById("queue-count");
    if (count) count.textContent = cards.length;
    const nav = document.querySelector("[data-testid=nav-queue-count]");
    if (nav) nav.textContent = cards.length;
    if (selectedId && !selected() && cards.length) {
      select(cards[Math.min(selectedIndex, cards.length - 1)]);
    }
  }
  document.addEventListener("htmx:wsAfterMessage", queueChanged);
  document.addEventListener("htmx:afterSwap", queueChanged);
  document.addEventListener("htmx:oobAfterSwap", queueChanged);

  function open(card, part, fieldSelector) {
    const details = card.querySelector(part);
    if (!details) return;
    details.open = true;
    const field = details.querySelector(fieldSelector);
    field.focus();
    if (field.select) field.select();
  }

  document.addEventListener("focusin", (event) => {
    const card = event.target.closest && event.target.closest("#queue-list > [data-call-card]");
    if (card && card.id !== selectedId) select(card, { focus: false });
  });

  document.addEventListener("keydown", (event) => {
    if (!document.getElementById("queue-list")) return;
    const typing = event.target.closest("input, textarea, select");
    if (typing) {
      if (event.key === "Escape") {
        const details = typing.closest("details");
        if (details) details.open = false;
        const card = typing.closest("[data-call-card]");
        if (card) card.focus();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && typing.form) {
        event.preventDefault();
        typing.form.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const cards = queueCards();
    const card = selected();
    const index = card ? cards.indexOf(card) : -1;
    switch (event.key) {
      case "j":
        select(cards[Math.min(index + 1, cards.length - 1)]);
        break;
      case "k":
        select(cards[Math.max(index - 1, 0)]);
        break;
      case "a":
        if (card) card.querySelector("[data-testid=approve]")?.click();
        break;
      case "e":
        if (card) open(card, ".decide-edit", "textarea");
        break;
      case "r":
        if (card) open(card, ".decide-reject", "input[name=reason]");
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", () => {
    const first = queueCards()[0];
    if (first) select(first);
  });

  // --- Deadlines -----------------------------------------------------------------------
  // A waiting call's card shows its deadline (server-rendered, absolute, UTC) and a
  // countdown beside it. The countdown only informs: the server expires the call and
  // pushes the changed card, which replaces this one.
  const URGENT_SECONDS = 60;

  function countdownText(seconds) {
    const minutes = Math.floor(seconds / 60);
    const hours = Math.floor(minutes / 60);
    const ss = String(seconds % 60).padStart(2, "0");
    if (hours) return `${hours}:${String(minutes % 60).padStart(2, "0")}:${ss}`;
    return `${minutes}:${ss}`;
  }

  function tick() {
    for (const countdown of document.querySelectorAll("[data-countdown]")) {
      const left = Math.ceil((Date.parse(countdown.dataset.countdown) - Date.now()) / 1000);
      const state = left <= 0 ? "expired" : left < URGENT_SECONDS ? "urgent" : "running";
      countdown.dataset.state = state;
      countdown.textContent = state === "expired" ? "expired" : `expires in ${countdownText(left)}`;
    }
  }
  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
  });
  // New cards count down from the moment they arrive, not from the next second.
  document.addEventListener("htmx:wsAfterMessage", tick);
  document.addEventListener("htmx:afterSwap", tick);

  // --- Browser notifications on the queue page ----------------------------------------
  // Opt-in with the queue's toggle (the browser's permission is asked on that click,
  // never on load); the choice is kept in this browser. Only while the page is hidden:
  // an operator looking at the queue sees the card arrive.
  const NOTIFY_KEY = "agentdash.notify";
  const notifyWanted = () => localStorage.getItem(NOTIFY_KEY) === "on";
  let knownCards = new Set();

  function showToggle() {
    const toggle = document.getElementById("notify-toggle");
    if (!toggle) return;
    if (!("Notification" in window)) {
      toggle.disabled = true;
      toggle.textContent = "Notifications: not supported by this browser";
      return;
    }
    const on = notifyWanted() && Notification.permission === "granted";
    toggle.setAttribute("aria-pressed", String(on));
    toggle.dataset.state = Notification.permission === "denied" ? "blocked" : on ? "on" : "off";
    toggle.textContent =
      Notification.permission === "denied"
        ? "Notifications: blocked in this browser's settings"
        : `Notifications: ${on ? "on" : "off"}`;
  }

  document.addEventListener("click", async (event) => {
    if (!event.target.closest("#notify-toggle")) return;
    if (notifyWanted()) {
      localStorage.setItem(NOTIFY_KEY, "off");
    } else {
      const permission = await Notification.requestPermission();
      localStorage.setItem(NOTIFY_KEY, permission === "granted" ? "on" : "off");
    }
    showToggle();
  });

  function notifyNewCards() {
    const cards = queueCards();
    const arrived = cards.filter((card) => !knownCards.has(card.id));
    knownCards = new Set(cards.map((card) => card.id));
    if (!document.hidden || !notifyWanted() || Notification.permission !== "granted") return;
    for (const card of arrived) {
      const tool = card.querySelector("[data-testid=tool-name]")?.textContent || "A tool";
      const goal = card.querySelector("[data-testid=session-goal]")?.textContent || "";
      const notification = new Notification(`${tool} waits for approval`, {
        body: goal,
        tag: card.id, // one notification per call, however often its card is pushed
      });
      notification.onclick = () => {
        window.focus();
        location.hash = card.id;
        select(document.getElementById(card.id));
        notification.close();
      };
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    knownCards = new Set(queueCards().map((card) => card.id));
    showToggle();
  });
  document.addEventListener("htmx:wsAfterMessage", notifyNewCards);
})();
