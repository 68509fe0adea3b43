"""One table of constraints checks every setting, and the callback forwards its own signature."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcallback import FlowCallback, snapshot
from flowcallback.settings import PARAMETER_CONSTRAINTS, RUN_CONSTRAINTS, SnapshotSettings, check_parameter


def test_every_setting_has_one_constraint_entry_and_a_callback_parameter_with_the_same_default():
    fields = {f.name: f for f in dataclasses.fields(SnapshotSettings)}
    assert set(PARAMETER_CONSTRAINTS) == set(fields)
    signature = inspect.signature(FlowCallback.__init__).parameters
    defaults = SnapshotSettings()
    for name in fields:
        assert name in signature, f"FlowCallback does not take the setting {name}"
        default = signature[name].default
        stored = getattr(defaults, name)
        assert (dict(stored) if name == "analyzer_kwargs" else stored) == ({} if default is None and
                                                                         name == "analyzer_kwargs" else default), name
    assert set(signature) - set(fields) == {"self", "validation_data", "log_dir", "epochs", "budget", "verbose",
                                           "display"}


@pytest.mark.parametrize("name, bad", [("k", 0), ("k", "many"), ("k", True), ("inflation", 1), ("dim", 1),
                                       ("layers", "conv1"), ("nice", 20), ("projection", "tsne"),
                                       ("projection_samples", 2), ("class_means", "yes"),
                                       ("analyzer_kwargs", {"a": {1}}),
                                       ("executor", object()), ("mcl_threads", 0), ("on_error", "ignore")])
def test_a_bad_value_names_its_argument_and_what_was_expected(name, bad):
    with pytest.raises(ValueError, match=rf"^{name}: expected .+, got "):
        SnapshotSettings(**{name: bad})
    with pytest.raises(ValueError, match=rf"^{name}: expected "):
        check_parameter(name, bad)


def test_settings_are_frozen_and_normalised():
    s = SnapshotSettings(layers=["a", "b"], class_names=[0, 1], analyzer_kwargs={"epsilon": 0.1}, inflation=3)
    assert s.layers == ("a", "b") and s.class_names == ("0", "1") and s.inflation == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.k = 3
    with pytest.raises(TypeError):
        s.analyzer_kwargs["epsilon"] = 1.0  # read-only: a running snapshot's settings cannot change


def test_umap_without_umap_learn_is_refused_at_the_door(monkeypatch):
    from flowcallback.core import project

    monkeypatch.setattr(project, "umap_available", lambda: False)
    with pytest.raises(ValueError, match=r"^projection: 'umap' needs the umap-learn package"):
        SnapshotSettings(projection="umap")
    assert SnapshotSettings(projection="auto").projection == "auto"  # PCA where UMAP is missing


def test_snapshot_refuses_an_unknown_setting_by_name(tmp_path):
    with pytest.raises(ValueError, match="^kk: not a setting of snapshot"):
        snapshot(None, ([[0.0]], [0]), tmp_path, kk=3)


# -- one rule per parameter, generated bad values ---------------------------------------------------

_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["auto", "all", "pca", "umap", "fast", "hnsw", "lrp.z", "warn", "paper"]),
    st.lists(st.one_of(st.text(max_size=3), st.integers(-2, 3), st.booleans()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.sets(st.integers(), max_size=1)), max_size=2),
    st.builds(object),
)


def _invalid(constraints):
    return _ANY_VALUE.filter(lambda v: not any(c.accepts(v) for c in constraints))


def _core_doors():
    """The functions of core/ that take a setting under their own name, with the same rule."""
    import numpy as np
    import scipy.sparse as sp

    from flowcallback.core import cluster, embed, knn, project
    from flowcallback.core.lrp import relevance
    from flowcallback.core.lrp.worker import LRPWorker

    unit = np.eye(6, 3, dtype=np.float32) + 0.1
    graph = sp.csr_matrix(np.ones((4, 4)))
    return {
        "k": ("k", lambda v: knn.knn_graph(unit, k=v)),
        "index": ("index", lambda v: knn.knn_graph(unit, k=2, index=v)),
        "inflation": ("inflation", lambda v: cluster.mcl(graph, inflation=v)),
        "mcl_backend": ("backend", lambda v: cluster.mcl(graph, backend=v)),
        "mcl_threads": ("n_threads", lambda v: cluster.mcl(graph, n_threads=v)),
        "reduce": ("reduce", lambda v: embed.Embedder("x", reduce=v)),
        "dim": ("dim", lambda v: embed.Embedder("x", dim=v)),
        "fit_samples": ("fit_samples", lambda v: embed.Embedder("x", fit_samples=v)),
        "nice": ("nice", lambda v: LRPWorker(nice=v)),
        "projection": ("method", lambda v: project.resolve_method(v)),
        "projection_samples": ("max_samples", lambda v: project.choose_samples(10, v)),
        "lrp_backend": ("backend", lambda v: relevance(None, unit, backend=v)),
        "analyzer": ("analyzer", lambda v: relevance(None, unit, analyzer=v)),
    }


@pytest.mark.parametrize("name", sorted(PARAMETER_CONSTRAINTS) + sorted(RUN_CONSTRAINTS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_constraint_refuses_a_generated_bad_value_by_name_at_the_door(name, data):
    """For each parameter, a value that no constraint of the table accepts is refused at the door
    (FlowCallback, snapshot), and by the core function that takes it, naming the argument."""
    import numpy as np

    table = PARAMETER_CONSTRAINTS if name in PARAMETER_CONSTRAINTS else RUN_CONSTRAINTS
    bad = data.draw(_invalid(table[name]), label=name)
    held_out = (np.zeros((20, 3), dtype=np.float32), np.arange(20) % 2)
    if name == "epoch":
        with pytest.raises(ValueError, match=r"^epoch: expected .+, got "):
            snapshot(None, held_out, "unused", epoch=bad)
        return
    with pytest.raises(ValueError, match=rf"^{name}: expected .+, got "):
        FlowCallback(held_out, **{name: bad})
    door = _core_doors().get(name)
    if door is not None and not (name == "projection_samples" and bad is None):  # None: choose_samples' "all"
        argument, call = door
        with pytest.raises(ValueError, match=rf"^{argument}: expected "):
            call(bad)


@pytest.mark.parametrize("name", sorted(PARAMETER_CONSTRAINTS))
def test_every_constraint_accepts_the_default(name):
    default = getattr(SnapshotSettings(), name)
    assert check_parameter(name, dict(default) if name == "analyzer_kwargs" else default) is not None or default is None


def test_the_names_label_encoders_classes_gives_are_taken_as_class_names():
    """String labels are refused with a message that says to encode them and pass LabelEncoder's
    ``classes_`` as class_names: that array (and a pandas Index) is taken (found by an outside probe,
    a teacher: the advice was refused)."""
    import numpy as np
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    words = np.array(["cat", "dog", "bird", "dog", "cat", "bird"])
    x = np.zeros((6, 4), "float32")
    with pytest.raises(ValueError, match=r"LabelEncoder's classes_"):
        FlowCallback((x, words))
    encoder = LabelEncoder().fit(words)
    for names in (encoder.classes_, pd.Index(encoder.classes_), pd.Series(encoder.classes_)):
        cb = FlowCallback((x, encoder.transform(words)), class_names=names)
        assert cb.settings.class_names == ("bird", "cat", "dog")
    for bad in (np.array([["a", "b"], ["c", "d"]]), np.array(["a", "a"]), {"a": 0}):
        with pytest.raises(ValueError, match=r"^class_names: expected None or a list of distinct names"):
            FlowCallback((x, encoder.transform(words)), class_names=bad)
