"""Per-layer jobs on other executors (process pool, Dask) give the same clusters as the local path."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from flowcallback import load_run, snapshot
from flowcallback.core.cluster import cluster_layer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(digits):
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    model = lenet5_digits(seed=11)
    model.fit(x_tr, y_tr, epochs=2, verbose=0)
    return model, x_te[:200], y_te[:200]


def _assignments(log_dir, epoch=1):
    g = load_run(log_dir).epoch(epoch)
    return g.assignments


def test_process_pool_gives_the_local_clusters(tmp_path, trained):
    model, x, y = trained
    snapshot(model, (x, y), tmp_path / "local", epoch=1, lrp=False, verbose=0)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        snapshot(model, (x, y), tmp_path / "pool", epoch=1, lrp=False, verbose=0, executor=pool)
    np.testing.assert_array_equal(_assignments(tmp_path / "local"), _assignments(tmp_path / "pool"))


def test_dask_local_cluster_gives_the_local_clusters(tmp_path, trained):
    distributed = pytest.importorskip("distributed")
    model, x, y = trained
    snapshot(model, (x, y), tmp_path / "local", epoch=1, lrp=False, verbose=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream:
            snapshot(model, (x, y), tmp_path / "dask", epoch=1, lrp=False, verbose=0, executor=client.get_executor())
        # one kNN + MCL task per layer ran on the cluster's workers
        ran = [t for t in stream.data if "cluster_layer_job" in t["key"]]
        assert len(ran) == len(load_run(tmp_path / "dask").info["layers"])
    np.testing.assert_array_equal(_assignments(tmp_path / "local"), _assignments(tmp_path / "dask"))


def test_cluster_layer_is_what_runs_on_the_executor(trained):
    from flowcallback.core import capture, cluster, knn

    model, x, y = trained
    emb, _ = capture.capture_activations(model, x, ["dense84"])
    direct = cluster.mcl(knn.knn_graph(emb["dense84"], 10))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = pool.submit(cluster_layer, emb["dense84"], 10, 2.0).result()
    np.testing.assert_array_equal(direct, remote)
