// forloop dashboard: fetch the live part of the page again every refresh
// period and swap it in. Written for this page; no library.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh"), 10) || 5000;
  var live = document.getElementById("live");
  function tick() {
    fetch("fragment" + window.location.search, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        document.getElementById("main").innerHTML = html;
        live.textContent = "live";
        live.className = "live";
      })
      .catch(function (error) {
        live.textContent = "dashboard unreachable (" + error.message + ")";
        live.className = "live down";
      })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
