"""The generated pages render in a real browser, offline, with no JavaScript error."""
from __future__ import annotations

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
        # a diagram of few clusters fills the window (it used to leave its lower 40 % empty)
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
    g = flows.build_flow_graph([("dense", "Dense", y // 10), ("out", "Dense", y // 4)], y, y, class_names=names, epoch=1)
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
    g = flows.build_flow_graph([("dense", "Dense", y // 10), ("out", "Dense", y // 4)], y, y, class_names=names, epoch=1)
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
