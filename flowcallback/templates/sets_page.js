// The script of the page of several held-out sets (flowcallback/templates/sets_page.js), inlined into
// index.html by flowcallback.core.runpage. It reads the sets' overview from #sets-data: a table and
// two charts of how each set separates its classes, and each set's own run page in a frame (one, or
// two side by side), all at the epoch of the slider. Names are set with textContent.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("sets-data").textContent);
  var names = data.sets.map(function (s) { return s.name; });
  var epochs = data.epochs;
  var state = { i: epochs.length - 1 };
  var slider = document.getElementById("epoch");
  var selA = document.getElementById("set-a"), selB = document.getElementById("set-b");
  var frames = document.getElementById("frames");
  var config = { displaylogo: false, responsive: true };
  // sixteen colours: as many as a run has sets
  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#e7969c", "#7b4173", "#843c39"];

  document.getElementById("title").textContent = data.model + " \u00b7 held-out sets: " + names.join(", ");
  slider.max = String(Math.max(epochs.length - 1, 0));
  slider.value = String(state.i);
  names.forEach(function (n, k) {
    [selA, selB].forEach(function (sel) {
      var o = document.createElement("option"); o.value = n; o.textContent = n; sel.appendChild(o);
    });
  });
  selB.value = names[Math.min(1, names.length - 1)];

  function epoch() { return epochs[state.i]; }
  function fmt(v, pct) { return v === null || v === undefined ? "" : pct ? (100 * v).toFixed(1) + "%" : v.toFixed(3); }
  function lastAri(n, e) {
    var values = (data.ari[n] || {})[String(e)] || [];
    for (var k = values.length - 1; k >= 0; k--) { if (values[k] !== null) { return values[k]; } }
    return null;
  }

  function drawTable() {
    var e = epoch(), flagged = data.flagged[String(e)] || {};
    var body = document.querySelector("#sets-table tbody");
    body.textContent = "";
    data.sets.forEach(function (s) {
      var tr = document.createElement("tr");
      if (flagged[s.name]) { tr.className = "flagged"; }
      var taken = (data.ari[s.name] || {})[String(e)] !== undefined;
      [s.name, String(s.samples), fmt((data.accuracy[s.name] || {})[String(e)], true), fmt(lastAri(s.name, e)),
       flagged[s.name] ? "\u26a0 " + flagged[s.name]
         : taken ? "" : "no snapshot of this epoch (failed, or not taken: see the set's page)"].forEach(function (text, k) {
        var td = document.createElement("td"); td.textContent = text;
        if (k > 0 && k < 4) { td.className = "num"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var box = document.getElementById("flagged");
    var keys = Object.keys(flagged);
    box.hidden = keys.length === 0;
    box.textContent = keys.map(function (n) { return "At epoch " + e + ", set " + n + ": " + flagged[n] + "."; }).join(" ");
  }

  function drawCharts() {
    var e = epoch();
    var sep = names.map(function (n, k) {
      return { type: "scatter", mode: "lines+markers", name: n, x: data.columns,
               y: (data.ari[n] || {})[String(e)] || [], line: { color: palette[k % palette.length] } };
    });
    Plotly.react("separation", sep, {
      title: { text: "How each layer's clusters follow the classes, epoch " + e },
      xaxis: { title: { text: "layer" }, type: "category" }, yaxis: { title: { text: "ARI against the classes" }, range: [-0.1, 1.05] },
      margin: { t: 50, b: 90 }, legend: { orientation: "h", y: -0.35 } }, config);
    var acc = names.map(function (n, k) {
      var byEpoch = data.accuracy[n] || {};
      var xs = epochs.filter(function (x) { return byEpoch[String(x)] !== undefined && byEpoch[String(x)] !== null; });
      return { type: "scatter", mode: "lines+markers", name: n, x: xs, line: { color: palette[k % palette.length] },
               y: xs.map(function (x) { return byEpoch[String(x)]; }) };
    });
    Plotly.react("accuracy", acc, {
      title: { text: "Accuracy on each set" }, xaxis: { title: { text: "epoch" }, tickformat: "d",
                                                   tickvals: epochs.length <= 20 ? epochs : undefined },
      yaxis: { title: { text: "accuracy" }, range: [0, 1.05], tickformat: ".0%" }, margin: { t: 50 },
      shapes: [{ type: "line", xref: "x", yref: "paper", x0: e, x1: e, y0: 0, y1: 1, line: { color: "#999", dash: "dot" } }],
      legend: { orientation: "h", y: -0.3 } }, config);
  }

  function tellFrames() {
    Array.prototype.forEach.call(frames.querySelectorAll("iframe"), function (f) {
      if (f.contentWindow) { f.contentWindow.postMessage({flowcallback: "epoch", epoch: epoch()}, "*"); }
    });
  }

  function drawFrames() {
    var two = document.getElementById("mode-two").checked;
    selB.hidden = !two;
    var shown = two ? [selA.value, selB.value] : [selA.value];
    var current = Array.prototype.map.call(frames.querySelectorAll("iframe"), function (f) { return f.dataset.set; });
    if (current.join("\u0000") === shown.join("\u0000")) { return; }
    frames.textContent = "";
    shown.forEach(function (n) {
      var f = document.createElement("iframe");
      f.dataset.set = n;
      f.title = "held-out set " + n;
      f.src = encodeURIComponent(n) + "/index.html";
      f.addEventListener("load", function () {
        f.contentWindow.postMessage({flowcallback: "epoch", epoch: epoch()}, "*");
      });
      frames.appendChild(f);
    });
  }

  function setEpoch(i) {
    state.i = i; slider.value = String(i);
    document.getElementById("epoch-label").textContent = epochs.length ? String(epoch()) : "none yet";
    drawTable(); drawCharts();
  }
  slider.addEventListener("input", function () { setEpoch(parseInt(slider.value, 10)); tellFrames(); });
  [selA, selB, document.getElementById("mode-one"), document.getElementById("mode-two")].forEach(function (el) {
    el.addEventListener("change", drawFrames);
  });
  // a set's page moved its own slider: the others follow
  window.addEventListener("message", function (ev) {
    var m = ev.data, i;
    if (!m || m.flowcallback !== "epoch") { return; }
    var fromFrame = Array.prototype.some.call(frames.querySelectorAll("iframe"), function (f) {
      return f.contentWindow === ev.source;
    });
    if (!fromFrame || (i = epochs.indexOf(m.epoch)) < 0) { return; }
    if (i !== state.i) { setEpoch(i); }
    tellFrames();
  });
  setEpoch(state.i);
  drawFrames();
}());
