"""Helpers shared by the benchmark scripts: data, models, memory and timing."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_MNIST = HERE.parent.parent / "shared" / "data" / "mnist.npz"


def load_mnist(path=None):
    """MNIST from a local npz (keras.datasets layout), ../shared/data/mnist.npz, or keras.datasets."""
    for p in (path, SHARED_MNIST if SHARED_MNIST.exists() else None):
        if p:
            with np.load(p, allow_pickle=False) as d:
                return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])
    import tensorflow as tf

    return tf.keras.datasets.mnist.load_data()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak_rss_mb(pid: int):
    """Peak resident memory (VmHWM) of a live process, such as the LRP worker, in MiB; None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def best_of(fn, repeat=3):
    """``(seconds, result)``: the best time of ``repeat`` calls of ``fn`` and its last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


class Timer:
    def __init__(self):
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def machine() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def write_json(name: str, doc: dict) -> Path:
    out = HERE / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(doc, machine=machine(), command=" ".join([Path(sys.executable).name] + sys.argv))
    out.write_text(json.dumps(doc, indent=1))
    return out
