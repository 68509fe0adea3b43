"""Which epochs get a snapshot when snapshots must stay within a share of the training time.

:class:`BudgetSchedule` is told when epochs start and end and what the snapshots cost, and decides
at each epoch's end whether to take one. It keeps no clock of its own (the callback passes
``time.perf_counter()`` readings), so it is a pure object that tests drive with made-up times.

The rule, for a fit from epoch ``first`` to epoch ``last`` (Keras's ``params["epochs"]``):

- the first snapshot (the untrained model, or the first epoch of a resumed fit) and the last
  epoch's are always taken;
- the training time without snapshots is estimated from the epochs during which no snapshot was
  captured or computed ("clean" epochs; before there is one, a lower bound), and the
  *overhead* so far is the fit's wall time minus that estimate for the epochs done. It holds
  whatever the snapshots cost: the capture holding training up, the background work slowing the
  epochs down, the wait at the end of ``fit``. It is measured, not modelled;
- the budget is ``budget`` × the estimated training time of the whole fit. One snapshot's whole
  wall time is kept back for the last epoch, since nothing overlaps it. From the overhead per
  snapshot so far, the snapshots that fit in the rest give the plan: ``n`` points at
  ``(1 + R) ** (i / (n - 1)) - 1`` epochs after the first (``R`` epochs in all), a geometric
  progression that covers early training, where most changes happen, more densely. An epoch is
  taken once it reaches the next planned point, if one more snapshot still fits;
- while a snapshot is still being computed in the background, the next one waits ("busy"); before
  an epoch has trained without a snapshot running, snapshots wait too ("measuring"), unless one at
  every epoch would fit at its whole wall time.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["BudgetSchedule", "Decision", "REASONS", "describe", "epoch_ranges", "ranges_text"]

#: Why an epoch was taken or skipped, as ``run.json``'s ``schedule`` and the run page say it.
REASONS = {
    "first": "the first snapshot of the fit",
    "last": "the last epoch of the fit",
    "planned": "a planned epoch within the budget",
    "spacing": "not a planned epoch (snapshots are spread geometrically, denser early)",
    "budget": "another snapshot would exceed the budget",
    "busy": "the previous snapshot was still being computed",
    "measuring": "no epoch had yet trained without a snapshot running, to measure the training time alone",
}


@dataclass(frozen=True)
class Decision:
    """One epoch's decision: ``take``, and ``reason``, a key of :data:`REASONS`."""

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
    Epochs of 10 s and snapshots that take 6 s of wall time and add 4 s to the epoch they overlap,
    10 epochs, a budget of 25 % (25 s): the first and last snapshots, and the planned ones between
    them, denser early.

    >>> s = BudgetSchedule(0.25, first=0, last=10)
    >>> s.start(0.0)
    >>> s.decide(0, 0.0, busy=False).reason
    'first'
    >>> s.taken(0, cost=6.0)
    >>> now, taken = 0.0, [0]
    >>> for epoch in range(1, 11):
    ...     s.epoch_begin(now)
    ...     now += 10.0 + (4.0 if epoch - 1 in taken else 0.0)
    ...     s.epoch_done(epoch, now, clean=epoch - 1 not in taken)
    ...     if s.decide(epoch, now, busy=False).take:
    ...         taken.append(epoch); s.taken(epoch, cost=6.0)
    >>> now += 6.0  # the last snapshot, waited for at the end of fit
    >>> taken
    [0, 2, 3, 6, 10]
    >>> round(s.spent(now), 2)
    0.22
    >>> s.summary(now)["skipped"]
    {'budget': [[7, 9]], 'measuring': [[1, 1]], 'spacing': [[4, 5]]}
    """

    budget: float
    first: int
    last: int
    _start: float = 0.0
    _mark: float = 0.0  # when the current epoch began (or the previous one ended)
    _epochs: List[Tuple[float, bool]] = field(default_factory=list)  # (duration, clean)
    _taken: List[int] = field(default_factory=list)
    _full_cost: float = 0.0  # the largest wall time of a snapshot, kept back for the last one
    decisions: Dict[int, Decision] = field(default_factory=dict)

    def start(self, now: float) -> None:
        """The fit starts (before its first snapshot)."""
        self._start = self._mark = float(now)

    def epoch_begin(self, now: float) -> None:
        """An epoch starts training."""
        self._mark = float(now)

    def epoch_done(self, epoch: int, now: float, *, clean: bool) -> None:
        """Epoch ``epoch`` ended (after ``epoch`` epochs); ``clean`` if no snapshot was captured or
        computed while it trained."""
        self._epochs.append((max(0.0, float(now) - self._mark), bool(clean)))
        self._mark = float(now)

    def taken(self, epoch: int, cost: Optional[float] = None) -> None:
        """A snapshot of ``epoch`` was taken; ``cost``: its wall time, once known."""
        if epoch not in self._taken:
            self._taken.append(int(epoch))
        self.cost(cost)

    def cost(self, seconds: Optional[float]) -> None:
        """A snapshot's wall time, capture to written (the largest is kept back for the last one)."""
        if seconds is not None:
            self._full_cost = max(self._full_cost, float(seconds))

    @property
    def taken_epochs(self) -> Tuple[int, ...]:
        return tuple(self._taken)

    # -- estimates -------------------------------------------------------------------------------
    def _measured(self) -> bool:
        return any(clean for _, clean in self._epochs)

    def epoch_seconds(self) -> Optional[float]:
        """An epoch's training time without snapshots: the median of the clean epochs; before
        there is one, a lower bound: the shortest epoch less a snapshot's whole wall time (what
        overlapping it can have added at most). None before the first epoch ends."""
        clean = [d for d, c in self._epochs if c]
        if clean:
            return statistics.median(clean)
        shortest = min((d for d, _ in self._epochs), default=None)
        return None if shortest is None else max(0.0, shortest - self._full_cost)

    def overhead(self, now: float) -> float:
        """Seconds the snapshots added to the fit so far (at most: the training time is a lower
        bound). The fit's first epoch, where Keras also traces the training step, counts as
        training for what it lasted beyond the other epochs and a snapshot's whole wall time."""
        t = self.epoch_seconds() or 0.0
        if not self._epochs:
            return 0.0
        first = max(t, self._epochs[0][0] - self._full_cost) if not self._epochs[0][1] else self._epochs[0][0]
        return max(0.0, (float(now) - self._start) - first - (len(self._epochs) - 1) * t)

    def spent(self, now: float, running: bool = False) -> float:
        """The overhead so far as a share of the training time so far (0 before an epoch ended).

        ``running``: an epoch is training at ``now`` (a snapshot's progress line, printed while
        the next epoch trains): the time since it began counts as training, up to an epoch's.

        The training time counts each clean epoch as it took, each other epoch during which a
        snapshot ran as a clean one (their median), or before there is one as the shortest of
        them, and the fit's first epoch (Keras traces the training step then, which can take many
        epochs' time, and that is training) as it took less what a snapshot added to the other
        epochs it overlapped (nothing where none did). The estimate leans high, so that the share
        reported leans low rather than to the decisions' cautious side."""
        if not self._epochs:
            return 0.0
        rest = self._epochs[1:]
        clean = [d for d, c in rest if c]
        t = statistics.median(clean) if clean else min((d for d, _ in rest), default=0.0)
        first, first_clean = self._epochs[0]
        slowed = [d - t for d, c in rest if not c]
        if not first_clean and slowed and t:
            first = max(t, first - statistics.median(slowed))
        training = first + sum(d if c else t for d, c in rest)
        if running:
            since = max(0.0, float(now) - self._mark)
            training += min(since, t or since)
        if training <= 0:
            return 0.0
        return max(0.0, (float(now) - self._start) - training) / training

    @property
    def measuring(self) -> bool:
        """No epoch has ended yet: nothing to tell the snapshots' share from."""
        return not self._epochs

    def allowed(self) -> float:
        """The budget in seconds: ``budget`` × the estimated training time of the whole fit."""
        return self.budget * (self.last - self.first) * (self.epoch_seconds() or 0.0)

    def per_snapshot(self, now: float) -> float:
        """The overhead of one more snapshot: the overhead so far over the snapshots taken, once a
        clean epoch gives the training time alone; before that, at least a snapshot's whole wall
        time (no credit for overlapping training)."""
        if not self._taken:
            return self._full_cost
        measured = self.overhead(now) / len(self._taken)
        return measured if self._measured() else max(self._full_cost, measured)

    # -- the decision ----------------------------------------------------------------------------
    def plan(self, now: float) -> List[int]:
        """The snapshot epochs the budget affords, as planned now (first and last included)."""
        total = self.last - self.first
        if total <= 0 or not self._taken or self.epoch_seconds() is None:
            return sorted({self.first, self.last})
        room = self.allowed() - self.overhead(now) - self._full_cost
        per = self.per_snapshot(now)
        left = max(0, self.last - self.first - len(self._epochs))  # this epoch and those to come before the last
        if room <= 0:
            more = 0
        elif per * left <= room:
            more = left
        else:
            more = min(left, math.floor(room / per))
        n = min(len(self._taken) + more + 1, total + 1)
        points = [0]
        for i in range(1, n):  # each planned point at least one epoch after the one before
            points.append(max(points[-1] + 1, math.ceil((1 + total) ** (i / (n - 1)) - 1 - 1e-9)))
        return sorted({self.first, self.last, *(self.first + p for p in points if p < total)})

    def _fits_every_epoch(self, now: float) -> bool:
        """Whether a snapshot at every epoch still to come fits, at its whole wall time each."""
        to_come = self.last - self.first - len(self._epochs) + 1
        return self.overhead(now) + to_come * self._full_cost <= self.allowed()

    def decide(self, epoch: int, now: float, *, busy: bool) -> Decision:
        """Whether to take the snapshot of ``epoch`` (at its end), and why; recorded in :attr:`decisions`."""
        if epoch >= self.last:
            d = Decision(epoch, True, "last")
        elif not self._taken and not busy:
            d = Decision(epoch, True, "first")
        elif busy:
            d = Decision(epoch, False, "busy")
        elif not self._measured() and not self._fits_every_epoch(now):
            d = Decision(epoch, False, "measuring")
        else:
            fits = self.overhead(now) + self.per_snapshot(now) + self._full_cost <= self.allowed()
            due = any(max(self._taken) < p <= epoch for p in self.plan(now))
            if not fits:
                d = Decision(epoch, False, "budget")
            else:
                d = Decision(epoch, due, "planned" if due else "spacing")
        self.decisions[epoch] = d
        return d

    def stopped(self, epoch: int) -> None:
        """The fit stopped early (``EarlyStopping``) after ``epoch``: that is its last epoch, taken."""
        self.last = int(epoch)
        self.decisions[self.last] = Decision(self.last, True, "last")

    def summary(self, now: float) -> dict:
        """What ``run.json`` and the run page say: the budget, the share spent, the epochs taken and
        those skipped by reason (as ``[first, last]`` ranges)."""
        skipped: Dict[str, List[int]] = {}
        for e, d in sorted(self.decisions.items()):
            if not d.take and e not in self._taken:
                skipped.setdefault(d.reason, []).append(e)
        return {"budget": self.budget, "spent": round(self.spent(now), 4), "first": self.first, "last": self.last,
                "taken": sorted(self._taken),
                "skipped": {reason: epoch_ranges(es) for reason, es in sorted(skipped.items())}}


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


def ranges_text(ranges) -> str:
    """Ranges as :func:`epoch_ranges` gives them, as text.

    >>> ranges_text(epoch_ranges([0, 1, 2, 3, 5]))
    '0\u20133, 5'
    """
    return ", ".join(f"{a}" if a == b else f"{a}\u2013{b}" for a, b in ranges)


#: What the end-of-fit line says of the epochs skipped for each reason (:func:`skipped_text`).
SKIPPED_WHY = {
    "budget": "for the budget",
    "busy": "while the previous snapshot was still being computed",
    "measuring": "while the training time alone was measured",
}


def skipped_text(skipped) -> str:
    """How many epochs were skipped, by reason, for the end-of-fit line ("" where none were).

    ``skipped``: the summary's ``{reason: [[first, last], ...]}``.

    >>> skipped_text({"busy": [[1, 2]], "budget": [[4, 4], [6, 8]]})
    '6 epoch(s) skipped (2 while the previous snapshot was still being computed, 4 for the budget)'
    >>> skipped_text({"budget": [[3, 9]]})
    '7 epoch(s) skipped for the budget'
    >>> skipped_text({})
    ''
    """
    counts = {r: sum(b - a + 1 for a, b in ranges) for r, ranges in skipped.items() if ranges}
    total = sum(counts.values())
    if not total:
        return ""
    if len(counts) == 1:
        (reason,) = counts
        return f"{total} epoch(s) skipped {SKIPPED_WHY.get(reason, f'({reason})')}"
    by_first = sorted(counts, key=lambda r: skipped[r][0][0])
    return f"{total} epoch(s) skipped (" + ", ".join(f"{counts[r]} {SKIPPED_WHY.get(r, r)}" for r in by_first) + ")"


def describe(summary) -> str:
    """One sentence for the run page: the budget, the share spent, the epochs taken and why the
    others were skipped (``summary``: :meth:`BudgetSchedule.summary`, or run.json's ``schedule``).

    >>> import textwrap
    >>> text = describe({"budget": 0.25, "spent": 0.2183, "taken": [0, 2, 10],
    ...                  "skipped": {"measuring": [[1, 1]], "budget": [[3, 9]]}})
    >>> print(textwrap.fill(text, 90))
    Snapshots within a budget of 25% of the training time: epochs 0, 2, 10 taken, adding 22%.
    Skipped: 1 (no epoch had yet trained without a snapshot running, to measure the training
    time alone); 3\u20139 (another snapshot would exceed the budget).
    >>> earlier = [{"budget": 0.25, "spent": 0.3, "taken": [0, 2], "skipped": {}}]
    >>> print(textwrap.fill(describe({"budget": 0.25, "spent": 0.4, "taken": [3, 5], "skipped": {},
    ...                                "earlier": earlier}), 90))
    Snapshots within a budget of 25% of the training time: epochs 3, 5 taken, adding 40%.
    Earlier fits: epochs 0, 2 taken, adding 30%.
    >>> describe(None)
    ''
    """
    if not summary:
        return ""
    taken = ", ".join(str(e) for e in summary["taken"]) or "none"
    text = (f"Snapshots within a budget of {summary['budget']:.0%} of the training time: epochs "
            f"{taken} taken, adding {summary['spent']:.0%}.")
    skipped_by = summary.get("skipped", {})
    by_reason = sorted((ranges[0][0], reason, ranges) for reason, ranges in skipped_by.items() if ranges)
    skipped = [f"{ranges_text(ranges)} ({REASONS.get(reason, reason)})" for _, reason, ranges in by_reason]
    text += " Skipped: " + "; ".join(skipped) + "." if skipped else ""
    earlier = [e for e in summary.get("earlier", []) if isinstance(e, dict)]
    if earlier:  # the run's earlier fits (a fine-tuning after the head's training, a resumed run)
        text += " Earlier fits: " + "; ".join(
            f"epochs {', '.join(str(t) for t in e.get('taken', [])) or 'none'} taken, adding {e.get('spent', 0):.0%}"
            for e in earlier) + "."
    return text
