"""Project stage: a 2-D picture of a layer's samples per epoch, aligned from epoch to epoch.

The input is the reduced embedding the snapshot already computes for the kNN graph (unit rows,
``dim`` + 1 columns, :mod:`flowcallback.core.embed`), so nothing new is captured. Each epoch's
embedding is projected to two dimensions with UMAP (the ``umap-learn`` package, extra
``flowcallback[umap]``) or, where it is not installed, PCA. Consecutive epochs are then aligned
with an orthogonal Procrustes fit (rotation or reflection, one scale, a translation) of each
epoch's projection onto the previous epoch's aligned one, so that an animation over the epochs
shows points moving rather than the whole picture spinning or flipping. The first epoch is centred
and scaled to unit root-mean-square radius; the others inherit its scale.

PCA is deterministic, so two identical epochs give identical aligned projections (to rounding).
UMAP with a fixed ``random_state`` is deterministic too (and single-threaded); with
``warm_start=True`` (see :func:`project_layers`) each epoch's UMAP starts from the previous
epoch's layout, which keeps neighbourhoods in place when the layout would otherwise reorganise,
at the price of making an epoch's picture depend on the earlier ones.

UMAP costs seconds per layer and epoch where PCA costs milliseconds (``benchmarks/projection.py``):
project a fixed subsample of the held-out set (:func:`choose_samples`, the same samples at every
epoch so that they persist across frames).
"""
from __future__ import annotations

import importlib.util
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from flowcallback.core import _params

__all__ = ["METHODS", "METHOD", "SAMPLES", "umap_available", "resolve_method", "project", "align", "choose_samples",
           "project_layers", "DEFAULT_MAX_SAMPLES"]

METHODS = ("auto", "umap", "pca")
#: Default size of the projected subsample: UMAP takes a few seconds on 2,000 samples (see
#: benchmarks/results/projection.json).
DEFAULT_MAX_SAMPLES = 2000
#: The projection method.
METHOD = _params.options(*METHODS)
#: How many samples are projected: 3 at least (a 2-D layout of fewer says nothing).
SAMPLES = _params.integer(3)
#: Why ``"umap"`` is refused where umap-learn is missing (after the argument's name).
UMAP_MISSING = "'umap' needs the umap-learn package (pip install 'flowcallback[umap]'); 'pca' or 'auto' work without it"


def umap_available() -> bool:
    """Whether ``umap-learn`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("umap") is not None


def resolve_method(method: str = "auto") -> str:
    """``"umap"`` or ``"pca"``: ``"auto"`` is UMAP where umap-learn is installed, PCA elsewhere.

    Raises
    ------
    ValueError
        For an unknown method, or ``"umap"`` when umap-learn is not installed.
    """
    _params.check("method", method, METHOD)
    if method == "auto":
        return "umap" if umap_available() else "pca"
    if method == "umap" and not umap_available():
        raise ValueError(f"method: {UMAP_MISSING}")
    return method


def _pca2(x: np.ndarray) -> np.ndarray:
    """First two principal components, each with a fixed sign (its largest loading positive).

    From the eigenvectors of the features' scatter matrix (features × features, 129 × 129 for the
    default embeddings): several times faster than an SVD of the samples × features matrix.
    """
    xc = x - x.mean(axis=0)
    _, v = np.linalg.eigh(xc.T @ xc)
    vt = v[:, ::-1][:, :2].T  # the two largest, decreasing
    flip = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    vt = vt * np.where(flip == 0, 1.0, flip)[:, None]
    out = np.zeros((len(x), 2))
    out[:, : len(vt)] = xc @ vt.T
    return out


def _umap2(x: np.ndarray, init, random_state: int, n_neighbors: int, n_epochs: Optional[int]) -> np.ndarray:
    import warnings

    import umap

    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state", duplicate-point notices
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), random_state=random_state,
                            init="spectral" if init is None else np.asarray(init, dtype=np.float32), n_epochs=n_epochs)
        return reducer.fit_transform(x)


def _normalised(p: np.ndarray) -> np.ndarray:
    """Centred, unit root-mean-square radius (all-equal points stay at the origin)."""
    pc = p - p.mean(axis=0)
    r = np.sqrt((pc**2).sum(axis=1).mean())
    return pc / r if r > 0 else pc


def project(embedding, *, method: str = "auto", init=None, random_state: int = 0, n_neighbors: int = 15,
            n_epochs: Optional[int] = None) -> np.ndarray:
    """Project an embedding to two dimensions.

    Parameters
    ----------
    embedding : array-like of shape (n_samples, n_features)
        A layer's reduced embedding (the kNN stage's input), or any vectors.
    method : {"auto", "umap", "pca"}, default="auto"
        ``"auto"``: UMAP if umap-learn is installed, else PCA.
    init : array-like of shape (n_samples, 2), optional
        UMAP's starting layout (default: UMAP's spectral initialisation). Ignored by PCA.
    random_state : int, default=0
        UMAP's seed (UMAP is then deterministic and single-threaded).
    n_neighbors : int, default=15
        UMAP's neighbourhood size (clipped to ``n_samples - 1``).
    n_epochs : int, optional
        UMAP's optimisation epochs (default: UMAP's, 200 for large sets, 500 for small ones).

    Returns
    -------
    ndarray of shape (n_samples, 2), float32
        Centred, scaled to unit root-mean-square radius. Fewer than four samples, or one feature,
        are projected with PCA whatever ``method`` says (UMAP needs neighbours).

    Examples
    --------
    >>> x = np.array([[0.0, 0, 0], [2.0, 0, 0], [0.0, 1, 0], [2.0, 1, 0]])
    >>> project(x, method="pca").astype(float).round(3).tolist()
    [[-0.894, -0.447], [0.894, -0.447], [-0.894, 0.447], [0.894, 0.447]]
    """
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embedding: expected an array of shape (n_samples, n_features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embedding: holds NaN or infinite values")
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (len(x), 2) or not np.isfinite(init).all():
            raise ValueError(f"init: expected a finite array of shape ({len(x)}, 2), got shape {init.shape}")
    chosen = resolve_method(method)
    if chosen == "umap" and len(x) >= 4 and x.shape[1] > 1 and len(np.unique(x, axis=0)) >= 4:
        p = _umap2(x.astype(np.float32), init, int(random_state), int(n_neighbors), n_epochs)
    else:
        p = _pca2(x)
    return _normalised(np.asarray(p, dtype=np.float64)).astype(np.float32)


def align(projection, reference) -> np.ndarray:
    """Rotate or reflect, scale and translate ``projection`` onto ``reference`` (least squares).

    Orthogonal Procrustes (:func:`scipy.linalg.orthogonal_procrustes`) on the centred points gives
    the rotation or reflection; the scale and translation then follow in closed form. Row ``i`` of
    both arrays must be the same sample.

    Parameters
    ----------
    projection, reference : array-like of shape (n_samples, 2)

    Returns
    -------
    ndarray of shape (n_samples, 2), float32
        ``s * projection @ R + t``, as close to ``reference`` as such a map can bring it.

    Examples
    --------
    >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> moved = 3 * ref @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + 5     # rotated, scaled, shifted
    >>> align(moved, ref).round(6).tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    """
    from scipy.linalg import orthogonal_procrustes

    p = np.asarray(projection, dtype=np.float64)
    q = np.asarray(reference, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError("projection and reference: expected arrays of the same shape (n_samples, d), "
                         f"got {p.shape} and {q.shape}")
    pm, qm = p.mean(axis=0), q.mean(axis=0)
    pc, qc = p - pm, q - qm
    norm = (pc**2).sum()
    if norm == 0:  # all points equal: only the translation is defined
        return np.broadcast_to(qm, p.shape).astype(np.float32)
    r, sv_sum = orthogonal_procrustes(pc, qc)
    s = sv_sum / norm
    return (s * pc @ r + qm).astype(np.float32)


def choose_samples(n_samples: int, max_samples: Optional[int] = DEFAULT_MAX_SAMPLES, *, seed: int = 0) -> np.ndarray:
    """The samples to project: all of them, or a fixed random subset of ``max_samples``, ascending.

    The same ``n_samples``, ``max_samples`` and ``seed`` always give the same subset, so a run that
    calls this at every snapshot projects the same samples at every epoch.

    Examples
    --------
    >>> choose_samples(5).tolist()
    [0, 1, 2, 3, 4]
    >>> chosen = choose_samples(10_000, 2000)
    >>> len(chosen), chosen.tolist() == choose_samples(10_000, 2000).tolist()
    (2000, True)
    """
    _params.check("n_samples", n_samples, _params.integer(0))
    _params.check("max_samples", max_samples, _params.NONE, SAMPLES)
    if max_samples is None or n_samples <= max_samples:
        return np.arange(n_samples, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_samples, size=int(max_samples), replace=False)).astype(np.int64)


def project_layers(embeddings: Mapping[str, np.ndarray], previous: Optional[Mapping[str, np.ndarray]] = None, *,
                   method: str = "auto", samples: Optional[Sequence[int]] = None,
                   layers: Optional[Sequence[str]] = None, random_state: int = 0, warm_start: bool = False,
                   n_epochs: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Aligned 2-D projections of the layers of one epoch.

    Parameters
    ----------
    embeddings : mapping of layer name to ndarray (n_samples, n_features)
        The epoch's embeddings, as the snapshot computes them (all held-out samples).
    previous : mapping of layer name to ndarray (n_projected, 2), optional
        The previous epoch's aligned projections of the *same* samples (what this function
        returned then). A layer found there is aligned onto it; the others are only normalised.
    method : {"auto", "umap", "pca"}, default="auto"
    samples : sequence of int, optional
        Rows to project (see :func:`choose_samples`); default all.
    layers : sequence of str, optional
        Layers to project; default every layer of ``embeddings``.
    random_state : int, default=0
    warm_start : bool, default=False
        UMAP only: start each layer's optimisation from its ``previous`` layout instead of UMAP's
        spectral initialisation.
    n_epochs : int, optional
        UMAP's optimisation epochs.

    Returns
    -------
    dict of layer name to ndarray (n_projected, 2), float32

    Raises
    ------
    ValueError
        For an unknown layer, or a ``previous`` projection whose row count is not that of ``samples``
        (its samples differ: pass ``previous=None`` when the held-out set changed).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> emb = {"dense": rng.normal(size=(50, 8))}
    >>> first = project_layers(emb, method="pca")
    >>> again = project_layers(emb, first, method="pca")           # an identical epoch
    >>> bool(np.allclose(first["dense"], again["dense"], atol=1e-5))
    True
    """
    names = list(embeddings) if layers is None else list(layers)
    unknown = [n for n in names if n not in embeddings]
    if unknown:
        raise ValueError(f"layers: {unknown} have no embedding; the embeddings are of {list(embeddings)}")
    out: Dict[str, np.ndarray] = {}
    for name in names:
        x = np.asarray(embeddings[name])
        if samples is not None:
            x = x[np.asarray(samples, dtype=np.int64)]
        ref = None if previous is None else previous.get(name)
        if ref is not None:
            ref = np.asarray(ref, dtype=np.float64)
            if ref.shape != (len(x), 2):
                raise ValueError(f"previous: the projection of {name!r} has shape {ref.shape}, expected ({len(x)}, 2) "
                                 "for the same samples; pass previous=None when the held-out set changed")
        init = ref if (warm_start and ref is not None) else None
        p = project(x, method=method, init=init, random_state=random_state, n_epochs=n_epochs)
        out[name] = align(p, ref) if ref is not None else p
    return out
