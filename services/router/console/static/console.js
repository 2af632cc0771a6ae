// Countdowns: every element with data-deadline shows the time left and its offer card turns
// at-risk (under a quarter of the time left) or breached. The server's clock is the reference.
// Times of day (time.clock-time, written in UTC) are shown in the viewer's own time zone.
(function () {
  "use strict";
  // The server wrote its time as it answered: compare it with when the answer began to arrive.
  var serverNow = Date.parse(document.body.dataset.serverNow || "");
  var navigation = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
  var answeredAt = navigation ? performance.timeOrigin + navigation.responseStart : Date.now();
  var skew = isNaN(serverNow) ? 0 : serverNow - answeredAt;
  var AT_RISK_SHARE = 0.25;

  function words(ms) {
    var seconds = Math.round(Math.abs(ms) / 1000);
    var text = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
    return ms >= 0 ? text + " left" : "overdue by " + text;
  }

  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-deadline]").forEach(function (element) {
      var deadline = Date.parse(element.dataset.deadline);
      var start = Date.parse(element.dataset.start);
      var left = deadline - now;
      element.textContent = words(left);
      var card = element.closest(".offer");
      if (!card) { return; }
      var state = left <= 0 ? "breached" : (left < (deadline - start) * AT_RISK_SHARE ? "at-risk" : "ok");
      card.classList.toggle("at-risk", state === "at-risk");
      card.classList.toggle("breached", state === "breached");
      var label = card.querySelector(".state");
      if (label) { label.textContent = state === "breached" ? "Breached" : state === "at-risk" ? "At risk" : ""; }
    });
  }

  // Times of day arrive in UTC; each viewer reads them in the time zone of their own device.
  function two(number) { return String(number).padStart(2, "0"); }

  function localTimes() {
    document.querySelectorAll("time.clock-time:not([data-local])").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      element.title = element.textContent;
      element.textContent = two(moment.getHours()) + ":" + two(moment.getMinutes()) + ":" +
        two(moment.getSeconds());
      element.dataset.local = "";
    });
  }

  function refresh() { localTimes(); tick(); }

  refresh();
  setInterval(tick, 250);
  document.addEventListener("htmx:afterSwap", refresh);
})();
