"""Time of the PCA basis of the streaming reduction: exact (Gram matrix) against randomized SVD.

    python benchmarks/pca_basis.py [--rows 512] [--dim 128] [--out pca_basis.json]

For every layer of the LeNet5-style model (examples/mnist_lenet5.py) and of the VGG16-32 profile
of paper_scale.py, both with their initial random weights, the activation maps of the first
MNIST test images are embedded (unit rows, float16, as :class:`flowcallback.core.embed.Embedder`
buffers them) and the top ``--dim`` right singular vectors are computed twice: with
:func:`flowcallback.core.embed.top_right_singular_vectors` (what the Embedder uses) and with
scikit-learn's ``randomized_svd(n_iter=4)``. Prints, per layer, the seconds of each (best of
three), and the share of the buffer's squared norm each basis keeps (higher is better; the exact
basis is optimal); writes benchmarks/results/pca_basis.json.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np

from _common import best_of, load_mnist, write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=512, help="buffered rows (the Embedder's default is 4 * dim)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="pca_basis.json")
    args = ap.parse_args(argv)

    import tensorflow as tf
    from sklearn.utils.extmath import randomized_svd

    from flowcallback.core.embed import embed, top_right_singular_vectors

    from mnist_lenet5 import lenet5
    from paper_scale import vgg16_32

    _, (x_te, _) = load_mnist(args.data)
    x = (x_te[: args.rows].astype("float32") / 255.0)[..., None]
    x32 = np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    tf.keras.utils.set_random_seed(0)
    rows = []
    for model_name, model, inputs in (("lenet5", lenet5(), x), ("vgg16-32", vgg16_32(), x32)):
        for layer in model.layers:
            if isinstance(layer, (tf.keras.layers.InputLayer, tf.keras.layers.Flatten, tf.keras.layers.Dropout)):
                continue
            maps = tf.keras.Model(model.inputs, layer.output).predict(inputs, batch_size=128, verbose=0)
            buf = embed(maps)[:, :-1].astype(np.float16)
            n, d = buf.shape
            if d <= args.dim:
                continue
            # the Embedder bounds its buffer to 64 MiB of float32 rows, at least 2 * dim rows
            n = int(min(n, max(2 * args.dim, (64 << 20) // (4 * d))))
            buf = buf[:n]
            k = min(args.dim, n, d)
            t_exact, v = best_of(lambda buf=buf, k=k: top_right_singular_vectors(buf, k))
            t_rand, (_, _, vt) = best_of(
                lambda buf=buf, k=k: randomized_svd(buf.astype(np.float32), n_components=k, n_iter=4, random_state=0))
            b = buf.astype(np.float32)
            total = float(np.sum(b.astype(np.float64) ** 2))
            rows.append({"model": model_name, "layer": layer.name, "rows": n, "features": d,
                         "exact_seconds": t_exact, "randomized_seconds": t_rand, "speedup": t_rand / t_exact,
                         "energy_exact": float(np.sum((b @ v).astype(np.float64) ** 2)) / total,
                         "energy_randomized": float(np.sum((b @ vt.T).astype(np.float64) ** 2)) / total})
            r = rows[-1]
            print(f"{model_name:9s} {layer.name:14s} {n:4d} x {d:6d}  exact {t_exact:6.3f} s  randomized "
                  f"{t_rand:6.3f} s  ({r['speedup']:.1f}x)  "
                  f"energy kept {r['energy_exact']:.4f} / {r['energy_randomized']:.4f}")
    path = write_json(args.out, {"rows": args.rows, "dim": args.dim, "layers": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
