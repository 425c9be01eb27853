// Keyboard shortcuts, timing and a client-made submission id. Everything also works without JavaScript.
(function () {
  const form = document.getElementById("task-form");
  if (!form) return;
  const t0 = Date.now();
  const kind = form.dataset.kind, n = parseInt(form.dataset.n, 10);
  if (window.crypto && crypto.randomUUID && !form.client_id.value) form.client_id.value = crypto.randomUUID().replace(/-/g, "");
  form.addEventListener("submit", () => { form.duration_ms.value = String(Date.now() - t0); });
  const click = (id) => { const b = document.getElementById(id); if (b) b.click(); };
  let cursor = 0;
  const cards = Array.from(document.querySelectorAll(".response"));
  const mark = () => cards.forEach((c, i) => c.classList.toggle("cursor", kind === "ranking" && i === cursor));
  mark();
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (["SELECT", "INPUT", "TEXTAREA"].includes(e.target.tagName) && e.key !== "Enter") return;
    const k = e.key;
    if (kind === "pairwise") {
      const map = {"1": "choose-A", "2": "choose-B", "3": "choose-tie", "4": "choose-both_bad"};
      if (map[k]) { e.preventDefault(); click(map[k]); }
    } else if (kind === "ranking") {
      if (/^[1-9]$/.test(k) && parseInt(k, 10) <= n || k.toLowerCase() === "f") {
        e.preventDefault();
        const sel = cards[cursor].querySelector("select");
        sel.value = k.toUpperCase();
        cursor = Math.min(cursor + 1, n - 1); mark();
      } else if (k === "Backspace") { e.preventDefault(); cursor = Math.max(cursor - 1, 0); mark(); }
      else if (k === "Enter") { e.preventDefault(); click("submit"); }
    } else if (kind === "rating") {
      if (/^[0-9]$/.test(k)) { e.preventDefault(); click("rate-" + (k === "0" ? "10" : k)); }
    } else if (kind === "thumbs") {
      if (k === "u") click("thumb-up"); else if (k === "d") click("thumb-down");
    }
  });
})();
