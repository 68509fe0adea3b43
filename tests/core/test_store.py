"""Store: exact round trips, atomic epochs, and loud failures on damaged files."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcallback import load_run
from flowcallback.core import flows, store
from flowcallback.exceptions import RunFormatError

RUN_INFO = {
    "flowcallback_version": "0.1.0",
    "model": {"name": "m", "fingerprint": "abc"},
    "class_names": ["a", "b", "c"],
    "analyses": ["activations", "lrp"],
    "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
    "config": {"k": 5},
}


def make_graph(seed=0, epoch=3, analysis="activations", n=60):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))
    layers = [("l1", "Dense", rng.integers(0, 4, n)), ("l2", "Dense", rng.integers(0, 3, n))]
    return flows.build_flow_graph(
        layers, y, p, class_names=["a", "b", "c"], epoch=epoch, analysis=analysis,
        metrics={"accuracy": float(np.mean(p == y)), "loss": 0.5, "k": 5, "inflation": 2.0},
    )


@pytest.fixture
def run_dir(tmp_path):
    store.write_run_info(tmp_path, RUN_INFO)
    for e in (0, 3):
        store.save_epoch(tmp_path, {"activations": make_graph(e, e), "lrp": make_graph(e + 10, e, "lrp")})
    return tmp_path


def test_round_trip_is_exact(run_dir):
    run = load_run(run_dir)
    assert run.epochs == [0, 3]
    for e in (0, 3):
        for a, seed in (("activations", e), ("lrp", e + 10)):
            g0 = make_graph(seed, e, a)
            g1 = run.epoch(e, a)
            assert g1.equals(g0)
            assert g1.columns == g0.columns
            assert g1.flows.equals(g0.flows)
            assert g1.metrics == g0.metrics


def test_loaded_arrays_are_read_only(run_dir):
    g = load_run(run_dir).epoch(3)
    with pytest.raises(ValueError):
        g.assignments[0, 0] = 7


def test_incomplete_epoch_directory_is_ignored(run_dir):
    (run_dir / "graphs" / ".epoch_005.x.tmp").mkdir()
    (run_dir / "graphs" / ".epoch_005.x.tmp" / "activations.json").write_text("{")
    assert load_run(run_dir).epochs == [0, 3]


def test_saving_an_epoch_again_replaces_it(run_dir):
    g = make_graph(99, 3)
    store.save_epoch(run_dir, {"activations": g})
    run = load_run(run_dir)
    assert run.analyses(3) == ["activations"]
    assert run.epoch(3).equals(g)


def test_missing_run_json(tmp_path):
    with pytest.raises(RunFormatError, match="run.json"):
        load_run(tmp_path)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(version=2), "schema"),
        (lambda d: d["columns"][0].update(kind="sideways"), "schema"),
        (lambda d: d["flows"][0].update(count=d["flows"][0]["count"] + 1), "flows"),
        (lambda d: d["columns"][0]["clusters"][0].update(size=10**6), "does not match"),
        (lambda d: d.update(n_samples=d["n_samples"] + 1), "shapes"),
        (lambda d: d.update(arrays="../../elsewhere.npz"), "schema"),
        (lambda d: d["columns"][0].update(order=d["columns"][0]["order"][:-1]), "inconsistent"),
    ],
)
def test_edited_json_is_refused_with_the_file_name(run_dir, mutate, match, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFormatError, match=match) as info:
        load_run(run_dir).epoch(3)
    assert "activations" in str(info.value)


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "Infinity", "NaN"])
@pytest.mark.parametrize("where", ["graph", "run.json"])
def test_non_finite_numbers_are_refused_however_spelt(run_dir, literal, where, tally):
    # json reads "1e400" as inf without complaint; it must be refused like "Infinity"
    tally("files corrupted")
    path = run_dir / ("graphs/epoch_003/activations.json" if where == "graph" else "run.json")
    doc = json.loads(path.read_text())
    if where == "graph":
        doc["metrics"]["accuracy"] = 0.5
    else:
        doc["config"]["inflation"] = 2.0
    text = json.dumps(doc).replace("0.5" if where == "graph" else "2.0", literal, 1)
    assert literal in text
    path.write_text(text)
    with pytest.raises(RunFormatError, match=path.name):
        run = load_run(run_dir)
        run.epoch(3)


def test_pickled_npz_is_refused(run_dir, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    np.savez(path, assignments=np.array([object()], dtype=object), labels=np.zeros(1), predictions=np.zeros(1))
    with pytest.raises(RunFormatError, match="activations.npz"):
        load_run(run_dir).epoch(3)


def test_wrong_dtype_is_refused(run_dir, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = arrays["labels"].astype(np.float64)
    np.savez(path, **arrays)
    with pytest.raises(RunFormatError, match="integers"):
        load_run(run_dir).epoch(3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), which=st.sampled_from(["activations.json", "activations.npz"]), cut=st.booleans())
def test_random_or_truncated_bytes_raise_only_run_format_error(run_dir, data, which, cut, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / which
    original = path.read_bytes()
    try:
        path.write_bytes(original[: len(original) // 2] if cut else data)
        with pytest.raises(RunFormatError):
            load_run(run_dir).epoch(3)
    finally:
        path.write_bytes(original)


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    store.atomic_write(tmp_path / "a.bin", b"123")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"123"


# -- paths that escape the run directory -----------------------------------------------------------------
def _escape(run_dir, tmp_path_factory, target):
    """Replace ``target`` (relative to run_dir) by a symlink to a copy outside the run directory."""
    import shutil

    outside = tmp_path_factory.mktemp("outside") / Path(target).name
    src = run_dir / target
    (shutil.copytree if src.is_dir() else shutil.copy)(src, outside)
    (shutil.rmtree if src.is_dir() else os.unlink)(src)
    os.symlink(outside, src)
    return src


@pytest.mark.parametrize("target", ["run.json", "graphs", "graphs/epoch_003/activations.json",
                                    "graphs/epoch_003/activations.npz"])
def test_symlinks_leading_out_of_the_run_directory_are_refused(run_dir, tmp_path_factory, target, tally):
    tally("files corrupted")
    link = _escape(run_dir, tmp_path_factory, target)
    with pytest.raises(RunFormatError, match="outside the run directory") as info:
        run = load_run(run_dir)
        run.epoch(3)
    assert str(link) in str(info.value)


@pytest.mark.parametrize("name", ["epoch_003.txt", "setup.txt"])  # an epoch's errors, the set-up's
def test_an_error_file_linked_to_a_file_outside_is_refused(run_dir, tally, name):
    tally("files corrupted")
    (run_dir / "errors").mkdir()
    os.symlink("/etc/hostname", run_dir / "errors" / name)
    with pytest.raises(RunFormatError, match=rf"{name}: leads to .*outside the run directory"):
        load_run(run_dir).errors()


def test_dot_dot_in_the_arrays_name_is_refused(run_dir, tally):
    tally("files corrupted")
    path = run_dir / "graphs" / "epoch_003" / "activations.json"
    doc = json.loads(path.read_text())
    doc["arrays"] = "../epoch_000/activations.npz"
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFormatError, match=r"activations.json: does not match schema flowgraph-1 at arrays"):
        load_run(run_dir).epoch(3)


def test_load_flow_graph_keeps_the_npz_beside_its_json(run_dir, tmp_path_factory, tally):
    tally("files corrupted")
    link = _escape(run_dir, tmp_path_factory, "graphs/epoch_003/lrp.npz")
    with pytest.raises(RunFormatError, match="outside the run directory"):
        store.load_flow_graph(run_dir / "graphs" / "epoch_003" / "lrp.json")
    assert link.is_symlink()


def test_notes_round_trip(tmp_path):
    g = flows.build_flow_graph([("l1", "Dense", np.array([0, 0, 1, 1]))], [0, 0, 1, 1], [0, 1, 1, 1],
                               epoch=1, graph_notes=["LRP skipped: <b>why</b>"], notes={"l1": "2 all-zero maps"})
    store.write_run_info(tmp_path, dict(RUN_INFO, class_names=["0", "1"]))
    store.save_epoch(tmp_path, {"activations": g})
    back = load_run(tmp_path).epoch(1)
    assert back.equals(g) and back.notes == ("LRP skipped: <b>why</b>",) and back.columns[0].note == "2 all-zero maps"


# -- file modes follow the umask -------------------------------------------------------------------------
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_and_directories_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    from flowcallback.core import render, runpage

    d = tmp_path / "run"
    previous = os.umask(umask)
    try:
        store.write_run_info(d, RUN_INFO)
        store.save_epoch(d, {"activations": make_graph(0, 3)})
        store.save_epoch(d, {"activations": make_graph(1, 3)})  # replacing an epoch
        render.write_epoch_page(d / store.epoch_page_name(3), {"activations": make_graph(1, 3)})
        runpage.write_run_page_for(load_run(d))
        store.atomic_write(d / "errors" / "epoch_003.txt", b"Traceback")
    finally:
        os.umask(previous)
    written = {p.relative_to(d).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [d, *d.rglob("*")]}
    assert set(written) == {".", "run.json", "plotly.min.js", "epoch_003.html", "index.html", "errors",
                            "errors/epoch_003.txt", "graphs", "graphs/epoch_003", "graphs/epoch_003/activations.json",
                            "graphs/epoch_003/activations.npz"}
    want = {name: dir_mode if (d / name).is_dir() else file_mode for name in written}
    assert {k: oct(v) for k, v in written.items()} == {k: oct(v) for k, v in want.items()}


# -- leftovers of writers killed mid-write ---------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(run_dir, tmp_path_factory):
    dead, alive = _dead_pid(), os.getpid()
    graphs = run_dir / "graphs"
    stale = [graphs / f".epoch_005.{dead}.abc_1234.tmp", graphs / f".epoch_003.{dead}.old.tmp",
             run_dir / f".run.json.{dead}.k2j3h4g5.tmp", run_dir / "errors" / f".epoch_003.txt.{dead}.zz9yy8xx.tmp",
             run_dir / f".epoch_003.html.{dead}.q1w2e3r4.tmp"]
    kept = [graphs / f".epoch_006.{alive}.abcd1234.tmp", run_dir / f".index.html.{alive}.abcd1234.tmp",
            graphs / ".epoch_007.abcd1234.tmp"]  # no pid (flowcallback 0.1.0): nothing tells it is stale
    for p in stale[:2] + kept[:1] + kept[2:]:
        p.mkdir(parents=True)
        (p / "activations.json").write_text("{")
    for p in stale[2:] + kept[1:2]:
        p.parent.mkdir(exist_ok=True)
        p.write_text("partial")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep.txt").write_text("x")
    link = graphs / f".epoch_008.{dead}.abcd1234.tmp"
    os.symlink(outside, link)  # removed as a link, never followed
    removed = store.remove_stale_temporaries(run_dir)
    assert sorted(removed) == sorted(stale + [link])
    assert not any(os.path.lexists(p) for p in stale + [link])
    assert all(p.exists() for p in kept)
    assert (outside / "keep.txt").read_text() == "x"
    assert load_run(run_dir).epochs == [0, 3]


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from flowcallback.core import flows, store

g = flows.build_flow_graph([("l1", "Dense", np.arange(20) % 3)], np.arange(20) % 2, np.arange(20) % 2, epoch=1)
store._npz_bytes = lambda graph: os.kill(os.getpid(), signal.SIGKILL)  # killed while the epoch is half-written
store.save_epoch(sys.argv[1], {"activations": g})
"""


def test_a_writer_killed_mid_epoch_leaves_a_temporary_the_next_run_removes(tmp_path):
    repo = Path(store.__file__).resolve().parents[2]  # the flowcallback these tests import
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=repo)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    leftovers = [p for p in (tmp_path / "graphs").iterdir()]
    assert [p.name.split(".")[:3] for p in leftovers] == [["", "epoch_001", str(proc.pid)]]
    assert store.remove_stale_temporaries(tmp_path) == leftovers
    assert list((tmp_path / "graphs").iterdir()) == []


# -- what is written can be read: the writer checks each document against the loader's schema -----------
def _bypassing_checks(graph, **changes):
    """The graph with attributes set past its own validation: a writer's bug that save_epoch must catch."""
    for name, value in changes.items():
        object.__setattr__(graph, name, value)
    return graph


def _bad_epoch_3(case):
    """``(graphs, views, metrics, file name, where)`` of an epoch-3 write that breaks a schema."""
    from flowcallback.core.metrics import layer_metrics

    g, lrp = make_graph(50, 3), make_graph(51, 3, "lrp")
    if case == "graph note":
        return {"activations": g, "lrp": _bypassing_checks(lrp, notes=("x" * 2001,))}, None, None, "lrp.json", \
            "notes/0"
    if case == "analysis name":
        long = "a" * 65  # the pattern save_epoch checks, but not the schema's length
        return {long: _bypassing_checks(g, analysis=long)}, None, None, f"{long}.json", "analysis"
    if case == "views":
        views = store.EpochViews(class_means={("activations", "l" * 1001): np.zeros((3, 2))})
        return {"activations": g}, views, None, "views.json", "class_means/0/layer"
    metrics = layer_metrics([g]).assign(n_clusters=-1)
    return {"activations": g}, None, metrics, "metrics.json", "rows/0/n_clusters"


@pytest.mark.parametrize("case", ["graph note", "analysis name", "views", "metrics"])
def test_save_epoch_refuses_what_the_loader_would_refuse_and_keeps_the_epoch_there(run_dir, case):
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    graphs, views, metrics, name, where = _bad_epoch_3(case)
    schema = {"views.json": "views-1", "metrics.json": "metrics-1"}.get(name, "flowgraph-1")
    with pytest.raises(ValueError) as info:
        store.save_epoch(run_dir, graphs, views, metrics=metrics)
    assert not isinstance(info.value, RunFormatError)  # the writer's bug, not a damaged file
    message = str(info.value)
    assert message.startswith(f"{run_dir / 'graphs' / 'epoch_003' / name}: the document to write does not match "
                              f"schema {schema} (flowcallback/schemas/{schema}.json) at {where}: ")
    assert message.endswith("; nothing was written") and len(message) < 1000
    # the epoch written before is there as it was, and nothing else was left behind
    assert {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (run_dir / "graphs").iterdir()) == ["epoch_000", "epoch_003"]
    assert load_run(run_dir).epoch(3, "lrp").equals(make_graph(13, 3, "lrp"))


def test_write_run_info_refuses_what_read_run_info_would_refuse(tmp_path):
    with pytest.raises(ValueError) as info:
        store.write_run_info(tmp_path, dict(RUN_INFO, analyses=["Activations"]))
    assert not isinstance(info.value, RunFormatError)
    assert str(info.value).startswith(f"{tmp_path / 'run.json'}: the document to write does not match schema run-1 "
                                      "(flowcallback/schemas/run-1.json) at analyses/0: ")
    assert not (tmp_path / "run.json").exists()


def test_a_file_that_breaks_the_schema_says_so_without_repeating_a_long_value(run_dir):
    path = run_dir / "graphs" / "epoch_003" / "activations.json"
    doc = json.loads(path.read_text())
    doc["notes"] = ["y" * 5000]
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFormatError, match=r"activations.json: does not match schema flowgraph-1 at notes/0: "
                                             r"'y{79}… \(5000 characters\) is too long \(at most 2000 characters\)$"
                       ) as info:
        load_run(run_dir).epoch(3)
    assert len(str(info.value)) < 600


# -- the errors of the run: snapshots and set-up -----------------------------------------------------------
def test_errors_hold_the_set_up_errors_as_well_as_the_epochs(run_dir):
    assert load_run(run_dir).errors() == {}
    (run_dir / "errors").mkdir()
    reason = "RuntimeError: no LRP rule for layer(s) " + "x, " * 500
    (run_dir / "errors" / "setup.txt").write_text("Traceback ...\n" + reason)
    (run_dir / "errors" / "epoch_003.txt").write_text("Traceback ...\nMemoryError\n")
    errors = load_run(run_dir).errors()
    assert list(errors) == [3, store.SETUP_ERRORS] and store.SETUP_ERRORS == "setup"
    assert errors[3].endswith("MemoryError\n") and errors["setup"].endswith("x, " * 500)  # whole, not cut



def test_only_the_writers_epoch_directories_with_a_graph_are_epochs(run_dir, tally):
    """``epoch_0003`` beside ``epoch_003``, other digits, an empty directory: none is an epoch, so
    no epoch is listed twice and every listed epoch has graphs (issue 20, item 11)."""
    tally("files corrupted")
    graphs = run_dir / "graphs"
    shutil.copytree(graphs / "epoch_003", graphs / "epoch_0003")
    shutil.copytree(graphs / "epoch_000", graphs / "epoch_0001")
    shutil.copytree(graphs / "epoch_000", graphs / "epoch_\u0660\u0660\u0665")  # Arabic-Indic 005
    (graphs / "epoch_007").mkdir()
    (graphs / "epoch_008").mkdir()
    (graphs / "epoch_008" / "metrics.json").write_text("{}")
    run = load_run(run_dir)
    assert run.epochs == [0, 3]
    assert [run.epoch(e).epoch for e in run.epochs] == [0, 3]


def test_a_graph_written_again_with_sorted_keys_loads_equal(run_dir):
    """Key order is not part of JSON: a graph re-serialised as ``jq -S`` writes it loads (item 12)."""
    path = run_dir / "graphs" / "epoch_003" / "lrp.json"
    before = load_run(run_dir).epoch(3, "lrp")
    doc = json.loads(path.read_text())
    doc["flows"] = [dict(sorted(f.items())) for f in doc["flows"]]
    path.write_text(json.dumps(doc, sort_keys=True, indent=2))
    assert load_run(run_dir).epoch(3, "lrp").equals(before)


def test_the_writer_refuses_a_graphs_directory_that_leads_outside_the_run(tmp_path, tally):
    """A planted ``graphs`` symlink is refused by the writer as by the reader: nothing is written
    elsewhere (issue 20, item 17)."""
    tally("files corrupted")
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    store.write_run_info(run, RUN_INFO)
    os.symlink(elsewhere, run / "graphs")
    with pytest.raises(RunFormatError, match=r"graphs: leads to .*outside the run directory"):
        store.save_epoch(run, {"activations": make_graph(0, 1)})
    assert list(elsewhere.iterdir()) == []
