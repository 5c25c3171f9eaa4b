// spooler web: each part of a page (an element with data-part) is fetched again every few
// seconds and swapped in, so counts and charts stay current without reloading the page.
// A part where the operator is picking events or typing is left alone until they finish.
"use strict";

const REFRESH_MS = 5000;

function partAddress(name) {
  const address = new URL(window.location.href);
  address.searchParams.set("part", name);
  address.hash = "";
  return address;
}

function busy(part) {
  return (
    part.querySelector("input[type=checkbox]:checked") !== null ||
    part.contains(document.activeElement)
  );
}

async function refresh() {
  if (document.hidden) {
    return;
  }
  for (const part of document.querySelectorAll("[data-part]")) {
    if (busy(part)) {
      continue;
    }
    try {
      const answer = await fetch(partAddress(part.dataset.part), { credentials: "same-origin" });
      if (answer.ok && !busy(part)) {
        part.innerHTML = await answer.text();
        part.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      // The dashboard is restarting, or the network is down: try again next time.
    }
  }
}

document.addEventListener("change", (event) => {
  const box = event.target;
  if (box instanceof HTMLInputElement && box.hasAttribute("data-pick-all")) {
    for (const each of box.form.querySelectorAll("input[name=id]")) {
      each.checked = box.checked;
    }
  }
});

window.setInterval(refresh, REFRESH_MS);
