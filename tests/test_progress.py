"""Snapshot progress never cuts through Keras's own output.

In a terminal the snapshots run in the background while Keras prints its epoch lines: each
snapshot's line must come out whole, between Keras's lines. (The notebook bar is checked by
tests/test_notebook.py in a real kernel.)
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from flowcallback._progress import SnapshotProgress

SCRIPT = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import json, sys, threading

    class Recording:  # stdout, recording which thread wrote each of flowcallback's lines
        def __init__(self, out):
            self.out, self.writers = out, []
        def write(self, text):
            if "FlowCallback" in text:
                self.writers.append(threading.current_thread().name)
            return self.out.write(text)
        def __getattr__(self, name):
            return getattr(self.out, name)

    sys.stdout = Recording(sys.stdout)
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits, load_digits_split
    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    cb = FlowCallback((x_te[:150], y_te[:150]), log_dir=sys.argv[1], k=8, lrp=False, budget=None)
    lenet5_digits(seed=3).fit(x_tr[:640], y_tr[:640], epochs=3, batch_size=16, verbose=1, callbacks=[cb])
    print(json.dumps(sys.stdout.writers), file=sys.stderr)
""")


@pytest.mark.slow
def test_terminal_lines_come_whole_between_keras_lines(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in re.split(r"[\r\n]", done.stdout) if line.strip()]
    ours = [line for line in lines if "FlowCallback" in line]
    # snapshots 0 to 3, each one line of its own, starting the line, never inside a Keras line
    assert sorted(re.match(r"FlowCallback: epoch (\d+) snapshot written to ", line).group(1) for line in ours) == \
        ["0", "1", "2", "3"], ours
    assert all("step" not in line and "loss" not in line for line in ours), ours
    assert sum(line.startswith("Epoch ") for line in lines) == 3
    # written by the training thread, between Keras's lines, never by the snapshots' thread
    assert json.loads(done.stderr.strip().splitlines()[-1]) == ["MainThread"] * 4


def test_progress_is_silent_at_verbose_0(capsys):
    p = SnapshotProgress(0, notebook=False)
    p.update(1, "clustering", 1, 4)
    p.finished(1, "FlowCallback: epoch 1 snapshot written")
    p.flush()
    assert capsys.readouterr().out == ""


def test_terminal_lines_wait_for_the_training_thread(capsys):
    p = SnapshotProgress(1, notebook=False)
    p.finished(2, "FlowCallback: epoch 2 snapshot written")
    assert capsys.readouterr().out == ""  # nothing printed from the snapshot's thread
    p.flush()
    assert capsys.readouterr().out == "FlowCallback: epoch 2 snapshot written\n"
