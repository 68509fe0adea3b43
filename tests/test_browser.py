"""The generated pages render in a real browser, offline, with no JavaScript error."""
from __future__ import annotations

import re

import pytest

from flowcallback import load_run

from browser import chromium_path, open_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make test installs it)"),
]


def _node_columns(page):
    """Distinct x positions of the drawn Sankey nodes, and the node count."""
    xs = page.eval_on_selector_all(
        ".sankey-node", "els => els.map(e => Math.round(e.getBoundingClientRect().x))"
    )
    return sorted(set(xs)), len(xs)


def test_epoch_page_renders_offline(fitted_run):
    run = load_run(fitted_run["log_dir"])
    g = run.epoch(2, "activations")
    lrp = run.epoch(2, "lrp")
    url = run.page(2).resolve().as_uri()
    with open_page(url) as (page, errors, blocked):
        cols, n_nodes = _node_columns(page)
        assert len(cols) == len(g.columns)
        assert n_nodes == sum(len(c.order) for c in g.columns)
        n_links = page.eval_on_selector_all(".sankey-link", "els => els.length")
        assert n_links == len(g.flows)
        # the column titles are drawn with the layer names
        text = page.inner_text("body")
        for name in ("conv1", "dense120", "Prediction", "Ground truth"):
            assert name in text
        assert "Epoch 2" in text
        # a diagram of few clusters fills the window, down to its lower edge
        plot_height = page.evaluate("document.querySelector('.plotly-graph-div').getBoundingClientRect().height")
        assert plot_height >= 0.9 * page.viewport_size["height"] - 30, plot_height
        # switch to LRP flows
        page.get_by_text("LRP relevance", exact=True).click()
        page.wait_for_timeout(500)
        cols, n_nodes = _node_columns(page)
        assert n_nodes == sum(len(c.order) for c in lrp.columns)
        assert len(cols) == len(lrp.columns)
        assert errors == []
        assert blocked == []


def test_one_hundred_classes_render_with_distinct_colours_legend_and_hover(tmp_path):
    """More classes than any palette: every class keeps its own colour, legend entry and hover name."""
    import itertools

    import numpy as np

    from flowcallback.core import flows, render

    names = [f"class {i:02d}" for i in range(100)]
    colours = render.class_colors(100)
    rgb = np.array([render._rgb(c) for c in colours], dtype=float)
    assert len(set(colours)) == 100
    # as far apart as Tableau 20's closest pair (25 in RGB), give or take
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)) >= 20
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(100), 5)
    g = flows.build_flow_graph([("dense", "Dense", y // 10), ("out", "Dense", y // 4)], y, y, class_names=names,
                               epoch=1)
    path = tmp_path / "epoch_001.html"
    render.write_epoch_page(path, {"activations": g}, top_classes=None)  # every class on its own
    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        legend = page.eval_on_selector_all(".legend .traces .legendtext", "els => els.map(e => e.textContent)")
        assert legend == names
        link = page.query_selector_all(".sankey-link")[rng.integers(0, len(g.flows))]
        link.hover(force=True)
        page.wait_for_timeout(300)
        hover = page.eval_on_selector(".hoverlayer", "e => e.textContent")
        assert "samples" in hover and any(f"class {n}:" in hover for n in names), hover
        assert errors == [] and blocked == []


def test_many_classes_show_the_largest_twenty_and_other_not_a_tangle(tmp_path):
    """Above 20 classes the page colours the 20 largest and draws the rest as one grey "other"."""
    import numpy as np

    from flowcallback.core import flows, render

    names = [f"class {i:02d}" for i in range(100)]
    rng = np.random.default_rng(1)
    # unequal classes: 20 of 30 samples, 80 of 3
    y = np.concatenate([np.repeat(np.arange(20), 30), np.repeat(np.arange(20, 100), 3)])
    y = rng.permutation(np.r_[y[::-1]])
    g = flows.build_flow_graph([("dense", "Dense", y // 10), ("out", "Dense", y // 4)], y, y, class_names=names,
                               epoch=1)
    assert render.top_classes(g) == list(range(20))
    path = tmp_path / "epoch_001.html"
    render.write_epoch_page(path, {"activations": g})
    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        legend = page.eval_on_selector_all(".legend .traces .legendtext", "els => els.map(e => e.textContent)")
        assert legend == names[:20] + ["other (80 classes)"]
        fills = page.eval_on_selector_all(".sankey-link", "els => els.map(e => getComputedStyle(e).fill)")
        assert len(set(fills)) <= 21  # 20 classes and "other": not a uniform tangle of 100 hues
        # the other classes' flows are merged: one per pair of clusters, not one per class
        n_links = len(fills)
        page.screenshot(path=str(tmp_path / "many_classes.png"))
        assert errors == [] and blocked == []
    per_class = len(g.flows)
    assert n_links < per_class
    assert (tmp_path / "many_classes.png").stat().st_size > 10_000


def _hundred_class_run(log_dir):
    """A run of 100 unequal classes over three epochs, from FlowGraphs made directly (no training)."""
    import numpy as np

    from flowcallback.core import flows, store

    names = [f"class {i:02d}" for i in range(100)]
    rng = np.random.default_rng(3)
    y = rng.permutation(np.concatenate([np.repeat(np.arange(20), 30), np.repeat(np.arange(20, 100), 6)]))
    layers = [("conv", "Conv2D"), ("dense", "Dense"), ("out", "Dense")]
    info = {"flowcallback_version": "0", "model": {"name": "hundred", "fingerprint": "f"}, "class_names": names,
            "analyses": ["activations"], "layers": [{"name": n, "type": t} for n, t in layers], "config": {}}
    store.write_run_info(log_dir, info)
    graphs = {}

    def noisy(labels, p):  # a share p of the samples in a random cluster
        return np.where(rng.random(len(y)) < p, rng.integers(0, labels.max() + 1, len(y)), labels)

    for e in range(3):
        cols = [("conv", "Conv2D", noisy(y // 25, 0.5)), ("dense", "Dense", noisy(y // 2, 0.4 - 0.15 * e)),
                ("out", "Dense", noisy(y // 4, 0.3 - 0.12 * e))]
        g = flows.build_flow_graph(cols, y, noisy(y, 0.5 - 0.2 * e), class_names=names, epoch=e,
                                   metrics={"accuracy": 0.5 + 0.2 * e, "loss": 2.0 - 0.6 * e})
        store.save_epoch(log_dir, {"activations": g})
        graphs[e] = {"activations": g}
    return info, graphs


_LINK_COLOURS = """sel => Array.from(document.querySelectorAll(sel)).map(e => {
    const m = getComputedStyle(e).fill.match(/[\\d.]+/g).map(Number);
    return m[0] === m[1] && m[1] === m[2] ? 'grey' : m.slice(0, 3).join(',');
})"""


def _coloured(page, selector="#sankey .sankey-link"):
    """The distinct non-grey fills of the drawn links, and whether a grey one is drawn."""
    fills = page.evaluate(f"({_LINK_COLOURS})({selector!r})")
    return {f for f in fills if f != "grey"}, "grey" in fills


def _filter(page, text):
    """Type ``text`` in the class filter and wait until the Sankey draws the filtered links."""
    page.fill("#class-filter", text)
    page.wait_for_function("(() => { const d = document.getElementById('sankey').data; return d && "
                           "document.querySelectorAll('#sankey .sankey-link').length === d[0].link.value.length; })()",
                           timeout=10_000)
    page.wait_for_timeout(400)


def test_class_filter_keeps_one_hundred_classes_legible(tmp_path):
    """100 classes on the run page: the 20 largest and "other" by default; the filter box colours,
    lists and draws the matching classes only (those merged into "other" get their flows back), and
    clearing it restores the page."""
    import os
    import shutil

    from flowcallback.core import flows, render, runpage

    info, graphs = _hundred_class_run(tmp_path)
    g = graphs[2]["activations"]
    assert render.top_classes(g) == list(range(20))
    # the dense column's 50 clusters are drawn as 30 nodes, its 21 smallest as one
    (group,) = flows.group_small_clusters(g)[1]
    assert len(g.columns[1].order) == 50 and group.text.startswith("21 clusters of ≤ ")

    def grouped_label():
        return page.evaluate("document.getElementById('sankey').data[0].node.label"
                             ".filter(l => /^\\d+ clusters$/.test(l))")
    path = runpage.write_run_page(tmp_path, info, graphs, {})
    total = g.n_samples * (len(g.columns) - 1)

    def drawn_total():
        return page.evaluate("document.getElementById('sankey').data[0].link.value.reduce((a, b) => a + b, 0)")

    def legend():
        return page.eval_on_selector_all("#sankey .legend .traces .legendtext", "els => els.map(e => e.textContent)")

    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        colours, grey = _coloured(page)
        assert 1 < len(colours) <= 20 and grey  # the 20 largest classes and "other": not a tangle of 100 hues
        assert legend() == info["class_names"][:20] + ["other (80 classes)"]
        assert len(_coloured(page, "#across .sankey-link")[0]) <= 20
        default_links = page.evaluate("document.getElementById('sankey').data[0].link.value.length")
        page.screenshot(path=str(tmp_path / "run_many_classes.png"))

        assert grouped_label() == ["21 clusters"]
        # the flows across epochs of that column draw its small clusters as one node per epoch
        page.select_option("#across-column", "dense")
        page.wait_for_function("document.getElementById('across').data[0].node.label"
                               ".some(l => l === 'small clusters')", timeout=10_000)
        across = page.evaluate("document.getElementById('across').data[0].node.label")
        assert across.count("small clusters") == 3 and len(across) <= 3 * 30
        # and each such node's hover says what it holds at its epoch
        hovers = page.evaluate("document.getElementById('across').data[0].node.customdata")
        grouped = [h for h, label in zip(hovers, across) if label == "small clusters"]
        what = re.compile(r"epoch \d+ · small clusters<br>\d+ clusters of ≤ (1 sample|\d+ samples each), drawn as one")
        assert len(grouped) == 3 and all(what.fullmatch(h) for h in grouped), grouped
        page.select_option("#across-column", "Prediction")

        # one class of the largest 20: its flows alone are coloured, everywhere
        _filter(page, "class 07")
        colours, grey = _coloured(page)
        assert len(colours) == 1 and grey and drawn_total() == total
        assert grouped_label() == ["21 clusters"]
        assert legend() == ["class 07", "other (99 classes)"]
        assert page.inner_text("#filter-status") == "1 of 100 classes match"
        profiles = page.eval_on_selector_all("#profiles tbody tr td:first-child", "els => els.map(e => e.textContent)")
        assert profiles == ["class 07"]
        assert page.eval_on_selector_all("#across-class option", "els => els.map(e => e.value)") == ["", "7"]
        assert len(_coloured(page, "#across .sankey-link")[0]) == 1
        assert page.evaluate("document.getElementById('scores').data.length") == 2  # its recall and precision

        # "class 5" matches classes 50 to 59, all merged into "other" by default: they get their own flows
        _filter(page, "CLASS 5")
        colours, grey = _coloured(page)
        assert len(colours) == 10 and grey and drawn_total() == total
        assert legend() == [f"class {i}" for i in range(50, 60)] + ["other (90 classes)"]
        assert len(_coloured(page, "#across .sankey-link")[0]) == 10
        _filter(page, "class 0")  # classes 00 to 09, among the largest
        assert len(_coloured(page)[0]) == 10 and page.inner_text("#filter-status") == "10 of 100 classes match"
        page.screenshot(path=str(tmp_path / "run_class_filter.png"))

        # a filter matching every class colours the 20 largest of them, not 100 hues
        _filter(page, "class")
        colours, _ = _coloured(page)
        assert len(colours) <= 20 and "the 20 largest coloured" in page.inner_text("#filter-status")

        # a filter matching nothing greys every flow; clearing restores the default page
        _filter(page, "no such class")
        assert _coloured(page) == (set(), True) and legend() == ["other (100 classes)"]
        assert page.eval_on_selector_all("#profiles tbody tr", "els => els.length") == 0
        _filter(page, "")
        colours, grey = _coloured(page)
        assert 1 < len(colours) <= 20 and grey and legend()[-1] == "other (80 classes)"
        assert page.evaluate("document.getElementById('sankey').data[0].link.value.length") == default_links
        assert page.eval_on_selector_all("#profiles tbody tr", "els => els.length") == 100
        assert errors == [] and blocked == []
    for name in ("run_many_classes.png", "run_class_filter.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if os.environ.get("FLOWCALLBACK_DOC_IMAGES"):  # refreshes docs/images (see docs/usage.md)
            shutil.copy(tmp_path / name, os.path.join(os.environ["FLOWCALLBACK_DOC_IMAGES"], name))


_NOTE_BOXES = """marker => {
    const boxes = Array.from(document.querySelectorAll('.annotation'))
        .filter(a => a.textContent.includes(marker))
        .map(a => { const r = a.getBoundingClientRect(); return {left: r.left, right: r.right, bottom: r.bottom,
                    lines: a.querySelectorAll('tspan.line').length, text: a.textContent}; });
    return {boxes: boxes, width: document.documentElement.clientWidth};
}"""


def _long_note_graph():
    """A graph whose one note is 1,500 characters of layer names, as a big branching model's was."""
    import numpy as np

    from flowcallback.core import flows

    names = [f"conv{i}_block{j}_concat" for i in range(2, 6) for j in range(1, 33)]
    note = ("Branching model (branches split at " + ", ".join(names))[:1499] + "."
    y = np.arange(60) % 3
    g = flows.build_flow_graph([("dense", "Dense", y), ("out", "Dense", y)], y, y, epoch=1, graph_notes=[note],
                               metrics={"accuracy": 1.0, "loss": 0.1})
    return g, note


def _check_note_fits(page, note, plot_selector):
    from flowcallback.core import render

    found = page.evaluate(f"({_NOTE_BOXES})('conv2_block1_concat')")
    (box,) = found["boxes"]
    width = found["width"]
    assert 0 <= box["left"] and box["right"] <= width, (box, width)  # nothing drawn past the window's right edge
    assert box["lines"] == len(render.wrap_note(note)) >= 11
    assert box["text"].replace(" ", "") == note.replace(" ", "")  # every character is drawn
    plot_bottom = page.evaluate(f"document.querySelector({plot_selector!r}).getBoundingClientRect().bottom")
    assert box["bottom"] <= plot_bottom + 1, (box, plot_bottom)  # inside the figure's margin, not clipped


def test_a_long_note_wraps_within_the_window_on_both_pages(tmp_path):
    """A note of 1,500 characters stays inside a 1,024-pixel window on the epoch page and the run page,
    and so do the run page's error lines (a set-up error with a 250-character word, a failed part)."""
    from flowcallback.core import render, runpage

    g, note = _long_note_graph()
    assert len(note) == 1500
    path = tmp_path / "epoch_001.html"
    render.write_epoch_page(path, {"activations": g})  # the figure draws the graph's notes
    with open_page(path.resolve().as_uri(), width=1024, height=800) as (page, errors, blocked):
        _check_note_fits(page, note, ".plotly-graph-div")
        assert errors == [] and blocked == []

    info = {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["0", "1", "2"],
            "analyses": ["activations"], "config": {},
            "layers": [{"name": "dense", "type": "Dense"}, {"name": "out", "type": "Dense"}],
            # the snapshot budget's line: 300 skipped ranges make a long sentence of its own
            "schedule": {"budget": 0.25, "spent": 0.31, "first": 0, "last": 1000, "taken": [0, 1, 1000],
                         "skipped": {"spacing": [[3 * i + 2, 3 * i + 3] for i in range(300)]}}}
    errors_text = {"setup": "Traceback ...\nRuntimeError: cannot copy /" + "very_long_path_" * 16 + "model.keras\n",
                   1: "Traceback ...\nMemoryError: " + "the kNN graph of layer dense did not fit " * 6 + "\n"}
    index = runpage.write_run_page(tmp_path, info, {1: {"activations": g}}, errors_text)
    with open_page(index.resolve().as_uri(), width=1024, height=800) as (page, errors, blocked):
        _check_note_fits(page, note, "#sankey")
        width = page.evaluate("document.documentElement.clientWidth")
        for selector in ("#setup-error", "#status", "#schedule-note"):
            box = page.eval_on_selector(selector, "e => { const r = e.getBoundingClientRect(); "
                                                  "return {left: r.left, right: r.right, text: e.textContent}; }")
            assert box["text"] and 0 <= box["left"] and box["right"] <= width, (selector, box, width)
        assert "very_long_path_very_long_path_" in page.inner_text("#setup-error")
        assert page.is_visible("#schedule-note")
        assert page.inner_text("#schedule-note").startswith(
            "Snapshots within a budget of 25% of the training time: epochs 0, 1, 1000 taken, adding 31%. "
            "Skipped: 2\u20133")
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no horizontal scroll bar
        assert errors == [] and blocked == []


def test_the_confusion_matrix_of_a_thousand_classes_shows_the_most_confused(tmp_path):
    """1,000 classes, 300 samples: the run page's confusion matrix shows the 30 classes most confused
    over the epochs (no JavaScript error, no 10^6-cell table), says so, follows the slider, and the
    class filter chooses the classes it shows."""
    import numpy as np

    from flowcallback.core import flows, runpage
    from flowcallback.core.history import confusion

    rng = np.random.default_rng(5)
    k, n = 1000, 300
    names = [f"class {i:03d}" for i in range(k)]
    y = rng.integers(0, k, n)
    info = {"flowcallback_version": "0", "model": {"name": "thousand", "fingerprint": "f"}, "class_names": names,
            "analyses": ["activations"], "layers": [{"name": "dense", "type": "Dense"}], "config": {}}
    graphs = {}
    for e in range(3):
        p = np.where(rng.random(n) < 0.4 + 0.2 * e, y, (y + rng.integers(1, 4, n)) % k)
        graphs[e] = {"activations": flows.build_flow_graph([("dense", "Dense", y % 9)], y, p, class_names=names,
                                                           epoch=e)}
    path = runpage.write_run_page(tmp_path, info, graphs, {})
    cells = confusion([graphs[e]["activations"] for e in graphs], zeros=False)
    off = cells[cells.true != cells.predicted]
    score = np.bincount(off.true, off["count"], minlength=k) + np.bincount(off.predicted, off["count"], minlength=k)
    expected = sorted(np.lexsort((np.arange(k), -score))[:30].tolist())  # most confused, ties by index

    def matrix():
        return page.evaluate("(() => { const d = document.getElementById('confusion-matrix');"
                             " return {title: d.layout.title.text, rows: d.layout.yaxis.ticktext,"
                             " cols: d.layout.xaxis.ticktext, counts: d.data[0].customdata.map(r => r.map(c => c[2]))};"
                             " })()")

    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        m = matrix()
        assert m["title"] == "Confusion matrix at epoch 2 · 30 of 1000 classes"
        assert m["rows"] == [names[c] for c in expected] and m["cols"] == m["rows"] + ["other classes"]
        last = cells[cells.epoch == 2]
        for i, t in enumerate(expected):  # each row: its counts among the shown classes, the rest in "other"
            row = last[last.true == t]
            inside = {int(q): int(c) for q, c in zip(row.predicted, row["count"]) if q in expected}
            assert m["counts"][i][:30] == [inside.get(q, 0) for q in expected]
            assert m["counts"][i][30] == int(row["count"].sum()) - sum(inside.values())
        assert "30 most confused of 1000 classes" in page.inner_text("#confusion-note")
        page.screenshot(path=str(tmp_path / "confusion_thousand.png"), full_page=True)
        page.eval_on_selector("#epoch", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
        assert matrix()["title"] == "Confusion matrix at epoch 0 · 30 of 1000 classes"
        page.fill("#class-filter", "class 00")  # 10 classes match: all of them, and the other classes
        page.wait_for_timeout(300)
        m = matrix()
        assert m["rows"] == names[:10] and m["cols"] == names[:10] + ["other classes"]
        assert m["title"] == "Confusion matrix at epoch 0"
        assert "last column counts the predictions of other classes" in page.inner_text("#confusion-note")
        assert errors == [] and blocked == []


def test_a_run_without_a_snapshot_says_so_and_draws_nothing(tmp_path):
    # epochs=[5] with fit(epochs=2) (a warning says so at the fit's start), or a live page opened
    # before the first snapshot
    from flowcallback.core import runpage, store

    info = {"flowcallback_version": "0", "model": {"name": "empty", "fingerprint": "f"}, "class_names": ["a", "b"],
            "analyses": ["activations", "lrp"], "layers": [{"name": "dense", "type": "Dense"}], "config": {}}
    store.write_run_info(tmp_path, info)
    path = runpage.write_run_page(tmp_path, info, {}, {})
    with open_page(path.resolve().as_uri(), wait_for="#status") as (page, errors, blocked):
        page.wait_for_timeout(500)
        assert page.inner_text("#status") == "No snapshot in this run yet."
        visible = page.evaluate("""['sankey', 'curves', 'heatmap', 'across', 'epoch', 'play', 'class-filter']
            .map(id => document.getElementById(id).getBoundingClientRect().height > 0)""")
        assert visible == [False] * 7
        assert "undefined" not in page.inner_text("body")
        assert errors == [] and blocked == []


_GEOMETRY = """() => {
  const gd = document.querySelector('.plotly-graph-div'), s = gd._fullLayout._size, box = gd.getBoundingClientRect();
  const top = box.top + s.t, bottom = top + s.h;
  const rects = Array.from(document.querySelectorAll('.sankey-node .node-rect')).map(r => r.getBoundingClientRect());
  const columns = {};
  rects.forEach(r => { const k = Math.round(r.left); (columns[k] = columns[k] || []).push([r.top, r.bottom]); });
  let overlap = 0;
  Object.values(columns).forEach(c => { c.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < c.length; i++) { overlap = Math.max(overlap, c[i - 1][1] - c[i][0]); } });
  const labels = Array.from(document.querySelectorAll('.annotation')).map(a => a.getBoundingClientRect());
  return {above: top - Math.min(...rects.map(r => r.top)), below: Math.max(...rects.map(r => r.bottom)) - bottom,
          overlap: overlap, left: Math.min(...labels.map(r => r.left)) - box.left, nodes: rects.length};
}"""


@pytest.mark.parametrize("window", [(1400, 900), (1400, 1500)])
def test_a_column_of_thirty_nodes_stays_inside_the_plot_at_any_window_height(tmp_path, window):
    # found by an outside probe: a column of 30 nodes ran into the notes under the diagram, and the
    # first column's label (a long layer name) started off the page
    import numpy as np

    from flowcallback.core import flows, render

    rng = np.random.default_rng(5)
    n, y = 300, rng.integers(0, 4, 300)
    tokens = np.r_[np.arange(290), rng.integers(0, 290, n - 290)]  # nearly one cluster per sample
    g = flows.build_flow_graph([("transformer_block_embedding", "Embedding", tokens), ("dense", "Dense", y % 2)],
                               y, y, class_names=["alpha", "beta", "gamma", "delta"],
                               graph_notes=["A note under the diagram that is long enough to wrap " * 4])
    path = tmp_path / "epoch_000.html"
    render.write_epoch_page(path, {"activations": g})
    with open_page(path.resolve().as_uri(), width=window[0], height=window[1]) as (page, errors, blocked):
        page.wait_for_timeout(800)
        geo = page.evaluate(_GEOMETRY)
        assert geo["nodes"] == flows.MAX_DRAWN_CLUSTERS + 2 + 4 + 4
        assert geo["above"] <= 1 and geo["below"] <= 1, geo  # inside the plot area, off the notes
        assert geo["overlap"] <= 1, geo
        assert geo["left"] >= 0, geo
        assert errors == [] and blocked == []


_LABELS = """() => {
  const gd = document.querySelector('.plotly-graph-div'), top = gd.getBoundingClientRect().top + gd._fullLayout._size.t;
  return Array.from(document.querySelectorAll('.annotation')).filter(a => a.getBoundingClientRect().bottom <= top + 1)
    .map(a => { const r = a.getBoundingClientRect();
      return {left: r.left, right: r.right, slanted: a.innerHTML.includes('rotate(-45')}; });
}"""


@pytest.mark.parametrize("columns", [
    # keras.io's text Transformer: few columns, long names (found by an outside probe: they ran into each other)
    [("token_and_position_embedding", "TokenAndPositionEmbedding"), ("transformer_block", "TransformerBlock"),
     ("global_average_pooling1d", "GlobalAveragePooling1D"), ("dense_2", "Dense"), ("dense_3", "Dense")],
    # the demo's LeNet5: short names, level labels
    [("conv1", "Conv2D"), ("pool1", "MaxPooling2D"), ("conv2", "Conv2D"), ("pool2", "MaxPooling2D"),
     ("dense120", "Dense"), ("dense84", "Dense"), ("dense10", "Dense")],
])
def test_column_labels_never_run_into_each_other(tmp_path, columns):
    """At a 1,200-pixel window, the column labels are level where they fit side by side, and slanted
    (one line each, the rest on hover) where they would overlap."""
    import numpy as np

    from flowcallback.core import flows, render

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    g = flows.build_flow_graph([(name, cls, rng.integers(0, 10, 300)) for name, cls in columns], y, y)
    path = tmp_path / "epoch_000.html"
    render.write_epoch_page(path, {"activations": g})
    with open_page(path.resolve().as_uri(), width=1200, height=1000) as (page, errors, blocked):
        page.wait_for_timeout(500)
        labels = page.evaluate(_LABELS)
    assert len(labels) == len(columns) + 2 and errors == [] and blocked == []
    slanted = {label["slanted"] for label in labels}
    assert len(slanted) == 1  # all of one kind
    if slanted == {False}:
        labels.sort(key=lambda label: label["left"])
        gaps = [b["left"] - a["right"] for a, b in zip(labels, labels[1:])]
        assert min(gaps) >= 0, gaps
    assert slanted == {len(columns[0][0]) > 20}  # the long names are slanted, LeNet5's level


_NODE_LABELS = """() => Array.from(document.querySelectorAll('.sankey-node .node-label'))
  .filter(t => t.textContent.trim()).map(t => { const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })"""


def _overlapping(boxes, slack=1.0):
    return [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack
            and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack]


@pytest.mark.parametrize("window", [1200, 1000])
def test_class_names_and_column_notes_never_run_into_each_other(tmp_path, window):
    """Found by an outside probe (a teacher's Fashion-MNIST lab): the Prediction column's class
    names (on the right of its nodes) and the Ground-truth column's (on the left of its nodes) met in
    the gap between them ("T-shirt/top" over "T-shirt/top"); and a column's note, a sentence, ran
    into the next labels and off the page. At a 1,200-pixel window and at a notebook's width, no
    two node labels overlap, and no column label does, or leaves the page."""
    import numpy as np

    from flowcallback.core import flows, render

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 400)
    pred = np.where(rng.random(400) < 0.8, y, rng.integers(0, 10, 400))
    layers = ["rescaling", "conv2d", "batch_normalization", "max_pooling2d", "conv2d_1", "max_pooling2d_1",
              "flatten", "dropout", "dense", "dense_1"]
    cols = [(name, "Layer", np.zeros(400, int) if i == 0 else (y + rng.integers(0, 2, 400)) % 10)
            for i, name in enumerate(layers)]
    g = flows.build_flow_graph(cols, pred, y, class_names=names,
                               notes={"rescaling": "all 400 samples in one cluster: MCL found no separate "
                                                   "groups in this layer's graph"})
    path = tmp_path / "epoch_000.html"
    render.write_epoch_page(path, {"activations": g})
    with open_page(path.resolve().as_uri(), width=window, height=1000) as (page, errors, blocked):
        page.wait_for_timeout(800)
        nodes = page.evaluate(_NODE_LABELS)
        columns = page.evaluate(_LABELS)
        hover = page.evaluate("() => document.querySelector('.plotly-graph-div').layout.annotations"
                              ".filter(a => a.hovertext).map(a => a.hovertext)")
    assert errors == [] and blocked == []
    assert sorted(n["text"] for n in nodes) == sorted(names * 2)
    assert _overlapping(nodes) == []
    assert len(columns) == len(layers) + 2 and _overlapping([dict(c, text=str(i), top=0, bottom=1)
                                                             for i, c in enumerate(columns)]) == []
    assert min(c["left"] for c in columns) >= 0 and max(c["right"] for c in columns) <= window
    assert sum("MCL found no separate groups" in h for h in hover) == 1  # the note, on hover


def test_every_layer_of_a_deep_model_gets_a_legible_slanted_label(tmp_path):
    """``layers="all"`` on MobileNetV2 gives 151 columns (found by an outside probe: at the window's
    width their slanted labels stood 8 pixels apart, one black band). The diagram is drawn wider,
    the page scrolls sideways, and neighbouring labels stand at least 15 pixels apart."""
    import numpy as np

    from flowcallback.core import flows, render

    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 200)
    g = flows.build_flow_graph([(f"block_{i}_conv", "Conv2D", (y + rng.integers(0, 2, 200)) % 5) for i in range(149)],
                               y, y)
    path = tmp_path / "epoch_000.html"
    render.write_epoch_page(path, {"activations": g})
    with open_page(path.resolve().as_uri(), width=1200, height=1000) as (page, errors, blocked):
        page.wait_for_timeout(1500)
        labels = page.evaluate(_LABELS)
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
    assert errors == [] and blocked == []
    assert len(labels) == 151 and all(label["slanted"] for label in labels)
    lefts = sorted(label["left"] for label in labels)
    assert min(b - a for a, b in zip(lefts, lefts[1:])) >= 15
    assert scroll > 2000  # wider than the window: scrolled, not squeezed
