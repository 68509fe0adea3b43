"""What a relevance engine returns for one snapshot, and how pages name the engine.

A leaf module: both engines (:mod:`~flowcallback.core.lrp.engines` in this process and
:mod:`~flowcallback.core.lrp.worker` for iNNvestigate's process) return an :class:`LRPResult`, so it
lives below both of them rather than in either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Dict, List

import numpy as np

from flowcallback._version import __version__

__all__ = ["LRPResult", "engine_label"]


@dataclass(frozen=True)
class LRPResult:
    """The embedded relevance of one snapshot.

    Attributes
    ----------
    embeddings : dict of str to ndarray (n_samples, dim)
        Each reached layer's relevance maps, embedded as its activations are.
    missing : list of str
        Selected layers that no relevance reached.
    analyzer_class, analyzer_module : str
        The analyzer that computed it (``"LRPEpsilon"``, ``"innvestigate.analyzer.relevance_based"``).
    engine : str
        :func:`engine_label` of the engine (``"iNNvestigate 2.1.2"``).
    note : str
        Why the missing layers have no relevance, where the engine knows it; ``""`` otherwise.

    Examples
    --------
    >>> r = LRPResult({"dense": np.zeros((4, 2))}, [], "LRPEpsilon", "flowcallback.core.lrp.native")
    >>> r.embeddings["dense"].shape, r.missing, r.note
    ((4, 2), [], '')
    """

    embeddings: Dict[str, np.ndarray]
    missing: List[str]
    analyzer_class: str
    analyzer_module: str
    engine: str = ""
    note: str = field(default="")

    def __post_init__(self):
        object.__setattr__(self, "missing", list(self.missing))


def engine_label(backend: str) -> str:
    """How pages and ``run.json`` name the engine that made the LRP flows (with its version).

    Examples
    --------
    >>> engine_label("native").startswith("flowcallback native LRP ")
    True
    """
    if backend == "innvestigate":
        try:  # the distribution's version: innvestigate.__version__ says 2.0.1 in release 2.1.2
            return f"iNNvestigate {version('innvestigate')}"
        except PackageNotFoundError:
            return "iNNvestigate"
    return f"flowcallback native LRP {__version__}"
