"""The LRP worker process: runs iNNvestigate with eager execution disabled.

iNNvestigate 2.x builds its reverse graph in TensorFlow's graph mode, which must be switched on
process-wide (``tf.compat.v1.disable_eager_execution``). We never do that in the user's process:
:class:`flowcallback.core.lrp.worker.LRPWorker` starts this module as a separate Python process
(``python -m flowcallback.core.lrp._worker_main RFD WFD``) and talks to it over two pipes.

At set-up the worker rebuilds the model from its JSON config (output activation set to linear, as
iNNvestigate expects), renames the layers of that private copy (see :func:`_rename_layers`), creates
the analyzer with ``reverse_keep_tensors=True`` and builds its reverse graph on one sample, so that
any refusal is known before training starts; at each snapshot it loads the current weights into
that model and runs the analyzer batch by batch. The relevance arriving at each selected layer's
output is embedded (flattened, L2-normalised) right here, so the raw maps never cross the pipe.
"""
from __future__ import annotations

import os
import sys
import traceback


def _producers(analyzer, igraph, klayers):
    """``{(node_id, input_index): name of the layer that produced that tensor}`` for the analyzer.

    Computed once per analyzer: tracing the model's execution again in graph mode at every batch
    would add nodes to the graph each time.
    """
    _, execution_list, _ = igraph.trace_model_execution(analyzer._prepared_model)
    nodes = [e for e in execution_list if not isinstance(e[0], klayers.InputLayer)]
    return {(nid, i): x._keras_history.layer.name for nid, node in enumerate(nodes) for i, x in enumerate(node[1])}


def _rename_layers(model) -> dict:
    """Give the rebuilt model's layers names that no Keras default can take; return new -> old.

    iNNvestigate adds layers of its own (an ``Add`` where relevance from two branches meets, for
    example) with Keras's default names. Keras only knows the names it generated itself, so in a
    model rebuilt from a config whose layers kept their default names (``add``, ``conv2d``...), the
    new layer is named ``add`` again and the analyzer model is refused ("The name "add" is used
    2 times"). Only this worker's private copy is renamed; results are mapped back to the user's
    names.
    """
    renamed = {}
    for i, layer in enumerate(model.layers):
        new = f"flowcallback_layer_{i:05d}"
        renamed[new] = layer.name
        layer._name = new  # tf.keras 2.x has no public setter; the copy is ours alone
    return renamed


def _relevance_by_layer(analyzer, producers):
    """Map iNNvestigate's kept tensors ``((node_id, input_index), value)`` to producing layer names."""
    out = {}
    for key, value in analyzer._reversed_tensors:
        name = producers.get(tuple(key))
        if name is not None:
            out.setdefault(name, value)
    return out


def _exit_with_parent(parent: int, period: float = 1.0) -> None:
    """Exit when the training process is gone, even in the middle of an analysis.

    A killed parent cannot stop us, and we only notice a closed pipe when we next read it; a
    watchdog thread checks the parent's pid instead.
    """
    import threading
    import time

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(period)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv) -> int:
    rfd, wfd = int(argv[1]), int(argv[2])
    parent = int(argv[3]) if len(argv) > 3 else os.getppid()
    if len(argv) > 4 and int(argv[4]) > 0:
        # the niceness the parent asked for, set before TensorFlow starts its threads, which
        # inherit it (see flowcallback/core/_priority.py)
        from flowcallback.core._priority import lower_current_thread

        lower_current_thread(int(argv[4]))
    _exit_with_parent(parent)
    rf = os.fdopen(rfd, "rb")
    wf = os.fdopen(wfd, "wb")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np
    import tensorflow as tf

    from flowcallback.core.embed import Embedder
    from flowcallback.core.lrp import _ipc

    tf.compat.v1.disable_eager_execution()  # this process only; see the module docstring
    import innvestigate
    import innvestigate.backend.graph as igraph

    klayers = tf.keras.layers
    state = {}
    while True:
        try:
            header, arrays = _ipc.recv(rf)
        except EOFError:
            return 0
        cmd = header.get("cmd")
        try:
            if cmd == "init":
                names = sorted(n for n in innvestigate.analyzer.analyzers if n.startswith("lrp"))
                if header["analyzer"] not in names:
                    raise ValueError(f"analyzer: expected one of iNNvestigate's LRP analyzers {names}, "
                                     f"got {header['analyzer']!r}")
                state = dict(header, x=arrays[0])
                weights = arrays[1:]
                # Build the analyzer once now, so that a model iNNvestigate refuses (a Lambda layer, a
                # hidden softmax) or cannot rebuild here (a custom layer class) is known at set-up,
                # not as a failure of every epoch.
                tf.keras.backend.clear_session()
                try:
                    model = tf.keras.models.model_from_json(state["model_json"])
                except Exception as exc:
                    raise ValueError(
                        f"the LRP worker cannot rebuild the model from its config ({type(exc).__name__}: {exc}); "
                        "custom layer classes are not available to it"
                    ) from exc
                renamed = _rename_layers(model)
                analyzer = innvestigate.create_analyzer(state["analyzer"], model, reverse_keep_tensors=True,
                                                        **state.get("analyzer_kwargs", {}))
                # Build the reverse graph now, on one sample and the model's current weights (which
                # also initialises every variable of the graph): iNNvestigate builds it lazily at the
                # first analyze(), so a refusal would otherwise only show at the first snapshot.
                model.set_weights(weights)
                analyzer.analyze(state["x"][:1])
                producers = {key: renamed.get(name, name)
                             for key, name in _producers(analyzer, igraph, klayers).items()}
                # Kept for every snapshot: iNNvestigate's rules share the model's weight variables
                # (they copy layers with reuse_symbolic_tensors=True), so loading new weights into
                # the model is all a snapshot needs; the reverse graph is built and traced once.
                state.update(model=model, analyzer=analyzer, producers=producers)
                version = getattr(innvestigate, "__version__", "")
                _ipc.send(wf, {"ok": True, "analyzers": names, "innvestigate": version})
            elif cmd == "analyze":
                model, analyzer = state["model"], state["analyzer"]
                model.set_weights(arrays)
                layers = state["layers"]
                options = dict({"nonfinite": "flag"}, **state.get("embed_options", {}))
                embedders = {n: Embedder(n, **options) for n in layers}
                x = state["x"]
                bs = int(state["batch_size"])
                missing = set()
                for start in range(0, len(x), bs):
                    analyzer.analyze(x[start : start + bs])
                    rel = _relevance_by_layer(analyzer, state["producers"])
                    for n in layers:
                        if n in rel:
                            embedders[n].add(np.asarray(rel[n]))
                        else:
                            missing.add(n)
                done = [n for n in layers if n not in missing]
                _ipc.send(
                    wf,
                    {"ok": True, "layers": done, "missing": sorted(missing), "analyzer_class": type(analyzer).__name__,
                     "module": type(analyzer).__module__},
                    [embedders[n].result() for n in done],
                )
            elif cmd == "close":
                _ipc.send(wf, {"ok": True})
                return 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:  # reported to the parent, which decides what to do
            error = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line: the parent shows its first line
            _ipc.send(wf, {"ok": False, "error": error, "traceback": traceback.format_exc()})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
