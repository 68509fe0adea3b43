"""Convert iNNvestigate's layer reference files (HDF5) into the plain .npz files of this folder.

Run once, by hand, from the repository root; the tests only read the .npz files it writes::

    python tests/data/innvestigate_references/convert.py /path/to/albermax/innvestigate

The argument is a clone of https://github.com/albermax/innvestigate (a work tree or a bare git
directory); the files are read from commit ``COMMIT`` (iNNvestigate v2.1.2) with ``git show``, so
the clone's checked-out state does not matter. Needs numpy and h5py.

The upstream files are HDF5 (no pickles), one per analyzer, each holding the same 8 inputs and, for
six one-layer models (``Input(10, 10, 3) -> layer -> Flatten``), the layer's weights, the model's
output and the analyzer's attribution (the input relevance, what ``analyzer.analyze(x)`` returns).
Only the analyzers of the native LRP engine are converted. Written here:

* ``input.npz``: ``x``, the shared input, float64 (8, 10, 10, 3), as stored upstream;
* ``<AnalyzerName>.npz`` for each converted analyzer, with, for each model ``M`` of ``MODELS``,
  ``M.w0``, ``M.w1`` (kernel and bias, where the layer has weights), ``M.output`` and
  ``M.attribution``, float32, as stored upstream.

Everything is numeric: the tests load the files with ``np.load(..., allow_pickle=False)``.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import h5py
import numpy as np

COMMIT = "10e4fc4eb51938630601acaa2f546dba97db7bfd"  # tag v2.1.2 of albermax/innvestigate
SRC = "tests/references/layer"
MODELS = ("Dense", "Dense_relu", "Conv2D", "Conv2D_relu", "AveragePooling2D", "MaxPooling2D")
# the upstream reference files whose analyzer the native engine has (tests/analyzer/test_reference_layer.py
# uses all of them but LRPZIgnoreBias, which it does not test and the native engine does not have)
ANALYZERS = (
    "LRPZ", "LRPZ_Flat_input_layer_rule", "LRPZ_boxed_input_layer_rule", "LRPZPlus", "LRPZPlusFast",
    "LRPAlpha1Beta0", "LRPAlpha1Beta0IgnoreBias", "LRPAlpha2Beta1", "LRPAlpha2Beta1IgnoreBias",
    "LRPEpsilon", "LRPEpsilonIgnoreBias", "LRPFlat", "LRPWSquare",
    "LRPSequentialPresetA", "LRPSequentialPresetB", "LRPSequentialPresetAFlat", "LRPSequentialPresetBFlat",
)


def git_dir(repo: str) -> str:
    return os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo


def read_blob(repo: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", git_dir(repo), "show", f"{COMMIT}:{path}"],
                          check=True, capture_output=True).stdout


def main(repo: str, out_dir: str) -> None:
    x_ref = None
    for name in ANALYZERS:
        with h5py.File(io.BytesIO(read_blob(repo, f"{SRC}/{name}.hdf5")), "r") as f:
            assert f.attrs["analyzer_name"] == name, (name, f.attrs["analyzer_name"])
            x = f["input"][:]
            if x_ref is None:
                x_ref = x
            assert np.array_equal(x, x_ref), f"{name}: another input than the other files"
            arrays = {}
            for model in MODELS:
                g = f[model]
                assert g.attrs["layer_name"] == model
                # the upstream test reads f[model]["weights"].values(): h5py's name order, "0", "1"
                keys = sorted(g["weights"].keys(), key=int)
                for i, k in enumerate(keys):
                    arrays[f"{model}.w{i}"] = g["weights"][k][:]
                arrays[f"{model}.output"] = g["output"][:]
                arrays[f"{model}.attribution"] = g["attribution"][:]
        for k, v in arrays.items():
            assert v.dtype.kind == "f", (name, k, v.dtype)
        np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **arrays)
    np.savez_compressed(os.path.join(out_dir, "input.npz"), x=x_ref)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1], os.path.dirname(os.path.abspath(__file__)))
