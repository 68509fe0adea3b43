"""The live view: ``flowcallback serve`` and the TensorBoard "Flows" dashboard, as real processes.

Each server is started as a user starts it (``flowcallback serve LOG_DIR``, ``tensorboard --logdir``)
on a copy of the session's fitted run, beside an unreadable run and a hostile one. The tests check
what reaches the client: the addresses bound, the paths refused (no byte of a file outside the
log_dir comes back), the pages in a real Chromium, and a snapshot written while a page is open
appearing without a reload, with the reader's choices kept.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowcallback import load_run
from flowcallback.core import store

from browser import chromium_path, open_page

pytestmark = pytest.mark.slow  # the session's real fit

SECRET = "FLOWCALLBACK-SECRET-4711"
needs_chromium = [pytest.mark.browser, pytest.mark.skipif(chromium_path() is None,
                                                          reason="Debian's chromium is not installed")]


def _land_epoch(run_dir: Path, source: int, epoch: int) -> None:
    """Write snapshot ``epoch`` into ``run_dir`` as the callback does (one atomic epoch directory):
    the graphs and views of snapshot ``source``, numbered ``epoch``."""
    run = load_run(run_dir)
    graphs = {a: dataclasses.replace(run.epoch(source, a), epoch=epoch) for a in run.analyses(source)}
    store.save_epoch(run_dir, graphs, run.views(source))


def _hostile_run(run_dir: Path) -> None:
    """A readable run whose names are HTML and whose files on disk are scripts: none may run."""
    import numpy as np

    from flowcallback.core.flows import build_flow_graph

    names = ['<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>"]
    store.write_run_info(run_dir, {
        "flowcallback_version": "0", "model": {"name": "<script>window.__pwned=3</script>", "fingerprint": "0"},
        "class_names": names, "analyses": ["activations"], "layers": [{"name": "<b>dense</b>", "type": "Dense"}],
        "config": {}})
    for epoch in (0, 1):
        g = build_flow_graph([("<b>dense</b>", "Dense", np.array([0, 1, 0, 1]))], [0, 0, 1, 1], [0, 1, 1, 1],
                             class_names=names, epoch=epoch)
        store.save_epoch(run_dir, {"activations": g})
    (run_dir / "index.html").write_text(f"<script>window.__pwned=4</script>{SECRET}")
    (run_dir / "plotly.min.js").write_text(f"window.__pwned=5; // {SECRET}")
    (run_dir / "epoch_001.html").write_text(f"<script>window.__pwned=6</script>{SECRET}")
    (run_dir / "notes.svg").write_text(f"<svg xmlns='http://www.w3.org/2000/svg'><script>{SECRET}</script></svg>")


@pytest.fixture(scope="module")
def logs(tmp_path_factory, fitted_run):
    """``root/logs``: ``run1`` (a copy of the fitted run), ``broken`` (an invalid run.json),
    ``hostile`` and TensorBoard-like ``train/``; ``root/secret.txt`` and links to it inside run1."""
    root = tmp_path_factory.mktemp("live")
    logs = root / "logs"
    shutil.copytree(fitted_run["log_dir"], logs / "run1")
    (logs / "broken").mkdir()
    (logs / "broken" / "run.json").write_text('{"format": "flowcallback/run", "version": 1}')
    _hostile_run(logs / "hostile")
    (logs / "train").mkdir()
    (logs / "train" / "events.out.tfevents.1.host").write_bytes(b"\0" * 16)
    (root / "secret.txt").write_text(SECRET)
    os.symlink(root / "secret.txt", logs / "run1" / "leak.txt")
    os.symlink(root, logs / "run1" / "leakdir")
    return {"root": root, "logs": logs, "run": logs / "run1", "secret": root / "secret.txt"}


def _wait_for_line(proc, pattern: str, timeout: float = 60.0) -> re.Match:
    """The first line of ``proc``'s stdout that matches ``pattern`` (read in a thread: no hang)."""
    found, lines = [], []

    def read():
        for line in proc.stdout:
            lines.append(line)
            m = re.search(pattern, line)
            if m:
                found.append(m)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not found:
        proc.kill()
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s: {lines!r}")
    return found[0]


def _listening_addresses(pid: int):
    import psutil

    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope="module")
def served(logs):
    """``flowcallback serve LOG_DIR`` running on ``logs``: yields its port and process."""
    exe = Path(sys.executable).with_name("flowcallback")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "flowcallback.cli"]
    proc = subprocess.Popen(cmd + ["serve", str(logs["logs"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        m = _wait_for_line(proc, r"http://(127\.0\.0\.1):(\d+)/")
        yield {"host": m.group(1), "port": int(m.group(2)), "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1"):
    """A raw request (the path sent as it is, unnormalised): (status, headers, body)."""
    c = http.client.HTTPConnection(host, port, timeout=60)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _traversals(logs) -> list:
    secret = str(logs["secret"])
    return ["/../secret.txt", "/run1/../../secret.txt", "/%2e%2e/secret.txt", "/run1/%2e%2e/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt", "/run1/..%2f..%2fsecret.txt", "/%252e%252e/secret.txt",
            secret, "/" + secret, "//" + secret.lstrip("/"), "/run1/leak.txt", "/run1/leakdir/secret.txt",
            "/run1/%00/../../secret.txt", "/run1\\..\\..\\secret.txt", "/hostile/index.html/../../../secret.txt"]


def test_serve_binds_loopback_only_and_lists_the_runs_with_their_errors(served, logs):
    assert served["host"] == "127.0.0.1"
    assert _listening_addresses(served["proc"].pid) == {"127.0.0.1"}
    status, headers, body = _get(served["port"], "/")
    text = body.decode()
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    assert 'href="run1/index.html"' in text and 'href="hostile/index.html"' in text
    # the unreadable run is listed with its error; TensorBoard's folder is not a run
    assert re.search(r"<b>broken</b>: cannot be read: .*run\.json.*required property", text)
    assert "train" not in text
    # the hostile run's names are shown as text
    assert "<script>window.__pwned" not in text and "&lt;script&gt;window.__pwned=3" in text


def test_serve_refuses_every_path_outside_the_log_dir_and_leaks_nothing(served, logs):
    port = served["port"]
    for path in _traversals(logs):
        status, headers, body = _get(port, path)
        assert status in (403, 404), (path, status)
        assert SECRET.encode() not in body, path
        assert headers["x-content-type-options"] == "nosniff"
    # no listing of a folder, no hidden file, GET and HEAD only
    for path in ("/run1/graphs/", "/run1/graphs", "/train/", "/train/events.out.tfevents.1.host",
                 "/run1/.flowcallback.lock", "/run1/graphs/epoch_001/"):
        assert _get(port, path)[0] == 404, path
    status, _, body = _get(port, "/favicon.ico")  # every browser asks: no icon, and no 404 in the console
    assert status == 204 and body == b""
    assert _get(port, "/run1/index.html", method="POST")[0] == 405
    assert _get(port, "/run1/index.html", method="PUT")[0] == 405
    # the hostile run's own pages, script and SVG are never sent: the pages are drawn anew
    for path in ("/hostile/index.html", "/hostile/epoch_001.html", "/hostile/plotly.min.js", "/hostile/notes.svg"):
        status, headers, body = _get(port, path)
        assert SECRET.encode() not in body and b"window.__pwned=4" not in body, path
    status, headers, body = _get(port, "/hostile/index.html")
    assert status == 200 and b'id="run-data"' in body and b"<script>window.__pwned" not in body
    assert "script-src 'self' 'unsafe-eval' 'sha256-" in headers["content-security-policy"]
    # the run's own files are served, as data
    status, headers, body = _get(port, "/run1/run.json")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["class_names"][0] == "digit 0"
    assert headers["content-security-policy"].startswith("sandbox")
    status, headers, body = _get(port, "/run1/graphs/epoch_002/activations.npz")
    assert status == 200 and body[:2] == b"PK" and headers["content-type"] == "application/octet-stream"
    # a poll: HEAD answers the page's ETag without a body, 304 when unchanged
    status, headers, body = _get(port, "/run1/index.html", method="HEAD")
    assert status == 200 and body == b"" and headers["etag"]


def _slide(page, i: int) -> None:
    """Move the epoch slider to position ``i``, as a reader's drag does."""
    page.evaluate("i => { const s = document.getElementById('epoch'); s.value = String(i); "
                  "s.dispatchEvent(new Event('input')); }", i)


def _state(page) -> dict:
    return page.evaluate("""() => ({
        max: document.getElementById('epoch').max, label: document.getElementById('epoch-label').textContent,
        filter: document.getElementById('class-filter').value,
        filterStatus: document.getElementById('filter-status').textContent,
        column: document.getElementById('across-column').value,
        analysis: Array.from(document.querySelectorAll('#analysis-buttons button'))
            .filter(b => b.style.fontWeight === 'bold').map(b => b.dataset.analysis)[0],
        live: document.getElementById('live-status').textContent,
        title: document.getElementById('title').textContent})""")


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_a_snapshot_landing_appears_in_the_open_page_and_keeps_the_readers_choices(served, logs):
    base = f"http://127.0.0.1:{served['port']}/"
    with open_page(base + "run1/index.html", allow=(base,)) as (page, errors, blocked):
        assert _state(page)["max"] == "1"  # epochs 1 and 2
        # the reader's choices: epoch 1 (not the last), LRP, a class filter, a column
        _slide(page, 0)
        page.get_by_role("button", name="LRP relevance").click()
        page.fill("#class-filter", "digit 3")
        page.dispatch_event("#class-filter", "input")
        page.select_option("#across-column", "dense120")
        before = _state(page)
        assert before["label"] == "1" and before["analysis"] == "lrp" and before["column"] == "dense120"
        assert before["filterStatus"].startswith("1 of 10 classes match")
        _land_epoch(logs["run"], 2, 3)
        page.wait_for_function("document.getElementById('epoch').max === '2'", timeout=30_000)
        after = _state(page)
        assert after["title"].endswith("3 snapshot(s)"), after
        assert {k: after[k] for k in ("label", "analysis", "column", "filter", "filterStatus")} == \
            {k: before[k] for k in ("label", "analysis", "column", "filter", "filterStatus")}
        assert after["live"].startswith("live")
        assert page.evaluate("document.querySelectorAll('#heatmap .xtick').length") == 3
        # a reader on the last epoch follows the training
        _slide(page, 2)
        assert _state(page)["label"] == "3"
        _land_epoch(logs["run"], 2, 4)
        page.wait_for_function("document.getElementById('epoch-label').textContent === '4'", timeout=30_000)
        final = _state(page)
        assert final["max"] == "3" and final["analysis"] == "lrp" and final["filter"] == "digit 3"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
        assert page.locator(".sankey-node").count() > 0
        assert errors == [] and blocked == []
        # the hostile run: its names drawn as text, none of its scripts run
        page.goto(base + "hostile/index.html")
        page.wait_for_selector(".sankey-node", timeout=30_000)
        assert page.evaluate("window.__pwned === undefined")
        assert "<script>window.__pwned=3</script>" in page.inner_text("#title")
        assert errors == [] and blocked == []


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_the_run_page_opened_from_a_file_does_not_poll(fitted_run):
    url = (Path(fitted_run["log_dir"]) / "index.html").resolve().as_uri()
    with open_page(url) as (page, errors, blocked):
        page.wait_for_timeout(4000)  # longer than a poll's interval
        assert page.evaluate("document.getElementById('live-status').textContent") == ""
        assert errors == [] and blocked == []


# -- TensorBoard --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard(logs):
    """``tensorboard --logdir logs --host 127.0.0.1`` (never --bind_all), with flowcallback installed."""
    pytest.importorskip("tensorboard")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logs["logs"]), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _, body = _get(port, "/data/plugins_listing")
                if status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"TensorBoard did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
        yield {"port": port, "proc": proc, "plugins": json.loads(body)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tensorboard_finds_the_plugin_and_its_routes_serve_the_runs(tensorboard, logs):
    port = tensorboard["port"]
    assert _listening_addresses(tensorboard["proc"].pid) == {"127.0.0.1"}
    flows = tensorboard["plugins"]["flows"]
    assert flows["enabled"] and flows["tab_name"] == "Flows"
    assert flows["loading_mechanism"]["module_path"] == "/data/plugin/flows/index.js"
    status, headers, body = _get(port, "/data/plugin/flows/index.js")
    assert status == 200 and b"export async function render" in body
    status, _, body = _get(port, "/data/plugin/flows/runs")
    runs = {r["path"]: r for r in json.loads(body)}
    assert set(runs) == {"run1", "broken", "hostile"}  # train/ (TensorBoard's) is no run
    assert runs["run1"]["error"] is None and runs["run1"]["epochs"][:2] == [1, 2]
    assert "required property" in runs["broken"]["error"] and runs["broken"]["epochs"] == []
    assert runs["hostile"]["error"] is None and runs["hostile"]["epochs"] == [0, 1]
    status, headers, body = _get(port, "/data/plugin/flows/site/run1/index.html")
    assert status == 200 and b'id="run-data"' in body and headers["x-content-type-options"] == "nosniff"
    assert "'sha256-" in headers["content-security-policy"]
    for path in _traversals(logs):
        status, _, body = _get(port, "/data/plugin/flows/site" + path)
        assert status in (403, 404), (path, status)
        assert SECRET.encode() not in body, path
    for path in ("/hostile/index.html", "/hostile/plotly.min.js", "/hostile/epoch_001.html", "/hostile/notes.svg"):
        status, _, body = _get(port, "/data/plugin/flows/site" + path)
        assert SECRET.encode() not in body and b"window.__pwned=4" not in body, path
    assert _get(port, "/data/plugin/flows/site/broken/index.html")[0] == 500


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_the_flows_dashboard_in_chromium_lists_the_runs_and_follows_a_landing_snapshot(tensorboard, logs):
    base = f"http://127.0.0.1:{tensorboard['port']}/"
    with open_page(base + "#flows", allow=(base,), wait_for=None) as (page, errors, blocked):
        def frame_of(part: str):
            return next((f for f in page.frames if part in f.url), None)

        def wait_for_frame(part: str, selector: str, seconds: float = 60):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                f = frame_of(part)
                if f is not None and f.query_selector(selector):
                    return f
                page.wait_for_timeout(500)
            raise AssertionError(f"no frame {part} showing {selector}: {[f.url for f in page.frames]}")

        dashboard = wait_for_frame("/data/plugin_entry.html?name=flows", "#flows-runs button")
        dashboard.get_by_role("button", name="run1").click()
        frame = wait_for_frame("/data/plugin/flows/site/run1/", ".sankey-node")
        assert frame.parent_frame == dashboard
        items = dashboard.eval_on_selector_all("#flows-runs li", "els => els.map(e => e.textContent)")
        assert any(t.startswith("broken: cannot be read:") and "required property" in t for t in items), items
        assert any(t.startswith("run1") for t in items) and any(t.startswith("hostile") for t in items), items
        frame.wait_for_selector(".sankey-node", timeout=30_000)
        shown = frame.evaluate("document.getElementById('epoch').max")
        _land_epoch(logs["run"], 2, 9)
        frame.wait_for_function(f"document.getElementById('epoch').max === '{int(shown) + 1}'", timeout=30_000)
        assert frame.evaluate("document.getElementById('epoch-label').textContent") == "9"
        # the hostile run in the dashboard: drawn, names as text, none of its scripts run
        dashboard.get_by_role("button", name="hostile").click()
        wait_for_frame("/data/plugin/flows/site/hostile/", ".sankey-node")
        assert all(f.evaluate("window.__pwned === undefined") for f in page.frames)
        page_errors = [e for e in errors if "pageerror" in e or "/data/plugin/flows/" in e]
        assert page_errors == [], page_errors


# -- the notebook ---------------------------------------------------------------------------------------
_LIVE_CELL = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from flowcallback import FlowCallback
from flowcallback.demo import lenet5_digits, load_digits_split

(x_tr, y_tr), (x_te, y_te) = load_digits_split()
cb = FlowCallback((x_te[:200], y_te[:200]), log_dir={log_dir!r}, epochs=[1, 2], lrp=False, class_means=False,
                  projection=None, verbose=0, display="live")
lenet5_digits().fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
print("live figure:", cb._snapshotter.live.shown, "shown, epoch", cb._snapshotter.live.epoch)
"""
_LIVE_SETS_CELL = """
cb = FlowCallback({{"clean": (x_te[:150], y_te[:150]), "late": (x_te[150:300], y_te[150:300])}}, log_dir={log_dir!r},
                  epochs=[1, 2], lrp=False, class_means=False, projection=None, verbose=0, display="live")
lenet5_digits().fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
"""


@pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None for m in ("nbclient", "ipykernel")),
                    reason="needs nbclient and ipykernel (the test extras)")
def test_display_live_shows_one_figure_updated_in_place_in_a_notebook(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    cells = [_LIVE_CELL.format(log_dir=str(tmp_path / "r")), _LIVE_SETS_CELL.format(log_dir=str(tmp_path / "s"))]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [o for o in outputs if o.output_type == "error"] == []
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    # one display, made at the first snapshot and updated at the second: it shows epoch 2
    assert len(figures) == 1, [o.output_type for o in outputs]
    fig = figures[0]["data"]["application/vnd.plotly.v1+json"]
    assert fig["layout"]["title"]["text"].startswith("lenet5_digits · Epoch 2"), fig["layout"]["title"]
    assert "sankey" in {t["type"] for t in fig["data"]}
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "live figure: 2 shown, epoch 2" in text
    # several held-out sets: one figure per set, each updated in place to epoch 2 and titled with its set
    outputs = nb.cells[1].outputs
    assert [o for o in outputs if o.output_type == "error"] == []
    titles = [o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"]
              for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert sorted(t.split(" · Epoch")[0] for t in titles) == ["lenet5_digits · clean", "lenet5_digits · late"], titles
    assert all(" · Epoch 2" in t for t in titles), titles


def test_display_live_outside_a_notebook_shows_nothing_and_a_bad_value_is_named(fitted_run, capsys):
    from flowcallback import FlowCallback
    from flowcallback._progress import LiveFigure

    run = load_run(fitted_run["log_dir"])
    live = LiveFigure()  # this process is no IPython kernel
    live.show(2, {a: run.epoch(2, a) for a in run.analyses(2)}, title_prefix="m")
    assert (live.notebook, live.shown, live.epoch) == (False, 0, None)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"^display: expected None or 'live', got 'yes'$"):
        FlowCallback((fitted_run["x_test"], fitted_run["y_test"]), display="yes")
