"""Which epochs get a snapshot when snapshots must stay within a share of the training time.

:class:`BudgetSchedule` is told when epochs start and end and what the snapshots cost, and decides
at each epoch's end whether to take one. It keeps no clock of its own (the callback passes
``time.perf_counter()`` readings), so it is a pure object that tests drive with made-up times.

The rule, for a fit from epoch ``first`` to epoch ``last`` (Keras's ``params["epochs"]``):

- the first snapshot (the untrained model, or the state a resumed fit starts from) and the last
  epoch's are always taken;
- the training time without snapshots is estimated from the epochs during which no snapshot was
  computed ("clean" epochs; before there is one, the shortest epoch so far), and the overhead so far
  is the wall time of the fit minus that estimate for the epochs done: whatever the snapshots cost
  (the capture holding training up, the background work slowing the epochs down, the wait at the
  end of ``fit``), measured rather than modelled;
- from the overhead per snapshot so far, the number of snapshots ``n`` that fit in ``budget`` × the
  estimated training time (keeping one for the last epoch, at the full wall time of a snapshot,
  since nothing overlaps it) gives the plan: the epochs at ``(1 + R) ** (i / (n - 1)) - 1`` after
  the first (``R`` epochs in all), a geometric progression that covers early training, where most
  changes happen, more densely. An epoch is taken once it reaches the next planned point and the
  overhead stays within the budget;
- while a snapshot is still being computed in the background, the next one waits.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["BudgetSchedule", "Decision", "epoch_ranges"]


@dataclass(frozen=True)
class Decision:
    """One epoch's decision: ``take``, and ``reason``: ``"first"``, ``"last"``, ``"planned"``
    (taken), ``"spacing"`` (not yet the next planned epoch), ``"budget"`` (it would exceed the
    budget), ``"busy"`` (the previous snapshot is still being computed) or ``"measuring"`` (no
    epoch has yet trained without a snapshot running, to measure the training time alone)."""

    epoch: int
    take: bool
    reason: str


@dataclass
class BudgetSchedule:
    """Snapshots within ``budget`` × the training time (see the module's docstring).

    Parameters
    ----------
    budget : float
        The share of the training's wall time that snapshots may add, in (0, 1].
    first, last : int
        The fit's first snapshot epoch (``initial_epoch``) and its last epoch.

    Examples
    --------
    Epochs of 10 s, snapshots that add 2 s each and take 4 s when nothing overlaps them, 10 epochs,
    a budget of 25 % (25 s): the first and last snapshots, and the planned ones between them,
    denser early.

    >>> s = BudgetSchedule(0.25, first=0, last=10)
    >>> s.start(0.0); s.taken(0, cost=4.0)
    >>> now, taken = 2.0, [0]
    >>> for epoch in range(1, 11):
    ...     now += 10.0
    ...     s.epoch_done(epoch, now, clean=epoch - 1 not in taken)
    ...     if s.decide(epoch, now, busy=False).take:
    ...         taken.append(epoch); s.taken(epoch, cost=4.0); now += 2.0
    >>> taken
    [0, 1, 2, 4, 6, 10]
    >>> round(s.spent(now), 2)
    0.12
    """

    budget: float
    first: int
    last: int
    _start: float = 0.0
    _epochs: List[Tuple[float, bool]] = field(default_factory=list)  # (duration, clean)
    _epoch_started: Optional[float] = None
    _taken: List[int] = field(default_factory=list)
    _full_cost: float = 0.0  # a snapshot's wall time, for the last one
    decisions: Dict[int, Decision] = field(default_factory=dict)

    def start(self, now: float) -> None:
        """The fit starts (before its first snapshot)."""
        self._start = self._epoch_started = now

    def epoch_begin(self, now: float) -> None:
        self._epoch_started = now

    def epoch_done(self, epoch: int, now: float, *, clean: bool) -> None:
        """Epoch ``epoch`` ended (snapshot epoch numbers: after ``epoch`` epochs); ``clean`` if no
        snapshot was captured or computed while it trained."""
        began = self._epoch_started if self._epoch_started is not None else self._start
        self._epochs.append((max(0.0, now - began), bool(clean)))
        self._epoch_started = None

    def taken(self, epoch: int, cost: Optional[float] = None) -> None:
        """A snapshot of ``epoch`` was taken; ``cost``: its wall time, once known."""
        if epoch not in self._taken:
            self._taken.append(epoch)
        self.cost(cost)

    def cost(self, seconds: Optional[float]) -> None:
        """A snapshot's wall time (capture to written), the cost of the last one."""
        if seconds is not None:  # the largest seen: the last snapshot is the one nothing overlaps
            self._full_cost = max(self._full_cost, float(seconds))

    @property
    def taken_epochs(self) -> Tuple[int, ...]:
        return tuple(self._taken)

    # -- estimates -------------------------------------------------------------------------------
    def epoch_seconds(self) -> Optional[float]:
        """An epoch's training time without snapshots: the median of the clean epochs, else the shortest."""
        clean = [d for d, c in self._epochs if c]
        if clean:
            return statistics.median(clean)
        return min((d for d, _ in self._epochs), default=None)

    def overhead(self, now: float) -> float:
        """Seconds the snapshots added to the fit so far (0 before any epoch is measured)."""
        t = self.epoch_seconds()
        return 0.0 if t is None else max(0.0, (now - self._start) - len(self._epochs) * t)

    def spent(self, now: float) -> float:
        """The overhead so far as a share of the training time so far."""
        t = self.epoch_seconds()
        return 0.0 if not t or not self._epochs else self.overhead(now) / (len(self._epochs) * t)

    # -- the decision ----------------------------------------------------------------------------
    def per_snapshot(self, now: float) -> float:
        """The overhead of one snapshot: measured (the overhead so far over the snapshots taken)
        once a clean epoch gives the training time alone; before that, a snapshot's whole wall time
        (no credit for overlapping training)."""
        if not self._taken:
            return self._full_cost
        if not any(clean for _, clean in self._epochs):
            return max(self._full_cost, self.overhead(now) / len(self._taken))
        return self.overhead(now) / len(self._taken)

    def plan(self, now: float) -> List[int]:
        """The epochs the budget affords from here, as planned now (first and last included)."""
        t = self.epoch_seconds()
        total = self.last - self.first
        if t is None or total <= 0 or not self._taken:
            return sorted({self.first, self.last})
        allowed = self.budget * total * t
        used = self.overhead(now)
        per_snapshot = self.per_snapshot(now)
        room = allowed - used - self._full_cost
        if room <= 0:
            more = 0
        elif per_snapshot <= room / (total + 1):  # cheap enough for every epoch
            more = total
        else:
            more = math.floor(room / per_snapshot)
        n = min(len(self._taken) + more + 1, total + 1)
        points = [0]
        for i in range(1, n):  # (1 + total) ** (i / (n - 1)) - 1, each at least one epoch after the one before
            points.append(max(points[-1] + 1, math.ceil((1 + total) ** (i / (n - 1)) - 1 - 1e-9)))
        return sorted({self.first, self.last, *(self.first + p for p in points if p < total)})

    def _affords_every_epoch(self, now: float) -> bool:
        """Whether a snapshot at every remaining epoch fits, at its whole wall time each."""
        t = self.epoch_seconds() or 0.0
        remaining = self.last - self.first - len(self._epochs) + 1
        return self.overhead(now) + remaining * self._full_cost <= self.budget * (self.last - self.first) * t

    def decide(self, epoch: int, now: float, *, busy: bool) -> Decision:
        """Whether to take the snapshot of ``epoch`` (at its end), and why; recorded in :attr:`decisions`."""
        if epoch >= self.last:
            d = Decision(epoch, True, "last")
        elif busy:
            d = Decision(epoch, False, "busy")
        elif not self._taken:
            d = Decision(epoch, True, "first")
        elif not any(clean for _, clean in self._epochs) and not self._affords_every_epoch(now):
            d = Decision(epoch, False, "measuring")  # one epoch without a snapshot gives the training time alone
        else:
            plan = self.plan(now)
            due = [p for p in plan if self.first < p <= epoch and p > max(self._taken)]
            t = self.epoch_seconds() or 0.0
            within = (self.overhead(now) + self.per_snapshot(now) + self._full_cost
                      <= self.budget * (self.last - self.first) * t)
            if not due:
                d = Decision(epoch, False, "spacing" if within else "budget")
            else:
                d = Decision(epoch, within, "planned" if within else "budget")
        self.decisions[epoch] = d
        return d

    def summary(self, now: float) -> dict:
        """What ``run.json`` and the run page say: the budget, the share spent, the epochs taken
        and those skipped by reason (as ``[first, last]`` ranges)."""
        skipped: Dict[str, List[int]] = {}
        for e, d in sorted(self.decisions.items()):
            if not d.take:
                skipped.setdefault(d.reason, []).append(e)
        return {"budget": self.budget, "spent": round(self.spent(now), 4),
                "taken": sorted(self._taken),
                "skipped": {reason: epoch_ranges(es) for reason, es in skipped.items()}}


def epoch_ranges(epochs) -> List[List[int]]:
    """Sorted epochs as ``[first, last]`` ranges of consecutive numbers.

    >>> epoch_ranges([2, 3, 4, 7, 9, 10])
    [[2, 4], [7, 7], [9, 10]]
    """
    out: List[List[int]] = []
    for e in sorted(set(int(e) for e in epochs)):
        if out and e == out[-1][1] + 1:
            out[-1][1] = e
        else:
            out.append([e, e])
    return out
