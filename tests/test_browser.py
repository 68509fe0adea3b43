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
        # switch to LRP flows
        page.get_by_text("LRP relevance", exact=True).click()
        page.wait_for_timeout(500)
        cols, n_nodes = _node_columns(page)
        assert n_nodes == sum(len(c.order) for c in lrp.columns)
        assert len(cols) == len(lrp.columns)
        assert errors == []
        assert blocked == []
