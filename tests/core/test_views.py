"""Stored views (issue 14, items 3 and 4): views.json + views.npz round trip, untrusted loading, the
Run API (class_means, projection, show) and the figures."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.core import flows, render, store
from flowcallback.core.aggregate import class_means
from flowcallback.core.neurons import neuron_clusters
from flowcallback.core.project import choose_samples, project_layers
from flowcallback.core.views_figures import class_means_figure, projection_figure
from flowcallback.exceptions import RunFormatError

NAMES = ["a", "b", "<i>c</i>"]
RUN_INFO = {
    "flowcallback_version": "0.1.0",
    "model": {"name": "m", "fingerprint": "abc"},
    "class_names": NAMES,
    "analyses": ["activations", "lrp"],
    "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
    "config": {"k": 5},
}
N = 60


def make_graph(epoch, analysis="activations"):
    rng = np.random.default_rng(epoch)
    y = np.arange(N) % 3
    p = np.where(rng.random(N) < 0.8, y, rng.integers(0, 3, N))
    layers = [("l1", "Dense", rng.integers(0, 4, N)), ("l2", "Dense", rng.integers(0, 3, N))]
    return flows.build_flow_graph(layers, y, p, class_names=NAMES, epoch=epoch, analysis=analysis,
                                  metrics={"accuracy": 1.0, "loss": 0.5, "k": 5, "inflation": 2.0})


def make_views(epoch, previous=None):
    rng = np.random.default_rng(100 + epoch)
    y = np.arange(N) % 3
    maps = rng.normal(size=(N, 4, 4, 5))
    dense = rng.normal(size=(N, 7))
    samples = choose_samples(N, 40)
    emb = {"l1": rng.normal(size=(N, 9)), "l2": rng.normal(size=(N, 9))}
    proj = project_layers(emb, previous, method="pca", samples=samples)
    means = {("activations", "l1"): class_means(maps, y, 3), ("activations", "l2"): class_means(dense, y, 3),
             ("lrp", "l2"): class_means(dense * 2, y, 3)}
    units = {("activations", "l1"): neuron_clusters(means[("activations", "l1")], maps.mean(axis=(1, 2)), top=4),
             ("activations", "l2"): neuron_clusters(means[("activations", "l2")], dense, n_clusters=3, top=5)}
    pictured = np.unique(np.concatenate([u.top_samples.ravel() for u in units.values()]))
    pictures = rng.integers(0, 256, size=(len(pictured), 6, 5, 3)).astype(np.uint8)
    return store.EpochViews(class_means=means, projections={("activations", k): v for k, v in proj.items()},
                            projection_samples=samples, projection_method="pca", unit_clusters=units,
                            thumbnail_samples=pictured, thumbnails=pictures), proj


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    store.write_run_info(d, RUN_INFO)
    previous = None
    for e in (0, 2, 5):
        views, previous = make_views(e, previous)
        store.save_epoch(d, {"activations": make_graph(e), "lrp": make_graph(e, "lrp")}, views=views)
    return d


def views_paths(run_dir, epoch=5):
    d = run_dir / "graphs" / f"epoch_{epoch:03d}"
    return d / "views.json", d / "views.npz"


# -- round trip and old runs --------------------------------------------------------------------------
def test_round_trip_is_exact(run_dir):
    run = load_run(run_dir)
    assert run.analyses(5) == ["activations", "lrp"]  # views.json is not an analysis
    previous = None
    for e in (0, 2, 5):
        want, previous = make_views(e, previous)
        got = run.views(e)
        assert set(got.class_means) == set(want.class_means) and list(got.projections) == list(want.projections)
        for k in want.class_means:
            np.testing.assert_array_equal(got.class_means[k], want.class_means[k])
        for k in want.projections:
            np.testing.assert_array_equal(got.projections[k], want.projections[k])
        np.testing.assert_array_equal(got.projection_samples, want.projection_samples)
        assert dict(got.unit_clusters) == dict(want.unit_clusters) and len(got.unit_clusters) == 2
        np.testing.assert_array_equal(got.thumbnail_samples, want.thumbnail_samples)
        np.testing.assert_array_equal(got.thumbnails, want.thumbnails)
        assert got.thumbnails.dtype == np.uint8
        assert got.projection_method == "pca"
        assert not got.class_means[("activations", "l1")].flags.writeable
    doc = json.loads(views_paths(run_dir)[0].read_text())
    assert doc["format"] == "flowcallback/views" and doc["version"] == 1 and doc["epoch"] == 5


def test_nan_rows_of_classes_without_samples_survive(tmp_path):
    store.write_run_info(tmp_path, RUN_INFO)
    m = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]], dtype=np.float32)
    views = store.EpochViews(class_means={("activations", "l1"): m})
    store.save_epoch(tmp_path, {"activations": make_graph(1)}, views=views)
    run = load_run(tmp_path)
    np.testing.assert_array_equal(run.views(1).class_means[("activations", "l1")], m)
    assert run.views(1).projection_samples is None
    with pytest.raises(KeyError, match="no epoch has a 'activations' projection of layer 'l1'"):
        run.projection("l1")


def test_a_run_without_views_still_loads_and_says_so(tmp_path):
    store.write_run_info(tmp_path, RUN_INFO)
    store.save_epoch(tmp_path, {"activations": make_graph(1)})  # as before: no views argument
    assert not views_paths(tmp_path, 1)[0].exists()
    run = load_run(tmp_path)
    assert run.views(1) is None and run.epoch(1).n_samples == N
    with pytest.raises(KeyError, match="epoch 1 has no class means"):
        run.class_means(1, "l1")
    with pytest.raises(KeyError, match="no projection at any epoch"):
        run.projection("l1")
    with pytest.raises(KeyError, match="no epoch has class means"):
        run.show("class_means")
    with pytest.raises(KeyError, match="no epoch has a 'activations' projection"):
        run.show("projection")
    run.show("epoch")  # the other views are unaffected


def test_views_written_before_neuron_clusters_still_load(run_dir):
    """views.json of a flowcallback that did not store neuron clusters: no key, no arrays."""
    j, z = views_paths(run_dir)
    _edit_json(j, lambda d: (d.pop("unit_clusters"), d.pop("thumbnails")))
    with np.load(z) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith(("unit_", "thumbnail"))}
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as out:
        for name, a in arrays.items():
            out.writestr(f"{name}.npy", _npy(a))
    run = load_run(run_dir)
    assert dict(run.views(5).unit_clusters) == {} and len(run.views(2).unit_clusters) == 2
    assert run.views(5).thumbnails is None and run.views(2).thumbnails is not None
    want = make_views(5, make_views(2, make_views(0)[1])[1])[0]
    key = ("activations", "l2")
    np.testing.assert_array_equal(run.views(5).class_means[key], want.class_means[key])
    with pytest.raises(KeyError, match="epoch 5 has no 'activations' neuron clusters of layer 'l2'"):
        run.neuron_clusters(5, "l2")
    assert run.neuron_clusters(2, "l2")["n_units"].groupby(run.neuron_clusters(2, "l2")["cluster"]).first().sum() + \
        len(run.neuron_clusters(2, "l2").attrs["flat_units"]) == 7


def test_views_that_do_not_fit_the_graphs_are_refused_before_writing(tmp_path):
    g = make_graph(4)
    bad_rows = store.EpochViews(class_means={("activations", "l1"): np.zeros((2, 5))})
    with pytest.raises(ValueError, match="2 rows, the graphs 3 classes"):
        store.save_epoch(tmp_path, {"activations": g}, views=bad_rows)
    beyond = store.EpochViews(projections={("activations", "l1"): np.zeros((2, 2))}, projection_samples=[3, N])
    with pytest.raises(ValueError, match=f"the graphs have {N} samples"):
        store.save_epoch(tmp_path, {"activations": g}, views=beyond)
    assert not (tmp_path / "graphs" / "epoch_004").exists()
    with pytest.raises(ValueError, match="projection_samples: required"):
        store.EpochViews(projections={("activations", "l1"): np.zeros((2, 2))})
    with pytest.raises(ValueError, match="must be finite of shape"):
        store.EpochViews(projections={("activations", "l1"): np.zeros((3, 2))}, projection_samples=[0, 1])
    with pytest.raises(ValueError, match="NaN only as whole rows"):
        store.EpochViews(class_means={("activations", "l1"): np.array([[1.0, np.nan]])})
    with pytest.raises(ValueError, match="ascending"):
        store.EpochViews(projections={("activations", "l1"): np.zeros((2, 2))}, projection_samples=[3, 1])
    from flowcallback.core.neurons import UnitClusters
    means = {("activations", "l1"): np.eye(3)}
    with pytest.raises(ValueError, match=r"must label the units of that layer's class means \(3\), got 2 labels"):
        store.EpochViews(class_means=means, unit_clusters={("activations", "l1"): UnitClusters([0, 1], [[0], [1]])})
    with pytest.raises(ValueError, match=r"class means \(none\)"):
        store.EpochViews(class_means=means, unit_clusters={("activations", "l2"): UnitClusters([0], [[0]])})
    far = store.EpochViews(class_means=means,
                           unit_clusters={("activations", "l1"): UnitClusters([0, 1, 1], [[0], [N]])})
    with pytest.raises(ValueError, match=f"top samples of .* go up to {N}, the graphs have {N} samples"):
        store.save_epoch(tmp_path, {"activations": g}, views=far)
    with pytest.raises(ValueError, match=r"none of \['metrics', 'views'\]"):
        store.save_epoch(tmp_path, {"views": flows.build_flow_graph([("l1", "Dense", np.zeros(3, int))], [0, 1, 2],
                                                                    [0, 1, 2], analysis="views")})


# -- untrusted files ----------------------------------------------------------------------------------
def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def _rewrite_npz(path: Path, **replace) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            z.writestr(f"{name}.npy", replace.get(name, _npy(a)))


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _load(run_dir, epoch=5):
    return load_run(run_dir).views(epoch)


@pytest.mark.parametrize("tamper, match", [
    (lambda j, z: _rewrite_npz(z, class_means_0=_npy(np.zeros((3, 6), np.float32))), "array shapes do not match"),
    (lambda j, z: _rewrite_npz(z, class_means_0=_npy(np.zeros((3, 5), np.int32))), "must hold floating-point numbers"),
    (lambda j, z: _rewrite_npz(z, projection_samples=_npy(np.zeros(40, np.float64))), "must hold integers"),
    (lambda j, z: _rewrite_npz(z, class_means_0=_header((10**12,)) + bytes(240)), "array shapes do not match"),
    (lambda j, z: _rewrite_npz(z, projection_0=_npy(np.full((40, 2), np.inf, np.float32))), "finite"),
    (lambda j, z: _rewrite_npz(z, class_means_1=_npy(np.array([[np.nan, 1.0] + [0.0] * 5] * 3, np.float32))),
     "whole rows"),
    (lambda j, z: _rewrite_npz(z, projection_samples=_npy(np.arange(40)[::-1].copy())), "ascending"),
    (lambda j, z: _rewrite_npz(z, projection_samples=_npy(np.arange(40) + 100)), "indices in 0..59"),
    (lambda j, z: _edit_json(j, lambda d: d["class_means"][0].update(units=6)), "array shapes do not match"),
    (lambda j, z: _edit_json(j, lambda d: d["class_means"][0].update(units=10**9)), "more than the 16777216"),
    (lambda j, z: _edit_json(j, lambda d: d.update(projection_samples=10**9)), "the epoch has 60 samples"),
    (lambda j, z: _edit_json(j, lambda d: d.update(projection_samples=0)), "projections need at least one"),
    (lambda j, z: _edit_json(j, lambda d: d["class_means"][0].update(layer="nope")), "not among the run's layers"),
    (lambda j, z: _edit_json(j, lambda d: d["class_means"].append(dict(d["class_means"][0]))), "twice"),
    (lambda j, z: _edit_json(j, lambda d: d.update(extra=1)), "does not match schema views-1"),
    # neuron clusters: labels, top samples and the JSON's counts are checked against each other
    (lambda j, z: _rewrite_npz(z, unit_labels_1=_npy(np.array([0, 1, 5, 2, 0, 1, 2]))), "numbered 0..k-1"),
    (lambda j, z: _rewrite_npz(z, unit_labels_1=_npy(np.zeros(9, np.int64))), "array shapes do not match"),
    (lambda j, z: _rewrite_npz(z, unit_labels_1=_npy(np.zeros(7, np.float32))), "must hold integers"),
    (lambda j, z: _rewrite_npz(z, unit_top_1=_npy(np.full((3, 5), 60))), "top samples of 'l2' go up to 60"),
    (lambda j, z: _rewrite_npz(z, unit_top_1=_npy(np.full((3, 5), -7))), "sample indices, or -1"),
    (lambda j, z: _edit_json(j, lambda d: d["unit_clusters"][1].update(clusters=65)), "does not match schema views-1"),
    (lambda j, z: _edit_json(j, lambda d: d["unit_clusters"][1].update(top=4)), "array shapes do not match"),
    (lambda j, z: _edit_json(j, lambda d: d["unit_clusters"][1].update(layer="l1", analysis="lrp")),
     "names 'l1' .'lrp'., which has no class means"),
    (lambda j, z: _edit_json(j, lambda d: d["unit_clusters"].append(dict(d["unit_clusters"][0]))), "twice"),
    # thumbnails: sizes bounded by the schema, counts by the epoch, pixels are bytes
    (lambda j, z: _edit_json(j, lambda d: d["thumbnails"].update(height=33)), "does not match schema views-1"),
    (lambda j, z: _edit_json(j, lambda d: d["thumbnails"].update(channels=4)), "does not match schema views-1"),
    (lambda j, z: _edit_json(j, lambda d: d["thumbnails"].update(samples=61)), "thumbnails claim 61 samples"),
    (lambda j, z: _edit_json(j, lambda d: d["thumbnails"].update(width=4)), "array shapes do not match"),
    (lambda j, z: _rewrite_npz(z, thumbnail_samples=_npy(np.load(z)["thumbnail_samples"] + 60)),
     "thumbnail_samples must be indices in 0..59"),
    (lambda j, z: _rewrite_npz(z, thumbnails=_npy(np.load(z)["thumbnails"].astype(np.int16) + 300)), "0..255"),
    (lambda j, z: _rewrite_npz(z, thumbnails=_npy(np.load(z)["thumbnails"].astype(np.float32))), "must hold integers"),
    (lambda j, z: _edit_json(j, lambda d: d.update(arrays="../../../run.json.npz")), "does not match schema views-1"),
    (lambda j, z: _edit_json(j, lambda d: d.update(epoch=4)), "says epoch 4"),
    # markup where a method name belongs, drawn in the run page's projection title (issue 20, item 15)
    (lambda j, z: _edit_json(j, lambda d: d.update(projection_method='<a href="https://x.example">PCA</a>')),
     "does not match schema views-1 at projection_method"),
    (lambda j, z: j.write_text('{"format": NaN}'), "invalid JSON"),
    (lambda j, z: z.unlink(), "file not found"),
    (lambda j, z: (z.unlink(), os.mkfifo(z)), "FIFO"),
    (lambda j, z: z.write_bytes(z.read_bytes() + os.urandom(2 * 2**20)), "bytes, more than the"),
])
def test_tampered_views_raise_run_format_error_naming_the_file(run_dir, tamper, match):
    j, z = views_paths(run_dir)
    tamper(j, z)
    with pytest.raises(RunFormatError, match=match) as info:
        _load(run_dir)
    assert "epoch_005" in str(info.value)
    assert _load(run_dir, 2) is not None  # the other epochs are untouched


def test_a_views_npz_symlinked_outside_the_run_is_refused(run_dir, tmp_path):
    j, z = views_paths(run_dir)
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes(z.read_bytes())
    z.unlink()
    z.symlink_to(outside)
    with pytest.raises(RunFormatError, match="outside the run directory"):
        _load(run_dir)




@pytest.mark.parametrize("kind", ["bomb", "json and header agree on a huge shape"])
def test_views_npz_bombs_are_refused_with_bounded_memory(run_dir, load_with_bounded_memory, kind):
    j, z = views_paths(run_dir)
    with np.load(z) as f:
        arrays = {k: f[k] for k in f.files}
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for name, a in arrays.items():
            with out.open(f"{name}.npy", "w", force_zip64=True) as m:
                if name != "class_means_0":
                    m.write(_npy(a))
                elif kind == "bomb":  # a header honest about 640 MiB of zeros
                    m.write(_header((3, 640 * 2**20 // 12)))
                    for _ in range(40):
                        m.write(bytes(16 * 2**20))
                else:  # the JSON says so too, within the per-layer cap; the data is not there
                    _edit_json(j, lambda d: d["class_means"][0].update(units=5_000_000))
                    m.write(_header((3, 5_000_000)) + bytes(240))
    assert z.stat().st_size < 2 * 2**20
    proc = load_with_bounded_memory(run_dir, "views", 0, 5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"RunFormatError: {z}")


# -- the API ------------------------------------------------------------------------------------------
def test_class_means_dataframe(run_dir):
    run = load_run(run_dir)
    want = make_views(0)[0].class_means[("activations", "l1")]
    by_class = run.class_means(0, "l1", order="class")
    assert list(by_class.index) == NAMES and by_class.index.name == "class"
    assert list(by_class.columns) == list(range(5)) and by_class.columns.name == "unit"
    np.testing.assert_array_equal(by_class.to_numpy(), want)
    by_similarity = run.class_means(0, "l1")
    rows = by_similarity.attrs["classes"]
    assert sorted(rows) == [0, 1, 2] and list(by_similarity.index) == [NAMES[i] for i in rows]
    np.testing.assert_array_equal(by_similarity.to_numpy(), want[rows])
    assert by_similarity.attrs["layer"] == "l1" and by_similarity.attrs["epoch"] == 0
    np.testing.assert_array_equal(run.class_means(2, "l2", "lrp", order="class").to_numpy(),
                                  make_views(2)[0].class_means[("lrp", "l2")])
    with pytest.raises(KeyError, match="no 'lrp' class means of layer 'l1'"):
        run.class_means(0, "l1", "lrp")


def test_projection_dataframe(run_dir):
    run = load_run(run_dir)
    t = run.projection("l2")
    assert list(t.columns) == ["epoch", "sample", "x", "y", "label", "prediction", "cluster"]
    assert t["epoch"].unique().tolist() == [0, 2, 5] and len(t) == 3 * 40
    previous = None
    for e in (0, 2, 5):
        want, previous = make_views(e, previous)
        g = run.epoch(e)
        part = t[t["epoch"] == e]
        s = part["sample"].to_numpy()
        np.testing.assert_array_equal(s, choose_samples(N, 40))
        np.testing.assert_array_equal(part[["x", "y"]].to_numpy(), want.projections[("activations", "l2")])
        np.testing.assert_array_equal(part["label"], g.labels[s])
        np.testing.assert_array_equal(part["prediction"], g.predictions[s])
        np.testing.assert_array_equal(part["cluster"], g.assignments[s, g.column_index("l2")])


# -- figures ------------------------------------------------------------------------------------------
def test_class_means_figure_heatmap_and_difference(run_dir):
    run = load_run(run_dir)
    means = run.class_means(0, "l1")
    fig = class_means_figure(means)
    heat = fig.data[0]
    np.testing.assert_array_equal(np.asarray(heat.z, dtype=float), means.to_numpy())
    assert list(heat.y) == [render._esc(n) for n in means.index]
    assert "&lt;i&gt;c&lt;/i&gt;" in heat.y and "<i>c</i>" not in heat.y
    # difference: plant three units that separate class b from class a
    m = np.zeros((3, 50))
    m[1, [7, 30, 44]] = [5.0, -6.0, 4.0]
    df = means.iloc[:, :0].reindex(columns=range(50), fill_value=0.0)
    df.iloc[:, :] = m[df.attrs["classes"]]
    fig = class_means_figure(df, difference=("b", "a"), top=3)
    assert list(fig.data[0].x) == ["unit 30", "unit 7", "unit 44"]
    assert list(fig.data[1].y) == [-6.0, 5.0, 4.0]
    colors = render.class_colors(3)
    assert list(fig.data[1].marker.color) == [colors[0], colors[1], colors[1]]  # sign: which class is higher
    assert class_means_figure(df, difference=(1, 0), top=3).data[0].x == fig.data[0].x  # class indices too
    with pytest.raises(ValueError, match="'z' is not a class"):
        class_means_figure(df, difference=("z", "a"))
    z_scored = class_means_figure(df, scale="unit").data[0]
    np.testing.assert_allclose(np.asarray(z_scored.z, float).std(axis=0)[[7, 30, 44]], 1.0)


def test_projection_figure_animates_one_frame_per_epoch(run_dir):
    run = load_run(run_dir)
    t = run.projection("l1")
    fig = projection_figure(t, NAMES)
    assert [f.name for f in fig.frames] == ["0", "2", "5"]
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == ["Play", "Pause"] and menu.buttons[0].method == "animate"
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "2", "5"]
    colors = render.class_colors(3)
    for frame, e in zip(fig.frames, (0, 2, 5)):
        assert [tr.marker.color for tr in frame.data] == colors  # one trace per class, Sankey colours
        assert sum(len(tr.x) for tr in frame.data) == 40
        tr = frame.data[1]
        part = t[(t["epoch"] == e) & (t["label"] == 1)]
        assert list(tr.ids) == [str(s) for s in part["sample"]]  # points keep their identity: they move
        np.testing.assert_array_equal(tr.x, part["x"])
        assert tr.customdata[0][0] == str(part["sample"].iloc[0])
        assert tr.customdata[0][3] == str(part["cluster"].iloc[0])
        wrong = (part["prediction"] != part["label"]).to_numpy()
        assert [s == "circle-open" for s in tr.marker.symbol] == wrong.tolist()
    assert "sample %{customdata[0]}" in fig.frames[0].data[0].hovertemplate
    assert "cluster %{customdata[3]}" in fig.frames[0].data[0].hovertemplate
    assert fig.frames[0].data[2].name == "&lt;i&gt;c&lt;/i&gt;"
    lo, hi = fig.layout.xaxis.range
    assert lo <= t["x"].min() and hi >= t["x"].max()  # fixed axes over the epochs


def test_run_show_class_means_and_projection(run_dir):
    run = load_run(run_dir)
    fig = run.show("class_means")  # last epoch with means, last layer that has them
    assert "l2, epoch 5" in fig.layout.title.text
    fig = run.show("class_means", epoch=2, layer="l1", difference=("a", "b"), top=2)
    assert len(fig.data[0].x) == 2 and fig.data[1].type == "bar"
    fig = run.show("projection")
    assert [f.name for f in fig.frames] == ["0", "2", "5"] and "l2" in fig.layout.title.text
    assert run.show("projection", layer="l1").layout.sliders[0].steps[-1].label == "5"
    with pytest.raises(ValueError, match="view: expected one of"):
        run.show("umap")


def test_views_refuse_an_unknown_projection_method():
    expected = r"^projection_method: expected one of \(None, 'pca', 'umap'\), got '<b>x</b>'"
    with pytest.raises(ValueError, match=expected):
        flows.EpochViews(projection_method="<b>x</b>")
