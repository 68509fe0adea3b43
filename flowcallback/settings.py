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
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from flowcallback.core import cluster, knn, project
from flowcallback.core.lrp import INNVESTIGATE_ANALYZERS
from flowcallback.core.lrp import engines as lrp_engines

__all__ = ["SnapshotSettings", "PARAMETER_CONSTRAINTS"]


@dataclass(frozen=True)
class _Constraint:
    """One kind of value a parameter accepts: a test and the words for the error message."""

    accepts: Callable[[Any], bool]
    text: str


def _integer(low: Optional[int] = None, high: Optional[int] = None, text: str = "") -> _Constraint:
    def accepts(v):
        return (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                and (low is None or v >= low) and (high is None or v <= high))

    return _Constraint(accepts, text or ("a positive integer" if low == 1 and high is None else f"an integer >= {low}"))


def _options(*values, text: str = "") -> _Constraint:
    shown = ", ".join(repr(v) for v in values[:-1]) + f" or {values[-1]!r}" if len(values) > 1 else repr(values[0])
    return _Constraint(lambda v: isinstance(v, str) and v in values, text or shown)


def _is_json(v) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


NONE = _Constraint(lambda v: v is None, "None")
BOOLEAN = _Constraint(lambda v: isinstance(v, bool), "True or False")
_ANALYZERS = sorted(set(lrp_engines.ANALYZERS) | set(INNVESTIGATE_ANALYZERS))

#: What each setting accepts. A value is valid when one of its constraints accepts it.
PARAMETER_CONSTRAINTS: Mapping[str, Tuple[_Constraint, ...]] = MappingProxyType({
    "layers": (NONE, _options("all"), _Constraint(lambda v: not isinstance(v, str) and isinstance(v, Sequence)
                                                  and all(isinstance(n, str) for n in v), "a list of layer names")),
    "class_names": (NONE, _Constraint(lambda v: not isinstance(v, str) and isinstance(v, Sequence)
                                      and all(isinstance(c, (str, numbers.Integral)) for c in v), "a list of strings")),
    "lrp": (BOOLEAN,),
    "analyzer": (_Constraint(lambda v: isinstance(v, str) and v in _ANALYZERS,
                             f"one of the LRP analyzers {_ANALYZERS}"),),
    "analyzer_kwargs": (NONE, _Constraint(lambda v: isinstance(v, Mapping) and _is_json(dict(v)),
                                          "a dict of JSON-serialisable values (numbers, strings, lists)")),
    "lrp_backend": (_options(*lrp_engines.BACKENDS, text=f"one of {list(lrp_engines.BACKENDS)}"),),
    "k": (_integer(1), _options("auto", "paper")),
    "inflation": (_Constraint(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
                              and 1 < v < float("inf"), "a number > 1"),),
    "index": (_options("auto", "flat", "hnsw"),),
    "batch_size": (_integer(1),),
    "reduce": (_options("pca", "random"), NONE),
    "dim": (_integer(2),),
    "fit_samples": (NONE, _integer(1)),
    "mcl_backend": (_options(*cluster.BACKENDS, text=f"one of {tuple(cluster.BACKENDS)}"),),
    "executor": (NONE, _Constraint(lambda v: isinstance(v, Executor) or callable(getattr(v, "submit", None)),
                                   "a concurrent.futures.Executor (or an object with submit())")),
    "background": (BOOLEAN,),
    "mcl_threads": (NONE, _integer(1)),
    "nice": (_integer(0, 19, "an integer from 0 (same priority as training) to 19 (lowest)"),),
    "tensorboard": (BOOLEAN,),
    "on_error": (_options("warn", "raise"),),
    "class_means": (BOOLEAN,),
    "projection": (_options(*project.METHODS), NONE),
    "projection_layers": (NONE, _Constraint(lambda v: not isinstance(v, str) and isinstance(v, Sequence)
                                            and all(isinstance(n, str) for n in v), "a list of layer names")),
    "projection_samples": (_integer(3),),
})


def check_parameter(name: str, value):
    """Raise ``ValueError`` naming ``name`` unless one of its constraints accepts ``value``.

    Examples
    --------
    >>> check_parameter("k", "auto")
    'auto'
    >>> check_parameter("k", 0)
    Traceback (most recent call last):
    ...
    ValueError: k: expected a positive integer or 'auto' or 'paper', got 0
    """
    constraints = PARAMETER_CONSTRAINTS[name]
    if not any(c.accepts(value) for c in constraints):
        expected = " or ".join(c.text for c in constraints)
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


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
    mcl_backend: str = "fast"
    executor: Optional[Executor] = None
    background: bool = True
    mcl_threads: Optional[int] = None
    nice: int = 0
    tensorboard: bool = False
    on_error: str = "warn"
    class_means: bool = True
    projection: Optional[str] = "pca"
    projection_layers: Optional[Tuple[str, ...]] = None
    projection_samples: int = project.DEFAULT_MAX_SAMPLES

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_parameter(f.name, getattr(self, f.name))
        lrp_engines.check_backend(self.lrp_backend, self.analyzer)  # the native engine has fewer analyzers
        if self.projection == "umap" and not project.umap_available():
            raise ValueError("projection: 'umap' needs the umap-learn package (pip install 'flowcallback[umap]'); "
                             "'pca', or 'auto' (UMAP where installed), work without it")
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
