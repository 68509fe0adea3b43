// The run page's script (flowcallback/templates/run_page.js), inlined into index.html by
// flowcallback.core.runpage. It reads the run's data from the #run-data element and draws every view;
// text from the data (class and layer names) is set with textContent, or HTML-escaped for Plotly.
// Served over http(s), it also polls its own address and takes in a new snapshot in place (the
// last section, "live refresh"): everything drawn from the data is filled by functions that
// update() calls again, keeping what the reader chose.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("run-data").textContent);
  var epochs = data.epochs, analyses = data.analyses;
  var state = { i: epochs.length - 1, analysis: analyses[0], timer: null };
  var acrossShown = null;  // the analysis the flows across epochs are drawn for
  var slider = document.getElementById("epoch");
  var buttons = document.getElementById("analysis-buttons");
  function note(id, text) {  // a note above the diagram, hidden when empty
    var el = document.getElementById(id);
    el.textContent = text || "";
    el.hidden = !text;
  }
  function fillHeader() {  // the slider, the title, the notes and the analysis buttons
    document.body.classList.toggle("no-snapshots", !epochs.length);  // before any view is drawn
    slider.max = String(Math.max(epochs.length - 1, 0));
    slider.value = String(state.i);
    document.getElementById("title").textContent = data.title;
    // what failed when the callback set up (the LRP engine refused the model, say)
    note("setup-error", data.setup_error
      ? "The set-up recorded an error (the whole text: errors/setup.txt): " + data.setup_error : "");
    note("schedule-note", data.schedule);  // the epochs the snapshot budget took, and why it skipped the others
    note("engines-note", data.engines);  // where the kNN graphs and MCL ran (CPU, or keras.ops on a GPU)
    var skippedEpochs = Object.keys(data.skipped || {});
    // epochs whose files could not be read (Run.skipped): listed, as text
    note("skipped-note", skippedEpochs.length ? skippedEpochs.length + " snapshot(s) could not be read and are " +
      "not shown: " + skippedEpochs.map(function (e) { return "epoch " + e + " (" + data.skipped[e] + ")"; })
      .join("; ") : "");
    while (buttons.firstChild) { buttons.removeChild(buttons.firstChild); }
    analyses.forEach(function (a) {
      var b = document.createElement("button");
      b.type = "button"; b.textContent = data.labels[a] || a; b.dataset.analysis = a;
      b.addEventListener("click", function () { state.analysis = a; draw(); });
      buttons.appendChild(b);
    });
  }
  fillHeader();
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
  function fillNames() {
    while (names.firstChild) { names.removeChild(names.firstChild); }
    data.class_names.forEach(function (name) {
      var o = document.createElement("option"); o.value = name; names.appendChild(o);
    });
  }
  fillNames();
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
  // purity, 1 for a class column, what the node is, 1 for a node of small clusters (its own colour)]. data.other_flows lists, per epoch and analysis, the flows of the
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
      node.color.push(custom[8] ? N.color[k] : on ? (custom[6] ? data.colors[c] : blendGrey(data.colors[c], custom[5]))
                      : DIM_NODE);
      // a class keeps its label when filtered out (where are the samples of the matching classes
      // predicted?); a layer node keeps its own (the count of clusters it draws, or none)
      node.label.push(custom[6] && on ? esc(data.class_names[c]) : (N.label[k] || ""));
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
    if (!epochs.length) {  // nothing to draw: say so (a live page fills itself in when the first one comes)
      document.getElementById("status").textContent = "No snapshot in this run yet.";
      Plotly.purge("sankey");
      return;
    }
    document.getElementById("epoch-label").textContent = String(e);
    var fig = (data.figures[String(e)] || {})[state.analysis];
    var status = document.getElementById("status");
    status.textContent = (data.skipped || {})[String(e)] ? "not loaded: " + data.skipped[String(e)]
      : data.failed[String(e)] ? "snapshot failed: " + data.failed[String(e)]
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
    drawMeans();
    drawNeurons();
    drawMatrix();
    if (hm) {
      // a frame around the shown epoch's column
      var k = hm.data[0].x.indexOf(String(e));
      var layout = Object.assign({}, hm.layout, {shapes: k < 0 ? [] : [{type: "rect", xref: "x", yref: "paper",
        x0: k - 0.5, x1: k + 0.5, y0: 0, y1: 1, line: {color: "#d62728", width: 3}, name: "current-epoch"}]});
      Plotly.react("heatmap", hm.data, layout, config);
    }
  }
  // In the page of several held-out sets each set's page sits in a frame, and the frames show one
  // epoch: a slider moved here is told to that page, which tells the other frames (postMessage, the
  // one channel between pages opened from files). Only the parent page is listened to.
  function tellParent() {
    if (window.parent !== window) { window.parent.postMessage({flowcallback: "epoch", epoch: epochs[state.i]}, "*"); }
  }
  window.addEventListener("message", function (ev) {
    var m = ev.data;
    if (ev.source !== window.parent || window.parent === window || !m || m.flowcallback !== "epoch") { return; }
    var i = epochs.indexOf(m.epoch);
    if (i >= 0 && i !== state.i) { state.i = i; slider.value = String(i); draw(); }
  });
  slider.addEventListener("input", function () { state.i = parseInt(slider.value, 10); draw(); tellParent(); });
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
  // cluster -1: the small clusters that the epoch's Sankey draws as one node
  function clusterName(c) { return c < 0 ? "small clusters" : "cluster " + c; }
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
        labels.push(colSelect.value === "Prediction" ? "predicted " + esc(data.class_names[c]) : clusterName(c));
        // the node of small clusters says what it holds ("21 clusters of ≤ 12 samples each, drawn as one")
        var group = c < 0 ? ((data.across_groups[state.analysis] || {})[colSelect.value] || {})[e] : null;
        customNodes.push("epoch " + e + " · " + labels[labels.length - 1] + (group ? "<br>" + esc(group) : ""));
        clusterOf.push(c < 0 ? Infinity : c);  // each column in cluster order (class order for Prediction), small ones last
        xs.push(ep.length > 1 ? 0.01 + 0.98 * ep.indexOf(e) / (ep.length - 1) : 0.5);
      }
      return index[key];
    }
    rows.forEach(function (r) {
      if ((cls !== null && r[4] !== cls) || (changedOnly && !r[6])) { return; }
      src.push(node(r[0], r[2])); dst.push(node(r[1], r[3])); val.push(r[5]);
      col.push(colored(r[4]) ? rgba(data.colors[r[4]], 0.5) : (filter ? DIM_LINK : rgba(data.other_color, 0.35)));
      hover.push(esc(data.class_names[r[4]]) + ": " + r[5] + " sample(s), " + clusterName(r[2]) + " at epoch " + r[0] +
                 " to " + clusterName(r[3]) + " at epoch " + r[1] + "<br>samples " + r[7].join(", ") +
                 (r[5] > r[7].length ? ", ..." : ""));
    });
    var title = {text: esc(colSelect.value) + " across epochs (" + (data.labels[state.analysis] || state.analysis) +
                 ")" + (cls !== null ? " · class " + esc(data.class_names[cls]) : "") +
                 (changedOnly ? " · changed only" : "")};
    if (!src.length) {  // nothing left to draw (Plotly's Sankey throws on no links): say why instead
      Plotly.react("across", [], {title: title, height: 460, margin: {l: 20, r: 20, t: 50, b: 30},
        xaxis: {visible: false}, yaxis: {visible: false},
        annotations: [{x: 0.5, y: 0.5, xref: "paper", yref: "paper", showarrow: false, font: {size: 15},
                       text: changedOnly ? "No sample changed cluster between these epochs" : "No samples"}]},
        config);
      return;
    }
    var ys = acrossY(xs, src, dst, val, clusterOf);
    var trace = {type: "sankey", arrangement: "snap", valueformat: "d",
                 node: {label: labels, x: xs, y: ys, pad: 6, thickness: 12,
                 // a Prediction node in its class's colour, as on the epoch page; a layer's clusters grey
                 color: clusterOf.map(function (c) {
                   return colSelect.value === "Prediction" && c !== Infinity && data.colors[c] ? data.colors[c] : "#888";
                 }), customdata: customNodes,
                 hovertemplate: "%{customdata}<br>%{value} sample(s)<extra></extra>"},
                 link: {source: src, target: dst, value: val, color: col, customdata: hover,
                        hovertemplate: "%{customdata}<extra></extra>"}};
    var layout = {title: title, height: 460, margin: {l: 20, r: 20, t: 50, b: 30},
                  annotations: ep.map(function (e, k) { return {x: ep.length > 1 ? k / (ep.length - 1) : 0.5, y: 1.04,
                    xref: "paper", yref: "paper", showarrow: false, text: "epoch " + e}; })};
    Plotly.react("across", [trace], layout, config);
  }
  [colSelect, classSelect, changedBox].forEach(function (el) { el.addEventListener("change", drawAcross); });

  // -- confusion over training ----------------------------------------------------------------------
  function drawTraining() {
    var tr = data.training;
    if (!tr || !tr.epochs) { return; }
    // a line's colour is its true class; two confusions of one class differ by their dash
    var DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"], perClass = {};
    var cellTraces = tr.cells.filter(function (c) {
      return !filter || filter.matched[c.true] || filter.matched[c.predicted];
    }).map(function (c) {
      var name = esc(data.class_names[c.true]) + " → " + esc(data.class_names[c.predicted]);
      var k = perClass[c.true] = (perClass[c.true] || 0) + 1;
      return {type: "scatter", mode: "lines+markers", x: tr.epochs, y: c.counts,
              line: {color: data.colors[c.true], dash: DASHES[(k - 1) % DASHES.length]}, name: name,
              hovertemplate: esc(data.class_names[c.true]) + " taken for " + esc(data.class_names[c.predicted]) +
                             ": %{y} at epoch %{x}<extra></extra>"};
    });
    // titles start at the left: the tool icons at the top right would cover a centred long title
    Plotly.react("confusion", cellTraces, {title: {text: "Confusions over training (true → predicted, samples)",
                                                   x: 0.01, xanchor: "left"},
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
    Plotly.react("scores", scoreTraces, {title: {text: "Recall (solid) and precision (dotted) per class",
                                                 x: 0.01, xanchor: "left"},
      xaxis: {title: {text: "epoch"}, dtick: 1}, yaxis: {range: [0, 1.02]}, height: 380,
      margin: {l: 50, r: 20, t: 50, b: 50}}, config);
  }

  // -- the confusion matrix at the slider's epoch ---------------------------------------------------
  // data.confusion.cells: {epoch: [true, predicted, count]}, each epoch's nonzero cells only (at most
  // one per held-out sample, whatever the number of classes). Up to data.confusion.max_classes
  // classes every class is a row and a column; above, the classes most confused over the epochs
  // (misclassified samples as true or predicted class), or those the filter matches (the most
  // confused of them), and a last column for the predictions outside the shown classes.
  var CF, confusedScore;
  function countConfused() {
    CF = data.confusion || {cells: {}, max_classes: 30};
    confusedScore = data.class_names.map(function () { return 0; });
    Object.keys(CF.cells).forEach(function (e) {
      var t = CF.cells[e][0], p = CF.cells[e][1], n = CF.cells[e][2];
      for (var k = 0; k < n.length; k++) {
        if (t[k] !== p[k]) { confusedScore[t[k]] += n[k]; confusedScore[p[k]] += n[k]; }
      }
    });
  }
  countConfused();
  // the classes the matrix shows (in class order) and how many were candidates
  function matrixClasses() {
    var candidates = [];
    data.class_names.forEach(function (_, c) { if (!filter || filter.matched[c]) { candidates.push(c); } });
    var n = candidates.length;
    if (n > CF.max_classes) {
      candidates.sort(function (a, b) { return (confusedScore[b] - confusedScore[a]) || (a - b); });
      candidates = candidates.slice(0, CF.max_classes);
    }
    candidates.sort(function (a, b) { return a - b; });
    return {shown: candidates, of: n};
  }
  function drawMatrix() {
    var e = epochs[state.i], cells = CF.cells[String(e)], note = document.getElementById("confusion-note");
    if (!cells) { Plotly.purge("confusion-matrix"); note.textContent = "No predictions at epoch " + e + "."; return; }
    var pick = matrixClasses(), shown = pick.shown, at = {}, total = data.class_names.length;
    shown.forEach(function (c, i) { at[c] = i; });
    var k = shown.length, rest = k < total, width = k + (rest ? 1 : 0);
    var counts = shown.map(function () { var row = []; for (var j = 0; j < width; j++) { row.push(0); } return row; });
    var support = shown.map(function () { return 0; });
    var t = cells[0], p = cells[1], n = cells[2];
    for (var q = 0; q < n.length; q++) {
      var i = at[t[q]];
      if (i === undefined) { continue; }
      support[i] += n[q];
      var j = at[p[q]];
      counts[i][j === undefined ? k : j] += n[q];
    }
    var labels = shown.map(function (c) { return esc(data.class_names[c]); });
    var cols = rest ? labels.concat(["other classes"]) : labels;
    var z = [], custom = [];
    counts.forEach(function (row, i) {
      z.push(row.map(function (v) { return support[i] ? v / support[i] : null; }));
      custom.push(row.map(function (v, j) {
        return [labels[i], cols[j], v, support[i], support[i] ? (100 * v / support[i]).toFixed(1) : "–"];
      }));
    });
    var ticks = {tickmode: "array", tickvals: cols.map(function (_, j) { return j; }), ticktext: cols};
    var trace = {type: "heatmap", z: z, x: cols.map(function (_, j) { return j; }), y: labels.map(function (_, i) {
      return i; }), customdata: custom, zmin: 0, zmax: 1,
      colorscale: [[0, "#f7fbff"], [0.1, "#c6dbef"], [0.5, "#4292c6"], [1, "#08306b"]],
      colorbar: {title: {text: "share of row"}}, xgap: 1, ygap: 1,
      hovertemplate: "true %{customdata[0]}, predicted %{customdata[1]}: %{customdata[2]} of %{customdata[3]} " +
        "sample(s) (%{customdata[4]} %)<extra></extra>"};
    var size = Math.max(360, Math.min(900, 22 * k + 200));
    Plotly.react("confusion-matrix", [trace], {
      title: {text: "Confusion matrix at epoch " + e + (k < pick.of ? " · " + k + " of " + pick.of + " classes" : "")},
      xaxis: Object.assign({title: {text: "predicted"}, tickangle: -45, automargin: true}, ticks),
      yaxis: Object.assign({title: {text: "true"}, autorange: "reversed", automargin: true},
                           {tickmode: "array", tickvals: labels.map(function (_, i) { return i; }), ticktext: labels}),
      height: size, margin: {l: 80, r: 20, t: 50, b: 80}}, config);
    note.textContent = k < pick.of
      ? "It shows the " + k + " most confused of " + pick.of + (filter ? " matching" : "") + " classes (misclassified " +
        "samples over every epoch, as true or as predicted class)" + (rest ? "; the last column counts the " +
        "predictions of other classes" : "") + ". Type in the class filter to choose others; run.confusion() has " +
        "every cell."
      : (rest ? "The classes the filter matches; the last column counts the predictions of other classes." : "");
  }

  // -- class means per layer ----------------------------------------------------------------------
  // data.class_means: {analysis: [{layer, units, total, epochs: {epoch: {order, means}}}]}; means are
  // class x shown unit (rows in class order, null for a class without samples), order is the rows in
  // similarity order (flowcallback.core.aggregate.class_order). The difference ranks the shown units
  // as flowcallback.core.aggregate.class_difference does: |a - b| (divided by the unit's spread over the
  // classes when scaled), ties by unit index.
  var CM, meansAnalyses;
  var meansLayer = document.getElementById("means-layer"), meansAnalysis = document.getElementById("means-analysis");
  var meansMode = document.getElementById("means-mode"), meansA = document.getElementById("means-a");
  var meansB = document.getElementById("means-b"), meansNorm = document.getElementById("means-normalize");
  var meansZ = document.getElementById("means-zscore"), meansNote = document.getElementById("means-note");
  var DIFF_TOP = 20;
  function option(select, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
  }
  function refill(select, fill, fallback) {  // new options, keeping the chosen value where it still is one
    var current = select.value;
    while (select.firstChild) { select.removeChild(select.firstChild); }
    fill();
    var values = Array.prototype.map.call(select.options, function (o) { return o.value; });
    if (values.indexOf(current) >= 0) { select.value = current; } else if (fallback !== undefined) {
      select.value = fallback;
    }
  }
  function fillMeans() {
    CM = data.class_means || {};
    meansAnalyses = analyses.concat(Object.keys(CM).filter(function (a) { return analyses.indexOf(a) < 0; }))
      .filter(function (a) { return CM[a] && CM[a].length; });
    document.getElementById("means-section").style.display = meansAnalyses.length ? "" : "none";
    refill(meansAnalysis, function () {
      meansAnalyses.forEach(function (a) { option(meansAnalysis, a, data.labels[a] || a); });
    });
    refill(meansA, function () {
      data.class_names.forEach(function (name, c) { option(meansA, String(c), name); });
    });
    refill(meansB, function () {
      data.class_names.forEach(function (name, c) { option(meansB, String(c), name); });
    }, data.class_names.length > 1 ? "1" : undefined);
    fillMeansLayers();
  }
  function fillMeansLayers() {  // the analysis's layers, keeping the chosen layer (by name) where it has it
    var current = meansLayer.selectedIndex >= 0 ? meansLayer.options[meansLayer.selectedIndex].textContent : null;
    while (meansLayer.firstChild) { meansLayer.removeChild(meansLayer.firstChild); }
    (CM[meansAnalysis.value] || []).forEach(function (entry, k) { option(meansLayer, String(k), entry.layer); });
    var same = Array.prototype.filter.call(meansLayer.options, function (o) { return o.textContent === current; });
    if (same.length) { meansLayer.value = same[0].value; }
  }
  meansAnalysis.addEventListener("change", function () {
    var name = meansLayer.options.length ? meansLayer.options[meansLayer.selectedIndex].textContent : null;
    fillMeansLayers();
    Array.prototype.forEach.call(meansLayer.options, function (o) {
      if (o.textContent === name) { meansLayer.value = o.value; }
    });
    drawMeans();
  });
  fillMeans();

  function meansEntry() { return (CM[meansAnalysis.value] || [])[parseInt(meansLayer.value, 10)]; }
  function finiteRows(M) { return M.filter(function (row) { return row.length && row[0] !== null; }); }
  function spread(rows, k) {  // standard deviation of column k over rows (population, as numpy's std)
    if (!rows.length) { return 0; }
    var mu = 0, v = 0;
    rows.forEach(function (r) { mu += r[k]; }); mu /= rows.length;
    rows.forEach(function (r) { v += (r[k] - mu) * (r[k] - mu); });
    return Math.sqrt(v / rows.length);
  }
  // positions (into entry.units) of the units that separate classes a and b most, best first
  function separating(M, a, b, normalize) {
    var rows = finiteRows(M), score = M[a].map(function (v, k) {
      var s = Math.abs(v - M[b][k]);
      if (normalize) { var sd = spread(rows, k); s = sd > 0 ? s / sd : 0; }
      return s;
    });
    var ks = score.map(function (_, k) { return k; });
    ks.sort(function (i, j) { return (score[j] - score[i]) || (i - j); });
    return ks.slice(0, Math.min(DIFF_TOP, ks.length));
  }
  function fmt(v) { return v === null ? "no sample" : Number(v).toPrecision(4); }

  function drawMeans() {
    if (!meansAnalyses.length) { return; }
    var e = epochs[state.i], entry = meansEntry(), diff = meansMode.value === "difference";
    document.getElementById("means-pair").style.display = diff ? "" : "none";
    document.getElementById("means-epoch").textContent = "(epoch " + e + ")";
    var ep = entry && entry.epochs[String(e)];
    if (!ep) {
      Plotly.purge("means"); meansNote.textContent = "No class means of this layer at epoch " + e + "."; return;
    }
    var M = ep.means, a = parseInt(meansA.value, 10), b = parseInt(meansB.value, 10);
    var note = entry.total > entry.units.length
      ? "Showing " + entry.units.length + " of the layer's " + entry.total + " units: those whose class means vary " +
        "most over the classes" + (diff ? " (the difference ranks these)." : ".") : "";
    if (diff && (a === b || M[a][0] === null || M[b][0] === null)) {
      Plotly.purge("means");
      meansNote.textContent = (a === b ? "Pick two different classes." : "A class without samples has no mean.") +
        (note ? " " + note : "");
      return;
    }
    meansNote.textContent = note;
    var cols = diff ? separating(M, a, b, meansNorm.checked) : entry.units.map(function (_, k) { return k; });
    var rows = ep.order.filter(function (c) { return !filter || filter.matched[c] || (diff && (c === a || c === b)); });
    var x = cols.map(function (k) { return "unit " + entry.units[k]; });
    var raw = rows.map(function (c) { return cols.map(function (k) { return M[c][k]; }); });
    var z = raw;
    if (meansZ.checked) {  // each unit z-scored over the classes drawn with a mean
      var fin = finiteRows(raw);
      z = raw.map(function (r) {
        return r.map(function (v, j) {
          if (v === null) { return null; }
          var mu = fin.reduce(function (s, q) { return s + q[j]; }, 0) / fin.length, sd = spread(fin, j);
          return sd > 0 ? (v - mu) / sd : 0;
        });
      });
    }
    var lo = Infinity, hi = -Infinity;
    z.forEach(function (r) {
      r.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    });
    var signed = lo < 0 && hi > 0;
    var what = meansAnalysis.value === "lrp" ? "relevance" : "activation";
    var heat = {type: "heatmap", z: z, x: x, y: rows.map(function (c) { return esc(data.class_names[c]); }),
                text: raw.map(function (r) { return r.map(fmt); }), colorscale: signed ? "RdBu" : "Viridis",
                reversescale: signed, zmid: signed ? 0 : undefined, xgap: 1, ygap: 1,
                colorbar: {title: {text: meansZ.checked ? "z-score" : "mean"}, len: 0.6, y: diff ? 0.72 : 0.5},
                hovertemplate: "class %{y}<br>%{x}<br>mean %{text}<extra></extra>"};
    var where = esc(entry.layer) + ", epoch " + e;
    // automargin: slanted unit labels push the axis title down instead of running under it
    var layout = {margin: {l: 140, r: 20, t: 60, b: 60}, xaxis: {type: "category", title: {text: "unit / channel"},
                  showticklabels: x.length <= 64, automargin: true},
                  yaxis: {type: "category", autorange: "reversed", title: {text: "class"}, automargin: true}};
    if (!diff) {
      layout.title = {text: "Mean " + what + " per class and unit (" + where + ")"};
      layout.height = Math.max(320, 26 * rows.length + 160);
      Plotly.react("means", [heat], layout, config);
      return;
    }
    var values = cols.map(function (k) { return M[a][k] - M[b][k]; });
    var bar = {type: "bar", x: x, y: values, xaxis: "x", yaxis: "y2", showlegend: false,
               marker: {color: values.map(function (v) { return data.colors[v >= 0 ? a : b]; })},
               hovertemplate: "%{x}<br>difference %{y:.4g}<extra></extra>"};
    var pair = esc(data.class_names[a]) + " − " + esc(data.class_names[b]);
    layout.title = {text: "Units that separate " + esc(data.class_names[a]) + " from " + esc(data.class_names[b]) +
                    ": mean " + what + " (" + where + ")"};
    layout.height = Math.max(460, 26 * rows.length + 320);
    layout.xaxis.anchor = "y2";
    layout.xaxis.showticklabels = true;
    layout.yaxis.domain = [0.42, 1];
    layout.yaxis2 = {domain: [0, 0.34], anchor: "x", title: {text: pair}, zeroline: true};
    Plotly.react("means", [heat, bar], layout, config);
  }
  [meansLayer, meansMode, meansA, meansB, meansNorm, meansZ].forEach(function (el) {
    el.addEventListener("change", drawMeans);
  });

  // -- neuron clusters per layer (CNNVis) ----------------------------------------------------------
  // data.neurons: [{layer, epochs: {epoch: {sizes, flat, classes, z, top}}}]: per epoch the units per
  // cluster, the units in no cluster, the shown classes (seriation order), the clusters x classes mean
  // z-scores and each cluster's top samples as [sample, label, prediction]
  // (flowcallback.core.runpage._neurons_data). The class filter keeps the matching classes' columns.
  var NC = [], TH = null;
  var neuronsLayer = document.getElementById("neurons-layer"), neuronsNote = document.getElementById("neurons-note");
  function fillNeurons() {  // the layers, keeping the chosen one (by name) where the data still has it
    var was = NC[parseInt(neuronsLayer.value, 10)];
    NC = data.neurons || [];
    TH = data.thumbnails || null;
    document.getElementById("neurons-section").style.display = NC.length ? "" : "none";
    while (neuronsLayer.firstChild) { neuronsLayer.removeChild(neuronsLayer.firstChild); }
    var keep = -1;
    NC.forEach(function (entry, k) {
      option(neuronsLayer, String(k), entry.layer);
      if (was && entry.layer === was.layer) { keep = k; }
    });
    // else the last layer but one (the output layer's units are the classes themselves)
    if (NC.length) { neuronsLayer.value = String(keep >= 0 ? keep : Math.max(0, NC.length - 2)); }
  }
  fillNeurons();
  function className(c) { return c >= 0 && c < data.class_names.length ? data.class_names[c] : String(c); }
  function drawNeurons() {
    if (!NC.length) { return; }
    var e = epochs[state.i], entry = NC[parseInt(neuronsLayer.value, 10)];
    var ep = entry ? entry.epochs[String(e)] : null, body = document.querySelector("#neurons-top tbody");
    document.getElementById("neurons-epoch").textContent = "(epoch " + e + ")";
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!ep || !ep.sizes.length) {
      Plotly.purge("neurons");
      neuronsNote.textContent = ep ? "No unit of this layer responds differently to the classes at epoch " + e + "."
        : "No neuron clusters of this layer at epoch " + e + ".";
      return;
    }
    var keep = ep.classes.map(function (c, j) { return j; })
      .filter(function (j) { return !filter || colored(ep.classes[j]); });
    var rows = ep.sizes.map(function (n, c) { return "cluster " + c + " (" + n + " unit" + (n === 1 ? "" : "s") + ")"; });
    var z = ep.z.map(function (r) { return keep.map(function (j) { return r[j]; }); }), bound = 0;
    z.forEach(function (r) { r.forEach(function (v) { if (v !== null) { bound = Math.max(bound, Math.abs(v)); } }); });
    bound = bound || 1;
    var notes = [];
    if (ep.flat) { notes.push(ep.flat + " unit(s) with the same mean for every class are in no cluster."); }
    if (filter) { notes.push("Showing the " + keep.length + " class(es) the filter matches."); }
    neuronsNote.textContent = notes.join(" ");
    var heat = {type: "heatmap", z: z, x: keep.map(function (j) { return esc(className(ep.classes[j])); }),
                y: rows, colorscale: "RdBu", zmid: 0, zmin: -bound, zmax: bound,
                colorbar: {title: {text: "mean z-score"}},
                hovertemplate: "%{y}<br>class %{x}<br>mean z-score %{z}<extra></extra>"};
    var layout = {title: {text: esc(entry.layer) + ": unit clusters \u00d7 classes (epoch " + e + ")"},
                  xaxis: {type: "category", title: {text: "class"}}, yaxis: {type: "category", autorange: "reversed"},
                  height: Math.max(320, 130 + 26 * rows.length), margin: {l: 150, r: 40, t: 60, b: 100}};
    Plotly.react("neurons", [heat], layout, config);
    ep.top.forEach(function (samples, c) {
      var tr = document.createElement("tr"), th = document.createElement("td"), td = document.createElement("td");
      th.textContent = rows[c];
      if (!samples.length) { td.textContent = "not kept for this layer"; }
      samples.forEach(function (s) {
        var item = document.createElement("span"), caption = document.createElement("span");
        item.className = "top-sample" + (s[1] !== s[2] ? " wrong" : "");
        var pic = thumbnail(s[0]);
        if (pic) { item.appendChild(pic); }
        caption.textContent = s[0] + " (" + className(s[1]) + " \u2192 " + className(s[2]) + ")";
        item.appendChild(caption);
        td.appendChild(item);
      });
      tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
    });
  }
  // data.thumbnails: {height, width, channels, pixels: {sample: base64 of uint8 pixels}} or null
  // (flowcallback.core.runpage._thumbnail_data): a canvas per picture, scaled up without smoothing.
  function thumbnail(sample) {
    var b64 = TH && TH.pixels[String(sample)];
    if (!b64) { return null; }
    var raw = atob(b64), h = TH.height, w = TH.width, ch = TH.channels;
    if (raw.length !== h * w * ch) { return null; }
    var canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    var scale = Math.max(1, Math.floor(48 / Math.max(h, w)));
    canvas.style.width = (w * scale) + "px"; canvas.style.height = (h * scale) + "px";
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
    for (var p = 0; p < h * w; p++) {
      for (var k = 0; k < 3; k++) { img.data[4 * p + k] = raw.charCodeAt(p * ch + (ch === 3 ? k : 0)); }
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }
  neuronsLayer.addEventListener("change", drawNeurons);

  // -- projection over the epochs -----------------------------------------------------------------
  // data.projection: points {epoch: {samples, labels, predictions}}, layers [{key, analysis, layer}],
  // coords {key: {epoch: {x, y, cluster}}} (row i is sample points[epoch].samples[i]).
  var PJ = {layers: []};
  var projLayer = document.getElementById("projection-layer");
  var projShown = null;  // the layer and filter drawn, to redraw only on a change
  function fillProjection() {
    var was = PJ.layers[parseInt(projLayer.value, 10)];
    PJ = data.projection || {layers: []};
    document.getElementById("projection-section").style.display = PJ.layers.length ? "" : "none";
    while (projLayer.firstChild) { projLayer.removeChild(projLayer.firstChild); }
    var keep = -1;
    PJ.layers.forEach(function (l, k) {
      var label = data.labels[l.analysis] || l.analysis;
      option(projLayer, String(k), l.layer + (l.analysis !== "activations" ? " (" + label + ")" : ""));
      if (was && l.key === was.key) { keep = k; }
    });
    // the layer shown before, else the last layer but one (the output layer's picture is the predictions')
    if (PJ.layers.length) { projLayer.value = String(keep >= 0 ? keep : Math.max(0, PJ.layers.length - 2)); }
    projShown = null;
  }
  fillProjection();

  function projectionFigure(l) {
    var byE = PJ.coords[l.key], eps = Object.keys(byE).map(Number).sort(function (p, q) { return p - q; });
    var seen = {}, x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    eps.forEach(function (e) {
      PJ.points[String(e)].labels.forEach(function (c) { seen[c] = true; });
      byE[String(e)].x.forEach(function (v) { x0 = Math.min(x0, v); x1 = Math.max(x1, v); });
      byE[String(e)].y.forEach(function (v) { y0 = Math.min(y0, v); y1 = Math.max(y1, v); });
    });
    // grey classes first, so that the coloured ones are drawn over them
    var classes = Object.keys(seen).map(Number);
    classes.sort(function (p, q) { return (colored(p) ? 1 : 0) - (colored(q) ? 1 : 0) || p - q; });
    function traces(e) {
      var pts = PJ.points[String(e)], c = byE[String(e)], groups = {};
      classes.forEach(function (k) { groups[k] = {x: [], y: [], ids: [], custom: [], symbol: []}; });
      // right predictions first: the legend draws a class with its first point's symbol
      var rows = pts.samples.map(function (_, i) { return i; });
      rows.sort(function (i, j) {
        return (pts.predictions[i] !== pts.labels[i]) - (pts.predictions[j] !== pts.labels[j]) || i - j;
      });
      rows.forEach(function (i) {
        var s = pts.samples[i], g = groups[pts.labels[i]], p = pts.predictions[i];
        g.x.push(c.x[i]); g.y.push(c.y[i]); g.ids.push(String(s));
        g.custom.push([s, p >= 0 && p < data.class_names.length ? esc(data.class_names[p]) : String(p),
                       c.cluster[i] >= 0 ? String(c.cluster[i]) : "–"]);
        g.symbol.push(p === pts.labels[i] ? "circle" : "circle-open");
      });
      return classes.map(function (k) {
        var g = groups[k], on = colored(k), color = on ? data.colors[k] : DIM_NODE;
        return {type: "scatter", mode: "markers", x: g.x, y: g.y, ids: g.ids, customdata: g.custom,
                name: esc(data.class_names[k]), legendgroup: String(k), showlegend: on,
                marker: {color: color, size: 6, symbol: g.symbol, line: {width: 1, color: color}},
                hovertemplate: "sample %{customdata[0]}<br>label " + esc(data.class_names[k]) +
                  "<br>prediction %{customdata[1]}<br>cluster %{customdata[2]}<extra></extra>"};
      });
    }
    function pad(lo, hi) { var w = (hi - lo) || 1; return [lo - 0.05 * w, hi + 0.05 * w]; }
    var frames = eps.map(function (e) { return {name: String(e), data: traces(e)}; });
    var ms = 800;
    // it opens at the last epoch, as the rest of the page does; Play runs the epochs from the first
    var play = {frame: {duration: ms, redraw: false}, fromcurrent: false,
                transition: {duration: Math.round(ms * 0.6), easing: "cubic-in-out"}};
    var pause = {frame: {duration: 0, redraw: false}, mode: "immediate", transition: {duration: 0}};
    var method = PJ.methods.length ? esc(PJ.methods.join(", ").toUpperCase()) : "2-D";
    var layout = {
      title: {text: esc(l.layer) + " · " + method + " projection of " + (PJ.points[String(eps[0])].samples.length) +
                    " samples (filled: right prediction, open: wrong)"},
      xaxis: {range: pad(x0, x1), showticklabels: false, zeroline: false},
      yaxis: {range: pad(y0, y1), showticklabels: false, zeroline: false, scaleanchor: "x"},
      height: 620, margin: {l: 20, r: 20, t: 60, b: 90}, hovermode: "closest",
      legend: {title: {text: "true class"}, itemsizing: "constant"},
      updatemenus: [{type: "buttons", direction: "left", x: 0, y: -0.04, xanchor: "left", yanchor: "top",
                     buttons: [{label: "Play", method: "animate", args: [null, play]},
                               {label: "Pause", method: "animate", args: [[null], pause]}]}],
      sliders: [{active: eps.length - 1, x: 0.16, len: 0.84, y: 0, yanchor: "top", currentvalue: {prefix: "epoch "},
                 steps: eps.map(function (e) {
                   return {label: String(e), method: "animate", args: [[String(e)], {mode: "immediate",
                     frame: {duration: 0, redraw: false}, transition: {duration: 300}}]};
                 })}]
    };
    return {data: frames[frames.length - 1].data, layout: layout, frames: frames};
  }
  function drawProjection() {
    var l = PJ.layers[parseInt(projLayer.value, 10)];
    if (!l) { return; }
    var key = l.key + "|" + (filter ? filter.query : "");
    if (key === projShown) { return; }
    projShown = key;
    var fig = projectionFigure(l);
    Plotly.purge("projection");
    Plotly.newPlot("projection", {data: fig.data, layout: fig.layout, frames: fig.frames, config: config});
    document.getElementById("projection-note").textContent = fig.frames.length < 2
      ? "One epoch only: nothing to animate yet." : "";
  }
  projLayer.addEventListener("change", drawProjection);

  filterBox.addEventListener("input", function () {
    readFilter(); fillClasses(); draw(); drawAcross(); drawTraining(); drawProjection();
  });
  drawTraining();
  draw();
  drawProjection();

  // -- live refresh -------------------------------------------------------------------------------
  // Served over http(s) (flowcallback serve, the TensorBoard plugin's Flows dashboard, any static
  // server), the page asks for its own address every LIVE_MS with HEAD, a few stat calls on the
  // server. When the answer's ETag (or Last-Modified and Content-Length) changes, it fetches the
  // page again and reads its #run-data element only: the text is parsed as an inert document
  // (DOMParser runs no script) and then as JSON, never as code. update() then redraws in place,
  // keeping the epoch on the slider, the analysis, the class filter and every selector; a reader on
  // the last epoch moves to the new last one (following the training), any other stays where he is.
  // Opened from a file (file://), the page does not poll.
  var LIVE_MS = 3000;
  var liveStatus = document.getElementById("live-status");
  function update(next) {
    var wasLast = state.i === epochs.length - 1, shownEpoch = epochs[state.i];
    data = next; epochs = data.epochs; analyses = data.analyses;
    var k = epochs.indexOf(shownEpoch);
    state.i = wasLast || k < 0 ? epochs.length - 1 : k;
    if (analyses.indexOf(state.analysis) < 0) { state.analysis = analyses[0]; }
    acrossShown = null;  // the column selector is filled again, keeping its column
    fillHeader(); fillNames(); readFilter(); fillClasses(); countConfused();
    fillMeans(); fillNeurons(); fillProjection();
    Plotly.react("curves", data.curves.data, data.curves.layout, config);
    drawTraining(); draw(); drawProjection();
  }
  if (liveStatus && /^https?:$/.test(window.location.protocol) && window.fetch && window.DOMParser) {
    var address = window.location.pathname + window.location.search, seen = null, shownText = null;
    var signature = function (r) {
      return r.headers.get("ETag") || (r.headers.get("Last-Modified") + "|" + r.headers.get("Content-Length"));
    };
    var say = function (text) { liveStatus.textContent = text; };
    var reload = function () {  // the whole page, for its data only
      return window.fetch(address, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        seen = signature(r);
        return r.text();
      }).then(function (text) {
        var el = new window.DOMParser().parseFromString(text, "text/html").getElementById("run-data");
        if (!el) { throw new Error("no run data in the page"); }
        var json = el.textContent;
        if (shownText === null) { shownText = document.getElementById("run-data").textContent; }
        if (json !== shownText) {
          update(JSON.parse(json));
          shownText = json;
          say("live · updated " + new Date().toLocaleTimeString());
        }
      });
    };
    var poll = function () {
      // the first poll reads the page once (a snapshot may have landed while it loaded); later ones HEAD
      var ask = seen === null ? reload() : window.fetch(address, {method: "HEAD", cache: "no-store",
        credentials: "same-origin"}).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return signature(r) === seen ? null : reload();
      });
      ask.then(function () {
        if (liveStatus.textContent.indexOf("live") !== 0) { say("live"); }
      }, function (err) {
        say("live: cannot read the run now (" + String(err && err.message || err) + "); retrying");
      }).then(function () { window.setTimeout(poll, LIVE_MS); });
    };
    say("live");
    window.setTimeout(poll, LIVE_MS);
  }
})();
