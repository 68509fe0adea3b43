"""Run directories from someone else: their plotly.js, npz bombs, FIFOs and directories where files belong.

Each test here failed before issue 11: a tampered ``plotly.min.js`` was kept by ``report``, an npz
bomb or a huge npy header exhausted memory, a FIFO hung the loader, a directory in place of a
page made ``report`` die with a traceback.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.cli import main
from flowcallback.core import flows, render, runpage, store
from flowcallback.exceptions import RunFormatError

RUN_INFO = {
    "flowcallback_version": "0.1.0",
    "model": {"name": "m", "fingerprint": "abc"},
    "class_names": ["a", "b", "c"],
    "analyses": ["activations"],
    "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
    "config": {"k": 5},
}


def make_graph(epoch, n=60):
    rng = np.random.default_rng(epoch)
    y = rng.integers(0, 3, n)
    layers = [("l1", "Dense", rng.integers(0, 4, n)), ("l2", "Dense", rng.integers(0, 3, n))]
    return flows.build_flow_graph(layers, y, y, class_names=["a", "b", "c"], epoch=epoch,
                                  metrics={"accuracy": 1.0, "loss": 0.5, "k": 5, "inflation": 2.0})


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    store.write_run_info(d, RUN_INFO)
    for e in (0, 3):
        store.save_epoch(d, {"activations": make_graph(e)})
    return d


@contextmanager
def deadline(seconds):
    """Raise TimeoutError in the main thread after ``seconds``: a regression fails instead of hanging."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def package_plotlyjs() -> bytes:
    import plotly.offline

    return plotly.offline.get_plotlyjs().encode("utf-8")


def report(run_dir, capsys):
    code = main(["report", str(run_dir)])
    out, err = capsys.readouterr()
    return code, out, err


# -- item 2: the run directory's own plotly.min.js ----------------------------------------------------
def _tamper(path: Path, how: str, outside: Path) -> None:
    good = package_plotlyjs()
    if path.exists() or path.is_symlink():
        path.unlink()
    if how == "line prepended":
        path.write_bytes(b"document.title = 'pwned';\n" + good)
    elif how == "same size":  # one byte changed: only the hash tells
        path.write_bytes(b"X" + good[1:])
    elif how == "symlink":
        outside.write_bytes(b"document.title = 'pwned';\n" + good)
        os.symlink(outside, path)
    elif how == "fifo":
        os.mkfifo(path)


@pytest.mark.parametrize("how", ["line prepended", "same size", "symlink", "fifo"])
def test_report_puts_the_package_plotlyjs_in_place(run_dir, tmp_path, capsys, how, tally):
    tally("files corrupted")
    assert report(run_dir, capsys)[0] == 0
    path, outside = run_dir / "plotly.min.js", tmp_path / "outside.js"
    _tamper(path, how, outside)
    with deadline(20):
        code, out, err = report(run_dir, capsys)
    assert code == 0, err
    assert not path.is_symlink() and path.is_file()
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(package_plotlyjs()).digest()
    if how == "symlink":  # replaced, not written through
        assert outside.read_bytes().startswith(b"document.title = 'pwned';\n")


@pytest.mark.parametrize("write", ["epoch page", "run page"])
def test_every_page_write_puts_the_package_plotlyjs_in_place(run_dir, write, tally):
    tally("files corrupted")
    path = run_dir / "plotly.min.js"
    path.write_bytes(b"document.title = 'pwned';\n" + package_plotlyjs())
    if write == "epoch page":
        render.write_epoch_page(run_dir / "epoch_003.html", {"activations": make_graph(3)})
    else:
        runpage.write_run_page_for(load_run(run_dir))
    assert path.read_bytes() == package_plotlyjs()


def test_an_identical_plotlyjs_is_not_rewritten(run_dir):
    path = store.ensure_plotlyjs(run_dir)
    before = os.stat(path)
    store.ensure_plotlyjs(run_dir)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# -- item 3: npz bombs and huge headers ----------------------------------------------------------------
def _npy_header(shape, descr="<i4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _write_npz(path: Path, members) -> None:
    """An npz of ``{name: iterable of byte chunks}``, deflated, written in a stream."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, chunks in members.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                for chunk in chunks:
                    f.write(chunk)


def _npy(a: np.ndarray):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return [buf.getvalue()]


BOMB_BYTES = 640 * 2**20  # unpacked; well above the 256 MiB the child may add to its address space


def _make_bad_npz(run_dir: Path, kind: str) -> Path:
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if kind == "bomb":  # a header honest about a 640 MiB array of zeros: about 0.6 MB on disk
        count = BOMB_BYTES // 4
        zeros = bytes(16 * 2**20)
        first = [_npy_header((count,))] + [zeros] * (BOMB_BYTES // len(zeros))
    elif kind == "huge header":  # claims 10**12 items, holds 240 bytes
        first = [_npy_header((10**12,)), bytes(240)]
    elif kind == "expected shape, then a bomb":  # the JSON's shape, then 640 MiB more
        first = _npy(arrays["assignments"]) + [bytes(16 * 2**20)] * (BOMB_BYTES // (16 * 2**20))
    elif kind == "json and headers agree on a huge shape":  # 10**9 samples claimed, 240 bytes held
        doc_path = path.with_suffix(".json")
        doc = json.loads(doc_path.read_text())
        doc["n_samples"] = n = 10**9
        doc_path.write_text(json.dumps(doc))
        first = [_npy_header((n, len(doc["columns"]))), bytes(240)]
        _write_npz(path, {"assignments": first, "labels": [_npy_header((n,)), bytes(240)],
                          "predictions": [_npy_header((n,)), bytes(240)]})
        return path
    _write_npz(path, {"assignments": first, "labels": _npy(arrays["labels"]),
                      "predictions": _npy(arrays["predictions"])})
    assert path.stat().st_size < 2 * 2**20
    return path




@pytest.mark.parametrize("kind", ["bomb", "huge header", "expected shape, then a bomb",
                                  "json and headers agree on a huge shape"])
def test_npz_bombs_raise_run_format_error_with_bounded_memory(run_dir, load_with_bounded_memory, kind, tally):
    tally("files corrupted")
    path = _make_bad_npz(run_dir, kind)
    proc = load_with_bounded_memory(run_dir, "epoch", 0, 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if kind == "json and headers agree on a huge shape":  # since issue 20, more than MAX_SAMPLES stops at the JSON
        assert proc.stdout.startswith(f"RunFormatError: {path.with_suffix('.json')}: does not match schema "
                                      "flowgraph-1 at n_samples: 1000000000 is greater than the maximum of 100000")
    else:
        assert proc.stdout.startswith(f"RunFormatError: {path}")


def test_report_on_a_huge_header_prints_one_line_and_skips_the_epoch(run_dir, capsys, tally):
    """Before issue 20 this exited 2 with no page; now epoch 3 is skipped and the rest written (exit 1)."""
    tally("files corrupted")
    _make_bad_npz(run_dir, "huge header")
    code, out, err = report(run_dir, capsys)
    assert code == 1
    assert err.count("\n") == 1 and "activations.npz" in err and "Traceback" not in err
    assert err.startswith("flowcallback report: epoch 3 skipped: ")
    assert (run_dir / "index.html").is_file() and (run_dir / "epoch_000.html").is_file()


@pytest.mark.parametrize("shape, descr, match", [
    ((60, 4), "|O", "must hold integers"),
    ((60, 4), "<f8", "must hold integers"),
    ((60, 4), "<c16", "must hold integers"),
    ((60, 5), "<i4", "array shapes"),
    ((4, 60), "<i4", "array shapes"),
])
def test_npy_headers_are_checked_before_the_data(run_dir, shape, descr, match, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    _write_npz(path, {"assignments": [_npy_header(shape, descr)], "labels": _npy(arrays["labels"]),
                      "predictions": _npy(arrays["predictions"])})
    with pytest.raises(RunFormatError, match=match) as info:
        load_run(run_dir).epoch(3)
    assert str(path) in str(info.value)


def test_an_npz_larger_on_disk_than_its_arrays_can_make_is_refused_unopened(run_dir, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    with open(path, "ab") as f:
        f.write(os.urandom(2 * 2**20))
    with pytest.raises(RunFormatError, match="bytes, more than the"):
        load_run(run_dir).epoch(3)


def test_arrays_written_by_numpy_in_other_layouts_still_load(run_dir):
    """Fortran order, big-endian and int64 arrays are integers of the right shape: accepted."""
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    g = make_graph(3)
    np.savez_compressed(path, assignments=np.asfortranarray(g.assignments).astype(">i8"),
                        labels=g.labels.astype(np.int64), predictions=g.predictions.astype(np.uint16))
    assert load_run(run_dir).epoch(3).equals(g)


# -- item 4: FIFOs and directories where files belong ---------------------------------------------------
def _fifo(run_dir: Path, target: str) -> Path:
    path = run_dir / target
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if target.endswith("-> fifo"):  # a symlink inside the run directory leading to a FIFO
        path = run_dir / target[: -len(" -> fifo")]
        path.unlink()
        os.mkfifo(run_dir / "a-fifo")
        os.symlink(run_dir / "a-fifo", path)
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("target", [
    "run.json",
    "graphs/epoch_003/activations.json",
    "graphs/epoch_003/activations.npz",
    "graphs/epoch_003/activations.npz -> fifo",
    "errors/epoch_003.txt",
])
def test_a_fifo_in_place_of_a_file_raises_at_once(run_dir, target, tally):
    tally("files corrupted")
    path = _fifo(run_dir, target)
    with deadline(5), pytest.raises(RunFormatError, match="FIFO") as info:
        run = load_run(run_dir)
        run.epoch(3)
        run.errors()
    assert str(path) in str(info.value)


@pytest.mark.parametrize("target", ["run.json", "graphs/epoch_003/activations.npz"])
def test_a_directory_in_place_of_a_file_is_refused(run_dir, target, tally):
    tally("files corrupted")
    path = run_dir / target
    path.unlink()
    path.mkdir()
    with pytest.raises(RunFormatError, match="is a directory, expected a regular file") as info:
        load_run(run_dir).epoch(3)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("target", ["epoch_003.html", "index.html", "plotly.min.js"])
def test_report_with_a_directory_in_place_of_a_page_prints_one_line_and_fails(run_dir, capsys, target, tally):
    tally("files corrupted")
    (run_dir / target).mkdir()
    code, out, err = report(run_dir, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{run_dir / target}: is a directory" in err
