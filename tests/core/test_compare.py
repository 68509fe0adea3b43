"""Run.metrics, Run.compare and the compare / report commands, on crafted epochs (no TensorFlow)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.cli import main
from flowcallback.core import flows, store

INFO = {
    "flowcallback_version": "0.1.0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["a", "b", "c"],
    "analyses": ["activations"], "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
    "config": {},
}


@pytest.fixture
def two_epochs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    l1 = rng.integers(0, 3, 60)
    l2_a = y.copy()
    l2_b = y.copy()
    moved = np.array([3, 25, 41])
    l2_b[moved] = (l2_b[moved] + 1) % 3          # exactly these samples change cluster at l2
    l2_b = np.array([7, 8, 9])[l2_b]              # and the ids change: matching must see through it
    store.write_run_info(tmp_path, INFO)
    for e, l2 in ((1, l2_a), (2, l2_b)):
        g = flows.build_flow_graph([("l1", "Dense", l1), ("l2", "Dense", l2)], y, y, class_names=["a", "b", "c"],
                                   epoch=e)
        store.save_epoch(tmp_path, {"activations": g})
    return tmp_path, moved


def test_compare_finds_exactly_the_changed_samples(two_epochs):
    run_dir, moved = two_epochs
    cmp = load_run(run_dir).compare(1, 2)
    assert cmp.samples["sample"].tolist() == moved.tolist()
    assert all(v == ["l2"] for v in cmp.samples["layers_changed"])
    assert (cmp.samples["prediction_a"] == cmp.samples["true_class"]).all()
    layers = cmp.layers.set_index("layer")
    assert layers.loc["l1", "ari"] == 1.0 and layers.loc["l1", "changed_samples"] == 0
    assert layers.loc["l2", "changed_samples"] == 3 and layers.loc["l2", "ari"] < 1.0


def test_compare_epochs_is_pure_over_two_graphs(two_epochs):
    from flowcallback.core.compare import compare_epochs

    run_dir, moved = two_epochs
    run = load_run(run_dir)
    cmp = compare_epochs(run.epoch(1), run.epoch(2))
    assert (cmp.epoch_a, cmp.epoch_b, cmp.analysis) == (1, 2, "activations")
    assert cmp.samples["sample"].tolist() == moved.tolist()
    other = flows.build_flow_graph([("l1", "Dense", np.zeros(60, int))], np.zeros(60, int), np.zeros(60, int),
                                   class_names=["a", "b", "c"], epoch=3)
    with pytest.raises(ValueError, match="do not describe the same samples"):
        compare_epochs(run.epoch(1), other)


def test_run_metrics_is_tidy(two_epochs):
    run_dir, _ = two_epochs
    m = load_run(run_dir).layer_metrics()
    assert len(m) == 4 and set(m["epoch"]) == {1, 2} and set(m["column"]) == {"l1", "l2"}
    assert m.set_index(["epoch", "column"]).loc[(1, "l2"), "nmi_classes"] == 1.0


def test_compare_command_prints_the_table(two_epochs, capsys):
    run_dir, _ = two_epochs
    assert main(["compare", str(run_dir), "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 of 60 samples changed path" in out and "l2" in out


def test_compare_command_unknown_epoch(two_epochs, capsys):
    run_dir, _ = two_epochs
    assert main(["compare", str(run_dir), "1", "9"]) == 2
    assert "epoch 9 is not in this run" in capsys.readouterr().err


def test_report_rebuilds_pages_without_tensorflow(two_epochs):
    run_dir, _ = two_epochs
    assert not (run_dir / "epoch_001.html").exists()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "epoch_001.html").exists() and (run_dir / "epoch_002.html").exists()


def test_report_command_does_not_import_tensorflow(two_epochs):
    import subprocess

    run_dir, _ = two_epochs
    code = (f"import sys; from flowcallback.cli import main; main(['report', {str(run_dir)!r}]); "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_compare_command_prints_hostile_names_as_escapes(tmp_path, capsys):
    """Class and layer names come from the run directory: an escape sequence in them (clear the
    screen, set the window title) is printed as text, not obeyed by the terminal (issue 20, item 16)."""
    names = ["cat\x1b[2J", "dog\x1b]0;pwned\x07", "c\u202eb"]
    layer = "dense\x1b[31m"
    y = np.repeat(np.arange(3), 10)
    store.write_run_info(tmp_path, {**INFO, "class_names": names, "layers": [{"name": layer, "type": "Dense"}]})
    for e, clusters in ((1, y), (2, np.roll(y, 1))):
        g = flows.build_flow_graph([(layer, "Dense", clusters)], y, y, class_names=names, epoch=e)
        store.save_epoch(tmp_path, {"activations": g})
    assert main(["compare", str(tmp_path), "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "changed path" in out and "cat\\x1b[2J" in out and "dense\\x1b[31m" in out
    assert not any(ch in out for ch in "\x1b\x07\u202e")


@pytest.mark.parametrize("name, value", [("accuracy", "high"), ("loss", [1]), ("k", 2.5)])
def test_report_refuses_a_mistyped_metric_naming_the_file(two_epochs, capsys, name, value):
    """accuracy, loss and k are numbers: another type is refused when the graph is read, naming the
    file and the field, not later by a conversion that names neither (issue 20, item 13)."""
    import json

    run_dir, _ = two_epochs
    path = run_dir / "graphs" / "epoch_002" / "activations.json"
    doc = json.loads(path.read_text())
    doc["metrics"][name] = value
    path.write_text(json.dumps(doc))
    assert main(["report", str(run_dir)]) == 1  # the epoch is skipped, the others written (issue 20, item 6)
    err = capsys.readouterr().err
    assert "epoch_002/activations.json: does not match schema flowgraph-1 at metrics/" + name in err


def test_compare_names_the_samples_whose_prediction_changed(two_epochs, tmp_path):
    """An outside probe (label noise): compare() listed no sample whose only change was its
    prediction, so memorising a wrong label did not show; Prediction counts as a changed column."""
    from flowcallback.core.compare import compare_epochs

    run_dir, moved = two_epochs
    a = load_run(run_dir).epoch(1)
    y = a.labels
    predicted = y.copy()
    predicted[[10, 50]] = [2, 0]  # only their prediction changes
    l1 = a.assignments[:, 0]
    b = flows.build_flow_graph([("l1", "Dense", l1), ("l2", "Dense", y)], y, predicted, class_names=["a", "b", "c"],
                               epoch=5)
    cmp = compare_epochs(a, b)
    rows = cmp.samples.set_index("sample")
    assert rows.index.tolist() == [10, 50]
    assert rows.loc[10, "layers_changed"] == ["Prediction"] and (rows.loc[10, "prediction_a"], rows.loc[10,
                                                                  "prediction_b"]) == (0, 2)
