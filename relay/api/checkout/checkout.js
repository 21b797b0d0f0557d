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
    // Once part is paid in bitcoin, its amount, link and QR code are for what is still due.
    var btc = p.payment_methods && p.payment_methods.bitcoin;
    var btcSection = document.getElementById("bitcoin");
    if (btc && btc.uri && btcSection) {
      var amount = document.getElementById("bitcoin-amount");
      var uri = document.getElementById("bitcoin-uri");
      if (amount) amount.textContent = btc.amount;
      if (uri) uri.textContent = btc.uri;
      var due = btcSection.querySelector(".due strong");
      if (due) due.textContent = btc.amount + " " + btc.asset;
      var wallet = btcSection.querySelector("a.wallet");
      if (wallet) wallet.setAttribute("href", btc.uri);
      var qr = btcSection.querySelector("figure.qr");
      if (qr && p.qr_codes && p.qr_codes.bitcoin) {
        var svg = new DOMParser().parseFromString(p.qr_codes.bitcoin, "image/svg+xml").documentElement;
        if (svg && svg.nodeName === "svg") qr.replaceChildren(document.importNode(svg, true));
      }
    }
    // A card is for the whole price: once anything is paid, only the rail paid on is left.
    var cardForm = document.getElementById("card-form");
    if (cardForm && p.status_class !== "new" && !cardForm.hidden) {
      cardForm.hidden = true;
    }
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
  // The card form: the gateway's Stripe.js tokenizes the card (its number goes to the gateway,
  // never here), the relay charges the token on the invoice's PaymentIntent, and Stripe.js
  // finishes 3-D Secure when the bank asks. The status line then follows the payment as for the
  // other rails.
  var cardSection = document.getElementById("card");
  if (cardSection && window.Stripe) {
    var form = document.getElementById("card-form");
    var button = document.getElementById("card-pay");
    var message = document.getElementById("card-message");
    var stripe = window.Stripe(cardSection.getAttribute("data-key"));
    var cardElement = stripe.elements().create("card");
    form.hidden = false;
    cardElement.mount("#card-element");
    var fail = function (e) {
      message.textContent = cardSection.getAttribute(
        e && e.code === "card_declined" ? "data-declined" : "data-failed");
      button.disabled = false;
    };
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      button.disabled = true;
      message.textContent = "";
      stripe.createToken(cardElement).then(function (r) {
        if (r.error) throw r.error;
        return fetch(cardSection.getAttribute("data-pay-url"), {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ card_token: r.token.id })
        });
      }).then(function (resp) {
        return resp.json().then(function (b) {
          if (!resp.ok) throw (b && b.error) || {};
          return b;
        });
      }).then(function (b) {
        if (b.status !== "requires_action") return;
        return stripe.confirmCardPayment(b.client_secret).then(function (r) {
          if (r.error) throw r.error;
        });
      }).then(function () {
        form.hidden = true;
        message.textContent = cardSection.getAttribute("data-sent");
      }).catch(fail);
    });
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
