"""Views across epochs: flows between one column's clusters over epochs, confusion, class scores."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, precision_score, recall_score

from flowcallback import load_run
from flowcallback.core.flows import build_flow_graph
from flowcallback.core.history import CONFUSION_COLUMNS, EPOCH_FLOW_COLUMNS, class_scores, confusion, epoch_flows

FAST = settings(max_examples=50, deadline=None)


@st.composite
def runs(draw):
    """A few snapshots of one held-out set: per epoch, a layer's clusters and the predictions."""
    n = draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 4))
    y = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    epochs = sorted(draw(st.sets(st.integers(0, 20), min_size=1, max_size=4)))
    graphs = []
    for e in epochs:
        layer = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
        p = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
        graphs.append(build_flow_graph([("dense", "Dense", layer)], y, p,
                                       class_names=[str(c) for c in range(n_classes)], epoch=e))
    return graphs, y


@FAST
@given(runs(), st.sampled_from(["dense", "Prediction"]), st.booleans())
def test_epoch_flows_conserve_samples_and_equal_a_direct_count(case, column, shuffle):
    graphs, y = case
    given_order = list(reversed(graphs)) if shuffle else graphs  # any order: sorted by epoch
    df = epoch_flows(given_order, column, max_samples=3)
    assert list(df.columns) == EPOCH_FLOW_COLUMNS
    pairs = list(zip(graphs, graphs[1:]))
    assert sorted(set(zip(df.source_epoch, df.target_epoch))) == [(a.epoch, b.epoch) for a, b in pairs]
    for a, b in pairs:
        part = df[(df.source_epoch == a.epoch) & (df.target_epoch == b.epoch)]
        assert part["count"].sum() == len(y)  # every sample flows once between consecutive epochs
        src, dst = a.assignments[:, a.column_index(column)], b.assignments[:, b.column_index(column)]
        for r in part.itertuples():
            members = np.flatnonzero((src == r.source_cluster) & (dst == r.target_cluster) & (y == r.true_class))
            assert r.count == len(members) > 0
            assert r.first_samples == tuple(members[:3].tolist())
            assert r.changed == (r.source_cluster != r.target_cluster)


@FAST
@given(runs())
def test_confusion_and_class_scores_equal_scikit_learn(case):
    graphs, y = case
    n_classes = len(graphs[0].class_names)
    table = confusion(graphs)
    assert list(table.columns) == CONFUSION_COLUMNS and len(table) == len(graphs) * n_classes ** 2
    scores = class_scores(graphs)
    for g in graphs:
        part = table[table.epoch == g.epoch].pivot(index="true", columns="predicted", values="count")
        expected = confusion_matrix(y, g.predictions, labels=list(range(n_classes)))
        np.testing.assert_array_equal(part.to_numpy(), expected)
        s = scores[scores.epoch == g.epoch].set_index("class")
        for c in range(n_classes):
            if (g.predictions == c).any():
                assert s.loc[c, "precision"] == pytest.approx(
                    precision_score(y, g.predictions, labels=[c], average=None, zero_division=0)[0])
            else:
                assert np.isnan(s.loc[c, "precision"])
            if (y == c).any():
                assert s.loc[c, "recall"] == pytest.approx(recall_score(y, g.predictions, labels=[c], average=None,
                                                                        zero_division=0)[0])
            else:
                assert np.isnan(s.loc[c, "recall"])


def test_epoch_flows_refuse_other_held_out_sets_and_unknown_columns():
    y = np.array([0, 1, 1])
    g1 = build_flow_graph([("dense", "Dense", y)], y, y, epoch=1)
    g2 = build_flow_graph([("dense", "Dense", y)], y[::-1], y, epoch=2)
    with pytest.raises(ValueError, match="different held-out sets"):
        epoch_flows([g1, g2], "dense")
    with pytest.raises(ValueError, match="column: 'conv' is not a column"):
        epoch_flows([g1], "conv")


@FAST
@given(runs(), st.data())
def test_sample_history_is_each_samples_row_of_every_epoch(case, data):
    """The path of chosen samples over training, read back from the graphs as stored."""
    from flowcallback.core.history import SAMPLE_HISTORY_COLUMNS, sample_history

    graphs, y = case
    chosen = data.draw(st.lists(st.integers(0, len(y) - 1), min_size=1, max_size=3))
    df = sample_history(list(reversed(graphs)), chosen)
    assert list(df.columns) == SAMPLE_HISTORY_COLUMNS and len(df) == len(chosen) * len(graphs)
    for r in df.itertuples():
        g = next(g for g in graphs if g.epoch == r.epoch)
        assert (r.true_class, r.prediction, r.cluster) == (y[r.sample], g.predictions[r.sample],
                                                           g.assignments[r.sample, g.column_index(r.column)])
        assert r.correct == (r.true_class == r.prediction)
    assert df["epoch"].tolist() == sorted(g.epoch for g in graphs) * len(chosen)


def test_sample_history_and_epoch_flows_refuse_bad_arguments_by_name():
    """An outside probe: epoch_flows(max_samples=None) gave a bare TypeError, 0 or -1 empty tuples."""
    from flowcallback.core.history import sample_history

    y = np.array([0, 1, 1])
    g = build_flow_graph([("dense", "Dense", y)], y, y, epoch=1)
    for bad in (None, 0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"^max_samples: expected an int >= 1"):
            epoch_flows([g], "dense", max_samples=bad)
    for bad in (3, -1, [0, 5], 1.5, [[0]]):
        with pytest.raises(ValueError, match=r"^samples: "):
            sample_history([g], bad)


def test_run_api_reads_the_views_from_disk(tmp_path):
    from flowcallback.core import store

    y = np.repeat([0, 1, 2], 4)
    preds = {1: np.roll(y, 1), 2: y}
    graphs = {e: build_flow_graph([("dense", "Dense", preds[e])], y, preds[e], epoch=e) for e in (1, 2)}
    store.write_run_info(tmp_path, {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"},
                                    "class_names": ["0", "1", "2"], "analyses": ["activations"],
                                    "layers": [{"name": "dense", "type": "Dense"}], "config": {}})
    for g in graphs.values():
        store.save_epoch(tmp_path, {"activations": g})
    run = load_run(tmp_path)
    flows = run.epoch_flows("Prediction")
    assert flows["count"].sum() == len(y) and set(flows.source_epoch) == {1}
    assert flows[~flows.changed]["count"].sum() == int((preds[1] == preds[2]).sum())
    table = run.confusion()
    assert table[(table.epoch == 2) & (table.true == table.predicted)]["count"].sum() == len(y)
    assert set(run.class_scores().query("epoch == 2").recall) == {1.0}
    path = run.sample_history([0, 5])
    assert path.query("sample == 0").prediction.tolist() == [int(preds[1][0]), int(preds[2][0])]


def test_run_page_keeps_the_confusions_that_matter():
    from flowcallback.core.history import confusion_over_training

    # 100 samples of class 0: 10 taken for class 1 at epoch 1 then none; 1 taken for class 2 (1 %) at both
    y = np.zeros(100, dtype=int)
    p1 = y.copy()
    p1[:10] = 1
    p1[10] = 2
    p2 = y.copy()
    p2[10] = 2
    graphs = [build_flow_graph([("d", "Dense", p)], y, p, class_names=["a", "b", "c"], epoch=e)
              for e, p in ((1, p1), (2, p2))]
    out = confusion_over_training(graphs)
    assert out["epochs"] == [1, 2]
    assert out["cells"] == [{"true": 0, "predicted": 1, "counts": [10, 0]}]  # the 1 % confusion is left out
    assert out["recall"][0] == [0.89, 0.99] and out["precision"][1] == [0.0, None]


def test_figures_for_notebooks_and_scripts(tmp_path):
    import plotly.graph_objects as go

    from flowcallback.core import render, store

    y = np.repeat([0, 1, 2], 4)
    preds = {1: np.roll(y, 1), 2: y}
    store.write_run_info(tmp_path, {"flowcallback_version": "0", "model": {"name": "m<b>", "fingerprint": "f"},
                                    "class_names": ["0", "1", "2"], "analyses": ["activations"],
                                    "layers": [{"name": "dense", "type": "Dense"}], "config": {}})
    for e, p in preds.items():
        store.save_epoch(tmp_path, {"activations": build_flow_graph([("dense", "Dense", p)], y, p, epoch=e,
                                                                    metrics={"accuracy": float((p == y).mean())})})
    run = load_run(tmp_path)
    g = run.epoch(2)
    fig = render.figure(g)  # a graph alone, as run.figure(2, "activations")
    assert isinstance(fig, go.Figure) and fig.data[0].type == "sankey"
    assert len(fig.data[0].node.label) == sum(len(c.order) for c in g.columns)
    assert isinstance(run.figure(2), go.Figure)
    across = run.show("across", column="Prediction")
    assert sum(across.data[0].link.value) == len(y)
    # a Prediction node in its class's colour (an outside probe: every node was grey); a layer's grey
    colors = render.class_colors(3)
    assert [colors[int(lab.split()[-1])] for lab in across.data[0].node.label] == list(across.data[0].node.color)
    assert set(run.show("across", column="dense").data[0].node.color) == {"#888"}
    changed = run.show("across", column="Prediction", changed_only=True)
    assert sum(changed.data[0].link.value) == int((preds[1] != preds[2]).sum())
    # one class, by its index or by the name the page shows (found by an outside probe: a name, or an
    # index out of range, gave a bare TypeError or IndexError)
    for c in (2, "2"):
        assert sum(run.show("across", column="Prediction", true_class=c).data[0].link.value) == int((y == 2).sum())
    for bad in ("two", 3, -1, 1.0):
        with pytest.raises(ValueError, match=r"^true_class: .* is not a class; the classes are \['0', '1', '2'\]"):
            run.show("across", column="Prediction", true_class=bad)
    assert len(run.show("scores").data) == 2 * 3
    assert all(t.type == "scatter" for t in run.show("confusion").data)
    with pytest.raises(ValueError, match="view: expected one of"):
        run.show("projection3d")
    with pytest.raises(TypeError, match="show\\('scores'\\): unexpected argument 'nonsense'; this view takes no"):
        run.show("scores", nonsense=True)
    with pytest.raises(TypeError, match="unexpected argument 'colum'; this view takes column, analysis, true_class"):
        run.show("across", colum="Prediction")
    html_run = run._repr_html_()
    assert "m&lt;b&gt;" in html_run and "<b>m<b>" not in html_run  # names are text
    assert html_run.count("<tr>") == 1 + 2  # a header and one row per epoch
    assert "<td>1</td><td>activations</td><td>0.75</td>" in html_run
    assert "<td>2</td><td>activations</td><td>1</td>" in html_run
    assert "plotly" in html_run.lower() and "sankey" in html_run.lower()
    assert repr(g).startswith("FlowGraph(epoch=2")  # a graph displays as text; run.figure(e) draws it


@st.composite
def predictions(draw):
    """Labels and predictions of a held-out set, over few or very many classes."""
    n_classes = draw(st.one_of(st.integers(1, 6), st.integers(7, 60), st.just(100_000)))
    n = draw(st.integers(0, 80))
    classes = st.integers(0, n_classes - 1)
    y = draw(st.lists(classes, min_size=n, max_size=n))
    p = draw(st.lists(classes, min_size=n, max_size=n))
    return np.array(y, dtype=np.int64), np.array(p, dtype=np.int64), n_classes


@FAST
@given(predictions())
def test_confusion_cells_equal_a_direct_count(case):
    from collections import Counter

    from flowcallback.core.history import confusion_cells

    y, p, n_classes = case
    expected = Counter(zip(y.tolist(), p.tolist()))  # the straightforward reference: one tally per sample
    true, predicted, count = confusion_cells(y, p, n_classes)
    assert dict(zip(zip(true.tolist(), predicted.tolist()), count.tolist())) == expected
    assert (count > 0).all() and len(count) == len(expected) <= len(y)  # nonzero cells only: O(samples)
    keys = list(zip(true.tolist(), predicted.tolist()))
    assert keys == sorted(keys)


@FAST
@given(predictions().filter(lambda case: case[2] <= 60), st.integers(0, 30))
def test_epoch_confusion_matrix_and_totals_equal_a_direct_count(case, epoch):
    from flowcallback.core.history import epoch_confusion

    y, p, n_classes = case
    g = build_flow_graph([("d", "Dense", y)], y, p, class_names=[str(c) for c in range(n_classes)], epoch=epoch)
    c = epoch_confusion(g)
    reference = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, q in zip(y, p):
        reference[t, q] += 1
    np.testing.assert_array_equal(c.matrix(), reference)
    np.testing.assert_array_equal(c.support, reference.sum(axis=1))
    np.testing.assert_array_equal(c.predicted_total, reference.sum(axis=0))
    np.testing.assert_array_equal(c.hits, np.diag(reference))
    assert c.epoch == epoch and not c.count.flags.writeable
    # the tidy tables: with zeros every cell of the matrix, without them the nonzero ones
    dense, sparse = confusion([g]), confusion([g], zeros=False)
    assert dense["count"].tolist() == reference.reshape(-1).tolist()
    assert sparse.to_dict("list") == dense[dense["count"] > 0].reset_index(drop=True).to_dict("list")


def test_confusion_cells_refuse_classes_out_of_range():
    from flowcallback.core.history import confusion_cells

    with pytest.raises(ValueError, match=r"predictions: expected class indices in \[0, 3\)"):
        confusion_cells([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="labels: expected class indices"):
        confusion_cells([-1], [0], 3)
    with pytest.raises(ValueError, match="n_classes: expected a positive integer"):
        confusion_cells([0], [0], 0)
    with pytest.raises(ValueError, match=r"predictions: expected shape \(2,\)"):
        confusion_cells([0, 1], [0], 3)


def test_confusion_over_training_reads_counted_confusions_as_it_reads_graphs():
    from flowcallback.core.history import confusion_over_training, epoch_confusion

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    graphs = [build_flow_graph([("d", "Dense", y)], y, np.where(rng.random(200) < 0.7, y, rng.integers(0, 7, 200)),
                               epoch=e) for e in (3, 1, 2)]
    from_graphs = confusion_over_training(graphs, min_share=0.05, max_cells=5)
    assert from_graphs == confusion_over_training([epoch_confusion(g) for g in graphs], min_share=0.05, max_cells=5)
    assert from_graphs["epochs"] == [1, 2, 3] and len(from_graphs["cells"]) == 5
    by_epoch = {g.epoch: g for g in graphs}
    for cell in from_graphs["cells"]:  # each kept cell's counts, epoch by epoch, from the samples
        assert cell["counts"] == [int(((by_epoch[e].labels == cell["true"]) &
                                       (by_epoch[e].predictions == cell["predicted"])).sum()) for e in (1, 2, 3)]


def test_many_classes_cost_samples_not_classes_squared():
    """100,000 classes, 500 samples: counted and summarised without a classes x classes table."""
    import tracemalloc

    from flowcallback.core.history import class_scores, confusion_over_training

    rng = np.random.default_rng(1)
    k, n = 100_000, 500
    y = rng.integers(0, k, n)
    graphs = [build_flow_graph([("d", "Dense", y % 5)], y, np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n)),
                               class_names=[f"c{i}" for i in range(k)], epoch=e) for e in range(2)]
    tracemalloc.start()
    sparse = confusion(graphs, zeros=False)
    training = confusion_over_training(graphs)
    scores = class_scores(graphs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(sparse) <= 2 * n and sparse["count"].sum() == 2 * n
    assert len(scores) == 2 * k and len(training["recall"]) == k
    assert peak < 200 * 2**20  # a dense int64 table alone would take 2 * 80 GB
