"""Layer metrics as TensorBoard scalars, written without touching TensorFlow's global state.

TensorBoard's own event-file writer (the ``tensorboard`` package, a dependency of flowcallback) is
used instead of ``tf.summary``: it needs no default writer, no graph and no eager context, so it can
run in the snapshot's background thread.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Mapping

__all__ = ["write_scalars", "metric_scalars"]


def _tag(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", str(s))


def metric_scalars(metrics) -> Mapping[str, float]:
    """``{tag: value}`` from :func:`flowcallback.core.metrics.layer_metrics` rows of one epoch."""
    out = {}
    for r in metrics.itertuples(index=False):
        base = f"flowcallback/{_tag(r.analysis)}/{_tag(r.column)}"
        for name in ("nmi_classes", "ari_classes", "nmi_predictions", "ari_predictions", "purity", "n_clusters",
                     "nmi_gain"):
            out[f"{base}/{name}"] = float(getattr(r, name))
    return out


def write_scalars(log_dir, step: int, scalars: Mapping[str, float]) -> Path:
    """Append one event per scalar at ``step`` to an event file under ``log_dir/tensorboard``.

    Returns
    -------
    pathlib.Path
        The directory to point TensorBoard at.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    d = Path(log_dir) / "tensorboard"
    d.mkdir(parents=True, exist_ok=True)
    w = EventFileWriter(str(d), filename_suffix=".flowcallback")
    try:
        values = [summary_pb2.Summary.Value(tag=t, simple_value=float(v)) for t, v in scalars.items()]
        w.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))
        w.flush()
    finally:
        w.close()
    return d
