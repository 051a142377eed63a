// The live chart of the web UI's Regions tab: respond p50/p95 over time, one line per region
// (or per variant), drawn as SVG above the tab's table.
//
// Locust's React page has no hook for a chart inside an extended tab, so this script (added
// to the page by loadtest.inlocust.webui) watches for the Regions tab (?tab=loadtest-regions), keeps
// its own <div> before the table, and redraws it from ./loadtest/history.json every 2 s.
// Self-contained: no library, no network beyond this UI.
(function () {
  "use strict";
  var TAB = "loadtest-regions";
  var HISTORY = "./loadtest/history.json";
  var POLL_MS = 2000;
  var HEIGHT = 260, PAD = { left: 56, right: 16, top: 12, bottom: 30 };
  var SVG_NS = "http://www.w3.org/2000/svg";
  var state = { view: "region", data: null, hover: null };

  function onRegionsTab() {
    return new URLSearchParams(window.location.search).get("tab") === TAB;
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG_NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(max, ticks) {
    var raw = max / ticks, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * mag >= raw) return steps[i] * mag;
    return 10 * mag;
  }

  function clock(s) {
    s = Math.max(0, Math.round(s));
    var m = Math.floor(s / 60), r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }

  function ms(v) {
    return v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(v >= 100 ? 0 : 1) + " ms";
  }

  // The container: a toolbar (view buttons, legend), the SVG, a hover read-out.
  function ensureContainer() {
    var table = document.querySelector("table");
    var box = document.getElementById("loadtest-region-chart");
    if (!onRegionsTab() || !table) {
      if (box) box.remove();
      return null;
    }
    var anchor = table.closest(".MuiTableContainer-root") || table.parentElement;
    if (!box) {
      box = document.createElement("div");
      box.id = "loadtest-region-chart";
      box.style.cssText = "margin:8px 0 16px;font:13px system-ui,sans-serif;";
      box.innerHTML =
        '<div class="lt-bar" style="display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin-bottom:4px">' +
        '<strong>Respond latency over time</strong>' +
        '<span style="opacity:.7">p95 solid, p50 dashed · sliding <span class="lt-window">10</span> s window</span>' +
        '<span class="lt-views"></span><span class="lt-legend" style="display:flex;gap:10px;flex-wrap:wrap"></span></div>' +
        '<div class="lt-plot" style="position:relative"></div>' +
        '<div class="lt-readout" style="min-height:1.3em;opacity:.85"></div>';
      box.querySelector(".lt-plot").addEventListener("mousemove", onHover);
      box.querySelector(".lt-plot").addEventListener("mouseleave", function () {
        state.hover = null;
        draw();
      });
    }
    if (anchor.previousSibling !== box) anchor.parentNode.insertBefore(box, anchor);
    return box;
  }

  function viewButtons(box, data) {
    var views = box.querySelector(".lt-views");
    var available = ["region"].concat(Object.keys(data.variant || {}).length ? ["variant"] : []);
    if (available.indexOf(state.view) < 0) state.view = "region";
    var key = available.join(",") + "|" + state.view;
    if (views.dataset.key === key) return;
    views.dataset.key = key;
    views.innerHTML = "";
    available.forEach(function (view) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = view === "region" ? "By region" : "By variant";
      b.dataset.view = view;
      b.style.cssText = "padding:2px 8px;margin-right:4px;border-radius:4px;cursor:pointer;border:1px solid #888;" +
        (view === state.view ? "background:#888;color:#fff" : "background:transparent;color:inherit");
      b.addEventListener("click", function () {
        state.view = view;
        draw();
      });
      views.appendChild(b);
    });
  }

  function draw() {
    var box = ensureContainer(), data = state.data;
    if (!box || !data) return;
    viewButtons(box, data);
    box.querySelector(".lt-window").textContent = Math.round(data.window_s || 10);
    var series = data[state.view] || {}, colours = (data.colours || {})[state.view] || {};
    var names = ((data.order || {})[state.view] || []).filter(function (n) { return series[n]; });
    Object.keys(series).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
    var times = data.times || [], t0 = times.length ? times[0] : 0;
    var plot = box.querySelector(".lt-plot");
    var width = Math.max(plot.clientWidth || box.clientWidth || 600, 320);
    var w = width - PAD.left - PAD.right, h = HEIGHT - PAD.top - PAD.bottom;
    var ymax = 0;
    names.forEach(function (n) {
      ["p50", "p95"].forEach(function (q) {
        series[n][q].forEach(function (v) { if (v != null && v > ymax) ymax = v; });
      });
    });
    var tmax = times.length > 1 ? times[times.length - 1] - t0 : 10;
    var ystep = niceStep(Math.max(ymax, 1) * 1.05, 5), ytop = ystep * Math.ceil(Math.max(ymax, 1) * 1.05 / ystep);
    var xstep = niceStep(Math.max(tmax, 10), 8);
    function X(t) { return PAD.left + ((t - t0) / Math.max(tmax, 1e-9)) * w; }
    function Y(v) { return PAD.top + h - (v / ytop) * h; }

    var svg = el("svg", { width: width, height: HEIGHT, role: "img", "data-view": state.view,
                          "data-points": times.length, "aria-label": "respond p50 and p95 over time by " + state.view });
    el("rect", { x: PAD.left, y: PAD.top, width: w, height: h, fill: "none", stroke: "#8884" }, svg);
    for (var yv = 0; yv <= ytop + 1e-9; yv += ystep) {
      el("line", { x1: PAD.left, x2: PAD.left + w, y1: Y(yv), y2: Y(yv), stroke: "#8883" }, svg);
      var yl = el("text", { x: PAD.left - 6, y: Y(yv) + 4, "text-anchor": "end", "font-size": 11, fill: "#888" }, svg);
      yl.textContent = ms(yv).replace(" ms", "");
    }
    el("text", { x: 4, y: PAD.top + 10, "font-size": 11, fill: "#888" }, svg).textContent = "ms";
    for (var xv = 0; xv <= tmax + 1e-9; xv += xstep) {
      var x = X(t0 + xv);
      el("line", { x1: x, x2: x, y1: PAD.top + h, y2: PAD.top + h + 4, stroke: "#888" }, svg);
      var xl = el("text", { x: x, y: PAD.top + h + 17, "text-anchor": "middle", "font-size": 11, fill: "#888" }, svg);
      xl.textContent = clock(xv);
    }
    names.forEach(function (n) {
      ["p95", "p50"].forEach(function (q) {
        var d = "", pen = false, drawn = 0;
        series[n][q].forEach(function (v, i) {
          if (v == null) { pen = false; return; }
          d += (pen ? "L" : "M") + X(times[i]).toFixed(1) + "," + Y(v).toFixed(1);
          pen = true;
          drawn++;
        });
        if (!d) return;
        el("path", { d: d, fill: "none", stroke: colours[n] || "#555", "stroke-width": q === "p95" ? 2 : 1.3,
                     "stroke-dasharray": q === "p50" ? "5 4" : "none", "data-series": n, "data-q": q,
                     "data-drawn": drawn }, svg);
        if (drawn === 1) {  // a single point: a dot, or nothing would show
          var i = series[n][q].findIndex(function (v) { return v != null; });
          el("circle", { cx: X(times[i]), cy: Y(series[n][q][i]), r: 2.5, fill: colours[n] || "#555" }, svg);
        }
      });
    });
    var readout = "";
    if (state.hover != null && times.length) {
      var idx = nearest(times, t0 + ((state.hover - PAD.left) / w) * tmax);
      var hx = X(times[idx]);
      el("line", { x1: hx, x2: hx, y1: PAD.top, y2: PAD.top + h, stroke: "#888", "stroke-dasharray": "2 2" }, svg);
      readout = clock(times[idx] - t0) + " — " + names.map(function (n) {
        return n + ": p50 " + ms(series[n].p50[idx]) + ", p95 " + ms(series[n].p95[idx]);
      }).join(" · ");
    } else if (!times.length) {
      readout = "Waiting for the first points (one every " + (data.interval_s || 2) + " s while a test runs).";
    }
    box.querySelector(".lt-readout").textContent = readout;
    plot.replaceChildren(svg);

    var legend = box.querySelector(".lt-legend");
    legend.replaceChildren();
    names.forEach(function (n) {
      var item = document.createElement("span");
      item.innerHTML = '<span style="display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px"></span>';
      item.firstChild.style.background = colours[n] || "#555";
      item.appendChild(document.createTextNode(n));
      legend.appendChild(item);
    });
  }

  function nearest(times, t) {
    var best = 0;
    for (var i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
    return best;
  }

  function onHover(event) {
    var rect = event.currentTarget.getBoundingClientRect();
    state.hover = event.clientX - rect.left;
    draw();
  }

  function poll() {
    if (!onRegionsTab()) {
      ensureContainer();  // removes the chart when another tab is open
      return;
    }
    fetch(HISTORY, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data) state.data = data;
        draw();
      })
      .catch(function () { /* the UI is stopping: keep the last chart */ });
  }

  setInterval(poll, POLL_MS);
  // React re-renders the tab: put the chart back quickly rather than on the next poll.
  new MutationObserver(function () {
    var box = document.getElementById("loadtest-region-chart");
    var table = document.querySelector("table");
    var anchor = table && (table.closest(".MuiTableContainer-root") || table.parentElement);
    if (onRegionsTab() ? !box || !anchor || anchor.previousSibling !== box : box) {
      if (onRegionsTab() && !state.data) poll(); else draw();
    }
  }).observe(document.getElementById("root") || document.body, { childList: true, subtree: true });
  window.addEventListener("resize", draw);
  poll();
})();
