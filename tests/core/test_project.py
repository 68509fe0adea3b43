"""2-D projections (issue 14, item 4): identical epochs give identical aligned projections, Procrustes
undoes a rotation, reflection, scale and shift, PCA works without umap-learn, UMAP where installed."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from flowcallback.core import project as proj
from flowcallback.core.project import align, choose_samples, project, project_layers


def clustered(n=300, dim=32, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, dim))[y] * 3 + rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.hstack([x, np.zeros((n, 1))]).astype(np.float32), y


def neighbour_purity(p, y, k=10):
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((y[nn] == y[:, None]).mean())


def test_pca_projection_is_centred_unit_radius_float32_and_deterministic():
    x, y = clustered()
    p = project(x, method="pca")
    assert p.shape == (300, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
    assert np.sqrt((p.astype(float) ** 2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(project(x, method="pca"), p)
    assert neighbour_purity(p, y) > 0.9  # the planted classes stay apart


@pytest.mark.parametrize("reflect", [False, True])
def test_a_rotated_scaled_shifted_copy_aligns_back(reflect):
    ref = np.random.default_rng(1).normal(size=(200, 2))
    a = 0.7
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if reflect:
        r = r @ np.diag([1.0, -1.0])
    moved = 3.5 * ref @ r + np.array([10.0, -4.0])
    np.testing.assert_allclose(align(moved, ref), ref, atol=1e-5)
    # and a copy that is not a similarity transform is only brought as close as one can
    bent = moved.copy()
    bent[:, 0] **= 2
    assert np.abs(align(bent, ref) - ref).max() > 1e-2


@pytest.mark.parametrize("layers", [None, ["b"]])
def test_identical_epochs_give_identical_aligned_projections(layers):
    xa, _ = clustered(seed=2)
    xb, _ = clustered(seed=3)
    emb = {"a": xa, "b": xb}
    first = project_layers(emb, method="pca", layers=layers)
    second = project_layers(emb, first, method="pca", layers=layers)
    third = project_layers({k: v.copy() for k, v in emb.items()}, second, method="pca", layers=layers)
    assert list(first) == (layers or ["a", "b"])
    for name in first:
        np.testing.assert_allclose(second[name], first[name], atol=1e-5)
        np.testing.assert_allclose(third[name], first[name], atol=1e-5)


def test_alignment_removes_a_flip_between_epochs():
    # the same layout mirrored (a PCA sign that flipped, a UMAP that came out reflected) is drawn unflipped
    x, _ = clustered(seed=4)
    first = project_layers({"l": x}, method="pca")
    mirrored = {"l": first["l"] * np.array([-1.0, 1.0], dtype=np.float32)}
    again = project_layers({"l": x}, mirrored, method="pca")
    np.testing.assert_allclose(again["l"], mirrored["l"], atol=1e-5)


def test_samples_and_previous_must_agree():
    x, _ = clustered(n=100, seed=5)
    s = choose_samples(100, 30)
    first = project_layers({"l": x}, method="pca", samples=s)
    assert first["l"].shape == (30, 2)
    np.testing.assert_array_equal(first["l"], project(x[s], method="pca"))
    with pytest.raises(ValueError, match="previous=None when the held-out set changed"):
        project_layers({"l": x}, first, method="pca", samples=choose_samples(100, 40))
    with pytest.raises(ValueError, match="have no embedding"):
        project_layers({"l": x}, method="pca", layers=["m"])


def test_choose_samples_is_fixed_sorted_and_distinct():
    s = choose_samples(10_000, 2000)
    assert len(s) == 2000 and len(np.unique(s)) == 2000 and np.all(np.diff(s) > 0)
    np.testing.assert_array_equal(s, choose_samples(10_000, 2000))
    assert not np.array_equal(s, choose_samples(10_000, 2000, seed=1))
    np.testing.assert_array_equal(choose_samples(50, 2000), np.arange(50))
    np.testing.assert_array_equal(choose_samples(50, None), np.arange(50))
    with pytest.raises(ValueError, match="max_samples"):
        choose_samples(50, 0)


def test_without_umap_auto_is_pca_and_umap_is_refused(monkeypatch):
    monkeypatch.setattr(proj, "umap_available", lambda: False)
    x, _ = clustered(n=80, seed=6)
    assert proj.resolve_method("auto") == "pca"
    np.testing.assert_array_equal(project(x), project(x, method="pca"))
    with pytest.raises(ValueError, match="umap-learn"):
        project(x, method="umap")
    with pytest.raises(ValueError, match=r"^method: expected .auto., .umap. or .pca., got .tsne."):
        project(x, method="tsne")


def test_degenerate_inputs():
    assert np.all(project(np.ones((5, 3)), method="pca") == 0)  # all equal: all at the origin
    assert project(np.eye(3), method="pca").shape == (3, 2)
    with pytest.raises(ValueError, match="NaN"):
        project(np.array([[np.nan, 1.0], [0.0, 1.0]]), method="pca")
    np.testing.assert_array_equal(align(np.ones((4, 2)), np.full((4, 2), 2.0)), np.full((4, 2), 2.0))


def test_doctests():
    assert doctest.testmod(proj).failed == 0


@pytest.mark.slow  # UMAP: up to 45 s on CI's 2 cores
def test_umap_projection_when_installed():
    pytest.importorskip("umap")
    x, y = clustered(n=300, seed=7)
    assert proj.resolve_method("auto") == "umap"
    first = project_layers({"l": x}, method="umap")
    p = first["l"]
    assert p.shape == (300, 2) and p.dtype == np.float32 and np.isfinite(p).all()
    assert neighbour_purity(p, y) > 0.9
    again = project_layers({"l": x}, first, method="umap")  # identical epoch: identical aligned projection
    np.testing.assert_allclose(again["l"], p, atol=1e-5)
    warm = project_layers({"l": x}, first, method="umap", warm_start=True, n_epochs=50)
    assert warm["l"].shape == (300, 2) and np.isfinite(warm["l"]).all()
    assert neighbour_purity(warm["l"], y) > 0.9
