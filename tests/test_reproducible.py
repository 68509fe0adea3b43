"""A fixed model's run directory is the same, file by file, as the one recorded in tests/data/.

The model has small integer weights, the held-out set small integer inputs and the output no
softmax, so that every activation is exact in float32 whatever the order of summation (and
whatever the CPU: a softmax's exponential, and sums of non-integers, round differently where
TensorFlow uses oneDNN, on CPUs with AVX-512, and where it does not). LRP relevance is not exact
(its rules divide), so the per-class mean relevance of each unit is recorded as values and
compared to within 1e-5 of each layer's largest; everything else is compared bit for bit, the
LRP flows included. Two snapshots (the weights, then
the weights changed) go through the whole analysis: reduction, kNN, MCL, stable cluster ids,
flows, native LRP, files. The data files (``run.json``, each graph's JSON and the arrays inside
each ``.npz``, compared uncompressed since zip members carry their write time) must equal the
recorded digests, on both stacks (the layer metrics to 10 decimals). ``run.json`` is recorded per
Keras major version, as it holds a hash of the model's configuration, which Keras 2 and 3 write
differently. Pages are left out: they
embed the installed Plotly's template.

A change that alters the files on purpose regenerates the record with::

    FLOWCALLBACK_REGENERATE_GOLDEN=1 python -m pytest tests/test_reproducible.py

and says why in the CHANGELOG.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "golden_run.json"


def fixed_model():
    import tensorflow as tf

    tf.keras.backend.clear_session()  # default layer names: dense, dense_1, dense_2
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((6,)), layers.Dense(8, activation="relu"),
                                 layers.Dense(8, activation="relu"), layers.Dense(3)])
    rng = np.random.default_rng(7)
    model.set_weights([rng.integers(-2, 3, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def held_out():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, size=(90, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > x[:, 2] + x[:, 3]).astype("int64") + (x[:, 4] > 2)
    return x, y


def digests(run_dir: Path) -> dict:
    """sha256 of each data file; of each member's uncompressed bytes for an ``.npz``."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.suffix == ".npz":
            inexact = _relevance_members(path)
            with zipfile.ZipFile(path) as z:
                for name in sorted(z.namelist()):
                    if name in inexact:  # LRP class means: values, compared with a tolerance
                        with z.open(name) as f:
                            out[f"{rel}:{name}"] = np.load(f, allow_pickle=False).astype(float).round(6).tolist()
                    else:
                        out[f"{rel}:{name}"] = hashlib.sha256(z.read(name)).hexdigest()
        elif path.name == "metrics.json":  # scores from scikit-learn, whose versions differ in the last bits
            doc = json.loads(path.read_text(), parse_float=lambda v: round(float(v), 10))
            out[rel] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        elif path.suffix == ".json":
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    out[f"run.json[keras {_keras_major()}]"] = out.pop("run.json")
    return out


def _relevance_members(npz: Path) -> set:
    """The members of an epoch's views.npz that hold per-class means of LRP relevance."""
    if npz.name != "views.npz":
        return set()
    doc = json.loads(npz.with_suffix(".json").read_text())
    return {f"class_means_{i}.npy" for i, entry in enumerate(doc["class_means"]) if entry["analysis"] == "lrp"}


def _same(want, got) -> bool:
    if isinstance(want, list) or isinstance(got, list):
        if not (isinstance(want, list) and isinstance(got, list)):
            return False
        a, b = np.asarray(want, dtype=float), np.asarray(got, dtype=float)
        scale = np.nanmax(np.abs(a)) if a.size and np.isfinite(a).any() else 0.0
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=1e-5 * max(scale, 1e-12), equal_nan=True))
    return want == got


def _keras_major() -> int:
    from flowcallback.core._keras import is_keras3

    return 3 if is_keras3(fixed_model()) else 2


def write_fixed_run(log_dir: Path) -> None:
    from flowcallback import snapshot

    model = fixed_model()
    x, y = held_out()
    for epoch in (0, 1):
        if epoch == 1:
            w = model.get_weights()
            w[2] = np.roll(w[2], 1, axis=1)  # the second layer's units permuted: other clusters, same values
            model.set_weights(w)
        snapshot(model, (x, y), log_dir, epoch=epoch, k=6, verbose=0, lrp_backend="native",
                 class_names=["low", "mid", "high"])


@pytest.mark.both
def test_the_run_directory_of_a_fixed_model_is_unchanged(tmp_path):
    log_dir = tmp_path / "run"
    write_fixed_run(log_dir)
    got = digests(log_dir)
    assert any(k.endswith(".npz:assignments.npy") for k in got)
    want = json.loads(GOLDEN.read_text())
    if os.environ.get("FLOWCALLBACK_REGENERATE_GOLDEN"):
        other_stack = {k: v for k, v in want.items() if k.startswith("run.json[") and k not in got}
        GOLDEN.write_text(json.dumps({**other_stack, **got}, indent=1, sort_keys=True) + "\n")
        want = json.loads(GOLDEN.read_text())
    want = {k: v for k, v in want.items() if not k.startswith("run.json[") or k in got}
    differ = sorted(k for k in set(want) | set(got) if not _same(want.get(k), got.get(k)))
    assert not differ, f"files that differ from tests/data/golden_run.json: {differ}"
