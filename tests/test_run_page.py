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
        # each predicted class's node in its colour, as on the epoch page
        nodes = page.evaluate("(() => { const t = document.getElementById('across').data[0];"
                              " return [t.node.label, t.node.color]; })()")
        data_colors = page.evaluate("JSON.parse(document.getElementById('run-data').textContent).colors")
        assert "#888" not in nodes[1] and all(c == data_colors[run.class_names.index(label[len("predicted "):])]
                                              for label, c in zip(nodes[0], nodes[1]))
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
        from flowcallback.core.history import confusion_over_training

        assert cells == len(confusion_over_training([g1, g2])["cells"])
        assert scores == 2 * len(run.class_names)
        # two confusions of one true class share its colour: their dashes differ (an outside probe
        # could not tell 8 -> 3 from 8 -> 6)
        styles = page.evaluate("document.getElementById('confusion').data.map(t => [t.line.color, t.line.dash])")
        assert len({tuple(s) for s in styles}) == len(styles)
        # the confusion matrix at the slider's epoch (2): every one of the 10 classes, the counts of run.confusion()
        matrix = page.evaluate("(() => { const d = document.getElementById('confusion-matrix');"
                               " return [d.layout.title.text, d.data[0].customdata.map(r => r.map(c => c[2]))]; })()")
        table = run.confusion().query("epoch == 2").pivot(index="true", columns="predicted", values="count")
        assert matrix[0] == "Confusion matrix at epoch 2" and matrix[1] == table.to_numpy().tolist()
        assert page.inner_text("#confusion-note") == ""
        # the profile table lists every class, the heatmap is drawn
        assert page.eval_on_selector_all("#profiles tbody tr", "els => els.length") == 10
        heatmap_parts = "#heatmap .hm, #heatmap image, #heatmap .heatmaplayer"
        assert page.eval_on_selector_all(heatmap_parts, "els => els.length") >= 1
        assert errors == [] and blocked == []


def test_flows_across_epochs_where_no_sample_changed_say_so_without_an_error(fitted_run, tmp_path):
    """Two snapshots of the same weights (a frozen model): "changed only" leaves nothing to draw.
    The page says so, with no JavaScript error (Plotly's Sankey threw on no links), and so does
    ``Run.show("across", changed_only=True)``'s figure."""
    from flowcallback import snapshot

    for epoch in (1, 2):
        snapshot(fitted_run["model"], (fitted_run["x_test"][:120], fitted_run["y_test"][:120]), tmp_path / "frozen",
                 epoch=epoch, lrp=False, k=8, projection=None, verbose=0)
    run = load_run(tmp_path / "frozen")
    assert (run.epoch(1).predictions == run.epoch(2).predictions).all()
    fig = run.show("across", column="Prediction", changed_only=True)
    assert fig.data == () and fig.layout.annotations[0].text == "No sample changed cluster between these epochs"
    assert sum(run.show("across", column="Prediction").data[0].link.value) == 120
    with open_page((run.path / "index.html").resolve().as_uri()) as (page, errors, blocked):
        page.check("#across-changed")
        page.wait_for_function("document.getElementById('across').data.length === 0", timeout=10_000)
        texts = page.eval_on_selector_all("#across .annotation-text", "els => els.map(e => e.textContent)")
        assert "No sample changed cluster between these epochs" in texts
        assert page.evaluate("document.getElementById('across').layout.title.text").endswith(" · changed only")
        page.uncheck("#across-changed")  # and back: the flows again
        page.wait_for_function("document.getElementById('across').data.length === 1", timeout=10_000)
        assert page.evaluate("document.getElementById('across').data[0].link.value.reduce((a, b) => a + b, 0)") == 120
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
    path = runpage.write_run_page_for(load_run(tmp_path))
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
    path = runpage.write_run_page_for(load_run(tmp_path))
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


def test_skipped_epochs_are_noted_and_the_others_draw(tmp_path, capsys):
    """Issue 20, items 6 and 14: a corrupt epoch and a run.json whose class count does not fit an
    epoch's graph: report writes the page, which draws the other epochs without a script error,
    keeps the skipped ones on the slider as not loaded and lists them in a note."""
    import json

    import numpy as np

    from flowcallback.cli import main
    from flowcallback.core import flows, store

    info = {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["a", "b"],
            "analyses": ["activations"], "layers": [{"name": "l", "type": "Dense"}], "config": {}}
    store.write_run_info(tmp_path, info)
    y = np.array([0, 0, 1, 1] * 5)
    for e in (0, 1, 2):
        store.save_epoch(tmp_path, {"activations": flows.build_flow_graph([("l", "Dense", y)], y, y,
                                                                          class_names=["a", "b"], epoch=e)})
    (tmp_path / "graphs" / "epoch_001" / "activations.npz").write_bytes(b"damaged")
    y3 = np.array([0, 1, 2] * 5)  # three classes where run.json has two
    store.save_epoch(tmp_path, {"activations": flows.build_flow_graph([("l", "Dense", y3)], y3, y3, epoch=3)})
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 2
    with open_page((tmp_path / "index.html").resolve().as_uri()) as (page, errors, blocked):
        def show(i):
            page.eval_on_selector("#epoch", f"el => {{ el.value = '{i}'; el.dispatchEvent(new Event('input')); }}")
            page.wait_for_timeout(300)
            return page.inner_text("#status"), page.eval_on_selector_all("#sankey .sankey-node", "els => els.length")

        note = page.inner_text("#skipped-note")
        assert note.startswith("2 snapshot(s) could not be read and are not shown: epoch 1 (")
        assert "activations.npz" in note and f"does not match {tmp_path / 'run.json'}: 3 classes" in note
        status, nodes = show(1)
        assert status.startswith("not loaded: ") and "activations.npz" in status and nodes == 0
        status, nodes = show(2)
        assert status == "" and nodes > 0
        status, nodes = show(3)
        assert status.startswith("not loaded: ") and nodes == 0
        assert errors == [] and blocked == []
    assert json.loads((tmp_path / "run.json").read_text())["class_names"] == ["a", "b"]


def _fixed_run(log_dir):
    """Three real snapshots of the fixed model of tests/test_reproducible.py, its first layer's weights
    changed between them (class means, relevance means and projections stored)."""
    import numpy as np
    from test_reproducible import fixed_model, held_out

    from flowcallback import snapshot

    model = fixed_model()
    x, y = held_out()
    for epoch in (0, 1, 2):
        if epoch:
            w = model.get_weights()
            w[0] = w[0] + (np.arange(w[0].size).reshape(w[0].shape) % 3 == epoch)
            w[2] = np.roll(w[2], 1, axis=1)
            model.set_weights(w)
        snapshot(model, (x, y), log_dir, epoch=epoch, k=6, verbose=0, lrp_backend="native",
                 class_names=["low", "mid", "high"])
    return load_run(log_dir)


def _set_epoch(page, i):
    page.eval_on_selector("#epoch", f"el => {{ el.value = '{i}'; el.dispatchEvent(new Event('input')); }}")
    page.wait_for_timeout(200)


def _doc_image(tmp_path, name):
    """Copy a screenshot into docs/images when FLOWCALLBACK_DOC_IMAGES names that folder (see docs/usage.md),
    reduced to a 256-colour palette where Pillow is installed."""
    import os
    import shutil

    target = os.environ.get("FLOWCALLBACK_DOC_IMAGES")
    if not target:
        return
    try:
        from PIL import Image
    except ImportError:
        shutil.copy(tmp_path / name, os.path.join(target, name))
        return
    Image.open(tmp_path / name).convert("RGB").quantize(256).save(os.path.join(target, name), optimize=True)


_MEANS = "(() => { const d = document.getElementById('means').data; return d && d.map(t => [t.x, t.y, t.z]); })()"
_POINTS = "els => els.map(e => e.getAttribute('transform'))"


def test_class_means_and_projection_views_draw(tmp_path):
    """The class-means heatmap follows the epoch slider and the analysis, its difference mode ranks the
    units as aggregate.class_difference does, and playing the projection moves the drawn points."""
    import numpy as np

    from flowcallback.core import runpage
    from flowcallback.core.aggregate import class_difference, class_order

    run = _fixed_run(tmp_path / "run")
    names = run.class_names
    path = runpage.write_run_page_for(run)
    data = __import__("test_run_page_views").page_data(path.read_text())
    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        page.wait_for_selector("#means .hm", timeout=10_000)
        # the last epoch's activations of the first layer: one row per class, by similarity; one column per unit
        assert page.eval_on_selector("#means-layer", "el => el.options[el.selectedIndex].textContent") == "dense"
        m = run.views(2).class_means[("activations", "dense")]
        x, y, z = page.evaluate(_MEANS)[0]
        assert y == [names[c] for c in class_order(m)] and x == [f"unit {u}" for u in range(m.shape[1])]
        close = lambda got, want: np.testing.assert_allclose(  # noqa: E731  (4 significant digits of the largest)
            np.array(got, dtype=float), want, atol=1e-3 * np.abs(want).max())
        close(z, m[class_order(m)])
        assert "epoch 2" in page.inner_text("#means-epoch")
        # another epoch, then the relevance means
        _set_epoch(page, 0)
        z0 = page.evaluate(_MEANS)[0][2]
        close(z0, run.class_means(0, "dense").to_numpy())
        page.select_option("#means-analysis", "lrp")
        x, y, z = page.evaluate(_MEANS)[0]
        assert len(y) == 3 and len(x) == 8
        close(z, run.class_means(0, "dense", "lrp").to_numpy())
        # difference mode: the units that separate "low" from "high" most, first
        page.select_option("#means-analysis", "activations")
        _set_epoch(page, 2)
        page.select_option("#means-mode", "difference")
        page.select_option("#means-b", "2")
        heat, bar = page.evaluate(_MEANS)
        shown = np.array(data["class_means"]["activations"][0]["epochs"]["2"]["means"], dtype=float)
        want = class_difference(shown, 0, 2, top=20)
        assert heat[0] == bar[0] == [f"unit {u}" for u in want.units]
        np.testing.assert_allclose(bar[1], want.values, atol=1e-9)
        true = class_difference(m, 0, 2, top=None)  # the same ranking as the stored means', up to rounding
        score = dict(zip(true.units.tolist(), true.scores.tolist()))
        ranked = [score[u] for u in want.units]
        assert all(a >= b - 1e-3 * max(ranked) for a, b in zip(ranked, ranked[1:]))
        assert int(want.units[0]) == int(true.units[0])
        assert page.evaluate("document.getElementById('means').data[0].y.length") == 3
        page.locator("#means-section").screenshot(path=str(tmp_path / "difference.png"))

        # the projection: every projected sample drawn, hover names sample, label, prediction and cluster
        n = len(run.views(2).projection_samples)
        points = page.eval_on_selector_all("#projection .scatterlayer .point", _POINTS)
        assert len(points) == n
        assert page.eval_on_selector("#projection-layer", "el => el.options[el.selectedIndex].textContent") == "dense_1"
        page.locator("#projection .scatterlayer .point").first.hover(force=True)
        page.wait_for_timeout(300)
        hover = page.eval_on_selector("#projection .hoverlayer", "e => e.textContent")
        assert all(word in hover for word in ("sample", "label", "prediction", "cluster")), hover
        # it opens at the last epoch, as the page's other views (an outside probe found it at epoch 0
        # under a page saying epoch 8); Play runs the epochs from the first
        assert page.evaluate("document.getElementById('projection')._fullLayout.sliders[0].active") == 2
        page.locator("#projection .updatemenu-button").first.click()  # Play
        page.wait_for_function("document.getElementById('projection')._fullLayout.sliders[0].active === 0",
                               timeout=15_000)
        page.wait_for_timeout(300)
        before = page.evaluate("document.getElementById('projection').data.map(t => t.x)")
        page.wait_for_function("document.getElementById('projection')._fullLayout.sliders[0].active === 2",
                               timeout=15_000)
        page.wait_for_timeout(1500)
        after = page.eval_on_selector_all("#projection .scatterlayer .point", _POINTS)
        assert len(after) == n
        last = run.projection("dense_1").query("epoch == 2")
        drawn = page.evaluate("document.getElementById('projection').data.map(t => [t.ids, t.x, t.y])")
        xy = {int(i): (px, py) for ids, xs, ys in drawn for i, px, py in zip(ids, xs, ys)}
        assert drawn and [t[1] for t in drawn] != before
        want = last[["x", "y"]].to_numpy()
        np.testing.assert_allclose([xy[s] for s in last["sample"]], want, atol=1e-2 * np.abs(want).max())
        # the class filter: only the matching class keeps its colour and legend entry
        page.fill("#class-filter", "mid")
        page.wait_for_timeout(500)
        legend = page.eval_on_selector_all("#projection .legend .traces .legendtext",
                                           "els => els.map(e => e.textContent)")
        assert legend == ["mid"]
        assert len(page.eval_on_selector_all("#projection .scatterlayer .point", _POINTS)) == n
        assert errors == [] and blocked == []


def test_class_means_and_projection_of_ten_digits(fitted_run, tmp_path):
    """The demo's ten digits: a heatmap row per class and a column per unit, and a point per projected
    sample (the run page's screenshots in docs/usage.md)."""
    from flowcallback.core import runpage
    from flowcallback.core._files import ensure_plotlyjs

    run = load_run(fitted_run["log_dir"])
    views = runpage.run_views(run)
    assert sorted(views) == run.epochs
    ensure_plotlyjs(tmp_path)
    path = tmp_path / "index.html"
    path.write_text(runpage.run_page_html_for(run), encoding="utf-8")
    layer = "dense84"
    with open_page(path.resolve().as_uri()) as (page, errors, blocked):
        page.wait_for_selector("#means .hm", timeout=10_000)
        page.select_option("#means-layer", label=layer)
        x, y, _ = page.evaluate(_MEANS)[0]
        assert sorted(y) == sorted(run.class_names)
        assert len(x) == views[2].class_means[("activations", layer)].shape[1]
        page.locator("#means-section").screenshot(path=str(tmp_path / "run_class_means.png"))
        page.select_option("#means-mode", "difference")
        page.select_option("#means-a", "3")
        page.select_option("#means-b", "8")
        assert len(page.evaluate(_MEANS)[0][0]) == 20
        page.locator("#means-section").screenshot(path=str(tmp_path / "run_class_difference.png"))
        page.select_option("#projection-layer", label=layer)
        page.wait_for_timeout(500)
        n = len(views[2].projection_samples)
        assert page.eval_on_selector_all("#projection .scatterlayer .point", "els => els.length") == n
        page.locator("#projection-section").screenshot(path=str(tmp_path / "run_projection.png"))
        assert errors == [] and blocked == []
    for name in ("run_class_means.png", "run_class_difference.png", "run_projection.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        _doc_image(tmp_path, name)


_NEURONS = "(() => { const t = document.getElementById('neurons').data[0]; return [t.x, t.y, t.z]; })()"


def test_neuron_clusters_panel_follows_the_slider_and_shows_the_stored_clusters(fitted_run, tmp_path):
    """Issue 22, item 3: the page written by the callback draws each layer's unit clusters x classes
    matrix as stored (seriated rows and classes), lists each cluster's top samples, and follows the
    epoch slider and the class filter."""
    import numpy as np

    run = load_run(fitted_run["log_dir"])
    layer = "dense84"
    with open_page((run.path / "index.html").resolve().as_uri()) as (page, errors, blocked):
        page.wait_for_selector("#neurons .hm", timeout=10_000)
        assert page.eval_on_selector("#neurons-layer", "el => el.options[el.selectedIndex].textContent") == layer
        for epoch, position in ((2, "1"), (1, "0")):
            page.eval_on_selector("#epoch",
                                  f"el => {{ el.value = '{position}'; el.dispatchEvent(new Event('input')); }}")
            table = run.neuron_clusters(epoch, layer)
            matrix = table.pivot(index="cluster", columns="class", values="response")
            x, y, z = page.evaluate(_NEURONS)
            assert x == [str(c) for c in table["class"].cat.categories]  # the seriated class order
            sizes = table.groupby("cluster")["n_units"].first().tolist()
            assert y == [f"cluster {c} ({n} unit{'s' if n != 1 else ''})" for c, n in enumerate(sizes)]
            np.testing.assert_allclose(np.array(z, dtype=float), matrix.to_numpy(), atol=5e-3)
            assert f"(epoch {epoch})" in page.inner_text("#neurons-epoch")
            rows = page.eval_on_selector_all("#neurons-top tbody tr", "els => els.map(e => e.innerText)")
            tops = table.groupby("cluster")["top_samples"].first().tolist()
            assert len(rows) == len(tops) and all(t and str(t[0]) in r.split("\t")[1].split(" ")[0] for t, r in
                                                  zip(tops, rows))
        # the digits are images: each top sample has its picture, drawn from the stored pixels
        views = run.views(1)
        first = table.groupby("cluster")["top_samples"].first().iloc[0][0]
        n_top = sum(len(t) for t in table.groupby("cluster")["top_samples"].first())
        assert page.eval_on_selector_all("#neurons-top canvas", "els => els.length") == n_top
        drawn = page.evaluate("(() => { const c = document.querySelector('#neurons-top canvas');"
                              " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); })()")
        stored = views.thumbnails[list(views.thumbnail_samples).index(first)]
        assert np.array_equal(np.array(drawn).reshape(stored.shape[0], stored.shape[1], 4)[..., 0], stored[..., 0])
        page.fill("#class-filter", "digit 3")
        page.wait_for_timeout(300)
        assert page.evaluate(_NEURONS)[0] == ["digit 3"]
        page.fill("#class-filter", "")
        page.wait_for_timeout(300)
        page.locator("#neurons-section").screenshot(path=str(tmp_path / "run_neuron_clusters.png"))
        assert errors == [] and blocked == []
    _doc_image(tmp_path, "run_neuron_clusters.png")


_TITLE_OVER_TICKS = """(sel) => {
  const plot = document.querySelector(sel), hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1
    && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  const titles = Array.from(plot.querySelectorAll('text.xtitle, text.ytitle')).map(t => t.getBoundingClientRect());
  const ticks = Array.from(plot.querySelectorAll('.xtick text, .ytick text')).map(t => t.getBoundingClientRect());
  return [titles.length, ticks.length, titles.filter(t => ticks.some(k => hit(t, k))).length];
}"""


def test_the_class_means_axis_titles_stay_clear_of_their_tick_labels(tmp_path):
    """Found by an outside probe (a teacher's MNIST MLP): a Dense(64) layer's 64 slanted unit labels
    ran under the heatmap's "unit / channel" title on the run page."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from flowcallback import snapshot
    from flowcallback.core import runpage

    x, y = load_digits(return_X_y=True)
    x = (x[:240] / 16.0).astype("float32")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(64, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    snapshot(model, (x, y[:240]), tmp_path, epoch=0, k=8, verbose=0, lrp=False)
    path = runpage.write_run_page_for(load_run(tmp_path))
    with open_page(path.resolve().as_uri(), width=1400, height=1000) as (page, errors, blocked):
        page.wait_for_selector("#means .hm", timeout=10_000)
        page.select_option("#means-layer", label=model.layers[0].name)
        page.wait_for_timeout(500)
        titles, ticks, hidden = page.evaluate(_TITLE_OVER_TICKS, "#means")
        assert page.evaluate(_MEANS)[0][0] == [f"unit {u}" for u in range(64)]
        assert errors == [] and blocked == []
    assert titles == 2 and ticks >= 64 + 10 and hidden == 0
