// The run page's script (flowcallback/templates/run_page.js), inlined into index.html by
// flowcallback.core.runpage. It reads the run's data from the #run-data element and draws every view;
// text from the data (class and layer names) is set with textContent, or HTML-escaped for Plotly.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("run-data").textContent);
  var epochs = data.epochs, analyses = data.analyses;
  var state = { i: epochs.length - 1, analysis: analyses[0], timer: null };
  var acrossShown = null;  // the analysis the flows across epochs are drawn for
  var slider = document.getElementById("epoch");
  slider.max = String(epochs.length - 1);
  slider.value = String(state.i);
  document.getElementById("title").textContent = data.title;
  var buttons = document.getElementById("analysis-buttons");
  analyses.forEach(function (a) {
    var b = document.createElement("button");
    b.type = "button"; b.textContent = data.labels[a] || a; b.dataset.analysis = a;
    b.addEventListener("click", function () { state.analysis = a; draw(); });
    buttons.appendChild(b);
  });
  var config = {responsive: true, displaylogo: false};

  function esc(s) {  // Plotly draws labels and legend names as its own small HTML: names are escaped
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  }
  function rgba(hex, alpha) {
    var v = parseInt(hex.slice(1), 16);
    return "rgba(" + ((v >> 16) & 255) + "," + ((v >> 8) & 255) + "," + (v & 255) + "," + alpha + ")";
  }
  function blendGrey(hex, weight) {  // as flowcallback.core.render._blend_grey: greyer when mixed
    var v = parseInt(hex.slice(1), 16), grey = 190;
    function mix(c) { return Math.round(weight * c + (1 - weight) * grey); }
    return "rgb(" + mix((v >> 16) & 255) + "," + mix((v >> 8) & 255) + "," + mix(v & 255) + ")";
  }

  // -- the class filter ---------------------------------------------------------------------------
  // Typing part of a class name keeps the matching classes: they alone are coloured (the largest
  // data.max_colored of them when more match), listed in the legend, the class selector, the scores
  // and the profiles; the others are drawn in a faint grey. An empty box restores the views.
  var DIM_LINK = "rgba(154,154,154,0.18)", DIM_NODE = "rgb(222,222,222)";
  var filterBox = document.getElementById("class-filter");
  var filterStatus = document.getElementById("filter-status");
  var names = document.getElementById("class-names");
  data.class_names.forEach(function (name) {
    var o = document.createElement("option"); o.value = name; names.appendChild(o);
  });
  var filter = null;  // null, or {matched: {class: true}, colored: {class: true}, n: matches}

  function readFilter() {
    var q = filterBox.value.trim().toLowerCase();
    if (q === "") { filter = null; filterStatus.textContent = ""; return; }
    var matched = [];
    data.class_names.forEach(function (name, c) {
      if (String(name).toLowerCase().indexOf(q) >= 0) { matched.push(c); }
    });
    var colored = matched.slice();
    if (colored.length > data.max_colored) {  // too many to tell apart: the largest, as without a filter
      colored.sort(function (a, b) { return (data.support[b] - data.support[a]) || (a - b); });
      colored = colored.slice(0, data.max_colored);
    }
    filter = {query: q, matched: {}, colored: {}, n: matched.length};
    matched.forEach(function (c) { filter.matched[c] = true; });
    colored.forEach(function (c) { filter.colored[c] = true; });
    filterStatus.textContent = matched.length + " of " + data.class_names.length + " classes match" +
      (colored.length < matched.length ? " (the " + colored.length + " largest coloured)" : "");
  }
  // whether class c is coloured in the views: by the filter, else by the top classes of the run
  function colored(c) {
    if (filter) { return !!filter.colored[c]; }
    return !data.shown_classes || data.shown_classes.indexOf(c) >= 0;
  }

  // The epoch's Sankey with the filter applied. Link customdata: [name, count, samples, class or -1
  // for the merged "other" flow]; node customdata: [column, cluster, size, composition, colour class,
  // purity, 1 for a class column]. data.other_flows lists, per epoch and analysis, the flows of the
  // classes merged into "other": a matching class among them gets its own flows back.
  function filtered(fig, extra) {
    if (!filter) { return fig; }
    var tr = fig.data[0], L = tr.link, N = tr.node;
    var link = {source: [], target: [], value: [], color: [], customdata: [], hovertemplate: L.hovertemplate};
    function add(s, t, v, color, custom) {
      link.source.push(s); link.target.push(t); link.value.push(v);
      link.color.push(color); link.customdata.push(custom);
    }
    var taken = {};  // "source:target" -> samples of matching "other" classes drawn on their own
    (extra || []).forEach(function (r) {
      if (!filter.colored[r[2]]) { return; }
      var key = r[0] + ":" + r[1];
      taken[key] = (taken[key] || 0) + r[3];
      add(r[0], r[1], r[3], rgba(data.colors[r[2]], 0.45),
          [esc(data.class_names[r[2]]), r[3], r[4].join(", ") + (r[3] > r[4].length ? ", …" : ""), r[2]]);
    });
    L.source.forEach(function (s, k) {
      var custom = L.customdata[k], cls = custom[3];
      if (cls >= 0) { add(s, L.target[k], L.value[k], filter.colored[cls] ? L.color[k] : DIM_LINK, custom); return; }
      var rest = L.value[k] - (taken[s + ":" + L.target[k]] || 0);
      if (rest > 0) { add(s, L.target[k], rest, DIM_LINK, [custom[0], rest, "", -1]); }
    });
    var node = Object.assign({}, N, {color: [], label: []});
    N.customdata.forEach(function (custom, k) {
      var c = custom[4], on = !!filter.colored[c];
      node.color.push(on ? (custom[6] ? data.colors[c] : blendGrey(data.colors[c], custom[5])) : DIM_NODE);
      node.label.push(custom[6] && on ? esc(data.class_names[c]) : "");
    });
    var traces = [Object.assign({}, tr, {node: node, link: link})];
    var shown = Object.keys(filter.colored).map(Number).sort(function (a, b) { return a - b; });
    shown.forEach(function (c) {
      traces.push({type: "scatter", x: [null], y: [null], mode: "markers", showlegend: true, hoverinfo: "skip",
                   marker: {size: 12, color: data.colors[c], symbol: "square"}, name: esc(data.class_names[c])});
    });
    var others = data.class_names.length - shown.length;
    if (others > 0) {
      traces.push({type: "scatter", x: [null], y: [null], mode: "markers", showlegend: true, hoverinfo: "skip",
                   marker: {size: 12, color: DIM_NODE, symbol: "square"}, name: "other (" + others + " classes)"});
    }
    return {data: traces, layout: fig.layout};
  }

  function draw() {
    var e = epochs[state.i];
    document.getElementById("epoch-label").textContent = String(e);
    var fig = (data.figures[String(e)] || {})[state.analysis];
    var status = document.getElementById("status");
    status.textContent = data.failed[String(e)] ? "snapshot failed: " + data.failed[String(e)]
      : data.partial[String(e)]
        ? "part of this snapshot failed (see the notes under the diagram): " + data.partial[String(e)]
      : (fig ? "" : "no " + state.analysis + " graph for this epoch");
    Array.prototype.forEach.call(buttons.children, function (b) {
      b.style.fontWeight = b.dataset.analysis === state.analysis ? "bold" : "normal";
    });
    if (fig) {
      var shown = filtered(fig, (data.other_flows[String(e)] || {})[state.analysis]);
      Plotly.react("sankey", shown.data, shown.layout, config);
    } else { Plotly.purge("sankey"); }
    var tbody = document.querySelector("#profiles tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    ((data.profiles[String(e)] || {})[state.analysis] || []).forEach(function (row) {
      if (filter && String(row[0]).toLowerCase().indexOf(filter.query) < 0) { return; }
      var tr = document.createElement("tr");
      [row[0], row[1]].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    document.getElementById("profile-epoch").textContent =
      "(epoch " + e + ", " + (data.labels[state.analysis] || state.analysis) + ")";
    var hm = data.heatmaps[state.analysis];
    if (acrossShown !== state.analysis) { acrossShown = state.analysis; fillColumns(); drawAcross(); }
    if (hm) {
      // a frame around the shown epoch's column
      var k = hm.data[0].x.indexOf(String(e));
      var layout = Object.assign({}, hm.layout, {shapes: k < 0 ? [] : [{type: "rect", xref: "x", yref: "paper",
        x0: k - 0.5, x1: k + 0.5, y0: 0, y1: 1, line: {color: "#d62728", width: 3}, name: "current-epoch"}]});
      Plotly.react("heatmap", hm.data, layout, config);
    }
  }
  slider.addEventListener("input", function () { state.i = parseInt(slider.value, 10); draw(); });
  document.getElementById("play").addEventListener("click", function () {
    if (state.timer) { clearInterval(state.timer); state.timer = null; this.textContent = "\u25B6 Play"; return; }
    this.textContent = "\u25A0 Stop";
    state.timer = setInterval(function () {
      state.i = (state.i + 1) % epochs.length; slider.value = String(state.i); draw();
    }, 1500);
  });
  Plotly.newPlot("curves", data.curves.data, data.curves.layout, config);

  // -- flows across epochs ------------------------------------------------------------------------
  var colSelect = document.getElementById("across-column");
  var classSelect = document.getElementById("across-class");
  var changedBox = document.getElementById("across-changed");
  function fillClasses() {  // "all", then the classes the filter keeps
    var current = classSelect.value;
    while (classSelect.options.length > 1) { classSelect.removeChild(classSelect.lastChild); }
    data.class_names.forEach(function (name, c) {
      if (filter && !filter.matched[c]) { return; }
      var o = document.createElement("option"); o.value = String(c); o.textContent = name; classSelect.appendChild(o);
    });
    var kept = Array.prototype.some.call(classSelect.options, function (o) { return o.value === current; });
    classSelect.value = kept ? current : "";
  }
  fillClasses();
  function fillColumns() {
    var current = colSelect.value;
    while (colSelect.firstChild) { colSelect.removeChild(colSelect.firstChild); }
    Object.keys(data.across[state.analysis] || {}).forEach(function (name) {
      var o = document.createElement("option"); o.value = name; o.textContent = name; colSelect.appendChild(o);
    });
    var names = Array.prototype.map.call(colSelect.options, function (o) { return o.value; });
    colSelect.value = names.indexOf(current) >= 0 ? current
      : (names.indexOf("Prediction") >= 0 ? "Prediction" : names[0] || "");
  }
  // Vertical centres for the nodes of each epoch column, stacked by size: Plotly ignores x without
  // y, and would move a node without outgoing flows to the last column.
  function acrossY(xs, src, dst, val, rank) {
    var size = xs.map(function () { return 0; }), inn = size.slice(), out = size.slice();
    src.forEach(function (s, k) { out[s] += val[k]; inn[dst[k]] += val[k]; });
    size = size.map(function (_, i) { return Math.max(inn[i], out[i]); });
    var ys = size.slice(), columns = {};
    xs.forEach(function (x, i) { (columns[x] = columns[x] || []).push(i); });
    Object.keys(columns).forEach(function (x) {
      var ids = columns[x].sort(function (a, b) { return rank[a] - rank[b]; }), total = 0, gap = 0.02, at = 0.01;
      ids.forEach(function (i) { total += size[i]; });
      var scale = total ? (0.98 - gap * (ids.length - 1)) / total : 0;
      ids.forEach(function (i) {
        var h = size[i] * scale; ys[i] = Math.min(0.99, Math.max(0.01, at + h / 2)); at += h + gap;
      });
    });
    return ys;
  }
  function drawAcross() {
    var rows = (data.across[state.analysis] || {})[colSelect.value];
    if (!rows) { Plotly.purge("across"); return; }
    var cls = classSelect.value === "" ? null : parseInt(classSelect.value, 10);
    var changedOnly = changedBox.checked;
    var ep = [], index = {}, labels = [], customNodes = [], clusterOf = [], xs = [];
    var src = [], dst = [], val = [], col = [], hover = [];
    rows.forEach(function (r) {
      if (ep.indexOf(r[0]) < 0) { ep.push(r[0]); }
      if (ep.indexOf(r[1]) < 0) { ep.push(r[1]); }
    });
    ep.sort(function (a, b) { return a - b; });
    function node(e, c) {
      var key = e + ":" + c;
      if (!(key in index)) {
        index[key] = labels.length;
        labels.push(colSelect.value === "Prediction" ? "predicted " + esc(data.class_names[c]) : "cluster " + c);
        customNodes.push("epoch " + e);
        clusterOf.push(c);  // each column in cluster order (class order for Prediction)
        xs.push(ep.length > 1 ? 0.01 + 0.98 * ep.indexOf(e) / (ep.length - 1) : 0.5);
      }
      return index[key];
    }
    rows.forEach(function (r) {
      if ((cls !== null && r[4] !== cls) || (changedOnly && !r[6])) { return; }
      src.push(node(r[0], r[2])); dst.push(node(r[1], r[3])); val.push(r[5]);
      col.push(colored(r[4]) ? rgba(data.colors[r[4]], 0.5) : (filter ? DIM_LINK : rgba(data.other_color, 0.35)));
      hover.push(esc(data.class_names[r[4]]) + ": " + r[5] + " sample(s), cluster " + r[2] + " at epoch " + r[0] +
                 " to cluster " + r[3] + " at epoch " + r[1] + "<br>samples " + r[7].join(", ") +
                 (r[5] > r[7].length ? ", ..." : ""));
    });
    var ys = acrossY(xs, src, dst, val, clusterOf);
    var trace = {type: "sankey", arrangement: "snap", node: {label: labels, x: xs, y: ys, pad: 6, thickness: 12,
                 color: "#888", customdata: customNodes,
                 hovertemplate: "%{customdata} · %{label}<br>%{value} sample(s)<extra></extra>"},
                 link: {source: src, target: dst, value: val, color: col, customdata: hover,
                        hovertemplate: "%{customdata}<extra></extra>"}};
    var layout = {title: {text: esc(colSelect.value) + " across epochs (" +
                  (data.labels[state.analysis] || state.analysis) + ")" +
                  (cls !== null ? " · class " + esc(data.class_names[cls]) : "") +
                  (changedOnly ? " · changed only" : "")},
                  height: 460, margin: {l: 20, r: 20, t: 50, b: 30},
                  annotations: ep.map(function (e, k) { return {x: ep.length > 1 ? k / (ep.length - 1) : 0.5, y: 1.04,
                    xref: "paper", yref: "paper", showarrow: false, text: "epoch " + e}; })};
    Plotly.react("across", [trace], layout, config);
  }
  [colSelect, classSelect, changedBox].forEach(function (el) { el.addEventListener("change", drawAcross); });

  // -- confusion over training ----------------------------------------------------------------------
  function drawTraining() {
    var tr = data.training;
    if (!tr || !tr.epochs) { return; }
    var cellTraces = tr.cells.filter(function (c) {
      return !filter || filter.matched[c.true] || filter.matched[c.predicted];
    }).map(function (c) {
      var name = esc(data.class_names[c.true]) + " → " + esc(data.class_names[c.predicted]);
      return {type: "scatter", mode: "lines+markers", x: tr.epochs, y: c.counts,
              line: {color: data.colors[c.true]}, name: name,
              hovertemplate: esc(data.class_names[c.true]) + " taken for " + esc(data.class_names[c.predicted]) +
                             ": %{y} at epoch %{x}<extra></extra>"};
    });
    Plotly.react("confusion", cellTraces, {title: {text: "Confusions over training (true → predicted, samples)"},
      xaxis: {title: {text: "epoch"}, dtick: 1}, yaxis: {title: {text: "samples"}, rangemode: "tozero"}, height: 380,
      margin: {l: 60, r: 20, t: 50, b: 50}}, config);
    var scoreTraces = [];
    Object.keys(tr.recall).filter(function (c) { return colored(parseInt(c, 10)); }).forEach(function (c) {
      var name = esc(data.class_names[c]);
      scoreTraces.push({type: "scatter", mode: "lines", x: tr.epochs, y: tr.recall[c], line: {color: data.colors[c]},
                        name: name + " recall", legendgroup: c});
      scoreTraces.push({type: "scatter", mode: "lines", x: tr.epochs, y: tr.precision[c],
                        line: {color: data.colors[c], dash: "dot"},
                        name: name + " precision", legendgroup: c, showlegend: false});
    });
    Plotly.react("scores", scoreTraces, {title: {text: "Recall (solid) and precision (dotted) per class"},
      xaxis: {title: {text: "epoch"}, dtick: 1}, yaxis: {range: [0, 1.02]}, height: 380,
      margin: {l: 50, r: 20, t: 50, b: 50}}, config);
  }

  filterBox.addEventListener("input", function () {
    readFilter(); fillClasses(); draw(); drawAcross(); drawTraining();
  });
  drawTraining();
  draw();
})();
