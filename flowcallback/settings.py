"""What a snapshot is asked to do: :class:`SnapshotSettings`, checked at the door from one table.

Every setting of :class:`~flowcallback.FlowCallback` and :func:`~flowcallback.snapshot` is listed
once, in :data:`PARAMETER_CONSTRAINTS`, with what it accepts, in the manner of scikit-learn's
``_parameter_constraints``. A bad value gets a ``ValueError`` that names the argument and says
what was expected, before any model or data is looked at. The checks that need the model or the
held-out set (layer names, ``k`` against the number of samples) come later, at ``on_train_begin``.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple

from flowcallback.core import _params, _priority, cluster, embed, knn, lrp, neurons, project
from flowcallback.core.lrp import engines as lrp_engines

__all__ = ["SnapshotSettings", "PARAMETER_CONSTRAINTS", "RUN_CONSTRAINTS", "check_parameter"]


def _is_json(v) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _is_path(v) -> bool:
    return isinstance(v, (str, os.PathLike)) and bool(os.fspath(v))


def _is_epoch_list(v) -> bool:
    return (isinstance(v, (list, tuple, set, frozenset, range)) and len(v) > 0
            and all(isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 0 for e in v))


def _is_name_list(v) -> bool:
    """A 1-D sequence of distinct names: a list or tuple, or a NumPy array, pandas Index or Series of
    them (scikit-learn's ``LabelEncoder().classes_``, which the labels' error message points to)."""
    if isinstance(v, (str, bytes, Mapping, set, frozenset)) or not hasattr(v, "__len__") or getattr(v, "ndim", 1) != 1:
        return False
    try:
        names = list(v)
    except TypeError:
        return False
    return all(isinstance(c, (str, numbers.Integral)) for c in names) and len({str(c) for c in names}) == len(names)


NONE, BOOLEAN = _params.NONE, _params.BOOLEAN
_LAYER_NAMES = _params.names("a list of layer names")

#: What each setting accepts. A value is valid when one of its constraints accepts it. The
#: constraints come from the modules that own the parameters, which check them with the same
#: rule when they are called directly (``knn.NEIGHBOURS``, ``cluster.INFLATION``...).
PARAMETER_CONSTRAINTS: Mapping[str, Tuple[_params.Constraint, ...]] = MappingProxyType({
    "layers": (NONE, _params.options("all"), _LAYER_NAMES),
    "class_names": (NONE, _params.Constraint(
        _is_name_list, "a list of distinct names (strings, or integers), or a 1-D array of them")),
    "lrp": (BOOLEAN,),
    "analyzer": (lrp.ANALYZER,),
    "analyzer_kwargs": (NONE, _params.Constraint(lambda v: isinstance(v, Mapping) and _is_json(dict(v)),
                                                 "a dict of JSON-serialisable values (numbers, strings, lists)")),
    "lrp_backend": (lrp.BACKEND,),
    "k": (knn.NEIGHBOURS, knn.K_RULES),
    "inflation": (cluster.INFLATION,),
    "index": (knn.INDEX,),
    "batch_size": (_params.integer(1),),
    "reduce": (embed.REDUCE, NONE),
    "dim": (embed.DIM,),
    "fit_samples": (NONE, embed.FIT_SAMPLES),
    "mcl_backend": (cluster.BACKEND_SETTING,),
    "knn_backend": (knn.BACKEND,),
    "executor": (NONE, _params.Constraint(lambda v: isinstance(v, Executor) or callable(getattr(v, "submit", None)),
                                          "a concurrent.futures.Executor (or an object with submit())")),
    "background": (BOOLEAN,),
    "mcl_threads": (NONE, cluster.THREADS),
    "nice": (_priority.NICE,),
    "tensorboard": (BOOLEAN,),
    "on_error": (_params.options("warn", "raise"),),
    "class_means": (BOOLEAN,),
    "neuron_clusters": (_params.Constraint(
        lambda v: isinstance(v, bool) or (isinstance(v, numbers.Integral) and 1 <= v <= neurons.MAX_CLUSTERS),
        f"a bool or a number of clusters in 1..{neurons.MAX_CLUSTERS}"),),
    "projection": (project.METHOD, NONE),
    "projection_layers": (NONE, _LAYER_NAMES),
    "projection_samples": (project.SAMPLES,),
})

#: The arguments of :class:`~flowcallback.FlowCallback` and :func:`~flowcallback.snapshot` that
#: are not snapshot settings: where the run goes and when snapshots are taken.
RUN_CONSTRAINTS: Mapping[str, Tuple[_params.Constraint, ...]] = MappingProxyType({
    "log_dir": (_params.Constraint(_is_path, "a directory path"),),
    "epochs": (NONE, _params.integer(1, text="a positive int (every N epochs)"),
               _params.Constraint(_is_epoch_list, "a non-empty list of epoch numbers >= 0 (0 = before training)")),
    "verbose": (_params.options("auto"), _params.integer(0, 2)),
    "display": (NONE, _params.options("live")),
    "epoch": (_params.integer(0),),
    "budget": (_params.options("auto"), NONE, _params.Constraint(
        lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v <= 1,
        "a share of the training time in (0, 1]")),
})


def check_parameter(name: str, value):
    """Raise ``ValueError`` naming ``name`` unless one of its constraints accepts ``value``.

    Parameters
    ----------
    name : str
        A key of :data:`PARAMETER_CONSTRAINTS` or :data:`RUN_CONSTRAINTS`.
    value : object

    Returns
    -------
    object
        ``value``, unchanged.

    Examples
    --------
    >>> check_parameter("k", "auto")
    'auto'
    >>> check_parameter("k", 0)
    Traceback (most recent call last):
    ...
    ValueError: k: expected a positive integer or 'auto' or 'paper', got 0
    """
    constraints = PARAMETER_CONSTRAINTS[name] if name in PARAMETER_CONSTRAINTS else RUN_CONSTRAINTS[name]
    return _params.check(name, value, *constraints)


@dataclass(frozen=True)
class SnapshotSettings:
    """Validated settings of :class:`~flowcallback.FlowCallback` and :func:`~flowcallback.snapshot`.

    Each field is documented in :class:`~flowcallback.FlowCallback`; each is checked against
    :data:`PARAMETER_CONSTRAINTS` when the object is made. Lists are kept as tuples and
    ``analyzer_kwargs`` as a read-only mapping, so that settings cannot change under a running
    snapshot.

    Examples
    --------
    >>> s = SnapshotSettings(k=10, layers=["conv1", "dense84"])
    >>> s.k, s.layers, s.embed_options["dim"]
    (10, ('conv1', 'dense84'), 128)
    >>> SnapshotSettings(inflation=1)
    Traceback (most recent call last):
    ...
    ValueError: inflation: expected a number > 1, got 1
    """

    layers: Optional[str | Tuple[str, ...]] = None
    class_names: Optional[Tuple[str, ...]] = None
    lrp: bool = True
    analyzer: str = "lrp.epsilon"
    analyzer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    lrp_backend: str = "auto"
    k: int | str = knn.DEFAULT_K
    inflation: float = cluster.DEFAULT_INFLATION
    index: str = "auto"
    batch_size: int = 256
    reduce: Optional[str] = "pca"
    dim: int = 128
    fit_samples: Optional[int] = None
    mcl_backend: str = "auto"
    knn_backend: str = "auto"
    executor: Optional[Executor] = None
    background: bool = True
    mcl_threads: Optional[int] = None
    nice: int = 0
    tensorboard: bool = False
    on_error: str = "warn"
    class_means: bool = True
    neuron_clusters: bool | int = True
    projection: Optional[str] = "pca"
    projection_layers: Optional[Tuple[str, ...]] = None
    projection_samples: int = project.DEFAULT_MAX_SAMPLES

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_parameter(f.name, getattr(self, f.name))
        lrp_engines.check_backend(self.lrp_backend, self.analyzer)  # the native engine has fewer analyzers
        if self.projection == "umap" and not project.umap_available():
            raise ValueError(f"projection: {project.UMAP_MISSING}")
        normal = {
            "layers": self.layers if self.layers is None or self.layers == "all" else tuple(self.layers),
            "projection_layers": None if self.projection_layers is None else tuple(self.projection_layers),
            "class_names": None if self.class_names is None else tuple(str(c) for c in self.class_names),
            "analyzer_kwargs": MappingProxyType(dict(self.analyzer_kwargs or {})),
            "inflation": float(self.inflation),
            "k": self.k if isinstance(self.k, str) else int(self.k),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> SnapshotSettings:
        """The settings among ``arguments`` (a caller's ``locals()``, say); other names are ignored."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls) if f.name in arguments})

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def embed_options(self) -> dict:
        """The reduction settings, as :func:`flowcallback.core.capture.capture_activations` takes them."""
        return {"reduce": self.reduce, "dim": self.dim, "fit_samples": self.fit_samples}
