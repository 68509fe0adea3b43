"""The run page: drawn from data in memory, its template shipped as package data, its cache safe."""
from __future__ import annotations

import configparser
import fnmatch
import json
import re
from pathlib import Path

import numpy as np

from flowcallback import load_run
from flowcallback.core import flows, render, runpage, store

REPO = Path(runpage.__file__).resolve().parents[2]
INFO = {"flowcallback_version": "0", "model": {"name": "m", "fingerprint": "f"}, "class_names": ["a", "b", "c"],
        "analyses": ["activations", "lrp"], "config": {},
        "layers": [{"name": "l1", "type": "Dense"}, {"name": "l2", "type": "Dense"}]}


def _epoch_graphs(e, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 3
    graphs = {}
    for a in ("activations", "lrp"):
        cols = [(n, "Dense", rng.integers(0, 2 + e, 60)) for n in ("l1", "l2")]
        graphs[a] = flows.build_flow_graph(cols, y, rng.integers(0, 3, 60), epoch=e, analysis=a,
                                           metrics={"accuracy": float(rng.random()), "loss": float(rng.random())})
    return graphs


def _run_dir(tmp_path, epochs, *, seed=0):
    store.write_run_info(tmp_path, INFO)
    for e in epochs:
        store.save_epoch(tmp_path, _epoch_graphs(e, seed + e))


def _data(page: str) -> dict:
    return json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>', page, re.S).group(1))


def test_templates_are_package_data_declared_in_setup_cfg():
    """The template files are found through importlib.resources, and setup.cfg ships them in the wheel."""
    from importlib.resources import files

    folder = files("flowcallback").joinpath("templates")
    for name in runpage.TEMPLATE_FILES:
        assert folder.joinpath(name).is_file(), name
        assert runpage._template(name) == folder.joinpath(name).read_text(encoding="utf-8")
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    declared = cfg["options.package_data"]["flowcallback"].replace("\n", ",")
    patterns = [p.strip() for p in declared.split(",") if p.strip()]
    for name in runpage.TEMPLATE_FILES:
        assert any(fnmatch.fnmatch(f"templates/{name}", p) for p in patterns), (name, patterns)
    # every file in the templates folder is shipped (a file added later must be declared too)
    for path in (REPO / "flowcallback" / "templates").iterdir():
        assert any(fnmatch.fnmatch(f"templates/{path.name}", p) for p in patterns), path.name


def test_page_is_one_file_with_its_style_and_script_inlined(tmp_path):
    page = runpage.write_run_page(tmp_path, INFO, {0: _epoch_graphs(0, 0)}, {})
    text = page.read_text("utf-8")
    assert page == tmp_path / "index.html" and (tmp_path / "plotly.min.js").exists()
    # the only file it loads is plotly.min.js beside it; CSS and JS are inline, no placeholder is left
    assert re.findall(r'<script[^>]*\ssrc="([^"]+)"', text) == ["plotly.min.js"]
    assert "<link" not in text and "http://" not in text and "https://" not in text
    assert runpage._template("run_page.js").strip() in text and runpage._template("run_page.css").strip() in text
    assert not re.search(r"__(TITLE|DATA|STYLE|SCRIPT)__", text)


def test_page_is_drawn_from_memory_without_reading_the_run(tmp_path):
    """The page from graphs in memory is the page of the same run read back from disk."""
    graphs = {e: _epoch_graphs(e, e) for e in range(3)}
    errors = {1: "Traceback ...\nRuntimeError: the LRP worker died\n", 3: "Traceback ...\nOSError: disk full\n"}
    # nothing of the run is on disk where the page is written
    mem = tmp_path / "mem"
    runpage.write_run_page(mem, INFO, graphs, errors)
    assert sorted(p.name for p in mem.iterdir()) == ["index.html", "plotly.min.js"]
    disk = tmp_path / "disk"
    store.write_run_info(disk, INFO)
    for g in graphs.values():
        store.save_epoch(disk, g)
    (disk / "errors").mkdir()
    for e, text in errors.items():
        (disk / "errors" / f"epoch_{e:03d}.txt").write_text(text)
    run = load_run(disk)
    assert (mem / "index.html").read_text("utf-8") == runpage.run_page_html_for(run)
    assert runpage.write_run_page_for(run) == disk / "index.html"
    data = _data((mem / "index.html").read_text("utf-8"))
    assert data["epochs"] == [0, 1, 2, 3] and list(data["failed"]) == ["3"] and list(data["partial"]) == ["1"]


def test_a_name_that_looks_like_a_placeholder_stays_a_name():
    info = dict(INFO, model={"name": "__DATA__ __SCRIPT__", "fingerprint": "f"})
    page = runpage.run_page_html(info, {0: _epoch_graphs(0, 0)})
    assert "<title>flowcallback · __DATA__ __SCRIPT__</title>" in page
    assert page.count('id="run-data"') == 1 and _data(page)["title"].startswith("__DATA__ __SCRIPT__")


def test_run_page_with_a_cache_equals_the_page_built_from_scratch(tmp_path):
    """A caller rewriting the page after every snapshot draws each epoch once: same page."""
    cache = {}
    for e in range(4):
        _run_dir(tmp_path, [e], seed=e)
        run = load_run(tmp_path)
        cached = runpage.run_page_html_for(run, cache)
        assert cached == runpage.run_page_html_for(load_run(tmp_path))
        assert sorted(cache) == [(i, a) for i in range(e + 1) for a in ("activations", "lrp")]
        # the page's data is valid JSON, and holds every epoch's figure of every analysis
        data = _data(cached)
        assert sorted(data["figures"]) == [str(i) for i in range(e + 1)] and data["epochs"] == list(range(e + 1))
        for i in range(e + 1):
            for a in ("activations", "lrp"):
                sankey = data["figures"][str(i)][a]["data"][0]
                g = run.epoch(i, a)
                assert sankey["type"] == "sankey"
                assert len(sankey["node"]["label"]) == sum(len(c.order) for c in g.columns)
    # an epoch written again (a resumed run) is drawn anew, its entries dropped or not
    _run_dir(tmp_path, [2], seed=99)
    fresh = runpage.run_page_html_for(load_run(tmp_path))
    before = {k: v["figure"] for k, v in cache.items()}
    assert runpage.run_page_html_for(load_run(tmp_path), cache) == fresh
    assert [k for k in cache if cache[k]["figure"] != before[k]] == [(2, "activations"), (2, "lrp")]
    for key in [k for k in cache if k[0] == 2]:
        del cache[key]
    assert runpage.run_page_html_for(load_run(tmp_path), cache) == fresh


def test_the_cache_reuses_parts_of_equal_graphs(tmp_path, monkeypatch):
    """Graphs loaded again from disk are equal to the cached ones: nothing is drawn twice."""
    _run_dir(tmp_path, [0, 1])
    cache = {}
    runpage.run_page_html_for(load_run(tmp_path), cache)
    drawn = []
    real = runpage._run_page_parts
    monkeypatch.setattr(runpage, "_run_page_parts",
                        lambda g, name: drawn.append((g.epoch, g.analysis)) or real(g, name))
    runpage.run_page_html_for(load_run(tmp_path), cache)
    assert drawn == []


def test_many_classes_bring_the_flows_of_the_other_classes():
    """Above 20 classes, the flows merged into "other" are in the page, per class, for the class filter."""
    names = [f"class {i:02d}" for i in range(30)]
    y = np.repeat(np.arange(30), 4)
    g = flows.build_flow_graph([("l1", "Dense", y // 5)], y, y, class_names=names, epoch=0)
    info = dict(INFO, class_names=names, analyses=["activations"], layers=[{"name": "l1", "type": "Dense"}])
    data = _data(runpage.run_page_html(info, {0: {"activations": g}}))
    shown = render.top_classes(g)
    assert data["shown_classes"] == shown and data["max_colored"] == 20 and data["support"] == [4] * 30
    rows = data["other_flows"]["0"]["activations"]
    assert {r[2] for r in rows} == set(range(30)) - set(shown)
    # per (source node, target node), the rows add up to the merged "other" link of the Sankey
    link = data["figures"]["0"]["activations"]["data"][0]["link"]
    merged = {(s, t): v for s, t, v, c in zip(link["source"], link["target"], link["value"], link["customdata"])
              if c[3] == -1}
    per_pair = {}
    for s, t, _, count, _ in rows:
        per_pair[(s, t)] = per_pair.get((s, t), 0) + count
    assert per_pair == merged


def test_set_up_errors_reach_the_page_and_the_epochs_stay_as_they_were(tmp_path):
    """``Run.errors()`` holds the set-up's errors under "setup": the page shows their last line, cut at
    a word; the epochs' errors mark their epochs as before."""
    _run_dir(tmp_path, [0, 1])
    (tmp_path / "errors").mkdir()
    reason = "RuntimeError: the native LRP engine cannot analyse layer(s) " + "; ".join(
        f"lambda_{i:03d} (Lambda: no LRP rule for this layer class)" for i in range(40))
    (tmp_path / "errors" / "setup.txt").write_text(f"Traceback (most recent call last):\n  ...\n{reason}\n")
    (tmp_path / "errors" / "epoch_001.txt").write_text("Traceback ...\nMemoryError\n")
    run = load_run(tmp_path)
    data = _data(runpage.write_run_page_for(run).read_text("utf-8"))
    assert data["epochs"] == [0, 1] and data["failed"] == {} and data["partial"] == {"1": "MemoryError"}
    shown = data["setup_error"]
    assert shown.endswith("…") and len(shown) <= 300 and reason.startswith(shown[:-1])
    assert reason[len(shown) - 1] in " ,;:"  # cut between words
    without = _data(runpage.run_page_html(INFO, {0: _epoch_graphs(0, 0)}, {0: "Traceback ...\nOSError: x\n"}))
    assert without["setup_error"] == "" and without["partial"] == {"0": "OSError: x"}


def test_report_rebuilds_the_page_of_a_run_whose_set_up_recorded_an_error(tmp_path, capsys):
    from flowcallback.cli import main

    _run_dir(tmp_path, [0])
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "setup.txt").write_text("Traceback ...\nRuntimeError: no LRP rule for layer(s) twice\n")
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    data = _data((tmp_path / "index.html").read_text("utf-8"))
    assert data["setup_error"] == "RuntimeError: no LRP rule for layer(s) twice" and data["epochs"] == [0]


def test_the_runners_page_state_draws_each_epoch_once_and_equals_a_fresh_page(tmp_path):
    """What the callback keeps (RunPageState): each epoch's parts are drawn once, drawn again only
    when the epoch is written again, and the page equals the one drawn from disk."""
    _run_dir(tmp_path, [0, 1], seed=3)
    run = load_run(tmp_path)
    state = runpage.RunPageState(tmp_path, run.info)
    for e in run.epochs:
        state.add_epoch(e, {a: run.epoch(e, a) for a in run.analyses(e)}, run.views(e))
    state.metrics = {e: run.layer_metrics().query("epoch == @e") for e in run.epochs}
    page = state.write().read_text("utf-8")
    assert state.drawn == [(e, a) for e in (0, 1) for a in ("activations", "lrp")]
    assert page == runpage.run_page_html_for(load_run(tmp_path))
    state.add_epoch(1, {a: run.epoch(1, a) for a in run.analyses(1)}, run.views(1))
    assert state.drawn == [(0, "activations"), (0, "lrp")]  # epoch 1's parts go, epoch 0's stay
    assert state.write().read_text("utf-8") == page


# -- the confusion: counted once per epoch, embedded sparsely, bounded with many classes ----------------


def _many_class_graphs(n_classes, epochs, n=300, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"class {i}" for i in range(n_classes)]
    y = rng.integers(0, n_classes, n)
    out = {}
    for e in epochs:
        p = np.where(rng.random(n) < 0.3 + 0.2 * e, y, rng.integers(0, n_classes, n))
        out[e] = {"activations": flows.build_flow_graph([("l1", "Dense", y % 7)], y, p, class_names=names, epoch=e)}
    return names, out


def test_the_page_state_counts_each_epochs_confusion_once_over_many_rewrites(tmp_path, monkeypatch):
    """RunPageState keeps each epoch's confusion: N rewrites count it once per epoch written (and
    once more for an epoch written again), and the page embeds exactly those counts."""
    from flowcallback.core import history

    calls = []
    count = history.confusion_cells

    def counting(labels, predictions, n_classes):
        calls.append(len(labels))
        return count(labels, predictions, n_classes)

    monkeypatch.setattr(history, "confusion_cells", counting)
    info = dict(INFO, analyses=["activations", "lrp"])
    state = runpage.RunPageState(tmp_path, info)
    kept = {}
    for e in range(4):
        state.add_epoch(e, _epoch_graphs(e, seed=e))
        for _ in range(3):  # the runner rewrites the page after every snapshot and error
            state.write()
        kept[e] = state.confusions[e]
    assert len(calls) == 4  # one count per epoch: not per rewrite, not per analysis
    assert all(state.confusions[e] is kept[e] for e in range(4))  # the same objects, kept
    state.add_epoch(2, _epoch_graphs(2, seed=9))  # an epoch written again is counted again, once
    state.write(), state.write()
    assert len(calls) == 5 and state.confusions[2] is not kept[2] and state.confusions[1] is kept[1]
    data = _data((tmp_path / "index.html").read_text("utf-8"))
    for e in range(4):
        g = state.graphs[e]["activations"]
        t, p, c = data["confusion"]["cells"][str(e)]
        dense = np.zeros((3, 3), dtype=np.int64)
        np.add.at(dense, (g.labels, g.predictions), 1)
        assert {(a, b): k for a, b, k in zip(t, p, c)} == {(a, b): int(dense[a, b]) for a, b in zip(*np.nonzero(dense))}


def test_the_embedded_confusion_is_sparse_and_the_same_as_run_confusion(tmp_path):
    names, graphs = _many_class_graphs(1000, (0, 1, 2), n=200)
    info = dict(INFO, class_names=names, analyses=["activations"], layers=[{"name": "l1", "type": "Dense"}])
    data = _data(runpage.run_page_html(info, graphs, {}))
    cells = data["confusion"]["cells"]
    assert data["confusion"]["max_classes"] == runpage.CONFUSION_MATRIX_CLASSES
    from flowcallback.core.history import confusion

    table = confusion([graphs[e]["activations"] for e in graphs], zeros=False)
    for e in graphs:
        t, p, c = cells[str(e)]
        assert len(c) <= 200 and sum(c) == 200  # at most one cell per sample, not 10^6
        part = table[table.epoch == e]
        assert [t, p, c] == [part.true.tolist(), part.predicted.tolist(), part["count"].tolist()]


_BOUNDED_PAGE = """
import json, re, resource, sys, tempfile
import numpy as np
from flowcallback.core import flows, runpage

def graphs(k, n=300, epochs=3, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"class {i}" for i in range(k)]
    y = rng.integers(0, k, n)
    out = {}
    for e in range(epochs):
        p = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
        out[e] = {"activations": flows.build_flow_graph([("l1", "Dense", y % 7)], y, p, class_names=names, epoch=e)}
    return names, out

def write(k):
    names, gs = graphs(k)
    info = {"model": {"name": "m"}, "class_names": names, "analyses": ["activations"], "layers": [{"name": "l1"}]}
    state = runpage.RunPageState(tempfile.mkdtemp(), info)
    for e, g in gs.items():  # as the runner: a rewrite after every snapshot
        state.add_epoch(e, g)
        path = state.write()
    return path.read_text("utf-8")

write(10)  # imports and caches what a page needs, before the limit

def address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

limit = address_space() + 384 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    page = write(int(sys.argv[1]))
except MemoryError:
    print("MemoryError")
    sys.exit(3)
data = json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>', page, re.S).group(1))
print(json.dumps({"page": len(page), "confusion": len(json.dumps(data["confusion"], separators=(",", ":"))),
                  "cells": sum(len(c[2]) for c in data["confusion"]["cells"].values())}))
"""


def test_a_page_of_two_thousand_classes_builds_in_bounded_memory_and_size():
    """2,000 classes, 300 samples, 3 epochs written as the runner writes them, in a child process
    whose address space may grow by 384 MiB only: classes² rows per epoch (4 million Python tuples)
    took 2.9 GB; the page's confusion data grows with the samples, not with classes²."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _BOUNDED_PAGE, "2000"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    sizes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sizes["cells"] <= 3 * 300  # nonzero cells only: at most one per sample and epoch
    assert sizes["confusion"] < 3 * 300 * 3 * 6 + 200  # three short integers per cell: O(samples)
    assert sizes["page"] < 2_000_000  # a dense 2,000² table per epoch would be over 24 MB


def test_the_other_flows_point_at_the_nodes_the_sankey_draws_when_small_clusters_are_grouped():
    # 30 classes (10 drawn as "other") and a layer of 60 clusters (grouped to MAX_DRAWN_CLUSTERS):
    # the class filter gives a class its flows back by node index, so both must index the same nodes
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 30, n)
    layer = np.r_[np.arange(60), rng.integers(0, 60, n - 60)]
    g = flows.build_flow_graph([("conv2d", "Conv2D", layer), ("dense", "Dense", y % 7)], y, y,
                               class_names=[f"c{i}" for i in range(30)])
    shown = render.top_classes(g)
    tr = render.sankey_trace(g, shown=shown)
    rows = runpage._other_flow_rows(g, shown)
    other = {(s, t): v for s, t, v, c in zip(tr.link.source, tr.link.target, tr.link.value, tr.link.customdata)
             if c[3] == -1}
    by_pair = {}
    for s, t, cls, cnt, _ in rows:
        assert cls not in shown
        by_pair[(s, t)] = by_pair.get((s, t), 0) + cnt
    assert by_pair == other  # each grey "other" flow is exactly the classes merged into it
    assert sum(1 for x in tr.node.x if x == tr.node.x[0]) == flows.MAX_DRAWN_CLUSTERS


def test_the_flows_across_epochs_draw_a_columns_small_clusters_as_one_node():
    from flowcallback.core.history import epoch_flows

    rng = np.random.default_rng(8)
    n = 300
    y = rng.integers(0, 10, n)
    graphs = []
    for e, clusters in enumerate((70, 20, 45)):  # grouped at epochs 0 and 2, not at 1
        layer = np.r_[np.arange(clusters), rng.integers(0, clusters, n - clusters)]
        graphs.append(flows.build_flow_graph([("conv2d", "Conv2D", layer)], y, y, epoch=e))
    rows, groups = runpage._epoch_flow_rows(graphs)
    rows = rows["conv2d"]
    full = epoch_flows(graphs, "conv2d")
    small = {g.epoch: set(flows.group_small_clusters(g)[1][0].members) if len(g.columns[0].order) > 30 else set()
             for g in graphs}
    for a, b in ((0, 1), (1, 2)):
        part = [r for r in rows if (r[0], r[1]) == (a, b)]
        assert sum(r[5] for r in part) == n  # every sample, once
        # a cluster drawn on its own keeps its rows; the small ones are one node, -1
        assert {r[2] for r in part} == set(graphs[a].columns[0].order) - small[a] | ({-1} if small[a] else set())
        assert {r[3] for r in part} == set(graphs[b].columns[0].order) - small[b] | ({-1} if small[b] else set())
        kept = full[(full.source_epoch == a) & ~full.source_cluster.isin(small[a])
                    & ~full.target_cluster.isin(small[b])]
        assert sorted(map(tuple, kept[["source_cluster", "target_cluster", "true_class", "count"]].values.tolist())) \
            == sorted((r[2], r[3], r[4], r[5]) for r in part if r[2] >= 0 and r[3] >= 0)
        assert all(len(r[7]) == min(5, r[5]) and r[7] == sorted(r[7]) for r in part)
    # the grouped node's hover says what it holds, at the epochs that have one
    assert set(groups["conv2d"]) == {"0", "2"}
    for e in (0, 2):
        group = flows.group_small_clusters(graphs[e])[1][0]
        assert groups["conv2d"][str(e)] == group.text
        assert group.text.startswith(f"{len(small[e])} clusters of ≤ ")
