// The checkout page's small script: copy buttons, the countdown, and the status kept current
// without a reload (polling the page's public JSON). The page works without it.
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root) return;
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) return;
      navigator.clipboard.writeText(el.textContent.trim()).then(function () {
        var was = b.textContent;
        b.textContent = root.getAttribute("data-copied");
        setTimeout(function () { b.textContent = was; }, 1500);
      });
    });
  });
  var countdown = document.getElementById("countdown");
  var expires = parseInt(root.getAttribute("data-expires"), 10) * 1000;
  function tick() {
    if (!countdown) return;
    var left = Math.max(0, Math.floor((expires - Date.now()) / 1000));
    var m = Math.floor(left / 60), s = left % 60;
    countdown.textContent = m + ":" + (s < 10 ? "0" : "") + s;
  }
  tick();
  setInterval(tick, 1000);
  var status = document.getElementById("status");
  var url = root.getAttribute("data-status-url");
  var last = status ? status.textContent : "";
  function poll() {
    fetch(url + "?lang=" + encodeURIComponent(document.documentElement.lang), { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p || !status) return;
        if (p.status_text !== last) {
          last = p.status_text;
          status.textContent = p.status_text;
          status.className = "status status-" + p.status_class;
          if (!p.open) {
            document.querySelectorAll("section.method, nav[aria-label]").forEach(function (n) {
              if (n.parentNode === root && n.querySelector(".tabs")) n.hidden = true;
            });
            document.querySelectorAll("section.method").forEach(function (n) { n.hidden = true; });
          }
        }
      })
      .catch(function () {});
  }
  setInterval(poll, 2000);
})();
