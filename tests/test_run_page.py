"""The run page: slider and analysis switch change the drawn Sankey, offline, with no JavaScript error."""
from __future__ import annotations

import pytest

from flowcallback import load_run

from browser import chromium_path, open_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make test installs it)"),
]


def _drawn(page):
    nodes = page.eval_on_selector_all("#sankey .sankey-node", "els => els.length")
    widths = page.eval_on_selector_all("#sankey .sankey-link", "els => els.map(e => e.getAttribute('d')).join('|')")
    return nodes, widths


def test_run_page_slider_and_switch(fitted_run):
    run = load_run(fitted_run["log_dir"])
    index = run.path / "index.html"
    assert index.exists()
    with open_page(index.resolve().as_uri()) as (page, errors, blocked):
        # starts at the last epoch
        assert page.inner_text("#epoch-label") == "2"
        n2, d2 = _drawn(page)
        assert n2 == sum(len(c.order) for c in run.epoch(2).columns)
        # slide to epoch 1
        page.eval_on_selector("#epoch", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
        page.wait_for_timeout(300)
        assert page.inner_text("#epoch-label") == "1"
        n1, d1 = _drawn(page)
        assert n1 == sum(len(c.order) for c in run.epoch(1).columns)
        assert (n1, d1) != (n2, d2)
        # switch to LRP
        page.get_by_role("button", name="LRP relevance").click()
        page.wait_for_timeout(300)
        assert _drawn(page)[0] == sum(len(c.order) for c in run.epoch(1, "lrp").columns)
        # the profile table lists every class, the heatmap is drawn
        assert page.eval_on_selector_all("#profiles tbody tr", "els => els.length") == 10
        assert page.eval_on_selector_all("#heatmap .hm, #heatmap image, #heatmap .heatmaplayer", "els => els.length") >= 1
        assert errors == [] and blocked == []


def test_names_are_text_in_the_run_page(tmp_path):
    """A class name with markup is shown as text, never run as HTML or script."""
    import numpy as np

    from flowcallback.core import flows, render, store

    evil = "<img src=x onerror=alert(1)>"
    info = {"flowcallback_version": "0", "model": {"name": "</script><b>m</b>", "fingerprint": "f"},
            "class_names": [evil, "b"], "analyses": ["activations"], "layers": [{"name": "l", "type": "Dense"}], "config": {}}
    store.write_run_info(tmp_path, info)
    y = np.array([0, 0, 1, 1] * 5)
    g = flows.build_flow_graph([("l", "Dense", y)], y, y, class_names=[evil, "b"], epoch=1)
    store.save_epoch(tmp_path, {"activations": g})
    path = render.write_run_page(store.load_run(tmp_path))
    text = open(path).read()
    assert evil not in text and "</script><b>" not in text
    with open_page(f"file://{path}") as (page, errors, blocked):
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.wait_for_timeout(300)
        cells = page.eval_on_selector_all("#profiles td", "els => els.map(e => e.textContent)")
        assert evil in cells
        assert page.eval_on_selector_all("#profiles img", "els => els.length") == 0
        assert dialogs == [] and errors == []
