"""One table of constraints checks every setting, and the callback forwards its own signature."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from flowcallback import FlowCallback, snapshot
from flowcallback.settings import PARAMETER_CONSTRAINTS, SnapshotSettings, check_parameter


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
    assert set(signature) - set(fields) == {"self", "validation_data", "log_dir", "epochs", "verbose"}


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
