"""The neuron clusters stage (flowcallback.core.neurons): planted structure is found, the outputs
are partitions and permutations, and what does not depend on a unit's scale does not."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from flowcallback.core import neurons
from flowcallback.core.aggregate import class_means


def planted(n_classes=6, groups=3, units=60, per_class=30, seed=0, noise=0.3):
    """Responses where unit u responds to the classes of group ``u % groups`` (each class in one group)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    unit_group = np.arange(units) % groups
    class_group = np.arange(n_classes) % groups
    hot = (class_group[y][:, None] == unit_group[None, :]).astype(float)
    scale = rng.uniform(0.5, 20.0, units)  # units of very different scales and offsets
    r = (2.0 * hot + noise * rng.normal(size=(len(y), units))) * scale + rng.uniform(-5, 5, units)
    return r, y, unit_group, class_group


def test_planted_unit_groups_are_found_and_their_top_samples_are_of_their_classes():
    r, y, unit_group, class_group = planted()
    u = neurons.neuron_clusters(class_means(r, y, 6), r, n_clusters=3, top=8)
    assert adjusted_rand_score(unit_group, u.labels) == 1.0
    for c in range(3):
        group = unit_group[u.labels == c][0]
        assert set(class_group[y[u.top_samples[c]]].tolist()) == {group}


def test_more_units_than_the_linkage_takes_go_through_a_sample_and_still_find_the_groups():
    r, y, unit_group, _ = planted(units=neurons.MAX_LINKAGE_UNITS + 900, per_class=8, noise=0.2)
    labels = neurons.cluster_units(class_means(r, y, 6), 3)
    assert adjusted_rand_score(unit_group, labels) == 1.0


def test_flat_units_are_in_no_cluster_and_a_layer_without_any_profile_has_no_cluster():
    means = np.array([[0.0, 1.0, 3.0, 0.0], [0.0, 2.0, 3.0, 0.0], [0.0, 0.5, 3.0, 1.0]])
    labels = neurons.cluster_units(means)
    assert labels[0] == -1 and labels[2] == -1 and labels[1] >= 0 and labels[3] >= 0
    dead = neurons.neuron_clusters(np.zeros((4, 5)), np.zeros((10, 5)))
    assert dead.n_clusters == 0 and (dead.labels == -1).all() and dead.top_samples.shape == (0, 6)


def test_classes_without_samples_are_ignored_in_the_profiles_and_go_last_in_the_order():
    r, y, unit_group, _ = planted()
    means = class_means(r, y, 7)  # class 6 has no sample: a NaN row
    assert np.isnan(means[6]).all()
    u = neurons.neuron_clusters(means, r, n_clusters=3)
    assert adjusted_rand_score(unit_group, u.labels) == 1.0
    matrix = neurons.cluster_matrix(means, u.labels)
    assert np.isnan(matrix[:, 6]).all() and np.isfinite(matrix[:, :6]).all()
    assert neurons.seriate(matrix)[1][-1] == 6


def test_non_finite_samples_are_never_top_samples():
    r, y, _, _ = planted()
    r[:30] = np.nan  # every sample of class 0
    u = neurons.neuron_clusters(class_means(np.nan_to_num(r), y, 6), r, n_clusters=3, top=neurons.MAX_TOP)
    assert u.top_samples.min() >= 30


def test_seriation_puts_shuffled_blocks_back_together():
    rng = np.random.default_rng(3)
    blocks = np.kron(np.eye(4), np.ones((5, 3))) + 0.05 * rng.normal(size=(20, 12))
    rows, cols = rng.permutation(20), rng.permutation(12)
    r, c = neurons.seriate(blocks[rows][:, cols])
    row_block = (rows[r] // 5)
    col_block = (cols[c] // 3)
    # each block's rows (and columns) are contiguous in the order found
    assert all(len(set(row_block[i:i + 5].tolist())) == 1 for i in range(0, 20, 5))
    assert all(len(set(col_block[i:i + 3].tolist())) == 1 for i in range(0, 12, 3))


@settings(max_examples=60, deadline=None)
@given(n_classes=st.integers(2, 8), units=st.integers(1, 40), k=st.integers(1, 12), seed=st.integers(0, 10**6),
       dead=st.integers(0, 5))
def test_labels_are_a_partition_numbered_in_seriation_order_and_scale_free(n_classes, units, k, seed, dead):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, units + dead))
    means[:, units:] = rng.normal()  # flat units: the same mean for every class
    u = neurons.neuron_clusters(means, rng.normal(size=(15, units + dead)), n_clusters=k, top=4)
    lab = u.labels
    assert (lab[units:] == -1).all() and (lab[:units] >= 0).all()
    assert sorted(set(lab[lab >= 0].tolist())) == list(range(u.n_clusters)) and u.n_clusters <= min(k, units)
    assert u.sizes().sum() + (lab == -1).sum() == units + dead  # every unit counted once
    matrix = neurons.cluster_matrix(means, lab)
    if u.n_clusters > 1:  # numbered in seriation order: seriating again keeps the order
        assert neurons.seriate(matrix)[0].tolist() in (list(range(u.n_clusters)), list(range(u.n_clusters))[::-1])
    # a unit's clusters do not depend on its scale or offset (profiles are z-scored)
    a, b = rng.uniform(0.1, 10, units + dead), rng.uniform(-3, 3, units + dead)
    again = neurons.cluster_units(means * a + b, k)
    assert adjusted_rand_score(neurons.cluster_units(means, k), again) == 1.0
    # top samples: distinct valid indices per cluster, best first
    for row in u.top_samples:
        got = row[row >= 0]
        assert len(set(got.tolist())) == len(got) and got.max(initial=-1) < 15


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), units=st.integers(2, 30))
def test_permuting_units_permutes_the_labels(seed, units):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(5, units))
    perm = rng.permutation(units)
    assert adjusted_rand_score(neurons.cluster_units(means, 4)[perm], neurons.cluster_units(means[:, perm], 4)) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": [0, 2], "top_samples": [[0], [1]]}, "numbered 0..k-1"),
    ({"labels": [-2, 0], "top_samples": [[0]]}, "numbered 0..k-1"),
    ({"labels": [0, 0], "top_samples": [[0], [1]]}, r"shape \(1, top"),
    ({"labels": [0, 1], "top_samples": [[0], [-3]]}, "sample indices"),
    ({"labels": [], "top_samples": []}, "non-empty"),
    ({"labels": [0.0, 1.0], "top_samples": [[0], [1]]}, "integer"),
])
def test_unit_clusters_refuse_inconsistent_arrays(kwargs, match):
    with pytest.raises(ValueError, match=match):
        neurons.UnitClusters(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: neurons.cluster_units(np.ones((3, 4)), 0), r"n_clusters: expected an integer in 1\.\.64"),
    (lambda: neurons.cluster_units(np.ones((3, 4)), True), "n_clusters"),
    (lambda: neurons.cluster_units(np.ones(4)), r"means: expected an array of shape \(n_classes, units\)"),
    (lambda: neurons.cluster_units([[np.inf, 1.0]]), "means: infinite"),
    (lambda: neurons.top_samples(np.ones((3, 2)), [0, 0], top=0), r"top: expected an integer in 1\.\.32"),
    (lambda: neurons.top_samples(np.ones((3, 2)), [0, 0, 1]), "labels: expected 2 integer"),
    (lambda: neurons.neuron_clusters(np.ones((3, 2)), np.ones((4, 3))), r"responses: expected shape \(n_samples, 2\)"),
])
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_thumbnails_keep_the_aspect_ratio_stretch_values_and_only_picture_images():
    rng = np.random.default_rng(0)
    gray = rng.uniform(-3, 7, size=(5, 64, 32))  # standardised-looking values, taller than wide
    t = neurons.thumbnails(gray, [4, 1])
    assert t.shape == (2, 32, 16, 1) and t.dtype == np.uint8
    assert [(int(p.min()), int(p.max())) for p in t] == [(0, 255), (0, 255)]
    # nearest pixel: the picture is a subsample of the sample, stretched
    src = gray[4][1::2, 1::2]
    np.testing.assert_array_equal(t[0, ..., 0], np.round(255 * (src - src.min()) / (src.max() - src.min())))
    rgb = rng.integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    small = neurons.thumbnails(rgb, [0])
    assert small.shape == (1, 8, 8, 3)  # never scaled up
    bad = gray.copy()
    bad[1, 1, 1] = np.nan  # a pixel the picture takes
    assert not neurons.thumbnails(bad, [1]).any()  # black
    assert not neurons.thumbnails(np.ones((2, 8, 8)), [0]).any()  # a flat picture is black too
    for not_images in (np.zeros((4, 30)), np.zeros((4, 8, 8, 4)), np.zeros((4, 3, 8)), np.zeros((4, 8, 8, 8, 1))):
        assert neurons.thumbnails(not_images, [0]) is None
    with pytest.raises(ValueError, match=r"samples: expected indices in 0\.\.4"):
        neurons.thumbnails(gray, [5])
    with pytest.raises(ValueError, match=r"size: expected an integer in 4\.\.32"):
        neurons.thumbnails(gray, [0], size=64)
