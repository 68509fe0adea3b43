"""The snapshot budget in real fits: FlowCallback(budget=...), its default, and what it records.

The digits model trains an epoch in a fraction of a second while a snapshot takes longer, the
case the issue names: the first snapshot still happens and the budget holds from the second on.
How the schedule spreads snapshots over slower epochs is tested on a simulated training in
tests/core/test_schedule.py.
"""
from __future__ import annotations

import json
import re

import pytest

from flowcallback import FlowCallback, load_run
from flowcallback._schedule import REASONS, SKIPPED_WHY

pytestmark = [pytest.mark.slow, pytest.mark.both]


def _fit(digits, log_dir, epochs=6, callbacks=(), data=None, **kwargs):
    """``callbacks`` may hold a callback class, made with the FlowCallback as its argument."""
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    kwargs.setdefault("verbose", 0)
    cb = FlowCallback((x_te, y_te), log_dir=str(log_dir), lrp=False, k=8, **kwargs)
    callbacks = [c(cb) if isinstance(c, type) else c for c in callbacks]
    model = lenet5_digits()
    fit_data = (x_tr, y_tr) if data is None else (data,)
    kw = {"batch_size": 64} if data is None else {}
    model.fit(*fit_data, epochs=epochs, verbose=0, callbacks=[cb, *callbacks], **kw)
    return cb, model


def _covered(schedule):
    """Every epoch the schedule decided on, taken or skipped (skipped ranges expanded)."""
    skipped = [e for ranges in schedule["skipped"].values() for a, b in ranges for e in range(a, b + 1)]
    assert not set(skipped) & set(schedule["taken"])
    return sorted(schedule["taken"] + skipped)


def test_default_budget_takes_the_first_and_last_and_records_why_it_skipped(digits, tmp_path, capsys):
    cb, _ = _fit(digits, tmp_path / "r", epochs=6, verbose=2)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    schedule = info["schedule"]
    assert schedule["budget"] == 0.25 and cb.budget == 0.25
    run = load_run(tmp_path / "r")
    # what was written is exactly what the schedule says it took, the untrained model and the last epoch among them
    assert run.epochs == schedule["taken"] == cb.schedule["taken"]
    assert schedule["taken"][0] == 0 and schedule["taken"][-1] == 6
    assert _covered(schedule) == list(range(7))
    assert set(schedule["skipped"]) <= set(REASONS) - {"first", "last", "planned"}
    # epochs of a fraction of a second against snapshots of about a second: the budget holds from the second on
    assert schedule["taken"] == [0, 6]
    assert schedule["spent"] > 0.25  # the two always taken exceed it, and the record says so
    assert run.info["schedule"] == schedule
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Snapshots within a budget of 25% of the training time: epochs 0, 6 taken" in page
    assert [cb.wants(e) for e in range(7)] == [e in (0, 6) for e in range(7)]
    # the last line says what was spent, what was taken, and how to have more
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"FlowCallback: snapshots added \d+% to training \(budget 25%\); snapshots of epochs 0, 6; "
                        r"5 epoch\(s\) skipped (.*): budget=None takes every epoch, budget=1 allows "
                        r"doubling the training time \(the first and last snapshots are taken whatever they cost\)",
                        last), last
    # each reason with its own count (a busy or measuring epoch was once counted "for the budget")
    for reason, ranges in schedule["skipped"].items():
        count = sum(b - a + 1 for a, b in ranges)
        assert (f"{count} {SKIPPED_WHY[reason]}" in last) or (f"5 epoch(s) skipped {SKIPPED_WHY[reason]}" in last)


def test_budget_none_takes_every_epoch_and_records_no_schedule(digits, tmp_path):
    cb, _ = _fit(digits, tmp_path / "r", epochs=3, budget=None)
    assert load_run(tmp_path / "r").epochs == [0, 1, 2, 3]
    assert "schedule" not in json.loads((tmp_path / "r" / "run.json").read_text())
    assert cb.schedule is None
    assert "Snapshots within a budget" not in (tmp_path / "r" / "index.html").read_text()


def test_a_generous_budget_takes_more_than_the_default(digits, tmp_path):
    """budget=1 against epochs padded to longer than a snapshot: more snapshots than two, and
    every one that is not the first or last within the budget as the callback measured it."""
    import time

    import tensorflow as tf

    class SlowEpoch(tf.keras.callbacks.Callback):  # a training whose epochs take a while, as real ones do
        def __init__(self, flow):
            super().__init__()
            self.flow = flow

        def on_epoch_end(self, epoch, logs=None):
            # twice the dearest snapshot so far: on a loaded machine (CI beside other work) snapshots
            # take longer, and a fixed pause once left the budget room for none but the first and last
            spent = [t.get("snapshot_seconds", 0.0) for t in self.flow.timings.values()]
            time.sleep(max([1.5] + [2 * s for s in spent]))

    cb, _ = _fit(digits, tmp_path / "r", epochs=6, budget=1.0, callbacks=[SlowEpoch])
    schedule = cb.schedule
    assert len(schedule["taken"]) > 2 and schedule["taken"][0] == 0 and schedule["taken"][-1] == 6
    assert _covered(schedule) == list(range(7))
    assert load_run(tmp_path / "r").epochs == schedule["taken"]


def test_early_stopping_takes_the_last_epoch_trained(digits, tmp_path):
    import tensorflow as tf

    class StopAfterThree(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                self.model.stop_training = True

    cb, _ = _fit(digits, tmp_path / "r", epochs=10, callbacks=[StopAfterThree()])
    schedule = json.loads((tmp_path / "r" / "run.json").read_text())["schedule"]
    assert schedule["taken"][0] == 0 and schedule["taken"][-1] == 3
    assert schedule["first"] == 0 and schedule["last"] == 3  # the fit's last epoch, not params["epochs"]
    assert cb.schedule["last"] == 3
    assert load_run(tmp_path / "r").epochs == schedule["taken"]
    assert _covered(schedule) == list(range(4))


def test_tf_data_and_a_resumed_fit(digits, tmp_path):
    """tf.data input, then a second fit on the same run (initial_epoch): the second fit's first
    snapshot is its first epoch's end (the first fit took its start), and its last is taken."""
    import tensorflow as tf

    (x_tr, y_tr), _ = digits
    ds = tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).batch(64)
    cb, model = _fit(digits, tmp_path / "r", epochs=3, data=ds)
    assert cb.schedule["taken"] == [0, 3]
    model.fit(ds, epochs=6, initial_epoch=3, verbose=0, callbacks=[cb])
    schedule = json.loads((tmp_path / "r" / "run.json").read_text())["schedule"]
    assert schedule["first"] == 4 and schedule["last"] == 6
    assert schedule["taken"][0] == 4 and schedule["taken"][-1] == 6
    assert _covered(schedule) == [4, 5, 6]
    assert load_run(tmp_path / "r").epochs == [0, 3, *schedule["taken"]]


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), True, "half", [0.25]])
def test_budget_outside_its_range_is_refused_naming_it(digits, budget):
    (_, _), (x_te, y_te) = digits
    with pytest.raises((ValueError, TypeError), match="budget"):
        FlowCallback((x_te, y_te), budget=budget)


@pytest.mark.parametrize("budget", [0.5, 1])
def test_budget_with_epochs_is_refused_naming_both(digits, budget):
    (_, _), (x_te, y_te) = digits
    with pytest.raises(ValueError, match=r"budget.*epochs"):
        FlowCallback((x_te, y_te), budget=budget, epochs=2)


def test_epochs_turns_the_default_budget_off(digits):
    (_, _), (x_te, y_te) = digits
    assert FlowCallback((x_te, y_te), epochs=2).budget is None
    assert FlowCallback((x_te, y_te), epochs=2, budget=None).budget is None
    assert FlowCallback((x_te, y_te), budget=0.5).budget == 0.5


def test_a_second_fit_keeps_the_first_fits_schedule_on_record(digits, tmp_path):
    """keras.io's fine-tuning recipe fits twice with the same callback: run.json and the run page
    said only what the second fit took, while the run held both fits' epochs (found by an
    outside probe)."""
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    cb = FlowCallback((x_te, y_te), log_dir=str(tmp_path / "r"), lrp=False, k=8, verbose=0)
    model = lenet5_digits()
    model.fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    first = dict(cb.schedule)
    model.fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])  # continues: the run's epochs 3, 4
    run = load_run(tmp_path / "r")
    schedule = run.info["schedule"]
    assert schedule["taken"][-1] == 4 and schedule["first"] == 3
    assert [e["taken"] for e in schedule["earlier"]] == [first["taken"]] and first["taken"][0] == 0
    assert run.epochs == sorted(first["taken"] + schedule["taken"])
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Earlier fits: epochs " + ", ".join(map(str, first["taken"])) + " taken" in page


def test_the_kernels_compilation_is_not_taken_for_what_later_snapshots_cost():
    """A fresh install's first snapshot compiles the MCL kernel (found by an outside probe: 60 of its
    82 s, and the budget, expecting that of every snapshot, took none between the first and the
    last). The schedule is handed the snapshot's wall time less its ``compile_seconds``."""
    import numpy as np

    from flowcallback._schedule import BudgetSchedule

    cb = FlowCallback((np.zeros((20, 4), "float32"), np.arange(20) % 2), verbose=0)
    cb._schedule = BudgetSchedule(0.25, first=0, last=10)
    cb._snapshotter.timings[0] = {"snapshot_seconds": 70.0, "compile_seconds": 60.0, "cluster_seconds": 5.0}
    cb._snapshotter.timings[1] = {"snapshot_seconds": 8.0, "compile_seconds": 0.0}
    cb._budget_costs()
    assert cb._schedule.per_snapshot(0.0) == 10.0  # the largest snapshot less its one-off compilation
