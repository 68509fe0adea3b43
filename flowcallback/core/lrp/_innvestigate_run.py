"""Raw iNNvestigate relevance maps, computed in a child process (eager execution disabled there only).

``python -m flowcallback.core.lrp._innvestigate_run JOB.npz OUT.npz``: ``JOB.npz`` holds ``spec`` (a
JSON string: the model's JSON config with its output activation already linear, the layer names,
and a list of ``[analyzer, kwargs]``), the weights ``w0, w1...`` and the inputs ``x0, x1...``.
``OUT.npz`` gets ``"{i}/{layer}"`` for analyzer ``i`` and each layer reached, or ``error`` (JSON)
when iNNvestigate failed. Used by ``flowcallback.relevance(..., backend="innvestigate")`` and by the
agreement tests of the native engine. The relevance at a layer's output is found as the LRP worker
finds it (:func:`flowcallback.core.lrp._worker_main._relevance_by_layer`).
"""
from __future__ import annotations

import json
import os
import sys
import traceback


def main(argv) -> int:
    job, out_path = argv[1], argv[2]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()  # this process only
    import innvestigate
    import innvestigate.backend.graph as igraph

    from flowcallback.core.lrp._worker_main import _producers, _relevance_by_layer

    data = np.load(job, allow_pickle=False)
    spec = json.loads(str(data["spec"]))
    weights = [data[f"w{i}"] for i in range(spec["n_weights"])]
    xs = [data[f"x{i}"] for i in range(spec["n_inputs"])]
    x = xs[0] if len(xs) == 1 else xs
    result = {}
    errors = {}
    for i, (name, kwargs) in enumerate(spec["analyzers"]):
        kwargs = dict(kwargs)
        if isinstance(kwargs.get("input_layer_rule"), list):
            kwargs["input_layer_rule"] = tuple(kwargs["input_layer_rule"])
        if spec.get("disable_model_checks"):
            kwargs["disable_model_checks"] = True
        try:
            # a fresh graph for each analyzer: in one graph, each analyzer would be built slower
            tf.keras.backend.clear_session()
            model = tf.keras.models.model_from_json(spec["model_json"])
            model.set_weights(weights)
            analyzer = innvestigate.create_analyzer(name, model, reverse_keep_tensors=True, **kwargs)
            analyzer.analyze(x)
            rel = _relevance_by_layer(analyzer, _producers(analyzer, igraph, tf.keras.layers))
        except Exception as exc:  # reported per analyzer, the others still run
            errors[str(i)] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            continue
        for layer, value in rel.items():
            if spec["layers"] is None or layer in spec["layers"]:
                result[f"{i}/{layer}"] = np.asarray(value)
    if errors:
        result["error"] = np.asarray(json.dumps(errors))
    np.savez(out_path, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
