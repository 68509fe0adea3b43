"""Embed stage: per-sample maps to unit vectors whose inner product is cosine similarity.

Each sample's map (any shape) is flattened, as in the paper's ``buildSimilarityMatrix``, and
L2-normalised. An all-zero map (a dead ReLU layer, say) has no direction, so cosine similarity is
undefined for it; instead of dividing by zero, every embedding gets one extra coordinate that is 1
for an all-zero map and 0 otherwise. All-zero maps are then identical to each other (similarity 1)
and orthogonal to every other sample (similarity 0), so they end up in one cluster of their own.

Normalisation is row-wise, so a layer can be embedded batch by batch (:class:`Embedder`) without
ever holding its raw maps for the whole held-out set.
"""
from __future__ import annotations

from typing import List

import numpy as np

__all__ = ["embed", "Embedder"]

_TINY = np.finfo(np.float32).tiny


def embed(maps, *, name: str = "maps") -> np.ndarray:
    """Flatten and L2-normalise per-sample maps.

    Parameters
    ----------
    maps : array-like of shape (n_samples, ...)
        One map per sample (activations or relevance), of any trailing shape.
    name : str, default="maps"
        Used in error messages (the layer name, for instance).

    Returns
    -------
    ndarray of shape (n_samples, n_features + 1), float32
        Unit-norm rows. The last coordinate is 1 exactly for all-zero maps.

    Raises
    ------
    ValueError
        If ``maps`` has no sample axis or holds NaN or infinite values.

    Examples
    --------
    >>> import numpy as np
    >>> v = embed(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> v.astype(float).round(2).tolist()
    [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]
    """
    x = np.asarray(maps)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected an array of shape (n_samples, ...), got shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(x), axis=1)))
        raise ValueError(
            f"{name}: {bad} sample(s) have NaN or infinite values; cosine similarity is undefined "
            "for them (is the model diverging?)"
        )
    # In float64: squaring float32 values overflows above ~1e19 and underflows below ~1e-19,
    # which gave zero (non-unit) rows for large maps and wrong norms for tiny ones.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms <= _TINY
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    np.divide(x, np.where(zero, 1.0, norms)[:, None], out=out[:, :-1])
    out[:, -1] = zero
    return out


class Embedder:
    """Accumulates embeddings of one layer, batch by batch.

    Examples
    --------
    >>> import numpy as np
    >>> e = Embedder("dense")
    >>> e.add(np.ones((2, 3))); e.add(np.zeros((1, 3)))
    >>> e.result().shape
    (3, 4)
    """

    def __init__(self, name: str = "maps"):
        self.name = name
        self._parts: List[np.ndarray] = []

    def add(self, batch) -> None:
        """Embed one batch of maps and keep the result."""
        self._parts.append(embed(batch, name=self.name))

    def result(self) -> np.ndarray:
        """All embedded rows so far, in the order they were added."""
        if not self._parts:
            raise ValueError(f"{self.name}: no batch was added")
        return np.concatenate(self._parts, axis=0) if len(self._parts) > 1 else self._parts[0]
