"""Render: the figure matches the graph, colours stay distinct, names stay text."""
from __future__ import annotations

import re

import numpy as np

from flowcallback.core import flows, render


def graph(class_names=("a", "b", "c"), analysis="activations", n=80, seed=0):
    rng = np.random.default_rng(seed)
    k = len(class_names)
    y = rng.integers(0, k, n)
    return flows.build_flow_graph(
        [("conv", "Conv2D", rng.integers(0, 5, n)), ("dense", "Dense", rng.integers(0, 3, n))],
        y, y, class_names=class_names, epoch=2, analysis=analysis, metrics={"accuracy": 1.0, "loss": 0.1},
    )


def test_sankey_nodes_and_links_match_the_graph():
    g = graph()
    tr = render.sankey_trace(g)
    assert len(tr.node.x) == sum(len(c.order) for c in g.columns)
    assert len(tr.link.value) == len(g.flows)
    assert sum(tr.link.value) == g.n_samples * (len(g.columns) - 1)
    # one x per column, increasing with the column index
    xs = sorted(set(tr.node.x))
    assert len(xs) == len(g.columns)


def test_nodes_are_stacked_in_the_computed_order():
    g = graph()
    tr = render.sankey_trace(g)
    start = 0
    for col in g.columns:
        ys = list(tr.node.y[start : start + len(col.order)])
        assert ys == sorted(ys)
        start += len(col.order)


def test_figure_has_a_switch_and_a_legend():
    g1, g2 = graph(), graph(analysis="lrp", seed=1)
    fig = render.figure({"activations": g1, "lrp": g2})
    kinds = [t.type for t in fig.data]
    assert kinds.count("sankey") == 2 and kinds.count("scatter") == 3
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["Activations", "LRP relevance"]
    assert "Epoch 2" in fig.layout.title.text and "accuracy 1.000" in fig.layout.title.text


def test_names_are_escaped():
    evil = "<img src=x onerror=alert(1)>"
    g = graph(class_names=(evil, "b", "c"))
    html = render.page_html({"activations": g})
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_page_loads_plotly_from_its_directory(tmp_path):
    path = render.write_epoch_page(tmp_path / "epoch_002.html", {"activations": graph()})
    text = open(path).read()
    assert re.search(r'<script[^>]*\ssrc="plotly\.min\.js"', text)  # a script tag, whatever its other attributes
    assert "cdn" not in text.lower()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


def test_class_colors_are_distinct():
    for n in (2, 10, 11, 20, 21, 100):
        c = render.class_colors(n)
        assert len(c) == n and len(set(c)) == n


def _run_dir(tmp_path, epochs, *, seed=0):
    from flowcallback.core import store

    info = {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["a", "b", "c"],
            "analyses": ["activations", "lrp"], "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
            "config": {}}
    store.write_run_info(tmp_path, info)
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 3
    for e in epochs:
        graphs = {}
        for a in ("activations", "lrp"):
            cols = [(n, "Dense", rng.integers(0, 2 + e, 60)) for n in ("l1", "l2")]
            graphs[a] = flows.build_flow_graph(cols, y, rng.integers(0, 3, 60), epoch=e, analysis=a,
                                               metrics={"accuracy": float(rng.random()), "loss": float(rng.random())})
        store.save_epoch(tmp_path, graphs)


def test_run_page_with_a_cache_equals_the_page_built_from_scratch(tmp_path):
    """The callback keeps each epoch's part of the run page between snapshots: same page, every epoch drawn once."""
    import json
    import re

    from flowcallback.core import store

    cache = {}
    for e in range(4):
        _run_dir(tmp_path, [e], seed=e)
        run = store.load_run(tmp_path)
        cached = render.run_page_html(run, cache)
        assert cached == render.run_page_html(store.load_run(tmp_path))
        assert sorted(cache) == [(i, a) for i in range(e + 1) for a in ("activations", "lrp")]
        # the page's data is valid JSON, and holds every epoch's figure of every analysis
        data = json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>', cached, re.S).group(1))
        assert sorted(data["figures"]) == [str(i) for i in range(e + 1)] and data["epochs"] == list(range(e + 1))
        for i in range(e + 1):
            for a in ("activations", "lrp"):
                sankey = data["figures"][str(i)][a]["data"][0]
                g = run.epoch(i, a)
                assert sankey["type"] == "sankey" and len(sankey["node"]["label"]) == sum(len(c.order) for c in g.columns)
    # an epoch written again (a resumed run) is shown anew once its entries are dropped
    _run_dir(tmp_path, [2], seed=99)
    stale = render.run_page_html(store.load_run(tmp_path), cache)
    fresh = render.run_page_html(store.load_run(tmp_path))
    assert stale != fresh
    for key in [k for k in cache if k[0] == 2]:
        del cache[key]
    assert render.run_page_html(store.load_run(tmp_path), cache) == fresh
