"""Several held-out sets in one run (issue 22, item 2): every snapshot analyses each set with the
same model and settings, each set is an ordinary run in its own folder, and the sets are compared."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from flowcallback import FlowCallback, RunFormatError, RunSets, load_run, snapshot
from flowcallback.core.flows import build_flow_graph
from flowcallback.core.metrics import layer_metrics
from flowcallback.core.sets import class_mean_difference, compare_sets, sets_overview


def _model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _flows_conserve(graph, n):
    flows = graph.flows
    for j in range(len(graph.columns) - 1):
        assert flows.loc[flows["source_column"] == j, "count"].sum() == n


@pytest.fixture(scope="module")
def sets_run(tmp_path_factory, digits):
    """A real fit with two held-out sets of different sizes: the digits, and the digits with their
    labels permuted (the model cannot follow those classes), one given as a tf.data.Dataset."""
    import tensorflow as tf

    (x_tr, y_tr), (x_te, y_te) = digits
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(y_te[:240])
    sets = {"clean": (x_te[:300], y_te[:300]),
            "shuffled": tf.data.Dataset.from_tensor_slices((x_te[:240], shuffled)).batch(50)}
    log_dir = tmp_path_factory.mktemp("sets") / "run"
    model = _model()
    cb = FlowCallback(sets, log_dir=log_dir, budget=None, lrp=True, k=10, verbose=0)
    model.fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    return {"log_dir": log_dir, "callback": cb, "model": model, "shuffled_labels": shuffled, "x": x_te, "y": y_te}


@pytest.mark.both
def test_each_set_is_an_ordinary_run_with_its_own_samples(sets_run):
    log_dir, cb = sets_run["log_dir"], sets_run["callback"]
    info = json.loads((log_dir / "sets.json").read_text())
    assert [(s["name"], s["samples"]) for s in info["sets"]] == [("clean", 300), ("shuffled", 240)]
    assert not (log_dir / "run.json").exists() and not (log_dir / "graphs").exists()
    for name, n in (("clean", 300), ("shuffled", 240)):
        run = load_run(log_dir / name)  # each set's folder reads as a run of one set
        assert run.epochs == [0, 1, 2] and run.info["config"]["n_samples"] == n
        for e in run.epochs:
            assert run.analyses(e) == ["activations", "lrp"]
            for analysis in run.analyses(e):
                _flows_conserve(run.epoch(e, analysis), n)
    labels = load_run(log_dir / "shuffled").epoch(2).labels
    np.testing.assert_array_equal(labels, sets_run["shuffled_labels"])  # the tf.data set, read in order
    assert set(cb.pages) == {0, 1, 2} and all(set(p) == {"clean", "shuffled"} for p in cb.pages.values())
    assert cb.pages[2]["shuffled"].endswith(os.path.join("shuffled", "epoch_002.html"))
    assert set(cb.held_out) == {"clean", "shuffled"} and len(cb.held_out["shuffled"][0]) == 240
    # the budget-free run still times each epoch: all sets' wall time, and each set's stages
    assert cb.timings[2]["snapshot_seconds"] >= max(t["snapshot_seconds"] for t in cb.timings[2]["sets"].values())


def test_a_set_is_analysed_as_the_single_set_form_analyses_it(sets_run, tmp_path):
    """The clean set of the run of two sets equals a run of that set alone, at the same weights."""
    model, x, y = sets_run["model"], sets_run["x"], sets_run["y"]
    alone = snapshot(model, (x[:300], y[:300]), tmp_path / "alone", epoch=2, k=10, verbose=0)
    both = snapshot(model, {"clean": (x[:300], y[:300]), "half": (x[:100], y[:100])}, tmp_path / "both", epoch=2,
                    k=10, verbose=0)
    assert alone == tmp_path / "alone" / "epoch_002.html" and both == tmp_path / "both" / "index.html"
    one, two = load_run(tmp_path / "alone"), load_run(tmp_path / "both")
    assert isinstance(two, RunSets) and two.names == ["clean", "half"]
    for analysis in ("activations", "lrp"):
        a, b = one.epoch(2, analysis), two["clean"].epoch(2, analysis)
        np.testing.assert_array_equal(a.assignments, b.assignments)
        assert a.flows.equals(b.flows)
    # the single-set form writes what it always wrote: no sets.json, no set folders
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == [
        ".flowcallback.lock", "epoch_002.html", "graphs", "index.html", "plotly.min.js", "run.json"]


def test_compare_sets_gives_each_layers_separation_gap_and_unit_differences(sets_run):
    run = load_run(sets_run["log_dir"])
    assert isinstance(run, RunSets) and run.names == ["clean", "shuffled"] and run.epochs == [0, 1, 2]
    table = run.compare_sets(2, "clean", "shuffled")
    clean = run["clean"].layer_metrics("activations").query("epoch == 2").set_index("column")
    other = run["shuffled"].layer_metrics("activations").query("epoch == 2").set_index("column")
    assert table["column"].tolist() == clean.index.tolist()
    np.testing.assert_allclose(table["ari_classes_a"], clean.loc[table["column"], "ari_classes"])
    np.testing.assert_allclose(table["ari_gap"], other.loc[table["column"], "ari_classes"].to_numpy()
                               - clean.loc[table["column"], "ari_classes"].to_numpy())
    # permuted labels: the trained model's last layer follows the clean classes, not the permuted ones
    last = table.iloc[-1]
    assert last["ari_classes_a"] > 0.3 and last["ari_classes_b"] < 0.1 and last["ari_gap"] < -0.2
    # the units' class means differ (the same images, grouped by other labels), and by what the heatmaps hold
    layer = last["column"]
    diff = run.class_means_difference(2, layer, "clean", "shuffled")
    expected = (run["shuffled"].class_means(2, layer, order="class").to_numpy()
                - run["clean"].class_means(2, layer, order="class").to_numpy())
    np.testing.assert_allclose(diff.to_numpy(), expected)
    assert last["class_mean_difference"] == pytest.approx(np.abs(expected).mean())
    assert last["most_different_unit"] == int(np.abs(expected).mean(axis=0).argmax())
    # a set against itself: no gap, no difference
    same = run.compare_sets(2, "clean", "clean")
    assert (same["ari_gap"] == 0).all() and (same["class_mean_difference"] == 0).all()
    fig = run.compare_sets_figure()
    assert [t.name for t in fig.data] == ["clean", "shuffled", "gap (shuffled − clean)"]
    with pytest.raises(KeyError, match=r"no held-out set 'fashion'.*\['clean', 'shuffled'\]"):
        run.compare_sets(2, "clean", "fashion")


def test_the_sets_page_flags_the_set_whose_classes_the_model_does_not_follow(sets_run):
    from playwright.sync_api import expect

    from browser import open_page

    page_path = sets_run["log_dir"] / "index.html"
    with open_page(page_path.resolve().as_uri(), wait_for="#separation .main-svg") as (page, errors, blocked):
        rows = page.locator("#sets-table tbody tr")
        expect(rows).to_have_count(2)
        assert rows.nth(0).locator("td").nth(0).inner_text() == "clean"
        assert "flagged" in (rows.nth(1).get_attribute("class") or "")
        assert "shuffled" in page.locator("#flagged").inner_text()
        # one set's page in a frame, drawn; then two side by side
        frame = page.frame_locator("#frames iframe").first
        expect(frame.locator(".sankey-node").first).to_be_attached(timeout=30_000)
        page.check("#mode-two")
        expect(page.locator("#frames iframe")).to_have_count(2)
        second = page.frame_locator("#frames iframe").nth(1)
        expect(second.locator(".sankey-node").first).to_be_attached(timeout=30_000)
        assert page.locator("#frames iframe").nth(1).get_attribute("src") == "shuffled/index.html"
        # the epoch slider moves both sets' pages
        page.locator("#epoch").fill("0")
        page.locator("#epoch").dispatch_event("input")
        for k in range(2):
            expect(page.frame_locator("#frames iframe").nth(k).locator("#epoch-label")).to_have_text("0")
        # and a set's own slider moves the page and the other set
        frame.locator("#epoch").fill("1")
        frame.locator("#epoch").dispatch_event("input")
        expect(page.locator("#epoch-label")).to_have_text("1")
        expect(second.locator("#epoch-label")).to_have_text("1")
    assert errors == [] and blocked == []


def test_appending_keeps_the_sets_and_refuses_the_other_form(sets_run, tmp_path, digits):
    (_, _), (x_te, y_te) = digits
    model = sets_run["model"]
    snapshot(model, {"a": (x_te[:100], y_te[:100])}, tmp_path / "r", epoch=1, lrp=False, k=8, verbose=0)
    snapshot(model, {"b": (x_te[100:200], y_te[100:200])}, tmp_path / "r", epoch=2, lrp=False, k=8, verbose=0)
    run = load_run(tmp_path / "r")
    assert run.names == ["a", "b"] and run["a"].epochs == [1] and run["b"].epochs == [2]
    page = (tmp_path / "r" / "index.html").read_text()
    assert '"a/index.html"' in page and '"b/index.html"' in page
    with pytest.raises(ValueError, match=r"^log_dir: .* holds a run of several held-out sets \(sets.json"):
        snapshot(model, (x_te[:100], y_te[:100]), tmp_path / "r", lrp=False, k=8, verbose=0)
    snapshot(model, (x_te[:100], y_te[:100]), tmp_path / "single", lrp=False, k=8, verbose=0)
    with pytest.raises(ValueError, match=r"^log_dir: .* holds a run of one held-out set \(run.json\)"):
        snapshot(model, {"a": (x_te[:100], y_te[:100])}, tmp_path / "single", lrp=False, k=8, verbose=0)


# -- bad input ------------------------------------------------------------------------------------
def _data(n=40, shape=(8, 8, 1), classes=10):
    return np.zeros((n, *shape), dtype="float32"), np.arange(n) % classes


@pytest.mark.parametrize("sets, message", [
    ({1: _data()}, r"validation_data: a held-out set's name must be a string, got int 1"),
    ({"": _data()}, r"validation_data: the held-out set name '' is not a plain name"),
    ({"../up": _data()}, r"validation_data: the held-out set name '\.\./up' is not a plain name"),
    ({"a/b": _data()}, r"is not a plain name"),
    ({".hidden": _data()}, r"is not a plain name"),
    ({"graphs": _data()}, r"validation_data: the held-out set name 'graphs' is taken by a run directory's own"),
    ([("a", _data()), ("a", _data())], r"validation_data: the held-out set name 'a' is given twice"),
    ({"Clean": _data(), "clean": _data()}, r"given twice \(as 'Clean': names differing only in case"),
    ({}, r"validation_data: no held-out set given"),
    ({f"s{i}": _data() for i in range(17)}, r"validation_data: 17 held-out sets, more than the 16"),
    ({"a": _data(), "b": (np.zeros((40, 5)), [0] * 39)}, r"^validation_data\['b'\]: x and y must have the same"),
    ({"a": _data(), "b": _data(shape=(9, 9, 1))},
     r"per-sample input shape .* got \(8, 8, 1\) for 'a' and \(9, 9, 1\) for 'b'"),
    ({"a": (np.zeros((4, 3)), np.eye(4)[[0, 1, 2, 3]]), "b": (np.zeros((4, 3)), np.eye(3)[[0, 1, 2, 0]])},
     r"different numbers of classes: one-hot labels of 4 for 'a' and 3 for 'b'"),
])
def test_bad_sets_are_refused_at_construction(sets, message):
    with pytest.raises(ValueError, match=message):
        FlowCallback(sets)


@pytest.mark.both
def test_a_set_that_does_not_fit_the_model_is_refused_before_training_writes_anything(tmp_path):
    x, y = _data()
    bad = (x, np.full(40, 12))
    model = _model()
    cb = FlowCallback({"ok": (x, y), "bad": bad}, log_dir=tmp_path / "r", lrp=False, k=5, verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data\['bad'\]: labels must be in 0\.\.9"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert not (tmp_path / "r").exists()
    five = (x, np.eye(5)[np.arange(40) % 5])
    cb = FlowCallback({"ok": (x, y), "five": five}, log_dir=tmp_path / "r", lrp=False, k=5, verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data\['five'\]: one-hot labels of 5 classes, but the model has"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    with pytest.raises(ValueError, match=r"^validation_data: one-hot labels of 5 classes, but the model has 10"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[FlowCallback(five, log_dir=tmp_path / "one", lrp=False, k=5)])
    assert not (tmp_path / "r").exists()


# -- the pure stage -------------------------------------------------------------------------------
def test_compare_sets_gaps_are_the_metric_differences():
    y = np.array([0, 0, 1, 1, 2, 2])
    a = build_flow_graph([("c", "Conv2D", [0, 0, 1, 1, 2, 2]), ("d", "Dense", [0, 0, 1, 1, 2, 2])], y, y, epoch=3)
    b = build_flow_graph([("c", "Conv2D", [0, 1, 0, 1, 2, 2]), ("d", "Dense", [0, 0, 0, 1, 1, 1])], y, y, epoch=3)
    means_a = {"d": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])}
    means_b = {"d": np.array([[1.0, 0.0], [0.0, 3.0], [np.nan, np.nan]])}
    table = compare_sets(a, b, names=("x", "y"), class_means_a=means_a, class_means_b=means_b)
    ma, mb = layer_metrics([a]), layer_metrics([b])
    np.testing.assert_allclose(table["ari_gap"], mb["ari_classes"] - ma["ari_classes"])
    np.testing.assert_allclose(table["purity_gap"], mb["purity"] - ma["purity"])
    assert table["set_a"].unique().tolist() == ["x"] and table["set_b"].unique().tolist() == ["y"]
    assert np.isnan(table.loc[0, "class_mean_difference"])  # no class means of c
    # class 2 has no samples in b: left out; units differ by 0 and 2 over classes 0 and 1
    assert table.loc[1, "class_mean_difference"] == pytest.approx(0.5)
    assert table.loc[1, "class_mean_relative"] == pytest.approx(2 / np.sqrt(2))
    assert table.loc[1, "most_different_unit"] == 1
    with pytest.raises(ValueError, match="different shapes"):
        class_mean_difference(np.zeros((3, 2)), np.zeros((3, 4)))


def test_the_overview_flags_only_sets_far_below_the_best():
    import pandas as pd

    def m(*aris):
        return pd.DataFrame({"analysis": "activations", "column": [f"l{i}" for i in range(len(aris))],
                             "ari_classes": aris, "nmi_classes": aris})

    view = sets_overview({"clean": {0: ({"accuracy": 0.1}, m(0.0, 0.1)), 4: ({"accuracy": 0.95}, m(0.3, 0.9))},
                          "near": {4: ({"accuracy": 0.9}, m(0.3, 0.5))},
                          "far": {4: ({"accuracy": 0.1}, m(0.2, 0.3))}}, {"clean": 9, "near": 9, "far": 9})
    assert view["epochs"] == [0, 4] and view["columns"] == ["l0", "l1"]
    assert list(view["flagged"]) == [4] and list(view["flagged"][4]) == ["far"]  # 0.3 < 0.45; 0.5 is not
    assert "ARI 0.30 against 0.90" in view["flagged"][4]["far"]
    assert 0 not in view["flagged"]  # one set only at epoch 0: nothing to compare with


# -- sets.json read as untrusted ------------------------------------------------------------------
@pytest.mark.parametrize("sets, message", [
    ([{"name": "a"}, {"name": "A"}], "listed twice"),
    ([{"name": "graphs"}], "a run directory's own file"),
    ([{"name": "../outside"}], "does not match"),
    ([], "should be non-empty|is too short"),
    ([{"name": f"s{i}"} for i in range(17)], "at sets: 17 items is too many"),
])
def test_a_hostile_sets_json_is_refused(tmp_path, sets, message):
    (tmp_path / "sets.json").write_text(json.dumps({"format": "flowcallback/sets", "version": 1,
                                                    "flowcallback_version": "x", "sets": sets}))
    with pytest.raises(RunFormatError, match=message):
        load_run(tmp_path)


def test_a_set_folder_leading_outside_the_run_is_refused(tmp_path):
    import shutil

    from flowcallback.demo import tiny_run, tiny_sets_run

    root = tiny_sets_run(tmp_path / "r")
    outside = tiny_run(tmp_path / "elsewhere")
    shutil.rmtree(root / "shuffled")
    os.symlink(outside, root / "shuffled")
    run = load_run(root)
    assert run["clean"].epochs == [0, 1]
    with pytest.raises(RunFormatError, match="outside the run directory"):
        run["shuffled"]



def test_an_oversized_sets_json_is_refused_by_its_size(tmp_path):
    from flowcallback.core._schemas import MAX_JSON_BYTES

    (tmp_path / "sets.json").write_text("[" + "0," * MAX_JSON_BYTES["sets-1"] + "0]")
    with pytest.raises(RunFormatError, match="bytes"):
        load_run(tmp_path)


def test_serve_draws_the_sets_page_and_each_sets_page_live(sets_run, tmp_path):
    """``flowcallback serve`` on a directory holding the run of two sets: the listing links the sets'
    page, which is drawn from the sets' runs and shows their pages in frames, under the page policy."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from playwright.sync_api import expect
    from test_live import _get, _wait_for_line

    from browser import open_page

    logs = tmp_path / "logs"
    shutil.copytree(sets_run["log_dir"], logs / "run")
    (logs / "run" / "index.html").unlink()  # the served page is drawn, not read
    exe = Path(sys.executable).with_name("flowcallback")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "flowcallback.cli"]
    proc = subprocess.Popen(cmd + ["serve", str(logs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(_wait_for_line(proc, r"http://127\.0\.0\.1:(\d+)/").group(1))
        status, _, body = _get(port, "/")
        assert status == 200 and b'href="run/index.html"' in body and b"run/clean" in body
        assert _get(port, "/run")[0] == 301
        status, headers, body = _get(port, "/run/")
        assert status == 200 and b'"clean/index.html"' in body and "frame-ancestors 'self'" in headers[
            "content-security-policy"]
        assert _get(port, "/run/plotly.min.js")[0] == 200 and _get(port, "/run/sets.json")[0] == 404
        base = f"http://127.0.0.1:{port}/"
        with open_page(base + "run/index.html", allow=(base,), wait_for="#separation .main-svg") as (page, errors,
                                                                                                    blocked):
            expect(page.locator("#sets-table tbody tr")).to_have_count(2)
            page.check("#mode-two")
            for k in range(2):
                frame = page.frame_locator("#frames iframe").nth(k)
                expect(frame.locator(".sankey-node").first).to_be_attached(timeout=30_000)
                expect(frame.locator("#live-status")).to_contain_text("live")
        assert errors == [] and blocked == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_command_line_reports_each_set_and_names_them_where_one_is_needed(sets_run, tmp_path, capsys):
    import shutil

    from flowcallback.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(sets_run["log_dir"], run_dir)
    for page in [run_dir / "index.html", run_dir / "clean" / "epoch_001.html", run_dir / "shuffled" / "index.html"]:
        page.unlink()
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "held-out set clean:" in out and "held-out set shuffled:" in out and "sets page:" in out
    assert (run_dir / "clean" / "epoch_001.html").exists() and (run_dir / "shuffled" / "index.html").exists()
    page = (run_dir / "index.html").read_text()
    data = json.loads(page.split('<script type="application/json" id="sets-data">')[1].split("</script>")[0])
    assert data["epochs"] == [0, 1, 2] and [s["name"] for s in data["sets"]] == ["clean", "shuffled"]
    assert list(data["flagged"]["2"]) == ["shuffled"]
    assert main(["compare", str(run_dir), "1", "2"]) == 2
    err = capsys.readouterr().err
    assert "is a run of several held-out sets (clean, shuffled): name one, e.g." in err
    assert main(["compare", str(run_dir / "clean"), "1", "2"]) == 0


def test_the_example_states_the_failed_set_and_the_tampered_class_in_numbers(tmp_path, digits, capsys):
    """examples/held_out_sets.py end to end, on 28 x 28 images made from scikit-learn's digits (the
    MNIST stand-in) and their negatives (a set the model was not trained for)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "held_out_sets", Path(__file__).resolve().parent.parent / "examples" / "held_out_sets.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    (x_tr, y_tr), (x_te, y_te) = digits

    def as_28(x):  # 8 x 8 in [0, 1] -> 28 x 28 in 0..255, as keras.datasets stores MNIST
        big = np.kron(x[..., 0], np.ones((3, 3)))
        return (np.pad(big, ((0, 0), (2, 2), (2, 2))) * 255).astype("uint8")

    # the training images twelve times over: enough steps for the backdoor to be learned in a few epochs
    x_tr, y_tr = np.concatenate([x_tr] * 12), np.concatenate([y_tr] * 12)
    np.savez(tmp_path / "digits.npz", x_train=as_28(x_tr), y_train=y_tr, x_test=as_28(x_te), y_test=y_te)
    np.savez(tmp_path / "negative.npz", x_train=255 - as_28(x_tr), y_train=y_tr, x_test=255 - as_28(x_te),
             y_test=y_te)
    example.main(["--mnist", str(tmp_path / "digits.npz"), "--fashion", str(tmp_path / "negative.npz"),
                  "--log-dir", str(tmp_path / "flows"), "--epochs", "4", "--samples", "300", "--share", "0.2"])
    out = capsys.readouterr().out
    assert "fashion: accuracy" in out and "flagged on the page: its last layer's clusters follow" in out
    assert "The model fails on Fashion-MNIST: every layer's clusters" in out
    to_zero = {name: float(share) for name, share in
               __import__("re").findall(r"  (clean|tampered): ([0-9.]+)% of class 7 predicted as 0", out)}
    assert to_zero["clean"] < 10 and to_zero["tampered"] > 50, out
    assert "The layers that react to the pattern" in out
    run = load_run(tmp_path / "flows" / "tampered")
    assert isinstance(run, RunSets) and run.names == ["clean", "tampered"] and run.epochs == [0, 1, 2, 3, 4]


def test_tensorboard_lists_the_sets_page_before_the_sets_runs(sets_run, tmp_path):
    import shutil
    import subprocess
    import sys
    import time

    pytest.importorskip("tensorboard")
    from test_live import _free_port, _get

    logs = tmp_path / "logs"
    shutil.copytree(sets_run["log_dir"], logs / "run")
    (logs / "broken").mkdir()
    (logs / "broken" / "sets.json").write_text("{")
    (logs / "broken" / "a").mkdir()
    shutil.copy(logs / "run" / "clean" / "run.json", logs / "broken" / "a" / "run.json")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logs), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(port, "/data/plugins_listing")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "TensorBoard did not start"
            time.sleep(0.5)
        status, _, body = _get(port, "/data/plugin/flows/runs")
        listed = json.loads(body)
        assert [r["path"] for r in listed] == ["broken", "run", "broken/a", "run/clean", "run/shuffled"]
        sets = {r["path"]: r for r in listed[:2]}
        assert sets["run"]["sets"] == ["clean", "shuffled"] and sets["run"]["epochs"] == [0, 1, 2]
        assert sets["run"]["url"] == "run/index.html" and sets["run"]["error"] is None
        assert "invalid JSON" in sets["broken"]["error"]
        status, _, body = _get(port, "/data/plugin/flows/site/run/index.html")
        assert status == 200 and b'id="sets-data"' in body
        assert _get(port, "/data/plugin/flows/site/broken/index.html")[0] == 500
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- appending and failures: nothing is left half-done ------------------------------------------
def _tiny_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_appending_refuses_what_would_break_the_run_before_writing_anything(sets_run, tmp_path, digits):
    (_, _), (x_te, y_te) = digits
    a, b = (x_te[:80], y_te[:80]), (x_te[80:160], y_te[80:160])
    model, run_dir = sets_run["model"], tmp_path / "r"
    snapshot(model, {"a": a, "b": b}, run_dir, epoch=1, lrp=False, k=8, verbose=0)
    before = sorted(p.name for p in run_dir.iterdir())
    # a name that differs only in case from the run's: refused (it would share a's folder on macOS)
    with pytest.raises(ValueError, match=r"^validation_data: the held-out set name 'A' differs only in case from "
                                         r"this run's set 'a'"):
        snapshot(model, {"A": a}, run_dir, epoch=2, lrp=False, k=8, verbose=0)
    # another model: refused, whatever the set names, and the new set's folder is not made
    with pytest.raises(ValueError, match=r"^log_dir: .* holds held-out sets of a different model"):
        snapshot(_tiny_model(), [("z", a), ("a", a)], run_dir, epoch=2, lrp=False, k=8, verbose=0)
    # a set folder that is a symlink (here, leading outside log_dir), or a file: refused
    os.symlink(tmp_path, run_dir / "out")
    with pytest.raises(ValueError, match=r"^log_dir: .*out is a symlink; the folder of held-out set 'out'"):
        snapshot(model, {"out": a}, run_dir, epoch=2, lrp=False, k=8, verbose=0)
    os.unlink(run_dir / "out")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    run = load_run(run_dir)
    assert run.names == ["a", "b"] and run["a"].epochs == [1]
    assert json.loads((run_dir / "sets.json").read_text())["model"]["fingerprint"] == run["a"].info["model"][
        "fingerprint"]


def test_a_fit_that_would_overwrite_the_sets_epochs_is_refused_and_leaves_them_as_they_were(tmp_path, digits):
    """A training started again into a run of sets (a notebook cell run again): refused at the first
    epoch, naming the epochs; sets.json, each set's run.json and epochs as they were, and the folder
    of a set this fit added removed."""
    (x_tr, y_tr), (x_te, y_te) = digits
    a, b = (x_te[:80], y_te[:80]), (x_te[80:160], y_te[80:160])
    run_dir = tmp_path / "r"
    settings = dict(log_dir=run_dir, lrp=False, k=8, verbose=0, projection=None, budget=None)
    first = FlowCallback({"a": a, "b": b}, **settings)
    _tiny_model().fit(x_tr[:200], y_tr[:200], epochs=2, verbose=0, callbacks=[first])

    def files():
        return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*")
                if p.is_file() and ".lock" not in p.name}

    before = files()
    cb = FlowCallback({"a": a, "new": b}, **settings)
    with pytest.raises(ValueError, match=r"^log_dir: .* holds epochs 0\u20132 of an earlier training, and this fit "
                                         r"\(from initial_epoch=0\) would overwrite epoch\(s\) 0, 1, 2, "):
        _tiny_model().fit(x_tr[:200], y_tr[:200], epochs=3, verbose=0, callbacks=[cb])
    assert not (run_dir / "new").exists()
    assert files() == before
    run = load_run(run_dir)
    assert run.names == ["a", "b"] and run["a"].epochs == [0, 1, 2] and run["b"].epochs == [0, 1, 2]


def test_a_set_folder_that_cannot_be_written_turns_every_set_off_and_leaves_no_half_run(tmp_path, digits, recwarn):
    (x_tr, y_tr), (x_te, y_te) = digits
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "b").write_text("not a folder")
    model = _tiny_model()
    sets = {"a": (x_te[:80], y_te[:80]), "b": (x_te[80:160], y_te[80:160])}
    with pytest.raises(ValueError, match=r"^log_dir: .*/r/b is a file, not a directory"):
        FlowCallback(sets, log_dir=run_dir, lrp=False, k=8, verbose=0, budget=None)  # refused at once
    (run_dir / "b").unlink()
    cb = FlowCallback(sets, log_dir=run_dir, lrp=False, k=8, verbose=0, budget=None)
    (run_dir / "b").write_text("not a folder")  # and if it appears later, before the fit
    with pytest.raises(ValueError, match=r"^log_dir: .*b is not a folder"):
        model.fit(x_tr[:64], y_tr[:64], epochs=1, verbose=0, callbacks=[cb])
    assert sorted(p.name for p in run_dir.iterdir()) == ["b"]


def test_parallel_writers_of_one_run_of_sets_are_refused(sets_run, tmp_path, digits):
    from flowcallback import RunInUseError
    from flowcallback._lock import RunLock

    (_, _), (x_te, y_te) = digits
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    other = RunLock(run_dir)  # another writer (of this process) holds the run
    other.acquire()
    try:
        with pytest.raises(RunInUseError, match=r"^log_dir: .* is being written by this process: another "
                                                r"FlowCallback \(or snapshot\) of it writes this run"):
            snapshot(sets_run["model"], {"p": (x_te[:80], y_te[:80])}, run_dir, lrp=False, k=8, verbose=0)
    finally:
        other.release()
    assert sorted(p.name for p in run_dir.iterdir()) == [".flowcallback.lock"]
    snapshot(sets_run["model"], {"p": (x_te[:80], y_te[:80])}, run_dir, lrp=False, k=8, verbose=0)
    assert load_run(run_dir).names == ["p"]


@pytest.mark.parametrize("sets, message", [
    ([(1, _data()), (2, _data())], r"a held-out set's name must be a string, got int 1"),
    ((("a", _data()), ("b", _data())), None),
    (("a", _data()), r"^validation_data: one \('a', data\) pair; several held-out sets are a dict"),
    ({"nul": _data()}, r"the held-out set name 'nul' is a device name on Windows"),
    ({"Con.txt": _data()}, r"is a device name on Windows"),
    ({"a.": _data()}, r"is not a plain name"),
    ({"a\n": _data()}, r"is not a plain name"),
])
def test_more_forms_of_named_sets_are_read_or_refused_by_name(sets, message):
    if message is None:
        assert set(FlowCallback(sets, lrp=False, k=5).held_out) == {"a", "b"}
        return
    with pytest.raises(ValueError, match=message):
        FlowCallback(sets)


def test_a_run_of_sets_says_which_sets_skipped_epochs_and_recorded_errors(tmp_path):
    # found by an outside probe: a script checking a run for problems failed (AttributeError) on one of sets
    from flowcallback.demo import tiny_sets_run

    run = load_run(tiny_sets_run(tmp_path / "r"))
    assert run.skipped == {} and run.errors() == {}
    (run.path / "shuffled" / "graphs" / "epoch_001" / "activations.json").write_text("{")
    (run.path / "clean" / "errors").mkdir()
    (run.path / "clean" / "errors" / "epoch_000.txt").write_text("Traceback ...\nRuntimeError: injected\n")
    run = load_run(tmp_path / "r")
    assert list(run.skipped) == ["shuffled"] and list(run.skipped["shuffled"]) == [1]
    damaged = run.path / "shuffled" / "graphs" / "epoch_001" / "activations.json"
    assert run.skipped["shuffled"][1].startswith(f"{damaged}: ")
    assert run.errors() == {"clean": {0: "Traceback ...\nRuntimeError: injected\n"}}
    assert run.epochs == [0]  # the epochs every set has
