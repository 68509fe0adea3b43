"""Tests of flowcallback.core.flows: flows, crossings, barycentric order and FlowGraph."""
import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowcallback.core.flows as flows_module
from flowcallback.core.flows import (
    COLUMN_KINDS,
    FLOW_COLUMNS,
    Column,
    FlowGraph,
    barycentric_order,
    build_flow_graph,
    compute_flows,
    count_crossings,
)

FAST = settings(max_examples=50, deadline=None)


# -- strategies ----------------------------------------------------------------------------------
@st.composite
def assignment_cases(draw, min_columns=2, max_columns=5, max_n=25):
    """(assignments n x m, labels n): small cluster ids, possibly with gaps (e.g. {0, 2, 5})."""
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(min_columns, max_columns))
    cols = []
    for _ in range(m):
        ids = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True))
        cols.append(draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n)))
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return np.array(cols, dtype=np.int64).T.reshape(n, m), np.array(labels, dtype=np.int64)


@st.composite
def layer_cases(draw, max_n=25):
    """(layer_clusters, labels, predictions) for build_flow_graph."""
    n = draw(st.integers(1, max_n))
    n_classes = draw(st.integers(1, 4))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    preds = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    n_layers = draw(st.integers(0, 3))
    layers = []
    for j in range(n_layers):
        k = draw(st.integers(1, 4))
        layers.append((f"layer_{j}", "Dense", np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))))
    return layers, np.array(labels), np.array(preds), n_classes


def _brute_crossings(a, orders):
    """Sample pairs whose edges cross (each crossing of two edges counts w1 * w2 sample pairs)."""
    a = np.asarray(a)
    total = 0
    for j in range(a.shape[1] - 1):
        ps = {c: i for i, c in enumerate(orders[j])}
        pt = {c: i for i, c in enumerate(orders[j + 1])}
        for s, t in itertools.permutations(range(len(a)), 2):
            if ps[a[s, j]] < ps[a[t, j]] and pt[a[s, j + 1]] > pt[a[t, j + 1]]:
                total += 1
    return total


def _ascending(a):
    return [tuple(np.unique(a[:, j]).tolist()) for j in range(a.shape[1])]


# -- compute_flows -------------------------------------------------------------------------------
def test_compute_flows_docstring_example():
    f = compute_flows(np.array([[0, 0], [0, 0], [1, 0]]), np.array([3, 3, 4]))
    assert list(f.columns) == FLOW_COLUMNS
    rows = f[["source_cluster", "target_cluster", "true_class", "count"]].values.tolist()
    assert rows == [[0, 0, 3, 2], [1, 0, 4, 1]]
    assert f["source"].tolist() == ["0", "0"] and f["target"].tolist() == ["1", "1"]


@FAST
@given(assignment_cases())
def test_flow_counts_sum_to_n_and_match_brute_force(case):
    a, y = case
    n, m = a.shape
    names = [f"c{j}" for j in range(m)]
    f = compute_flows(a, y, names)
    assert list(f.columns) == FLOW_COLUMNS
    assert (f["count"] > 0).all()
    for j in range(m - 1):
        part = f[f["source_column"] == j]
        assert (part["target_column"] == j + 1).all()
        assert (part["source"] == names[j]).all() and (part["target"] == names[j + 1]).all()
        assert part["count"].sum() == n
        expected = Counter(zip(a[:, j].tolist(), a[:, j + 1].tolist(), y.tolist()))
        got = {
            (int(r.source_cluster), int(r.target_cluster), int(r.true_class)): int(r.count)
            for r in part.itertuples(index=False)
        }
        assert len(got) == len(part), "one row per (source, target, class)"
        assert got == dict(expected)
    assert len(f) == sum(len(set(zip(a[:, j], a[:, j + 1], y))) for j in range(m - 1))


def test_compute_flows_single_column_is_empty():
    f = compute_flows(np.array([[0], [1]]), np.array([0, 1]))
    assert list(f.columns) == FLOW_COLUMNS and len(f) == 0


# -- count_crossings -----------------------------------------------------------------------------
def test_count_crossings_docstring_cases():
    a = np.array([[0, 1], [1, 0]])
    assert count_crossings(a, [(0, 1), (0, 1)]) == 1
    assert count_crossings(a, [(0, 1), (1, 0)]) == 0


def test_count_crossings_small_cases():
    # full reversal of three clusters: every pair of edges crosses
    a = np.array([[0, 2], [1, 1], [2, 0]])
    assert count_crossings(a, [(0, 1, 2), (0, 1, 2)]) == 3
    assert count_crossings(a, [(0, 1, 2), (2, 1, 0)]) == 0
    # edges are weighted by their sample counts: 2 samples 0->1 cross 3 samples 1->0
    a = np.array([[0, 1]] * 2 + [[1, 0]] * 3)
    assert count_crossings(a, [(0, 1), (0, 1)]) == 6
    # edges sharing an end never cross
    assert count_crossings(np.array([[0, 0], [0, 1], [1, 1]]), [(0, 1), (0, 1)]) == 0
    # crossings add up over column pairs
    a = np.array([[0, 1, 0], [1, 0, 1]])
    assert count_crossings(a, [(0, 1), (0, 1), (0, 1)]) == 2
    # one column: nothing to cross
    assert count_crossings(np.array([[0], [1]]), [(0, 1)]) == 0


@FAST
@given(assignment_cases(max_n=15), st.randoms(use_true_random=False))
def test_count_crossings_matches_brute_force(case, rnd):
    a, _ = case
    orders = [tuple(rnd.sample(o, len(o))) for o in _ascending(a)]
    c = count_crossings(a, orders)
    assert isinstance(c, int)
    assert c == _brute_crossings(a, orders)
    # mirroring every column (reversing all orders) keeps the crossings
    assert count_crossings(a, [o[::-1] for o in orders]) == c


# -- barycentric_order ---------------------------------------------------------------------------
@FAST
@given(assignment_cases(), st.randoms(use_true_random=False), st.booleans())
def test_barycentric_order_never_increases_crossings_and_permutes_each_column(case, rnd, shuffle):
    a, _ = case
    m = a.shape[1]
    initial = _ascending(a)
    if shuffle:
        initial = [tuple(rnd.sample(o, len(o))) for o in initial]
    fixed = {j for j in range(m) if rnd.random() < 0.3}
    orders = barycentric_order(a, initial, fixed=fixed)
    assert isinstance(orders, tuple) and len(orders) == m
    for j, (o, start) in enumerate(zip(orders, initial)):
        assert isinstance(o, tuple)
        assert sorted(o) == sorted(start), "each column stays a permutation of its clusters"
        if j in fixed:
            assert o == start
    assert count_crossings(a, orders) <= count_crossings(a, initial)


@FAST
@given(assignment_cases())
def test_barycentric_order_default_start_is_ascending(case):
    a, _ = case
    orders = barycentric_order(a)
    assert [sorted(o) for o in orders] == [list(o) for o in _ascending(a)]
    assert count_crossings(a, orders) <= count_crossings(a, _ascending(a))


def test_barycentric_order_removes_all_crossings_of_a_reversal():
    # identity order: every pair of the 3 edges crosses (weighted: 3*4 + 3*5 + 4*5 = 47)
    a = np.array([[0, 2]] * 3 + [[1, 1]] * 4 + [[2, 0]] * 5)
    start = [(0, 1, 2), (0, 1, 2)]
    assert count_crossings(a, start) == 47
    orders = barycentric_order(a, start)
    assert count_crossings(a, orders) == 0
    assert orders in (((0, 1, 2), (2, 1, 0)), ((2, 1, 0), (0, 1, 2)))
    # with the second column fixed, the first one is the column that moves
    orders = barycentric_order(a, start, fixed={1})
    assert orders == ((2, 1, 0), (0, 1, 2))
    assert count_crossings(a, orders) == 0


def test_barycentric_order_keeps_an_order_without_crossings():
    a = np.array([[0, 1], [1, 0]])
    start = [(1, 0), (0, 1)]
    assert count_crossings(a, start) == 0
    assert barycentric_order(a, start) == ((1, 0), (0, 1))


def test_barycentric_order_zero_sweeps_returns_the_start():
    a = np.array([[0, 1], [1, 0]])
    assert barycentric_order(a, [(0, 1), (0, 1)], sweeps=0) == ((0, 1), (0, 1))


# -- build_flow_graph ----------------------------------------------------------------------------
def test_build_flow_graph_docstring_example():
    g = build_flow_graph([("dense", "Dense", np.array([0, 0, 1]))], [0, 0, 1], [0, 1, 1])
    assert g.column_names == ("dense", "Prediction", "Ground truth")
    assert [c.kind for c in g.columns] == ["layer", "prediction", "ground_truth"]
    assert [c.layer_type for c in g.columns] == ["Dense", "", ""]
    assert g.class_names == ("0", "1")
    np.testing.assert_array_equal(g.assignments, [[0, 0, 0], [0, 1, 0], [1, 1, 1]])


def test_build_flow_graph_reorders_layers_but_keeps_ground_truth_in_class_order():
    # the layer's clusters are the classes in reverse: drawn in id order, every flow would cross
    y = np.repeat([0, 1, 2], [3, 4, 5])
    layer = 2 - y
    g = build_flow_graph([("conv", "Conv2D", layer)], y, y, class_names=["a", "b", "c"])
    assert g.columns[-1].order == (0, 1, 2)
    assert g.columns[-2].order == (0, 1, 2)
    assert g.columns[0].order == (2, 1, 0)
    assert g.crossings() == 0
    assert count_crossings(g.assignments, _ascending(np.asarray(g.assignments))) > 0


def test_prediction_column_keeps_class_order_even_when_a_confusion_would_uncross():
    # classes 0 and 2 swapped in the predictions: reordering Prediction as (2, 1, 0) would uncross
    # the last layer's flows, but it would draw every correct prediction of the other classes as a
    # crossing ribbon; the hidden layer moves instead
    y = np.repeat([0, 1, 2], [5, 5, 5])
    p = np.where(y == 1, 1, 2 - y)
    g = build_flow_graph([("dense", "Dense", p)], y, p)
    assert g.columns[-2].order == (0, 1, 2) and g.columns[-1].order == (0, 1, 2)
    assert g.columns[0].order == (0, 1, 2)  # the layer lines up with Prediction
    flows = g.flows
    between = flows[flows.source_column == g.column_index("Prediction")]
    pairs = set(map(tuple, between[["source_cluster", "target_cluster"]].to_numpy().tolist()))
    assert pairs == {(2, 0), (1, 1), (0, 2)}


def test_repr_is_short_and_says_what_the_graph_is():
    y = np.repeat([0, 1], 300)
    g = build_flow_graph([("dense", "Dense", y)], y, y, epoch=4, analysis="lrp", metrics={"accuracy": 0.9125})
    text = repr(g)
    assert text == ("FlowGraph(epoch=4, analysis='lrp', n_samples=600, accuracy=0.912, "
                    "clusters per column={dense: 2, Prediction: 2, Ground truth: 2})")


@FAST
@given(layer_cases())
def test_build_flow_graph_properties(case):
    layers, y, p, n_classes = case
    n = len(y)
    g = build_flow_graph(layers, y, p, epoch=3, analysis="lrp", metrics={"accuracy": 0.5})
    m = len(layers) + 2
    assert g.column_names == tuple(name for name, _, _ in layers) + ("Prediction", "Ground truth")
    assert g.n_samples == n and g.assignments.shape == (n, m)
    np.testing.assert_array_equal(g.assignments[:, -1], y)
    # Prediction and Ground truth stay in class order, so that a correct prediction is a straight band
    assert list(g.columns[-1].order) == sorted(set(np.asarray(y).tolist()))
    assert list(g.columns[-2].order) == sorted(set(np.asarray(p).tolist()))
    np.testing.assert_array_equal(g.assignments[:, -2], p)
    for j, (_, _, lab) in enumerate(layers):
        np.testing.assert_array_equal(g.assignments[:, j], lab)
    # the Ground truth column is fixed, in class order
    assert g.columns[-1].order == tuple(np.unique(y).tolist())
    for j, col in enumerate(g.columns):
        assert sorted(col.order) == np.unique(g.assignments[:, j]).tolist()
    assert g.crossings() <= count_crossings(g.assignments, _ascending(np.asarray(g.assignments)))
    assert g.crossings() == count_crossings(g.assignments, [c.order for c in g.columns])
    assert len(g.class_names) == int(max(y.max(), p.max())) + 1
    assert g.epoch == 3 and g.analysis == "lrp" and g.metrics == {"accuracy": 0.5}

    # flows: derived from the arrays, summing to n between every pair of columns
    f = g.flows
    assert f.equals(compute_flows(g.assignments, g.labels, g.column_names))
    assert (f.groupby("source_column")["count"].sum() == n).all()
    assert sorted(f["source_column"].unique()) == list(range(m - 1))

    # clusters: a partition of the samples, in display order
    for j, col in enumerate(g.columns):
        cl = g.clusters(j)
        assert list(cl) == list(col.order)
        assert g.clusters(col.name).keys() == cl.keys()
        members = np.concatenate(list(cl.values()))
        np.testing.assert_array_equal(np.sort(members), np.arange(n))
        for c, idx in cl.items():
            assert len(idx) > 0 and (g.assignments[idx, j] == c).all()

        # class counts: rows follow the display order, row sums are cluster sizes
        cc = g.class_counts(col.name)
        assert cc.shape == (len(col.order), len(g.class_names))
        assert cc.sum() == n
        np.testing.assert_array_equal(cc.sum(axis=1), [len(cl[c]) for c in col.order])
        np.testing.assert_array_equal(cc.sum(axis=0), np.bincount(y, minlength=len(g.class_names)))
    gt = g.class_counts("Ground truth")
    for row, c in zip(gt, g.columns[-1].order):
        assert row[c] == row.sum(), "a Ground truth cluster holds one class"

    # path of every sample
    for i in range(n):
        path = g.path(i)
        assert list(path) == list(g.column_names)
        assert list(path.values()) == g.assignments[i].tolist()
        assert path["Ground truth"] == y[i] and path["Prediction"] == p[i]

    # networkx view
    digraph = g.to_networkx()
    assert digraph.number_of_nodes() == sum(len(c.order) for c in g.columns)
    for j, col in enumerate(g.columns):
        nodes = [(col.name, c) for c in col.order]
        assert sum(digraph.nodes[v]["size"] for v in nodes) == n
        assert [digraph.nodes[v]["position"] for v in nodes] == list(range(len(nodes)))
        assert all(digraph.nodes[v]["column"] == j for v in nodes)
    for j in range(m - 1):
        src = g.column_names[j]
        edges = [d for u, v, d in digraph.edges(data=True) if u[0] == src]
        assert sum(d["count"] for d in edges) == n
    assert digraph.number_of_edges() == len(f)
    assert digraph.graph == {"epoch": 3, "analysis": "lrp"}


def test_build_flow_graph_class_names_and_notes():
    g = build_flow_graph(
        [("d1", "Dense", [0, 1, 1])],
        [0, 1, 1],
        [0, 1, 0],
        class_names=["cat", "dog", "bird"],
        notes={"d1": "LRP fell back to activations", "Prediction": "argmax"},
    )
    assert g.class_names == ("cat", "dog", "bird")
    assert g.columns[0].note == "LRP fell back to activations"
    assert g.columns[1].note == "argmax" and g.columns[2].note == ""
    assert g.class_counts("Ground truth").shape == (2, 3)


def test_build_flow_graph_without_layers():
    g = build_flow_graph([], [1, 0, 1], [1, 1, 0])
    assert g.column_names == ("Prediction", "Ground truth")
    assert g.columns[-1].order == (0, 1)
    assert g.flows["count"].sum() == 3


def test_build_flow_graph_errors():
    with pytest.raises(ValueError, match="predictions"):
        build_flow_graph([], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="dense"):
        build_flow_graph([("dense", "Dense", [0, 1])], [0, 1, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="class_names"):
        build_flow_graph([], [0, 1, 2], [0, 1, 1], class_names=["a", "b"])


# -- FlowGraph -----------------------------------------------------------------------------------
def _small_graph(**kw):
    layer = np.array([1, 1, 0, 0, 2])
    return build_flow_graph([("dense", "Dense", layer)], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], **kw)


def test_flowgraph_arrays_are_read_only_copies():
    layer = np.array([1, 1, 0, 0, 2])
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0])
    g = build_flow_graph([("dense", "Dense", layer)], y, p)
    for arr in (g.assignments, g.labels, g.predictions):
        assert not arr.flags.writeable
        assert arr.dtype == np.int32
        with pytest.raises(ValueError):
            arr[0] = 7
    # changing the caller's arrays does not change the graph
    layer[:] = 9
    y[:] = 9
    p[:] = 9
    np.testing.assert_array_equal(g.labels, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(g.assignments[:, 0], [1, 1, 0, 0, 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.epoch = 2


def test_flowgraph_direct_construction_copies_and_freezes():
    a = np.array([[0, 0], [1, 1]])
    cols = [Column("Prediction", "prediction", "", (0, 1)), Column("Ground truth", "ground_truth", "", (0, 1))]
    g = FlowGraph(0, "activations", cols, a, [0, 1], [0, 1], ["x", "y"])
    a[0, 0] = 5
    assert g.assignments[0, 0] == 0 and not g.assignments.flags.writeable
    assert isinstance(g.columns, tuple) and g.metrics == {}


def test_flowgraph_path_and_index_errors():
    g = _small_graph()
    assert g.path(4) == {"dense": 2, "Prediction": 0, "Ground truth": 1}
    assert g.path(np.int64(0)) == {"dense": 1, "Prediction": 0, "Ground truth": 0}
    for bad in (-1, 5):
        with pytest.raises(IndexError):
            g.path(bad)
    with pytest.raises(KeyError, match="nope"):
        g.clusters("nope")
    assert g.column_index("Ground truth") == 2


def test_flowgraph_class_counts_example():
    g = _small_graph(class_names=["neg", "pos"])
    order = g.columns[0].order
    expected = {0: [0, 2], 1: [2, 0], 2: [0, 1]}
    np.testing.assert_array_equal(g.class_counts("dense"), [expected[c] for c in order])
    np.testing.assert_array_equal(g.class_counts("Ground truth"), [[2, 0], [0, 3]])


def test_flowgraph_equals():
    g = _small_graph(metrics={"k": 3})
    same = _small_graph(metrics={"k": 3})
    assert g.equals(g) and g.equals(same) and same.equals(g)
    assert not g.equals(_small_graph(metrics={"k": 4}))
    assert not g.equals(_small_graph(metrics={"k": 3}, epoch=1))
    assert not g.equals(_small_graph(metrics={"k": 3}, analysis="lrp"))
    assert not g.equals(_small_graph(metrics={"k": 3}, class_names=["a", "b"]))
    other = build_flow_graph([("dense", "Dense", [1, 1, 0, 0, 0])], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], metrics={"k": 3})
    assert not g.equals(other)
    assert not g.equals("not a graph")


def test_flowgraph_validation():
    cols = [Column("Prediction", "prediction", "", (0, 1)), Column("Ground truth", "ground_truth", "", (0, 1))]
    with pytest.raises(ValueError, match="assignments"):
        FlowGraph(0, "a", cols, np.zeros((3, 3)), [0, 1, 1], [0, 1, 1], ["x", "y"])
    with pytest.raises(ValueError, match="predictions"):
        FlowGraph(0, "a", cols, np.zeros((3, 2)), [0, 1, 1], [0, 1], ["x", "y"])
    bad_order = [Column("Prediction", "prediction", "", (0,)), cols[1]]
    with pytest.raises(ValueError, match=r"columns\[0\]"):
        FlowGraph(0, "a", bad_order, np.array([[0, 0], [1, 1]]), [0, 1], [0, 1], ["x", "y"])
    dup_order = [Column("Prediction", "prediction", "", (0, 1, 1)), cols[1]]
    with pytest.raises(ValueError, match=r"columns\[0\]"):
        FlowGraph(0, "a", dup_order, np.array([[0, 0], [1, 1]]), [0, 1], [0, 1], ["x", "y"])


def test_column_kind_validation_and_order_normalisation():
    # the kinds a Column accepts are those the saved format allows, and a graph uses each of them
    schema = json.loads((Path(flows_module.__file__).parent.parent / "schemas" / "flowgraph-1.json").read_text())
    assert list(COLUMN_KINDS) == schema["properties"]["columns"]["items"]["properties"]["kind"]["enum"]
    g = build_flow_graph([("d", "Dense", [0, 1])], [0, 1], [0, 1])
    assert [c.kind for c in g.columns] == ["layer", "prediction", "ground_truth"]
    for kind in COLUMN_KINDS:
        assert Column("x", kind, "", (0,)).kind == kind
    with pytest.raises(ValueError, match="kind"):
        Column("x", "hidden", "Dense", (0,))
    c = Column("x", "layer", "Dense", np.array([2, 0, 1]))
    assert c.order == (2, 0, 1) and all(type(v) is int for v in c.order)


# -- drawing: small clusters grouped ---------------------------------------------------------------
@st.composite
def many_cluster_cases(draw):
    """(graph, max_clusters): a layer column of up to 40 clusters of uneven sizes."""
    n = draw(st.integers(2, 120))
    n_layers = draw(st.integers(1, 3))
    layers = []
    for j in range(n_layers):
        k = draw(st.integers(1, 40))
        ids = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
        layers.append((f"layer_{j}", "Conv2D", np.array(ids) * draw(st.integers(1, 3))))  # gaps in the ids
    labels = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    preds = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    return build_flow_graph(layers, labels, preds, class_names=[str(c) for c in range(10)]), draw(st.integers(2, 12))


@FAST
@given(many_cluster_cases())
def test_grouping_small_clusters_bounds_each_layer_column_and_conserves_every_sample(case):
    g, cap = case
    drawn, groups = flows_module.group_small_clusters(g, cap)
    grouped = {gr.column: gr for gr in groups}
    assert drawn.n_samples == g.n_samples
    assert np.array_equal(drawn.labels, g.labels) and np.array_equal(drawn.predictions, g.predictions)
    for j, (before, after) in enumerate(zip(g.columns, drawn.columns)):
        if j not in grouped:  # untouched: the same clusters, the same order
            assert after == before and np.array_equal(drawn.assignments[:, j], g.assignments[:, j])
            assert before.kind != "layer" or len(before.order) <= cap
            continue
        gr = grouped[j]
        assert before.kind == "layer" and len(before.order) > cap and len(after.order) == cap
        sizes = {c: int(np.sum(g.assignments[:, j] == c)) for c in before.order}
        kept = set(after.order) - {gr.cluster}
        # the kept clusters are the largest, with the same samples; the group holds all the others
        assert gr.cluster not in before.order and set(gr.members) == set(before.order) - kept
        assert min(sizes[c] for c in kept) >= max(sizes[c] for c in gr.members) == gr.largest
        for c in kept:
            assert np.array_equal(drawn.assignments[:, j] == c, g.assignments[:, j] == c)
        assert np.array_equal(drawn.assignments[:, j] == gr.cluster, np.isin(g.assignments[:, j], gr.members))
        assert gr.samples == sum(sizes[c] for c in gr.members)
    # the flows conserve the sample count between every pair of columns
    totals = drawn.flows.groupby("source_column")["count"].sum()
    assert (totals == g.n_samples).all() and len(totals) == len(g.columns) - 1


def test_grouping_is_the_identity_below_the_cap_and_checks_it():
    g = _small_graph()
    assert flows_module.group_small_clusters(g) == (g, ())
    assert flows_module.group_small_clusters(g, None) == (g, ())
    for bad in (1, 0, 2.5, True, "30"):
        with pytest.raises(ValueError, match="max_clusters: expected an integer >= 2 or None"):
            flows_module.group_small_clusters(g, bad)


@FAST
@given(layer_cases())
def test_the_samples_of_every_flow_are_its_count(case):
    """``FlowGraph.samples``: every index of a flow (the page lists five), for an outside probe who
    hunted mislabeled samples ("labelled 8, predicted 3")."""
    layers, y, p, _ = case
    g = build_flow_graph(layers, y, p)
    for r in g.flows.itertuples():  # columns by index here, by name below
        got = g.samples({r.source_column: r.source_cluster, r.target_column: r.target_cluster}, true_class=r.true_class)
        assert len(got) == r.count
        j, k = r.source_column, r.target_column
        assert (g.assignments[got, j] == r.source_cluster).all() and (g.assignments[got, k] == r.target_cluster).all()
    for c in set(y.tolist()):
        np.testing.assert_array_equal(g.samples({"Ground truth": c}), np.flatnonzero(y == c))
    with pytest.raises(ValueError, match=r"^where: 99 is not a cluster of column 'Prediction'"):
        g.samples({"Prediction": 99})
    with pytest.raises(ValueError, match=r"^true_class: expected a class index"):
        g.samples({}, true_class=-1)
