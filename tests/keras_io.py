"""Layers from keras.io's tutorials, as written there (Keras 3 only: they use ``keras.ops``).

A fixture kinder than the tutorial would hide the bugs users meet, so these keep the tutorials'
omissions: ``PatchEncoder``'s ``get_config()`` leaves out ``projection_dim``.
"""
from __future__ import annotations

from keras import layers, ops


class PatchEncoder(layers.Layer):
    """keras.io's "Image classification with Vision Transformer": its get_config() leaves out
    projection_dim, so no copy of a model using it can be rebuilt from its config."""

    def __init__(self, num_patches, projection_dim):
        super().__init__()
        self.num_patches = num_patches
        self.projection = layers.Dense(units=projection_dim)
        self.position_embedding = layers.Embedding(input_dim=num_patches, output_dim=projection_dim)

    def call(self, patch):
        positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches, step=1), axis=0)
        return self.projection(patch) + self.position_embedding(positions)

    def get_config(self):
        config = super().get_config()
        config.update({"num_patches": self.num_patches})
        return config
