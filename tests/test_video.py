"""The training video (issue 22, part 4): Run.save_animation and ``flowcallback animate`` write the
projection or the epoch Sankeys over the epochs as an MP4 or an animated GIF, read back here frame by
frame; every bad argument, a missing extra and a missing browser are refused before any frame is drawn."""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from flowcallback import load_run, video
from flowcallback.cli import main
from flowcallback.core import flows, store
from flowcallback.core.project import choose_samples, project_layers

from browser import chromium_path

HAS_VIDEO = all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg", "kaleido"))
needs_video = pytest.mark.skipif(not HAS_VIDEO, reason='needs the video extra: pip install "flowcallback[video]"')


def renders(test):
    """Marks a test that renders frames: it drives Chromium and needs the video extra."""
    for mark in (pytest.mark.browser, needs_video,
                 pytest.mark.skipif(chromium_path() is None,
                                    reason="Debian's chromium is not installed (make test installs it)")):
        test = mark(test)
    return test


NAMES = ["a", "b", "c"]
N = 60
EPOCHS = (0, 2, 5)


def _graph(epoch, analysis="activations"):
    rng = np.random.default_rng(epoch)
    y = np.arange(N) % 3
    p = np.where(rng.random(N) < 0.8, y, rng.integers(0, 3, N))
    layers = [("l1", "Dense", rng.integers(0, 4, N)), ("l2", "Dense", rng.integers(0, 3, N))]
    return flows.build_flow_graph(layers, y, p, class_names=NAMES, epoch=epoch, analysis=analysis,
                                  metrics={"accuracy": 0.8, "loss": 0.5, "k": 5, "inflation": 2.0})


@pytest.fixture
def run_dir(tmp_path):
    """Three epochs (0, 2, 5) of two layers, activations and LRP; only l1's activations are projected
    (PCA of embeddings that move from epoch to epoch), so l2 and LRP have no projection."""
    d = tmp_path / "run"
    store.write_run_info(d, {"flowcallback_version": "0.1.0", "model": {"name": "m", "fingerprint": "abc"},
                             "class_names": NAMES, "analyses": ["activations", "lrp"],
                             "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
                             "config": {"k": 5}})
    samples = choose_samples(N, 40)
    y = np.arange(N) % 3
    previous = None
    for e in EPOCHS:
        rng = np.random.default_rng(100 + e)
        noise = rng.normal(size=(N, 9)) / (1 + e)  # the classes separate as the epochs go
        proj = project_layers({"l1": 2 * np.eye(9)[y] + noise}, previous, method="pca", samples=samples)
        previous = proj
        views = store.EpochViews(projections={("activations", "l1"): proj["l1"]}, projection_samples=samples,
                                 projection_method="pca")
        store.save_epoch(d, {"activations": _graph(e), "lrp": _graph(e, "lrp")}, views=views)
    return d


@pytest.fixture
def no_render(monkeypatch):
    """Fails the test if a frame would be rendered: the errors come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("a frame was rendered before the error")

    monkeypatch.setattr(video, "_render", refuse)


def _read(path):
    """Every frame of a video as one (frames, height, width, 3) uint8 array."""
    import imageio.v2 as iio2
    import imageio.v3 as iio

    if str(path).endswith(".mp4"):
        return np.stack(iio2.mimread(path, format="FFMPEG", memtest=False))
    return np.asarray(iio.imread(path, index=None))[..., :3]


def _coloured_pixels(frame, share: float = 1.0) -> int:
    """Pixels of a saturated colour (class colours), not the white or pale blue-grey background,
    the grey grid or the dark grey text, in the left ``share`` of the frame (the plot, without the
    legend on the right)."""
    f = frame[:, : int(share * frame.shape[1])].astype(np.int16)
    return int(((f.max(axis=2) - f.min(axis=2)) > 70).sum())


def _changed_share(a, b) -> float:
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 40).mean())


# -- bad arguments: refused by name, before anything is drawn or written --------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(view="umap"), r"^view: expected one of \('projection', 'flows'\), got 'umap'$"),
    (dict(fps=0), r"^fps: expected a number of frames per second above 0, got 0$"),
    (dict(fps=-2.5), r"^fps: expected a number of frames per second above 0, got -2.5$"),
    (dict(fps=float("nan")), r"^fps: expected .* got nan$"),
    (dict(fps=True), r"^fps: expected .* got True$"),
    (dict(fps="2"), r"^fps: expected .* got '2'$"),
    (dict(width=0), r"^width: expected a whole number of pixels from 1 to 8192, got 0$"),
    (dict(height=-720), r"^height: expected a whole number of pixels from 1 to 8192, got -720$"),
    (dict(width=640.5), r"^width: expected a whole number of pixels .* got 640.5$"),
    (dict(height=100_000), r"^height: expected a whole number of pixels .* got 100000$"),
    (dict(width=641), r"^width: an MP4 \(H.264, yuv420p\) needs an even number of pixels, got 641; use 640 or 642"),
    (dict(layer="nope"), r"^layer: expected one of the layers with a 'activations' projection, \['l1'\], "
                         r"got 'nope'$"),
    (dict(layer="l2"), r"^layer: no epoch of this run has a 'activations' projection of 'l2'; the layers that have "
                       r"one: \['l1'\]$"),
    (dict(analysis="gradients"), r"^analysis: expected one of \['activations', 'lrp'\] \(the analyses of this run\), "
                                 r"got 'gradients'$"),
    (dict(analysis="lrp"), r"^view='projection': no epoch of .* has a 'lrp' projection \(the snapshots project each "
                           r"layer's activations only; use analysis='activations'\)$"),
    (dict(view="flows", layer="l1"), r"^layer: view='flows' draws every column of each epoch's Sankey and takes no "
                                     r"layer \(layer is for view='projection'\), got 'l1'$"),
])
def test_bad_arguments_are_refused_by_name(run_dir, tmp_path, no_render, kwargs, match):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=match):
        load_run(run_dir).save_animation(out / "video.mp4", **kwargs)
    assert list(out.iterdir()) == []


def test_the_relevance_has_no_projection_and_each_reader_says_so(run_dir):
    run = load_run(run_dir)
    only = r"\(the snapshots project each layer's activations only; use analysis='activations'\)"
    with pytest.raises(KeyError, match=rf"no epoch has a 'lrp' projection of layer 'l1' {only}; the run has "
                                       r"projections of \[\('activations', 'l1'\)\]"):
        run.projection("l1", analysis="lrp")
    with pytest.raises(KeyError, match=rf"no epoch has a 'lrp' projection {only}"):
        run.show("projection", analysis="lrp")
    assert len(run.projection("l1")) > 0


@pytest.mark.parametrize("name", ["video.avi", "video", "video.mp4.part", "video.png"])
def test_a_path_without_a_video_suffix_is_refused(run_dir, tmp_path, no_render, name):
    with pytest.raises(ValueError, match=r"^path: expected a file name ending in \.mp4 \(H\.264 video\) or \.gif "
                                         r"\(animated GIF\), got '.*" + name.replace(".", r"\.") + "'$"):
        load_run(run_dir).save_animation(tmp_path / name)
    assert not (tmp_path / name).exists()


def test_a_directory_as_path_is_refused(run_dir, tmp_path, no_render):
    (tmp_path / "video.gif").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_run(run_dir).save_animation(tmp_path / "video.gif")


def test_an_odd_size_is_fine_for_a_gif():
    assert video.check_options("v.gif", fps=0.5, width=641, height=481) == "gif"
    assert video.check_options("V.MP4", fps=np.float32(24), width=np.int64(640), height=480) == "mp4"


def test_runs_without_projections_or_epochs_are_refused(tmp_path, no_render):
    from flowcallback.demo import tiny_run

    run = load_run(tiny_run(tmp_path / "tiny"))  # written without views
    with pytest.raises(ValueError, match=r"^view='projection': no epoch of .* has a 'activations' projection"):
        run.save_animation(tmp_path / "v.gif")
    empty = tmp_path / "empty"
    store.write_run_info(empty, {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "0"},
                                 "class_names": ["a", "b"], "analyses": ["activations"],
                                 "layers": [{"name": "dense", "type": "Dense"}], "config": {}})
    with pytest.raises(ValueError, match="holds no complete epoch yet"):
        load_run(empty).save_animation(tmp_path / "v.gif", view="flows")
    assert not (tmp_path / "v.gif").exists()


# -- a missing writer or browser: the extra to install, or that Chromium is needed --------------------------------
@pytest.mark.parametrize("suffix, module, package", [
    (".gif", "imageio", "imageio"), (".gif", "kaleido", "kaleido"), (".mp4", "imageio_ffmpeg", "imageio-ffmpeg"),
    (".mp4", "kaleido", "kaleido"),
])
def test_a_missing_extra_names_the_package_and_the_extra(run_dir, tmp_path, monkeypatch, no_render, suffix, module,
                                                         package):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as if it were not installed
    with pytest.raises(ImportError, match=rf"^writing a {suffix[1:].upper()} video needs the {package} package, "
                                          r"which is not installed \(.*\); install the video extra: "
                                          r'pip install "flowcallback\[video\]"$'):
        load_run(run_dir).save_animation(tmp_path / f"v{suffix}")
    assert list(tmp_path.iterdir()) == [run_dir]


@needs_video
def test_a_gif_does_not_need_ffmpeg(monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    video.require_writer("gif")
    with pytest.raises(ImportError, match="imageio-ffmpeg"):
        video.require_writer("mp4")


@needs_video
def test_kaleido_before_1_0_is_refused(monkeypatch):
    old = types.ModuleType("kaleido")
    old.__version__ = "0.2.1"
    monkeypatch.setitem(sys.modules, "kaleido", old)
    with pytest.raises(ImportError, match=r"^writing a video needs kaleido 1\.0 or later .* found 0\.2\.1; install the "
                                          r'video extra: pip install "flowcallback\[video\]"$'):
        video.require_writer("gif")


def test_no_browser_says_that_chromium_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(RuntimeError, match=r"^a video needs Chromium or Google Chrome .* apt-get install chromium"):
        video.find_browser()
    with pytest.raises(RuntimeError, match=r"^browser='/no/chromium': not an executable file; a video needs Chromium"):
        video.find_browser("/no/chromium")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "chrome"))
    with pytest.raises(RuntimeError, match=r"^BROWSER_PATH='.*chrome': not an executable file"):
        video.find_browser()
    exe = tmp_path / "my-chromium"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert video.find_browser(exe) == str(exe)


@needs_video
def test_save_animation_without_a_browser_is_refused_before_rendering(run_dir, tmp_path, monkeypatch, no_render):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(RuntimeError, match="needs Chromium or Google Chrome"):
        load_run(run_dir).save_animation(tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == [run_dir]


@needs_video
@pytest.mark.skipif(not os.access("/bin/true", os.X_OK), reason="needs /bin/true")
def test_a_browser_that_is_not_chromium_is_reported_and_leaves_nothing(run_dir, tmp_path):
    with pytest.raises(RuntimeError, match=r"^the browser /bin/true could not be started to render the frames "
                                           r"\(\w+\); it must be Chromium or Google Chrome"):
        load_run(run_dir).save_animation(tmp_path / "v.gif", browser="/bin/true")
    assert list(tmp_path.iterdir()) == [run_dir]


def test_cli_animate_refuses_bad_arguments_in_one_line(run_dir, tmp_path, capsys, no_render):
    assert main(["animate", str(run_dir), str(tmp_path / "v.gif"), "--layer", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowcallback animate: error: layer: expected one of the layers with a 'activations' "
                          "projection, ['l1'], got 'nope'") and "\n" not in err
    assert main(["animate", str(run_dir), str(tmp_path / "v.mov")]) == 2
    assert "path: expected a file name ending in .mp4" in capsys.readouterr().err
    assert not any(p.name.startswith("v.") for p in tmp_path.iterdir())


# -- real frames, through the installed Chromium ---------------------------------------------------------------
@renders
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_projection_video_has_one_frame_per_epoch_of_the_asked_size(run_dir, tmp_path, suffix):
    previous = os.umask(0o027)
    try:
        path = load_run(run_dir).save_animation(tmp_path / "out" / f"l1{suffix}", fps=3, width=480, height=360)
    finally:
        os.umask(previous)
    assert path == tmp_path / "out" / f"l1{suffix}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left beside it
    assert path.stat().st_mode & 0o777 == 0o640  # the umask's mode
    frames = _read(path)
    assert frames.shape == (len(EPOCHS), 360, 480, 3)
    for f in frames:
        assert _coloured_pixels(f, 0.75) > 10 * 40  # 40 points, not a blank plot (the legend left out)
    for a, b in zip(frames, frames[1:]):
        assert _changed_share(a, b) > 0.002  # the points moved (and the title's epoch changed)


@renders
def test_a_failure_while_rendering_leaves_the_previous_file_and_nothing_else(tmp_path):
    import plotly.graph_objects as go
    import psutil

    path = tmp_path / "v.mp4"
    path.write_bytes(b"the previous video")

    def figures():
        yield go.Figure(go.Bar(y=[1, 2]))
        raise RuntimeError("figure 2 failed")

    with pytest.raises(RuntimeError, match="figure 2 failed"):
        video.write_animation(figures(), path, width=320, height=240)
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == b"the previous video"
    assert [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()] == []
    with pytest.raises(ValueError, match="^figures: expected at least one figure"):
        video.write_animation(iter(()), path, width=320, height=240)
    assert path.read_bytes() == b"the previous video"


@renders
def test_cli_animate_writes_the_flows_video(run_dir, tmp_path, capsys):
    out = tmp_path / "flows.gif"
    assert main(["animate", str(run_dir), str(out), "--view", "flows", "--analysis", "lrp", "--width", "401",
                 "--height", "301", "--fps", "1.5"]) == 0
    assert capsys.readouterr().out.strip() == f"flows video: {out}"
    assert _read(out).shape == (len(EPOCHS), 301, 401, 3)


# -- on a run written by a real fit ------------------------------------------------------------------------------
@pytest.mark.slow
@renders
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_projection_video_of_a_real_fit(fitted_run, tmp_path, suffix):
    run = load_run(fitted_run["log_dir"])
    layer = "dense84"
    epochs = sorted(run.projection(layer)["epoch"].unique())
    assert len(epochs) >= 2
    path = run.save_animation(tmp_path / f"p{suffix}", layer=layer, width=640, height=480)
    frames = _read(path)
    assert frames.shape == (len(epochs), 480, 640, 3)
    n_points = run.projection(layer)["sample"].nunique()
    for f in frames:
        assert _coloured_pixels(f, 0.75) > 5 * n_points  # hundreds of points, not a blank plot (legend left out)
    for a, b in zip(frames, frames[1:]):
        assert _changed_share(a, b) > 0.005  # the projection changed between the epochs


@pytest.mark.slow
@renders
def test_flows_video_of_a_real_fit(fitted_run, tmp_path):
    run = load_run(fitted_run["log_dir"])
    frames = _read(run.save_animation(tmp_path / "flows.mp4", view="flows", width=1280, height=720))
    assert frames.shape == (len(run.epochs), 720, 1280, 3)
    for f in frames:
        assert _coloured_pixels(f) > 0.1 * 1280 * 720  # the Sankey's coloured flows fill the picture
    for a, b in zip(frames, frames[1:]):
        assert _changed_share(a, b) > 0.01
