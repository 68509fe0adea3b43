#!/usr/bin/env bash
# Issue 23's GPU measurement, as one prepared script for the device machine (DEVELOPERS.md):
# Python 3.12 with JAX (CUDA), numba, SciPy and scikit-learn, but no TensorFlow, no FAISS and no
# package registry. It runs benchmarks/accelerator.py with Keras 3 on JAX on graphs saved here.
#
#   benchmarks/accelerator_device.sh prepare   # here: wheels into .whl/, 4 graphs into .graphs/ (~50 MiB, ~3 min)
#   benchmarks/accelerator_device.sh run       # there, with carry [".whl", ".graphs"]: figures into $OUT
#
# `prepare` needs the project's environment (.venv, TensorFlow) and pip's registry; both folders
# are ignored by git (it adds them to .git/info/exclude), so they travel only when carried. The
# graphs are those of benchmarks/paper_scale.py's scenario 1 at 10,000 samples (LeNet5 trained one
# epoch on MNIST, k = 100), the four heaviest for MCL of the 14. `run` writes
# $OUT/accelerator_gpu.json and $OUT/accelerator_gpu.log; copy the JSON to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
GRAPHS=${GRAPHS:-activations/conv1,activations/conv2,activations/dense84,lrp/pool1}
KERAS=${KERAS:-keras==3.15.1 namex==0.1.0 optree==0.20.0}
GRAPHS_FILE=${GRAPHS_FILE:-.graphs/graphs10k.npz}  # another file: a dry run of `run` on smaller graphs
KNN_SAMPLES=${KNN_SAMPLES:-10000}

case "${1:-}" in
prepare)
    for d in .whl .graphs; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
    mkdir -p .whl .graphs
    rm -f .whl/*.whl
    # Keras and the two of its requirements the device's image lacks (absl-py, h5py, rich,
    # ml-dtypes and packaging are there), as Python 3.12 x86-64 wheels
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $KERAS
    .venv/bin/python benchmarks/accelerator.py --samples 10000 --layers "$GRAPHS" --save "$GRAPHS_FILE"
    du -ch .whl .graphs | tail -1
    ;;
run)
    : "${OUT:?run on the device machine, where OUT is set}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # JAX would take 75 % of the GPU's memory up front; allocate as needed, so that the peak is the MCL's
    export PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        python3 -c "import jax, keras, numba, numpy; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)"
        python3 benchmarks/accelerator.py --graphs "$GRAPHS_FILE" --knn-samples "$KNN_SAMPLES" --out "$OUT/accelerator_gpu.json"
    } 2>&1 | tee "$OUT/accelerator_gpu.log"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
