"""Reading a damaged or hostile run directory: bounded sizes, skipped epochs, run.json against the graphs.

Each test here failed before issue 20 (items 6, 7, 8, 10 and 14): one corrupt epoch hid the
healthy ones and ``report`` wrote no page; a large ``run.json`` or error file, or a long name,
took memory far beyond its size; two million cluster ids or 100,000 empty clusters took seconds to
a minute to refuse; messages repeated whole values; a ``run.json`` with fewer classes than its
graphs gave a page that failed in the browser. The hostile files are read in a child process whose
address space may grow by 256 MiB only (``RLIMIT_AS``), as the npz bombs of ``test_untrusted.py``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.cli import main
from flowcallback.core import _schemas, flows, store
from flowcallback.exceptions import RunFormatError

RUN_INFO = {
    "flowcallback_version": "0.1.0",
    "model": {"name": "m", "fingerprint": "abc"},
    "class_names": ["a", "b", "c"],
    "analyses": ["activations"],
    "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}],
    "config": {"k": 5},
}
EPOCHS = (0, 3, 5)


def make_graph(epoch, n=60):
    rng = np.random.default_rng(epoch)
    y = rng.integers(0, 3, n)
    layers = [("l1", "Dense", rng.integers(0, 4, n)), ("l2", "Dense", rng.integers(0, 3, n))]
    return flows.build_flow_graph(layers, y, y, class_names=["a", "b", "c"], epoch=epoch,
                                  metrics={"accuracy": 1.0, "loss": 0.5, "k": 5})


def write_run(d: Path) -> Path:
    store.write_run_info(d, RUN_INFO)
    for e in EPOCHS:
        store.save_epoch(d, {"activations": make_graph(e)})
    return d


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run")


def graph_json(run_dir: Path, epoch: int = 3) -> Path:
    return run_dir / "graphs" / f"epoch_{epoch:03d}" / "activations.json"


def edit_graph(run_dir: Path, change, epoch: int = 3) -> Path:
    path = graph_json(run_dir, epoch)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def page_data(run_dir: Path) -> dict:
    page = (run_dir / "index.html").read_text("utf-8")
    return json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>', page, re.S).group(1))


# -- the hostile directory read by `flowcallback report` in a child limited to 256 MiB more ----------------
_LIMITED_REPORT = """
import contextlib, io, json, resource, sys, time
from flowcallback.cli import main

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(["report", sys.argv[1]])  # a healthy run: imports and caches what reporting needs, before the limit

def address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

limit = address_space() + 256 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out, err = io.StringIO(), io.StringIO()
t0 = time.perf_counter()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", sys.argv[2]])
except MemoryError:
    code = "MemoryError"
print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                  "seconds": time.perf_counter() - t0}))
"""


@pytest.fixture
def report_with_bounded_memory(tmp_path):
    """``report(run_dir)``: ``flowcallback report`` on ``run_dir`` in a child process whose address
    space may grow by 256 MiB only, after reporting a healthy run; returns ``{code, stdout, stderr,
    seconds}`` (``code`` is ``"MemoryError"`` if it ran out)."""
    healthy = write_run(tmp_path / "healthy")
    repo = Path(store.__file__).resolve().parents[2]

    def report(run_dir):
        proc = subprocess.run([sys.executable, "-c", _LIMITED_REPORT, str(healthy), str(run_dir)], cwd=repo,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return report


def _big_run_json(run_dir: Path, size: int) -> None:
    """run.json with ``size`` bytes of empty lists in its settings (run.json's ``config`` is free)."""
    doc = dict(RUN_INFO, format="flowcallback/run", version=1)
    text = json.dumps(doc)
    filler = ",".join(["[]"] * (size // 3))
    (run_dir / "run.json").write_text(text[:-1] + ', "filler": [' + filler + "]}")


def test_a_run_json_larger_than_the_writer_writes_is_refused_unread(run_dir, report_with_bounded_memory, tally):
    """29 MB of empty lists took 0.84 GB: now refused by its size, before it is read (fstat)."""
    tally("files corrupted")
    _big_run_json(run_dir, 30 * 2**20)
    limit = _schemas.MAX_JSON_BYTES["run-1"]
    assert (run_dir / "run.json").stat().st_size > limit
    r = report_with_bounded_memory(run_dir)
    assert r["code"] == 2, r
    assert r["stderr"].count("\n") == 1
    assert f"{run_dir / 'run.json'}: " in r["stderr"]
    assert f"more than the {limit} that flowcallback writes" in r["stderr"]
    with pytest.raises(RunFormatError, match="refused unread"):
        load_run(run_dir)


def test_a_run_json_of_empty_lists_is_refused_before_parsing(run_dir, report_with_bounded_memory, tally):
    """Within the size bound, a file that is nearly all empty lists would cost 21 times its size
    once parsed: refused by counting its arrays and objects first."""
    tally("files corrupted")
    _big_run_json(run_dir, 12 * 2**20)
    assert (run_dir / "run.json").stat().st_size < _schemas.MAX_JSON_BYTES["run-1"]
    r = report_with_bounded_memory(run_dir)
    assert r["code"] == 2, r
    assert "arrays and objects in" in r["stderr"] and "refused unparsed" in r["stderr"]


def test_a_huge_error_file_costs_its_tail_only(run_dir, report_with_bounded_memory, tally):
    """A 43 MB error file took 1.0 GB (read whole, split into lines): now its last 256 KiB are read."""
    tally("files corrupted")
    (run_dir / "errors").mkdir()
    with open(run_dir / "errors" / "epoch_003.txt", "w") as f:
        line = "x" * 99 + "\n"
        for _ in range(440_000):  # 44 MB
            f.write(line)
        f.write("RuntimeError: the last line\n")
    r = report_with_bounded_memory(run_dir)
    assert r["code"] == 0, r
    assert page_data(run_dir)["partial"] == {"3": "RuntimeError: the last line"}
    text = load_run(run_dir).errors()[3]
    assert text.startswith("[the first ") and text.endswith("RuntimeError: the last line\n")
    assert len(text.encode()) <= store.ERROR_TAIL_BYTES + 100


def test_a_huge_model_name_is_refused(run_dir, report_with_bounded_memory, tally):
    """A 20 MB model name gave 340 MB of pages: now longer than run.json's schema allows, refused,
    and the message quotes 80 characters of it."""
    tally("files corrupted")
    doc = json.loads((run_dir / "run.json").read_text())
    doc["model"]["name"] = "n" * (10 * 2**20)  # within the size bound of run.json
    (run_dir / "run.json").write_text(json.dumps(doc))
    r = report_with_bounded_memory(run_dir)
    assert r["code"] == 2, r
    assert "at model/name: 'nnnn" in r["stderr"] and f"({10 * 2**20} characters) is too long" in r["stderr"]
    assert len(r["stderr"]) < 500
    assert not (run_dir / "index.html").exists()


@pytest.mark.parametrize("where", ["order", "clusters"])
def test_two_million_cluster_ids_are_refused_at_once(run_dir, report_with_bounded_memory, where, tally):
    """2 M ids in a column's order took 12 s to refuse: the schema bounds it, and the bound is
    checked before the schema is applied item by item."""
    tally("files corrupted")
    if where == "order":
        edit_graph(run_dir, lambda d: d["columns"][0].update(order=list(range(2_000_000))))
    else:  # 100,000 empty clusters: report took 60 s
        edit_graph(run_dir, lambda d: d["columns"][0].update(
            clusters=[{"id": i, "size": 0, "class_counts": [0, 0, 0]} for i in range(100_000)]))
    r = report_with_bounded_memory(run_dir)
    assert r["code"] == 1, r
    assert r["seconds"] < 10, r
    wanted = ("at columns/0/order: 2000000 items is too many (at most 100000)" if where == "order"
              else "at columns/0/clusters: 100000 clusters, more than the 60 samples (n_samples)")
    assert f"flowcallback report: epoch 3 skipped: {graph_json(run_dir)}: does not match schema flowgraph-1 " \
           f"{wanted}" in r["stderr"], r["stderr"]


# -- item 6: a corrupt epoch is skipped, the others stay ---------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated json", "bad npz", "bad views", "bad metrics"])
def test_a_corrupt_epoch_is_skipped_and_the_later_ones_stay(run_dir, damage, tally):
    tally("files corrupted")
    d = run_dir / "graphs" / "epoch_003"
    if damage == "truncated json":
        text = (d / "activations.json").read_text()
        (d / "activations.json").write_text(text[: len(text) // 2])
        bad = d / "activations.json"
    elif damage == "bad npz":
        (d / "activations.npz").write_bytes(b"PK\x03\x04 not a zip")
        bad = d / "activations.npz"
    elif damage == "bad views":
        (d / "views.json").write_text("{}")
        bad = d / "views.json"
    else:
        (d / "metrics.json").write_text('{"format": "flowcallback/metrics"}')
        bad = d / "metrics.json"
    run = load_run(run_dir)
    assert run.epochs == [0, 5]
    assert list(run.skipped) == [3] and run.skipped[3].startswith(f"{bad}: ")
    assert run.epoch(5).equals(make_graph(5)) and list(run.graphs()) and len(list(run.graphs())) == 2
    assert sorted(run.layer_metrics()["epoch"].unique()) == [0, 5]
    with pytest.raises(RunFormatError, match=re.escape(str(bad))):  # asked for, the epoch raises its problem
        if damage in ("truncated json", "bad npz"):
            run.epoch(3)
        elif damage == "bad views":
            run.views(3)
        else:
            store.read_metrics_rows(run_dir, 3)
    # a skipped epoch is skipped whole: its graph raises too, whichever file was damaged (it loaded
    # where the damaged file was another one), also when asked for before the epochs are listed
    for fresh in (run, load_run(run_dir)):
        with pytest.raises(RunFormatError, match="^" + re.escape(f"{bad}: ")):
            fresh.epoch(3)
    with pytest.raises(RunFormatError, match=re.escape(str(bad))):
        _ = load_run(run_dir, strict=True).epochs


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="as root, file permissions need setpriv (util-linux) to apply")
def test_an_epoch_directory_the_user_cannot_read_is_skipped_and_said(run_dir, tally):
    # found by an outside probe: Path.glob took the unreadable directory for an empty one, so the
    # epoch vanished without a word ("not in this run") and report exited 0
    tally("files corrupted")
    d = run_dir / "graphs" / "epoch_003"
    script = ("import json, sys; from flowcallback import load_run; from flowcallback.cli import main\n"
              "run = load_run(sys.argv[1])\n"
              "try:\n    run.epoch(3); raised = ''\n"
              "except Exception as exc:\n    raised = f'{type(exc).__name__}: {exc}'\n"
              "print(json.dumps({'epochs': run.epochs, 'skipped': run.skipped, 'raised': raised}))\n"
              "sys.exit(main(['report', sys.argv[1]]))\n")
    # as root, drop the capabilities that bypass file permissions
    prefix = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
               "-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])
    d.chmod(0)
    try:
        r = subprocess.run(prefix + [sys.executable, "-c", script, str(run_dir)], capture_output=True, text=True,
                           timeout=120)
    finally:
        d.chmod(0o755)
    seen = json.loads(r.stdout.splitlines()[0])
    why = f"{d}: cannot be listed (Permission denied)"
    assert seen == {"epochs": [0, 5], "skipped": {"3": why}, "raised": f"RunFormatError: {why}"}
    assert r.returncode == 1 and f"flowcallback report: epoch 3 skipped: {why}" in r.stderr


def test_report_writes_the_healthy_epochs_and_notes_the_skipped_one(tmp_path, capsys, tally):
    """report wrote no page at all (exit 2); now every readable epoch's page and the run page, one
    line per skipped epoch on stderr with control characters escaped, exit status 1."""
    tally("files corrupted")
    run_dir = write_run(tmp_path / "run\x1b[2J")  # a terminal would obey this escape sequence
    edit_graph(run_dir, lambda d: d.update(n_samples="many"))
    code = main(["report", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "\x1b" not in err and "\x1b" not in out
    assert err.count("\n") == 1 and err.startswith("flowcallback report: epoch 3 skipped: ")
    assert "run\\x1b[2J/graphs/epoch_003/activations.json: does not match schema flowgraph-1 at n_samples" in err
    assert (run_dir / "epoch_000.html").is_file() and (run_dir / "epoch_005.html").is_file()
    assert not (run_dir / "epoch_003.html").exists()
    data = page_data(run_dir)
    assert data["epochs"] == [0, 3, 5] and sorted(data["figures"]) == ["0", "5"]
    assert list(data["skipped"]) == ["3"] and "activations.json: does not match schema" in data["skipped"]["3"]
    assert 'id="skipped-note"' in (run_dir / "index.html").read_text("utf-8")


def test_a_healthy_run_reports_with_exit_status_0(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().err == ""
    assert load_run(run_dir).skipped == {} and page_data(run_dir)["skipped"] == {}


def test_a_corrupt_run_json_stays_fatal(run_dir, capsys, tally):
    tally("files corrupted")
    (run_dir / "run.json").write_text('{"format": ')
    with pytest.raises(RunFormatError, match="run.json: invalid JSON"):
        load_run(run_dir)
    assert main(["report", str(run_dir)]) == 2
    assert not (run_dir / "index.html").exists()


def test_resuming_a_run_with_a_corrupt_epoch_keeps_the_others_on_the_run_page(tmp_path, digits, tally):
    """The callback appending to a run read it with load_run; an exception there dropped every
    earlier epoch from the run page. Now only the corrupt one is left out, and noted."""
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    tally("files corrupted")
    (x_tr, y_tr), (x_te, y_te) = digits
    data, log_dir = (x_te[:90], y_te[:90]), tmp_path / "r"
    model = lenet5_digits(seed=4)
    model.fit(x_tr[:200], y_tr[:200], epochs=2, verbose=0,
              callbacks=[FlowCallback(data, log_dir=log_dir, lrp=False, k=8, budget=None, verbose=0)])
    (log_dir / "graphs" / "epoch_001" / "activations.npz").write_bytes(b"damaged")
    model.fit(x_tr[:200], y_tr[:200], epochs=3, initial_epoch=2, verbose=0,
              callbacks=[FlowCallback(data, log_dir=log_dir, lrp=False, k=8, budget=None, verbose=0)])
    page = page_data(log_dir)
    assert sorted(page["figures"], key=int) == ["0", "2", "3"]
    assert list(page["skipped"]) == ["1"] and "epoch_001/activations.npz" in page["skipped"]["1"]
    assert load_run(log_dir).epochs == [0, 2, 3]


# -- item 14: run.json against the graphs -------------------------------------------------------------------
def test_fewer_classes_in_run_json_than_in_the_graphs_is_refused_naming_both_files(run_dir, capsys, tally):
    """report exited 0 and the run page threw a TypeError in the browser: now every epoch is
    skipped with a note naming both files, and the page has nothing it cannot draw."""
    tally("files corrupted")
    doc = json.loads((run_dir / "run.json").read_text())
    doc["class_names"] = ["a", "b"]
    (run_dir / "run.json").write_text(json.dumps(doc))
    with pytest.raises(RunFormatError) as info:
        load_run(run_dir).epoch(3)
    assert str(info.value) == f"{graph_json(run_dir)}: does not match {run_dir / 'run.json'}: 3 classes, run.json has 2"
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and all(f"epoch {e} skipped" in err for e in EPOCHS)
    assert page_data(run_dir)["figures"] == {}


def test_a_column_that_run_json_does_not_list_is_refused_naming_both_files(run_dir, tally):
    tally("files corrupted")
    name = "l9" + "\x1b" * 200
    edit_graph(run_dir, lambda d: d["columns"][0].update(name=name))
    with pytest.raises(RunFormatError, match=r"does not match .*run.json: column 'l9\\x1b\\x1b") as info:
        load_run(run_dir).epoch(3)
    assert len(str(info.value)) < len(str(run_dir)) * 2 + 250  # the name is cut (item 10)
    assert load_run(run_dir).epochs == [0, 5]


def test_analyses_of_an_epoch_with_different_samples_are_refused(run_dir, tally):
    tally("files corrupted")
    store.save_epoch(run_dir, {"activations": make_graph(3), "lrp": flows.build_flow_graph(
        [("l1", "Dense", np.zeros(30, int))], np.zeros(30, int), np.zeros(30, int), class_names=["a", "b", "c"],
        epoch=3, analysis="lrp")})
    run = load_run(run_dir)
    assert run.epochs == [0, 5]
    assert run.skipped[3] == f"{graph_json(run_dir).with_name('lrp.json')}: does not match {graph_json(run_dir)}: " \
                             "30 samples against 60"


# -- item 10: no whole value in a message -------------------------------------------------------------------
def test_an_npz_with_many_long_member_names_is_not_listed_whole(run_dir, tally):
    import zipfile

    tally("files corrupted")
    path = graph_json(run_dir).with_suffix(".npz")
    with zipfile.ZipFile(path, "w") as z:
        for i in range(150):
            z.writestr(f"{'m' * 150}{i}.npy", b"")
    with pytest.raises(RunFormatError, match="expected arrays") as info:
        load_run(run_dir).epoch(3)
    assert len(str(info.value)) < len(str(path)) + 300 and "(150 items)" in str(info.value)


# -- item 8: the schemas' bounds are the writer's ------------------------------------------------------------
def _schema(name):
    return json.loads((Path(_schemas.__file__).parents[1] / "schemas" / f"{name}.json").read_text())


def test_the_schemas_bound_what_the_writer_bounds():
    g, r = _schema("flowgraph-1")["properties"], _schema("run-1")["properties"]
    assert g["n_samples"]["maximum"] == _schemas.MAX_SAMPLES
    column = g["columns"]["items"]["properties"]
    assert column["order"]["maxItems"] == column["clusters"]["maxItems"] == _schemas.MAX_SAMPLES
    assert g["class_names"]["maxItems"] == r["class_names"]["maxItems"] == _schemas.MAX_CLASSES
    assert column["clusters"]["items"]["properties"]["class_counts"]["maxItems"] == _schemas.MAX_CLASSES
    assert g["columns"]["maxItems"] == _schemas.MAX_LAYERS + 2 and r["layers"]["maxItems"] == _schemas.MAX_LAYERS
    names = [g["class_names"]["items"], column["name"], column["layer_type"], r["class_names"]["items"],
             r["model"]["properties"]["name"], r["layers"]["items"]["properties"]["name"],
             r["layers"]["items"]["properties"]["type"]]
    assert {n["maxLength"] for n in names} == {_schemas.MAX_NAME_LENGTH}
    for schema in ("flowgraph-1", "run-1", "views-1", "metrics-1"):  # every array is bounded
        text = json.dumps(_schema(schema))
        assert text.count('"type": "array"') <= text.count('"maxItems"') + (1 if schema == "flowgraph-1" else 0), \
            schema  # flowgraph-1's notes are an array typed with a list of types


def test_the_writer_refuses_a_document_larger_than_the_loader_reads(run_dir, monkeypatch):
    monkeypatch.setitem(_schemas.MAX_JSON_BYTES, "flowgraph-1", 2000)
    before = graph_json(run_dir).read_bytes()
    with pytest.raises(ValueError, match="more than the 2000 that the loader reads; nothing was written"):
        store.save_epoch(run_dir, {"activations": make_graph(3)})
    assert graph_json(run_dir).read_bytes() == before


def test_a_graph_at_the_writers_bounds_is_read_back(tmp_path):
    """The bounds refuse nothing the writer writes: the longest names the callback accepts."""
    long = "é" * _schemas.MAX_NAME_LENGTH
    info = dict(RUN_INFO, model={"name": long, "fingerprint": "f"}, class_names=[long[:-1] + str(i) for i in range(3)],
                layers=[{"name": long, "type": long}])
    store.write_run_info(tmp_path, info)
    y = np.arange(60) % 3
    g = flows.build_flow_graph([(long, long, np.arange(60))], y, y, class_names=info["class_names"], epoch=0)
    store.save_epoch(tmp_path, {"activations": g})
    run = load_run(tmp_path)
    assert run.epochs == [0] and run.epoch(0).equals(g) and run.skipped == {}


def test_refusing_a_long_order_does_not_walk_it():
    """The bounds are checked before the items: a 2 M item order is refused in well under a second."""
    doc = {"columns": [{"order": list(range(2_000_000))}]}
    t0 = time.perf_counter()
    problem = _schemas.bounds_problem(doc, "flowgraph-1")
    assert problem == "at columns/0/order: 2000000 items is too many (at most 100000)"
    assert time.perf_counter() - t0 < 0.5


def test_error_files_are_read_whole_when_small(run_dir):
    (run_dir / "errors").mkdir()
    (run_dir / "errors" / "epoch_003.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    assert load_run(run_dir).errors() == {3: "Traceback ...\nRuntimeError: boom\n"}
    shutil.rmtree(run_dir / "errors")
