"""A training process killed in the middle of a snapshot leaves only complete, loadable epochs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flowcallback import load_run

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits, load_digits_split
    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    model = lenet5_digits()
    cb = FlowCallback((x_te, y_te), log_dir=sys.argv[1], lrp=False, verbose=0, budget=None)
    model.fit(x_tr, y_tr, epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 50,
              initial_epoch=int(sys.argv[3]) if len(sys.argv) > 3 else 0, verbose=0, callbacks=[cb])
    """
)


@pytest.mark.parametrize("when", ["mid-write", "after-epoch-2"])
def test_sigkill_mid_snapshot_leaves_complete_epochs(tmp_path, when, tally):
    tally("faults injected")
    log_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(log_dir)])
    graphs = log_dir / "graphs"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(graphs) if graphs.is_dir() else []
            if when == "mid-write" and any(n.endswith(".tmp") for n in names) and "epoch_001" in names:
                break
            if when == "after-epoch-2" and "epoch_002" in names:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the training process never reached the point to kill it at")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = load_run(log_dir)
    assert len(run.epochs) >= 1
    assert run.epochs == list(range(len(run.epochs)))  # complete epochs, in order, no gap
    for e in run.epochs:
        g = run.epoch(e)  # loads, validates schema, shapes and flows
        assert g.n_samples == 450
    if when == "mid-write":
        _resuming_removes_the_killed_writers_temporaries(log_dir, proc.pid)


def _leftovers(log_dir):
    return [p for d in (log_dir, log_dir / "graphs", log_dir / "errors") if d.is_dir()
            for p in d.iterdir() if p.name.endswith(".tmp")]


def _resuming_removes_the_killed_writers_temporaries(log_dir, pid):
    """The next run in the same log_dir removes what the killed one left."""
    left = _leftovers(log_dir)  # usually the epoch directory being written; the kill can miss it
    assert all(f".{pid}." in p.name for p in left)  # the writer's pid is in the name
    # One leftover for certain, in case the kill came just after a rename.
    (log_dir / "graphs" / f".epoch_009.{pid}.abcd1234.tmp").mkdir()
    last = load_run(log_dir).epochs[-1]  # the training continues where the killed one's last snapshot was
    subprocess.run([sys.executable, "-c", SCRIPT, str(log_dir), str(last + 1), str(last)], check=True, timeout=240)
    assert _leftovers(log_dir) == []
    assert load_run(log_dir).epochs == list(range(last + 2))
