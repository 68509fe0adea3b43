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


def _settled(page, expected_nodes: int):
    """The drawn Sankey once it has ``expected_nodes`` nodes (Plotly 6+ animates the change), or
    as it is after 10 s, so that a wrong count fails the test's assertion instead of hanging."""
    try:
        page.wait_for_function(f"document.querySelectorAll('#sankey .sankey-node').length === {expected_nodes}",
                               timeout=10_000)
    except Exception:  # playwright's TimeoutError: the assertion below reports the count
        pass
    page.wait_for_timeout(300)
    return _drawn(page)


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
        assert page.inner_text("#epoch-label") == "1"
        n1, d1 = _settled(page, sum(len(c.order) for c in run.epoch(1).columns))
        assert n1 == sum(len(c.order) for c in run.epoch(1).columns)
        assert (n1, d1) != (n2, d2)
        # the NMI heatmap frames the shown epoch's column (epochs 1 and 2 are columns 0 and 1)
        frame = page.evaluate("document.getElementById('heatmap').layout.shapes")
        assert len(frame) == 1 and (frame[0]["x0"], frame[0]["x1"]) == (-0.5, 0.5)
        # switch to LRP
        page.get_by_role("button", name="LRP relevance").click()
        expected = sum(len(c.order) for c in run.epoch(1, "lrp").columns)
        assert _settled(page, expected)[0] == expected
        page.eval_on_selector("#epoch", "el => { el.value = '1'; el.dispatchEvent(new Event('input')); }")
        frame = page.evaluate("document.getElementById('heatmap').layout.shapes")
        assert (frame[0]["x0"], frame[0]["x1"]) == (0.5, 1.5)
        # the loss axis has ticks of its own: round values, not the accuracy axis's synchronised ones
        ticks = page.eval_on_selector_all("#curves .y2tick text", "els => els.map(e => e.textContent)")
        assert ticks and all(len(t.replace(".", "").lstrip("0")) <= 2 for t in ticks), ticks
        # flows across epochs: Prediction by default, one node per (epoch, predicted class), and
        # the counts between the two epochs add up to the held-out set
        page.get_by_role("button", name="Activations").click()
        assert page.eval_on_selector("#across-column", "el => el.value") == "Prediction"
        g1, g2 = run.epoch(1), run.epoch(2)
        n_nodes = len(set(g1.predictions.tolist())) + len(set(g2.predictions.tolist()))
        across = page.evaluate("(() => { const t = document.getElementById('across').data[0];"
                               " return [t.node.label.length, t.link.value.reduce((a, b) => a + b, 0),"
                               " t.link.value.length]; })()")
        assert across[0] == n_nodes and across[1] == g1.n_samples
        # "changed only" keeps exactly the samples whose prediction changed; a class filter one class
        page.check("#across-changed")
        changed = page.evaluate("document.getElementById('across').data[0].link.value.reduce((a, b) => a + b, 0)")
        assert changed == int((g1.predictions != g2.predictions).sum())
        page.uncheck("#across-changed")
        page.select_option("#across-class", "3")
        only3 = page.evaluate("document.getElementById('across').data[0].link.value.reduce((a, b) => a + b, 0)")
        assert only3 == int((g1.labels == 3).sum())
        # a layer column can be chosen too
        page.select_option("#across-column", "dense84")
        assert page.evaluate("document.getElementById('across').data[0].link.value.reduce((a, b) => a + b, 0)") == only3
        # confusion over training: one line per kept cell, recall and precision for every class
        cells = page.evaluate("document.getElementById('confusion').data.length")
        scores = page.evaluate("document.getElementById('scores').data.length")
        from flowcallback.core.runpage import _confusion_over_training

        assert cells == len(_confusion_over_training([g1, g2])["cells"])
        assert scores == 2 * len(run.class_names)
        # the profile table lists every class, the heatmap is drawn
        assert page.eval_on_selector_all("#profiles tbody tr", "els => els.length") == 10
        heatmap_parts = "#heatmap .hm, #heatmap image, #heatmap .heatmaplayer"
        assert page.eval_on_selector_all(heatmap_parts, "els => els.length") >= 1
        assert errors == [] and blocked == []


def test_names_are_text_in_the_run_page(tmp_path):
    """A class name with markup is shown as text, never run as HTML or script."""
    import numpy as np

    from flowcallback.core import flows, runpage, store

    evil = "<img src=x onerror=alert(1)>"
    info = {"flowcallback_version": "0", "model": {"name": "</script><b>m</b>", "fingerprint": "f"},
            "class_names": [evil, "b"], "analyses": ["activations"], "layers": [{"name": "l", "type": "Dense"}],
            "config": {}}
    store.write_run_info(tmp_path, info)
    y = np.array([0, 0, 1, 1] * 5)
    g = flows.build_flow_graph([("l", "Dense", y)], y, y, class_names=[evil, "b"], epoch=1)
    store.save_epoch(tmp_path, {"activations": g})
    path = runpage.write_run_page_for(store.load_run(tmp_path))
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


def test_failed_and_partly_failed_epochs_are_marked(tmp_path):
    """An epoch with no graph shows as failed, one with a graph and an error as partly failed."""
    import numpy as np

    from flowcallback.core import flows, runpage, store

    info = {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["a", "b"],
            "analyses": ["activations"], "layers": [{"name": "l", "type": "Dense"}], "config": {}}
    store.write_run_info(tmp_path, info)
    y = np.array([0, 0, 1, 1] * 5)
    for e in (0, 2):
        g = flows.build_flow_graph([("l", "Dense", y)], y, y, class_names=["a", "b"], epoch=e,
                                   graph_notes=["LRP failed for this epoch: worker died"] if e == 2 else ())
        store.save_epoch(tmp_path, {"activations": g})
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "epoch_001.txt").write_text("Traceback ...\nOSError: disk full (injected)\n")
    (tmp_path / "errors" / "epoch_002.txt").write_text("Traceback ...\nRuntimeError: the LRP worker died\n")
    path = runpage.write_run_page_for(store.load_run(tmp_path))
    with open_page(f"file://{path}") as (page, errors, blocked):
        def show(i):
            page.eval_on_selector("#epoch", f"el => {{ el.value = '{i}'; el.dispatchEvent(new Event('input')); }}")
            page.wait_for_timeout(300)
            return page.inner_text("#status"), page.eval_on_selector_all("#sankey .sankey-node", "els => els.length")

        status, nodes = show(1)
        assert status == "snapshot failed: OSError: disk full (injected)" and nodes == 0
        status, nodes = show(2)
        assert status.startswith("part of this snapshot failed") and "the LRP worker died" in status and nodes > 0
        assert "LRP failed for this epoch" in page.inner_text("#sankey")
        status, nodes = show(0)
        assert status == "" and nodes > 0
        assert errors == [] and blocked == []
