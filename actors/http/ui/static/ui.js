// The web UI's only script: no build step, no library. The pages work without it;
// it refreshes the parts marked data-live and copies JSON to the clipboard.
"use strict";

const LIVE_INTERVAL_MS = 2000;

function followLive(region) {
  const url = region.dataset.live;
  let timer = null;
  async function refresh() {
    timer = null;
    if (!document.hidden) {
      let response;
      try {
        response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      } catch (error) {
        response = null;
      }
      if (response && response.ok) {
        const html = await response.text();
        // Replaced only when it changed, so that focus and selection stay put.
        if (html !== region.dataset.shown) {
          const focused = document.activeElement && document.activeElement.id;
          region.innerHTML = html;
          region.dataset.shown = html;
          if (focused && document.getElementById(focused)) {
            document.getElementById(focused).focus();
          }
        }
        if (response.headers.get("X-Live-Final") === "1") {
          // The instance ended and its history is complete: nothing more will
          // change, and what only a running instance offers (its actions) goes.
          for (const part of document.querySelectorAll("[data-while-running]")) {
            part.remove();
          }
          return;
        }
      } else if (response && (response.status === 401 || response.status === 404)) {
        return;
      }
    }
    timer = setTimeout(refresh, LIVE_INTERVAL_MS);
  }
  timer = setTimeout(refresh, LIVE_INTERVAL_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) {
      timer = setTimeout(refresh, 0);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-live]")) {
    followLive(region);
  }
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    const source = document.getElementById(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch (error) {
      // No clipboard (a page over plain HTTP elsewhere than localhost): select it instead.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: copy with Ctrl+C";
    }
  });
});
