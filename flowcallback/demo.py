"""The demo: a LeNet5-style CNN learns scikit-learn's bundled digits, with the callback on.

The digits (1,797 8x8 images, shipped inside scikit-learn) need no download, so the demo runs
offline. It trains a few epochs and writes one Sankey page per epoch plus the untrained start.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_digits_split", "lenet5_digits", "run_demo", "tiny_run"]


def load_digits_split(test_size: float = 0.25, seed: int = 0):
    """Digits as (x_train, y_train), (x_test, y_test), images scaled to [0, 1] with a channel axis."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return (x_tr, y_tr), (x_te, y_te)


def lenet5_digits(input_shape=(8, 8, 1), n_classes: int = 10, seed: int = 0):
    """A LeNet5-style CNN (two conv/pool stages, dense 120 and 84) sized for 8x8 digits."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input(input_shape),
            layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="dense120"),
            layers.Dense(84, activation="relu", name="dense84"),
            layers.Dense(n_classes, activation="softmax", name="dense10"),
        ],
        name="lenet5_digits",
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def tiny_run(log_dir=None) -> Path:
    """A run of two epochs (0 and 1) of one Dense layer and four samples, written without TensorFlow.

    For examples and quick checks of the API: ``run.json`` and the graphs are what the callback
    writes, on made-up clusters. ``log_dir`` defaults to a new temporary directory.

    Examples
    --------
    >>> import shutil
    >>> from flowcallback import load_run
    >>> run = load_run(tiny_run())
    >>> run.epochs, run.class_names
    ([0, 1], ['a', 'b'])
    >>> shutil.rmtree(run.path)
    """
    import tempfile

    log_dir = Path(tempfile.mkdtemp() if log_dir is None else log_dir)
    return _tiny(log_dir, ((0, [0, 1, 0, 1]), (1, [0, 0, 1, 1])))


def _tiny(log_dir: Path, clusters_by_epoch) -> Path:
    import numpy as np

    from flowcallback.core import store
    from flowcallback.core.flows import build_flow_graph

    log_dir.mkdir(parents=True, exist_ok=True)
    store.write_run_info(log_dir, {
        "flowcallback_version": "0", "model": {"name": "demo", "fingerprint": "0"}, "class_names": ["a", "b"],
        "analyses": ["activations"], "layers": [{"name": "dense", "type": "Dense"}], "config": {"n_samples": 4}})
    for epoch, clusters in clusters_by_epoch:
        g = build_flow_graph([("dense", "Dense", np.array(clusters))], [0, 0, 1, 1], [0, 1, 1, 1],
                             class_names=["a", "b"], epoch=epoch)
        store.save_epoch(log_dir, {"activations": g})
    return log_dir


def tiny_sets_run(log_dir=None) -> Path:
    """A run of two held-out sets, ``clean`` (as :func:`tiny_run`) and ``shuffled`` (whose epoch-1
    clusters cut across the classes), written without TensorFlow as the callback writes several sets.

    Examples
    --------
    >>> import shutil
    >>> from flowcallback import load_run
    >>> run = load_run(tiny_sets_run())
    >>> run.names
    ['clean', 'shuffled']
    >>> shutil.rmtree(run.path)
    """
    import tempfile

    from flowcallback.core import store

    log_dir = Path(tempfile.mkdtemp() if log_dir is None else log_dir)
    _tiny(log_dir / "clean", ((0, [0, 1, 0, 1]), (1, [0, 0, 1, 1])))
    _tiny(log_dir / "shuffled", ((0, [0, 1, 0, 1]), (1, [0, 1, 0, 1])))
    store.write_sets_info(log_dir, store.sets_info(["clean", "shuffled"], model_name="demo",
                                                   samples={"clean": 4, "shuffled": 4}))
    return log_dir


def run_demo(log_dir: str = "flows/demo", epochs: int = 4, lrp: bool = True, verbose: int = 1) -> Path:
    """Train the demo model with :class:`~flowcallback.FlowCallback` and return the run directory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from flowcallback import FlowCallback

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    model = lenet5_digits()
    # budget=None: a page for every epoch; the digits' epochs are shorter than a snapshot, so the
    # default time budget would take the first and the last only
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=lrp, class_names=[str(i) for i in range(10)], budget=None)
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, verbose=verbose, callbacks=[cb])
    return Path(log_dir)
