"""The console command: `flowcallback demo`."""
from __future__ import annotations

import pytest

from flowcallback import load_run
from flowcallback.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.both]


def test_demo_writes_a_page_per_epoch_and_prints_them(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--log-dir", str(out_dir), "--verbose", "0"]) == 0
    printed = capsys.readouterr().out
    run = load_run(out_dir)
    assert run.epochs == [0, 1]
    assert run.analyses(1) == ["activations", "lrp"]
    assert str((out_dir / "index.html").resolve()) in printed and (out_dir / "index.html").exists()
    for e in run.epochs:
        assert str(run.page(e).resolve()) in printed
        assert run.page(e).exists()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["compare", "run", "0", "1", "--show", "-3"], "argument --show: must be >= 0, got -3"),
    (["serve", "run", "--port", "-1"], r"argument --port: must be in [0, 65535] (0: a free port), got -1"),
    (["serve", "run", "--port", "65536"], r"argument --port: must be in [0, 65535] (0: a free port), got 65536"),
    (["serve", "run", "--port", "abc"], "argument --port: invalid int value: 'abc'"),
])
def test_a_number_out_of_range_gets_the_subcommands_usage_and_its_bounds(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"usage: flowcallback {argv[0]} ")  # the subcommand's usage, not the top level's
    assert err.rstrip().endswith(f"flowcallback {argv[0]}: error: {message}")


def _page_without_ids(path) -> str:
    """A page's text with Plotly's random div ids (a uuid per figure) replaced by their order."""
    import re

    text = path.read_text("utf-8")
    ids = list(dict.fromkeys(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)))
    for i, uid in enumerate(ids):
        text = text.replace(uid, f"figure-{i}")
    return text


def test_report_rebuilds_the_pages_the_callback_wrote(tmp_path, digits):
    """``flowcallback report`` gives back the pages of a real run as the callback wrote them, notes
    included (it once dropped every note of the epoch pages, and Run.figure kept only the first
    analysis's)."""
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    log_dir = tmp_path / "run"
    cb = FlowCallback((x_te[:150], y_te[:150]), log_dir=log_dir, epochs=[0, 1], k=8, lrp_backend="native", verbose=0,
                      background=False)
    lenet5_digits(seed=4).fit(x_tr[:200], y_tr[:200], epochs=1, verbose=0, callbacks=[cb])
    pages = sorted(log_dir.glob("*.html"))
    assert [p.name for p in pages] == ["epoch_000.html", "epoch_001.html", "index.html"]
    written = {p.name: _page_without_ids(p) for p in pages}
    run = load_run(log_dir)
    notes = run.epoch(1, "lrp").notes
    assert any(n.startswith("LRP relevance (lrp.epsilon) is computed by flowcallback native LRP") for n in notes)
    assert "LRP relevance (lrp.epsilon) is computed by" in written["epoch_001.html"]
    # once under the LRP diagram (its button's annotations), never under the activations one
    fig = run.figure(1)
    lrp_button = next(b for b in fig.layout.updatemenus[0].buttons if b.label == "LRP relevance")
    notes_of = {a.get("name"): a["text"] for a in lrp_button.args[1]["annotations"]}
    assert notes_of["notes"].count("LRP relevance (lrp.epsilon)") == 1
    assert not any("LRP relevance (lrp.epsilon)" in (a.text or "") for a in fig.layout.annotations)
    for p in pages:
        p.unlink()
    assert main(["report", str(log_dir)]) == 0
    rebuilt = {p.name: _page_without_ids(p) for p in sorted(log_dir.glob("*.html"))}
    assert rebuilt.keys() == written.keys()
    for name in written:
        assert rebuilt[name] == written[name], f"{name} differs once rebuilt"


def test_python_dash_m_runs_the_command(tmp_path):
    """Where the environment's bin/ is not on PATH (a notebook's kernel, a venv not activated)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flowcallback", "compare", str(tmp_path / "none"), "0", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("flowcallback compare: error: ") and "none" in done.stderr
    usage = subprocess.run([sys.executable, "-m", "flowcallback", "--help"], capture_output=True, text=True,
                           timeout=300)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m flowcallback ")


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(fitted_run):
    """``flowcallback compare RUN 1 2 | head -1``: the reader closes the pipe after one line; the
    command stops quietly, with no 'Broken pipe' error and status 0."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "flowcallback", "compare", str(fitted_run["log_dir"]), "1", "2"]
    full = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0 and full.stdout.strip() and full.stderr == ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        proc.stdout.close()  # the reader is gone before the command writes anything (it is still starting)
        err = proc.stderr.read()
        status = proc.wait(timeout=300)
    assert err == "" and status == 0
