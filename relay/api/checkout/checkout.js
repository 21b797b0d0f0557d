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
  var lang = encodeURIComponent(document.documentElement.lang);
  var last = status ? status.textContent : "";
  function show(p) {
    if (!p || !status || p.status_text === last) return;
    last = p.status_text;
    status.textContent = p.status_text;
    status.className = "status status-" + p.status_class;
    if (!p.open) {
      document.querySelectorAll("section.method, nav.methods, .expiry").forEach(function (n) {
        n.hidden = true;
      });
    }
    if (p.redirect_url && !document.querySelector("a.return")) {
      var a = document.createElement("a");
      a.className = "return";
      a.href = p.redirect_url;
      a.textContent = p.redirect_text;
      var line = document.createElement("p");
      line.appendChild(a);
      status.parentNode.appendChild(line);
    }
  }
  // Live: Server-Sent Events; where they are missing or keep failing, a look every two seconds.
  var polling = null;
  function poll() {
    if (polling) return;
    polling = setInterval(function () {
      fetch(root.getAttribute("data-status-url") + "?lang=" + lang, { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(show)
        .catch(function () {});
    }, 2000);
  }
  if (window.EventSource) {
    var heard = false;
    var source = new EventSource(root.getAttribute("data-events-url") + "?lang=" + lang);
    source.addEventListener("status", function (e) {
      heard = true;
      try { show(JSON.parse(e.data)); } catch (err) { /* ignore a malformed event */ }
    });
    source.onerror = function () {
      if (!heard) { source.close(); poll(); }
    };
  } else {
    poll();
  }
})();
