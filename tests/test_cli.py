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


def test_demo_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err
