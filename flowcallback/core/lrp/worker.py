"""The iNNvestigate relevance engine: a long-lived worker process, and its client.

LRP relevance from iNNvestigate 2.x needs eager execution disabled. That switch is process-wide,
so it happens in a separate worker process (:mod:`flowcallback.core.lrp._worker_main`), never in
the user's: :class:`LRPWorker` starts it and talks to it over two pipes
(:mod:`flowcallback.core.lrp._ipc`). It returns an :class:`~flowcallback.core.lrp.result.LRPResult`,
as the native engine (:class:`flowcallback.core.lrp.engines.NativeEngine`) does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import weakref
from typing import List, Optional, Sequence

import numpy as np

from flowcallback.core import _params
from flowcallback.core._priority import NICE, background_niceness
from flowcallback.core.capture import _bounded_batch
from flowcallback.core.lrp import _ipc
from flowcallback.core.lrp.result import LRPResult, engine_label

__all__ = ["model_config_without_softmax", "LRPWorker"]


def model_config_without_softmax(model) -> str:
    """The model's JSON config with the output layer's activation set to linear.

    iNNvestigate analyses the pre-softmax scores. Rebuilding from the config (then loading the
    weights) works across processes, where ``innvestigate.model_wo_softmax`` on a reloaded model
    failed with a duplicate layer name.
    """
    try:
        cfg = json.loads(model.to_json())
        inner = cfg["config"]
        layers = inner["layers"]
    except (KeyError, TypeError, NotImplementedError) as exc:  # a subclassed model: no layer graph in its config
        raise RuntimeError(f"iNNvestigate needs a Sequential or functional model; {type(model).__name__} has no layer "
                           f"graph to rebuild ({type(exc).__name__}: {exc})") from exc
    if cfg["class_name"] == "Sequential":
        out_cfg = layers[-1]
    else:
        out_name = inner["output_layers"][0][0]
        out_cfg = next(layer for layer in layers if layer["config"]["name"] == out_name)
    if out_cfg["class_name"] == "Softmax":
        out_cfg["class_name"] = "Activation"
        out_cfg["config"] = {"name": out_cfg["config"]["name"], "activation": "linear", "trainable": True}
    elif "activation" in out_cfg["config"]:
        out_cfg["config"]["activation"] = "linear"
    return json.dumps(cfg)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


class LRPWorker:
    """A long-lived process running iNNvestigate with eager execution disabled.

    Parameters
    ----------
    analyzer : str, default="lrp.epsilon"
        Name of any iNNvestigate LRP analyzer (``"lrp.z"``, ``"lrp.alpha_1_beta_0"``...).
    analyzer_kwargs : dict, optional
        Extra keyword arguments for ``innvestigate.create_analyzer`` (JSON-serialisable).
    log_path : str, optional
        File for the worker's stderr (TensorFlow's messages). Default: a temporary file.
    nice : int, default=0
        Niceness added (Linux) to that of the training process's main thread for the worker
        process, so that it yields the CPU to training (see ``flowcallback.core._priority``).

    Examples
    --------
    The worker needs iNNvestigate (the Python <= 3.11, TensorFlow < 2.15 stack), so the example is
    not run:

    >>> with LRPWorker() as w:                          # doctest: +SKIP
    ...     w.start(model, ["conv1", "dense"], x_val)
    ...     result = w.analyze(model)
    """

    def __init__(self, analyzer: str = "lrp.epsilon", analyzer_kwargs: Optional[dict] = None,
                 log_path: Optional[str] = None, nice: int = 0):
        if not isinstance(analyzer, str) or not analyzer.startswith("lrp"):
            raise ValueError("analyzer: expected the name of an iNNvestigate LRP analyzer such as 'lrp.epsilon', "
                             f"got {analyzer!r}")
        self.analyzer = analyzer
        self.analyzer_kwargs = dict(analyzer_kwargs or {})
        self.log_path = log_path
        self.nice = int(_params.check("nice", nice, NICE))
        self._proc: Optional[subprocess.Popen] = None
        self._r = self._w = None
        self._log = None
        self.analyzers: List[str] = []

    # -- process management --------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the worker process runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        """The worker process's id while it runs, else None."""
        return self._proc.pid if self.alive else None

    def _spawn(self):
        p_read, c_write = os.pipe()
        c_read, p_write = os.pipe()
        if self.log_path:
            self._log = open(self.log_path, "ab")
        else:
            self._log = tempfile.TemporaryFile()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "flowcallback.core.lrp._worker_main", str(c_read), str(c_write), str(os.getpid()),
             str(background_niceness(self.nice) if self.nice else 0)],
            pass_fds=(c_read, c_write),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            close_fds=True,
        )
        os.close(c_read)
        os.close(c_write)
        self._r = os.fdopen(p_read, "rb")
        self._w = os.fdopen(p_write, "wb")
        # If fit raises (Keras then skips on_train_end) or the interpreter exits, the worker must
        # not outlive us: kill it when this object is collected or at exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _kill, self._proc)

    def _log_tail(self, n: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            return self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def _call(self, header: dict, arrays=()):
        if not self.alive:
            tail = f"; its log ends with:\n{self._log_tail()}" if self._log else ""
            raise RuntimeError("the LRP worker is not running" + tail)
        try:
            _ipc.send(self._w, header, arrays)
            reply, out = _ipc.recv(self._r)
        except (EOFError, BrokenPipeError, OSError) as exc:
            code = self._proc.poll() if self._proc else None
            raise RuntimeError(f"the LRP worker died (exit code {code}): {exc}; "
                               f"its log ends with:\n{self._log_tail()}") from exc
        if not reply.get("ok"):
            raise RuntimeError(f"iNNvestigate failed in the LRP worker: {reply.get('error')}\n"
                               f"{reply.get('traceback', '')}")
        return reply, out

    def start(self, model, layer_names: Sequence[str], x, *, batch_size: int = 256,
              embed_options: Optional[dict] = None) -> None:
        """Start the process and send it the model's architecture and the held-out inputs.

        Raises
        ------
        ValueError
            If ``analyzer`` is not an iNNvestigate LRP analyzer.
        RuntimeError
            If the worker cannot start.
        """
        if not self.alive:
            self._spawn()
        try:
            reply, _ = self._call(
                {
                    "cmd": "init",
                    "model_json": model_config_without_softmax(model),
                    "layers": list(layer_names),
                    "analyzer": self.analyzer,
                    "analyzer_kwargs": self.analyzer_kwargs,
                    "batch_size": _bounded_batch(model, layer_names, int(batch_size)),
                    "embed_options": dict(embed_options or {}),
                },
                [np.asarray(x, dtype=np.float32)] + [np.asarray(w) for w in model.get_weights()],
            )
        except RuntimeError as exc:
            self.close()
            if "analyzer: expected" in str(exc):
                prefix = "iNNvestigate failed in the LRP worker: ValueError: "
                raise ValueError(str(exc).split("\n")[0].replace(prefix, "")) from None
            raise
        self.analyzers = reply["analyzers"]

    def analyze(self, model_or_weights, *, class_means=None) -> LRPResult:
        """Relevance of every selected layer, for a model's current weights (or a list of weights).

        Passing the weights (``model.get_weights()``) lets another thread run the analysis while
        the model keeps training. ``class_means`` is accepted for the interface of
        :meth:`flowcallback.core.lrp.engines.NativeEngine.analyze` but left untouched: the raw
        relevance maps stay in the worker process, so the iNNvestigate engine gives no relevance
        class means.
        """
        src = model_or_weights
        weights = [np.asarray(w) for w in (src.get_weights() if hasattr(src, "get_weights") else src)]
        reply, arrays = self._call({"cmd": "analyze"}, weights)
        return LRPResult(dict(zip(reply["layers"], arrays)), reply["missing"], reply["analyzer_class"], reply["module"],
                         engine=engine_label("innvestigate"))

    def kill(self) -> None:
        """Kill the process now, without touching the pipes (safe while another thread waits on them)."""
        proc = self._proc
        if proc is not None:
            _kill(proc)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the process (politely, then by force) and release its pipes."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    _ipc.send(self._w, {"cmd": "close"})
                except (OSError, ValueError):
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (self._r, self._w, self._log):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._r = self._w = self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # last resort; close() is the documented way
        try:
            self.close(timeout=1.0)
        except Exception:
            pass
