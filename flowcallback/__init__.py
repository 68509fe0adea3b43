"""flowcallback: how a Keras classifier separates its classes, layer by layer, epoch by epoch.

Implements Halnaut et al., "Deep Dive into Deep Neural Networks with Flows" (IVAPP 2020) during
training: per-layer activations and iNNvestigate LRP relevance, cosine kNN graphs (FAISS),
Markov clustering, and Sankey flows (Plotly).
"""
from flowcallback._version import __version__
from flowcallback.core.flows import Column, FlowGraph
from flowcallback.exceptions import FlowCallbackError, RunFormatError, RunInUseError, SnapshotError
from flowcallback.run import Run, RunSets, load_run

__all__ = [
    "__version__",
    "FlowCallback",
    "snapshot",
    "relevance",
    "load_run",
    "Run",
    "RunSets",
    "FlowGraph",
    "Column",
    "FlowCallbackError",
    "RunFormatError",
    "RunInUseError",
    "SnapshotError",
]


def __getattr__(name):
    # TensorFlow is imported only when the callback or snapshot() is used, so that scripts that
    # only read saved runs (load_run, report) stay light.
    if name == "FlowCallback":
        from flowcallback.callback import FlowCallback

        return FlowCallback
    if name == "snapshot":
        from flowcallback.callback import snapshot

        return snapshot
    if name == "relevance":  # LRP maps for scripts: flowcallback.core.lrp.relevance
        from flowcallback.core.lrp import relevance

        return relevance
    raise AttributeError(f"module 'flowcallback' has no attribute {name!r}")
