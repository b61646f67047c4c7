// Tandem's pages work without this file; with it, logs stream in, the log can be searched,
// and pages showing something in motion refresh themselves.
"use strict";

const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// SGR colour codes to the classes the server uses.
function ansi(text) {
  let out = "", open = false;
  const parts = text.split(/\x1b\[([0-9;]*)m/);
  for (let i = 0; i < parts.length; i++) {
    if (i % 2 === 0) { out += escapeHtml(parts[i]); continue; }
    if (open) { out += "</span>"; open = false; }
    const classes = parts[i].split(";").map(Number).flatMap((c) =>
      c === 1 ? ["bold"] : (c >= 30 && c <= 37) || (c >= 90 && c <= 97) ? ["fg-" + c] : []);
    if (classes.length) { out += '<span class="' + classes.join(" ") + '">'; open = true; }
  }
  return open ? out + "</span>" : out;
}

function follow(log) {
  let n = log.querySelectorAll("li[id^=L]").length;
  const source = new EventSource(log.dataset.follow);
  source.addEventListener("lines", (event) => {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    const fragment = document.createDocumentFragment();
    for (const line of JSON.parse(event.data)) {
      n += 1;
      const li = document.createElement("li");
      li.id = "L" + n;
      li.innerHTML = '<a class="ln" href="#L' + n + '" aria-label="line ' + n + '">' + n + '</a><span class="job">' +
        escapeHtml(line.job) + "</span> " + ansi(line.text);
      fragment.appendChild(li);
    }
    log.appendChild(fragment);
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  });
  source.addEventListener("end", () => { source.close(); window.location.reload(); });
}

function search(input) {
  const log = document.getElementById(input.dataset.logSearch);
  input.addEventListener("input", () => {
    const query = input.value.toLowerCase();
    for (const li of log.querySelectorAll("li[id^=L]")) {
      li.hidden = query !== "" && !li.textContent.toLowerCase().includes(query);
    }
  });
}

// A page with `data-live` reloads its main part while nobody is typing in it.
function live(main) {
  setInterval(async () => {
    if (main.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")) return;
    const answer = await fetch(window.location.href, { headers: { "accept": "text/html" } });
    if (!answer.ok) return;
    const next = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("main");
    if (next) main.innerHTML = next.innerHTML;
  }, Number(main.dataset.live));
}

// A link to a line outside the page of the log shown opens the page that holds it.
function deepLink(log) {
  const wanted = /^#L(\d+)$/.exec(window.location.hash);
  if (!wanted || document.getElementById("L" + wanted[1])) return;
  const line = Number(wanted[1]), size = Number(log.dataset.window);
  const from = Math.floor((line - 1) / size) * size + 1;
  if (from !== Number(log.dataset.from)) window.location.replace("/runs/" + log.dataset.run + "?from=" + from + "#L" + line);
}

document.querySelectorAll("ol.log[data-window]").forEach(deepLink);
document.querySelectorAll("[data-follow]").forEach(follow);
document.querySelectorAll("[data-log-search]").forEach(search);
document.querySelectorAll("main[data-live]").forEach(live);
