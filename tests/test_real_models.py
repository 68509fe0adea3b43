"""The models people train (issue 18): keras.applications networks built with ``weights=None``, a
Keras-tutorial CNN with augmentation and rescaling layers fed by ``tf.data``, and a small
Transformer, each trained for an epoch with the callback's defaults.

For each: LRP flows exist, the default columns number at most 24, flows conserve the sample count,
and the run loads back.
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = tf.keras
layers = keras.layers

from flowcallback import FlowCallback, load_run  # noqa: E402
from flowcallback.core import capture  # noqa: E402

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def images():
    """scikit-learn's digits at 32 x 32 x 3, values 0-255 (uint8) as images come from disk."""
    from flowcallback.demo import load_digits_split

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()

    def to_rgb(x):
        big = tf.image.resize(x, (32, 32)).numpy()
        return np.clip(np.repeat(big, 3, axis=-1) * 255, 0, 255).astype("uint8")

    return (to_rgb(x_tr[:192]), y_tr[:192]), (to_rgb(x_te[:100]), y_te[:100])


def tutorial_cnn():
    """As Keras's image classification tutorials write it: augmentation as a nested Sequential,
    Rescaling(1/255), default layer names."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1)])
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        augmentation,
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def transformer():
    """A small Transformer classifier over the image rows (32 tokens of 96 values)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = layers.Rescaling(1.0 / 255)(inputs)
    h = layers.Reshape((32, 96))(h)
    h = layers.Dense(32)(h)
    for _ in range(2):
        a = layers.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)
        h = layers.LayerNormalization()(layers.Add()([h, a]))
        f = layers.Dense(64, activation="gelu")(h)
        f = layers.Dense(32)(f)
        h = layers.LayerNormalization()(layers.Add()([h, f]))
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(h))


def application(name):
    def build():
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)

    return build


MODELS = {
    "ResNet50": application("ResNet50"),
    "MobileNetV2": application("MobileNetV2"),
    "EfficientNetB0": application("EfficientNetB0"),
    "DenseNet121": application("DenseNet121"),
    "ConvNeXtTiny": application("ConvNeXtTiny"),
    "tutorial CNN": tutorial_cnn,
    "Transformer": transformer,
}


def conserved(g):
    sums = g.flows.groupby("source_column")["count"].sum()
    return len(sums) == len(g.columns) - 1 and (sums == g.n_samples).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_gets_lrp_flows_over_legible_columns(tmp_path, images, name):
    (x_tr, y_tr), (x_te, y_te) = images
    model = MODELS[name]()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log_dir = tmp_path / "run"
    if name == "tutorial CNN":  # tf.data, as the tutorials feed it
        validation = tf.data.Dataset.from_tensor_slices((x_te, y_te)).batch(32)
        train = tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).batch(32)
        cb = FlowCallback(validation, log_dir=log_dir, epochs=[1], verbose=0)
        model.fit(train, epochs=1, verbose=0, callbacks=[cb])
    else:
        cb = FlowCallback((x_te, y_te), log_dir=log_dir, epochs=[1], verbose=0)
        model.fit(x_tr, y_tr, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    run = load_run(log_dir)
    assert run.epochs == [1] and run.analyses(1) == ["activations", "lrp"]
    assert 1 not in run.errors()
    columns = capture.choose_columns(model)
    activations, lrp = run.epoch(1), run.epoch(1, "lrp")
    layer_columns = [c.name for c in activations.columns if c.kind == "layer"]
    assert layer_columns == list(columns.names) and len(layer_columns) <= capture.MAX_COLUMNS
    assert [c.name for c in lrp.columns if c.kind == "layer"] == layer_columns  # relevance reached every column
    assert conserved(activations) and conserved(lrp)
    assert not any(n.startswith("LRP relevance stops") for n in lrp.notes)
    if columns.rule == "block outputs":
        assert any(n.startswith("Columns: ") for n in activations.notes)
        assert run.info["columns"]["rule"] == "block outputs"
    assert len(layer_columns) >= min(columns.eligible, 8)
    joins = [c for c in activations.columns if c.note.startswith("Keras operation")]
    if name == "ConvNeXtTiny":  # its blocks end in `inputs + x` (Keras 3): those are its block outputs
        assert keras.__version__.startswith("2") or len(joins) >= 12
        assert all(c.layer_type == "Add" for c in joins)
