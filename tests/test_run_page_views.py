"""The run page's class-means and projection data, built from views held in memory (no browser)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.core import flows, runpage, store
from flowcallback.core.aggregate import class_order

NAMES = ["a", "b", "<c>"]


def _info(layers=("l1", "l2")):
    return {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": NAMES,
            "analyses": ["activations"], "layers": [{"name": n, "type": "Dense"} for n in layers], "config": {}}


def _graphs(epochs=(0, 1)):
    y = np.array([0, 1, 2] * 10)
    out = {}
    for e in epochs:
        pred = np.roll(y, e)
        cols = [("l1", "Dense", y), ("l2", "Dense", (y + e) % 3)]
        out[e] = {"activations": flows.build_flow_graph(cols, y, pred, class_names=NAMES, epoch=e)}
    return out


def _views(e, units=8, samples=(0, 3, 4, 9, 29)):
    rng = np.random.default_rng(e)
    s = np.asarray(samples)
    return store.EpochViews(
        class_means={("activations", "l1"): rng.normal(size=(3, units)), ("lrp", "l1"): rng.normal(size=(3, 4)),
                     ("activations", "l2"): rng.normal(size=(3, 5))},
        projections={("activations", "l2"): rng.normal(size=(len(s), 2)) * 100},
        projection_samples=s, projection_method="pca")


def page_data(text: str) -> dict:
    m = re.search(r'<script id="run-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def test_class_means_and_projection_reach_the_page():
    graphs = _graphs()
    views = {e: _views(e) for e in graphs}
    data = page_data(runpage.run_page_html(_info(), graphs, {}, views=views))
    cm = data["class_means"]
    assert sorted(cm) == ["activations", "lrp"]
    assert [entry["layer"] for entry in cm["activations"]] == ["l1", "l2"]
    entry = cm["activations"][0]
    assert entry["units"] == list(range(8)) and entry["total"] == 8 and sorted(entry["epochs"]) == ["0", "1"]
    for e in graphs:
        m = views[e].class_means[("activations", "l1")]
        got = entry["epochs"][str(e)]
        assert got["order"] == class_order(m).tolist()  # rows by similarity, computed on every unit
        np.testing.assert_allclose(got["means"], m, rtol=1e-3, atol=1e-3)  # class order, rounded
    pj = data["projection"]
    assert [layer["key"] for layer in pj["layers"]] == ["activations/l2"] and pj["methods"] == ["pca"]
    g = graphs[1]["activations"]
    s = [0, 3, 4, 9, 29]
    assert pj["points"]["1"] == {"samples": s, "labels": g.labels[s].tolist(), "predictions": g.predictions[s].tolist()}
    c = pj["coords"]["activations/l2"]["1"]
    assert c["cluster"] == g.assignments[s, g.column_names.index("l2")].tolist()
    p = views[1].projections[("activations", "l2")]
    np.testing.assert_allclose(np.column_stack([c["x"], c["y"]]), p, atol=0.5)
    # compact: 3 significant digits of the largest coordinate (hundreds here: no decimal)
    assert all(float(v).is_integer() for v in c["x"] + c["y"])


def test_wide_layers_keep_the_units_that_vary_most_and_nan_rows_are_null():
    graphs = _graphs((0,))
    m = np.full((3, 300), 0.5)
    m[:, 7] = [0, 5, 10]
    m[:, 290] = [1, -1, 0]
    m[2, :] = np.nan  # a class without samples
    m[0, :] += np.linspace(0, 1e-3, 300)
    views = {0: store.EpochViews(class_means={("activations", "l1"): m})}
    entry = page_data(runpage.run_page_html(_info(), graphs, {}, views=views))["class_means"]["activations"][0]
    assert entry["total"] == 300 and len(entry["units"]) == runpage.MAX_PAGE_UNITS
    assert entry["units"] == sorted(entry["units"]) and {7, 290} <= set(entry["units"])
    means = entry["epochs"]["0"]["means"]
    assert means[2] == [None] * runpage.MAX_PAGE_UNITS and entry["epochs"]["0"]["order"][-1] == 2
    assert means[1][entry["units"].index(7)] == 5


def test_no_views_no_view_data_and_views_are_checked():
    graphs = _graphs()
    for views in (None, {}, {0: None, 1: None}, {5: _views(0)}):  # an epoch without graphs is left out
        data = page_data(runpage.run_page_html(_info(), graphs, {}, views=views))
        assert data["class_means"] == {} and data["projection"]["layers"] == []
    with pytest.raises(ValueError, match="EpochViews"):
        runpage.run_page_html(_info(), graphs, {}, views={0: {"class_means": {}}})


def test_pages_of_a_loaded_run_read_its_views(tmp_path):
    graphs = _graphs()
    store.write_run_info(tmp_path, {**_info(), "analyses": ["activations", "lrp"]})
    for e, g in graphs.items():
        store.save_epoch(tmp_path, g, _views(e) if e == 1 else None)  # epoch 0 as an older run: no views
    run = load_run(tmp_path)
    assert sorted(runpage.run_views(run)) == [1]
    path = runpage.write_run_page_for(run)
    data = page_data(path.read_text())
    assert sorted(data["class_means"]["activations"][0]["epochs"]) == ["1"]
    assert sorted(data["projection"]["points"]) == ["1"]
    assert data == page_data(runpage.run_page_html_for(run))
    assert "<c>" not in path.read_text()  # names reach the page as JSON text, "<" escaped


def test_a_deep_models_views_stay_within_the_pages_bounds():
    """20 layers of 2,048 units, 1,000 projected samples, 10 epochs, two analyses: the page holds at
    most PAGE_CLASS_MEAN_VALUES class means and PAGE_PROJECTION_POINTS points, every layer keeps
    the units that vary most, and the projection the same samples at every epoch."""
    rng = np.random.default_rng(0)
    layers = [f"l{i}" for i in range(20)]
    y = np.arange(1000) % 3
    graphs, views = {}, {}
    samples = np.arange(1000)
    for e in range(10):
        cols = [(n, "Dense", (y + i) % 3) for i, n in enumerate(layers)]
        graphs[e] = {"activations": flows.build_flow_graph(cols, y, y, class_names=NAMES, epoch=e)}
        means = {}
        for a in ("activations", "lrp"):
            for n in layers:
                m = rng.normal(size=(3, 2048)) * 0.01
                m[:, 1000] = [0, 5, 10]  # the unit that separates the classes most
                means[(a, n)] = m
        views[e] = store.EpochViews(class_means=means,
                                    projections={("activations", n): rng.normal(size=(1000, 2)) for n in layers},
                                    projection_samples=samples, projection_method="pca")
    html = runpage.run_page_html(_info(layers), graphs, {}, views=views)
    data = page_data(html)
    values = sum(len(e["units"]) * 3 * len(e["epochs"]) for entries in data["class_means"].values() for e in entries)
    assert runpage.PAGE_CLASS_MEAN_VALUES / 2 <= values <= runpage.PAGE_CLASS_MEAN_VALUES
    assert all(1000 in e["units"] for entries in data["class_means"].values() for e in entries)
    shown = {e: p["samples"] for e, p in data["projection"]["points"].items()}
    points = sum(len(c["x"]) for by_epoch in data["projection"]["coords"].values() for c in by_epoch.values())
    assert runpage.PAGE_PROJECTION_POINTS / 2 <= points <= runpage.PAGE_PROJECTION_POINTS
    assert all(s == shown["0"] for s in shown.values()) and shown["0"][0] == 0 and shown["0"][-1] == 999
    assert len(html) < 8 * 2**20
