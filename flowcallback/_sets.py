"""Several held-out sets in one run: ``FlowCallback({"clean": (x, y), "tampered": (x2, y2)})``.

Each set is analysed by its own :class:`~flowcallback.pipeline.Snapshotter` with the same model,
layers and settings, and written as an ordinary run into ``log_dir/<name>/`` (so everything that
reads one run reads each set: :func:`flowcallback.load_run`, ``flowcallback serve``, TensorBoard's
Flows dashboard). The sets share the background threads, so one epoch's sets are analysed one after
the other, never together. ``log_dir`` itself holds ``sets.json`` (the sets, in order) and the page
that compares them (:func:`flowcallback.core.runpage.write_sets_page`).

Each set has its own relevance engine: LRP runs over that set's samples (with iNNvestigate, one
worker process per set).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from flowcallback import _validation as checks
from flowcallback._lock import RunLock
from flowcallback._plan import fingerprint, former_fingerprint, plan_run
from flowcallback._threads import SnapshotThreads
from flowcallback.core import runpage, store
from flowcallback.core.sets import sets_overview
from flowcallback.exceptions import RunFormatError, SnapshotError
from flowcallback.pipeline import Snapshotter
from flowcallback.settings import SnapshotSettings

__all__ = ["SetsSnapshotter", "make_snapshotter"]


def make_snapshotter(validation_data, log_dir, settings: SnapshotSettings):
    """A :class:`~flowcallback.pipeline.Snapshotter` for one held-out set, or a :class:`SetsSnapshotter`
    for several named ones (a mapping ``{name: data}`` or a list of ``(name, data)`` pairs)."""
    pairs = checks.named_sets(validation_data)
    if pairs is None:
        return Snapshotter(validation_data, log_dir, settings)
    return SetsSnapshotter(pairs, log_dir, settings)


class SetsSnapshotter:
    """Runs the snapshots of one model on several named held-out sets, one run directory per set.

    It answers what :class:`~flowcallback.FlowCallback` asks of a :class:`~flowcallback.pipeline.Snapshotter`
    (``prepare``, ``take``, ``flush``, ``close``, ``abort``, ``busy``, ``timings``...), for all sets together.

    Parameters
    ----------
    pairs : list of (name, data)
        As :func:`flowcallback._validation.named_sets` returns them; checked here.
    log_dir : str or path
    settings : SnapshotSettings
    """

    def __init__(self, pairs, log_dir, settings: SnapshotSettings):
        checked = checks.check_held_out_sets(pairs)
        self.log_dir = Path(checks.check_log_dir(log_dir))
        self.settings = settings
        self.names: List[str] = [name for name, _, _ in checked]
        self.threads = SnapshotThreads(background=settings.background, nice=settings.nice)
        self.members: Dict[str, Snapshotter] = {}
        for name, x, y in checked:
            try:
                member = Snapshotter((x, y), self.log_dir / name, settings)
            except ValueError as exc:
                raise ValueError(checks.set_message(exc, name)) from None
            member.threads = self.threads  # one coordinator: an epoch's sets are analysed one after the other
            member.set_name = name
            member.on_written = self._written
            self.members[name] = member
        self._page_lock = threading.Lock()
        self.lock = RunLock(self.log_dir)
        self._started: Dict[int, float] = {}  # perf_counter() when each epoch's capture began
        self._order: List[str] = list(self.names)  # sets.json's sets: earlier fits' first, then these
        self._model_name = ""
        self._live = None
        self._others: Dict[str, dict] = {}  # {set: {epoch: (scalars, layer metrics)}} of sets of earlier fits only
        self._former_doc: Optional[dict] = None  # sets.json as this fit found it
        self._existed: Dict[str, bool] = {}  # whether each set's folder was there before this fit

    # -- what the callback reads ----------------------------------------------------------------
    @property
    def held_out(self) -> dict:
        """``{name: (x, labels)}`` of each set."""
        return {name: m.held_out for name, m in self.members.items()}

    @property
    def first(self) -> Snapshotter:
        return self.members[self.names[0]]

    @property
    def lrp_backend(self) -> Optional[str]:
        return self.first.lrp_backend

    @property
    def engine(self):
        return self.first.engine

    @property
    def aborted(self) -> bool:
        return any(m.aborted for m in self.members.values())

    @property
    def disabled(self) -> str:
        return next((m.disabled for m in self.members.values() if m.disabled), "")

    @property
    def progress(self):
        return self.first.progress

    @progress.setter
    def progress(self, value) -> None:
        for m in self.members.values():
            m.progress = value

    @property
    def live(self):
        return self._live

    @live.setter
    def live(self, value) -> None:
        """One live figure per set in a notebook, each titled with its set's name: the first set gets
        ``value`` itself, the others figures of their own of the same kind."""
        self._live = value
        for name, m in self.members.items():
            m.live = value if value is None or name == self.names[0] else value.sibling()

    @property
    def progress_note(self) -> str:
        return self.first.progress_note

    @progress_note.setter
    def progress_note(self, value: str) -> None:
        for m in self.members.values():
            m.progress_note = value

    @property
    def pages(self) -> Dict[int, Dict[str, Path]]:
        """``{epoch: {set: page}}`` of the snapshots written so far."""
        out: Dict[int, Dict[str, Path]] = {}
        for name, m in self.members.items():
            for epoch, page in m.pages.items():
                out.setdefault(epoch, {})[name] = page
        return out

    @property
    def timings(self) -> Dict[int, dict]:
        """``{epoch: {"snapshot_seconds": wall time of all sets, "sets": {set: its stages}}}`` of the
        epochs every set has written: the wall time runs from the first set's capture to the last
        set's end (what the budget counts)."""
        out = {}
        for epoch, started in list(self._started.items()):
            if all(epoch in m.finished for m in self.members.values()):
                out[epoch] = {"snapshot_seconds": max(m.finished[epoch] for m in self.members.values()) - started,
                              "sets": {name: dict(m.timings.get(epoch, {})) for name, m in self.members.items()}}
        return out

    @property
    def model_name(self) -> str:
        """The run's model name (an earlier fit's, when appending): the pages' titles."""
        return self._model_name or self.first.model_name

    @property
    def epochs_held(self) -> List[int]:
        """The epochs any of the sets held when this fit began."""
        return sorted(set().union(*(m.epochs_held for m in self.members.values())))

    @property
    def busy(self) -> bool:
        return any(m.busy for m in self.members.values())

    # -- lifecycle ------------------------------------------------------------------------------
    def _former(self) -> Optional[dict]:
        """``sets.json`` when appending (None for a new run); refuses a directory holding something else."""
        if os.path.lexists(self.log_dir / "run.json"):
            raise ValueError(f"log_dir: {self.log_dir} holds a run of one held-out set (run.json); several named "
                             "sets are written as one folder each under a new log_dir: use a new or empty log_dir")
        if not os.path.lexists(self.log_dir / store.SETS_FILE):
            if os.path.lexists(self.log_dir / "index.html"):
                raise ValueError(f"log_dir: {self.log_dir} holds index.html, which is not from a flowcallback run "
                                 "(the directory has no sets.json) and would be overwritten; use a new or empty "
                                 "log_dir")
            return None
        try:
            return store.read_sets_info(self.log_dir)
        except RunFormatError as exc:
            raise ValueError(f"log_dir: {self.log_dir} holds a sets.json that cannot be read ({exc}); use a new "
                             "log_dir, or move it away") from None

    def _check(self, model, former: Optional[dict]) -> None:
        """Everything that can refuse this fit, checked before anything is written: the model against
        the run's, the set names against its sets (also ignoring case), each set's folder (a folder
        inside ``log_dir``, of this model), and each set against the model."""
        model_print = fingerprint(model)
        if former is not None:
            recorded = (former.get("model") or {}).get("fingerprint")
            if recorded not in (None, model_print):
                raise ValueError(f"log_dir: {self.log_dir} holds held-out sets of a different model "
                                 f"({str(former['model'].get('name', ''))[:80]!r}); use a new log_dir for a new model")
            known = {entry["name"].lower(): entry["name"] for entry in former["sets"]}
            for name in self.names:
                if known.get(name.lower(), name) != name:
                    raise ValueError(f"validation_data: the held-out set name {name!r} differs only in case from "
                                     f"this run's set {known[name.lower()]!r}, and would share its folder on macOS "
                                     "and Windows; use the same name, or another")
        legacy = former_fingerprint(model)
        for name, member in self.members.items():
            folder = self.log_dir / name
            if os.path.lexists(folder):
                if os.path.islink(folder) or not folder.is_dir():
                    raise ValueError(f"log_dir: {folder} is {'a symlink' if os.path.islink(folder) else 'not a folder'}"
                                     f"; the folder of held-out set {name!r} must be a plain folder inside log_dir")
                if os.path.lexists(folder / "run.json"):
                    try:
                        info = store.read_run_info(folder)
                    except RunFormatError as exc:
                        raise ValueError(f"log_dir: {folder} holds a run.json that cannot be read ({exc})") from None
                    if info["model"]["fingerprint"] not in (model_print, legacy):
                        raise ValueError(f"log_dir: {folder} holds a run of a different model "
                                         f"({str(info['model']['name'])[:80]!r}); use a new log_dir for a new model")
            try:
                with warnings.catch_warnings():  # what the plan warns of, the set's own prepare says once
                    warnings.simplefilter("ignore")
                    member.x = checks.inputs_for_model(model, member.x)
                    plan = plan_run(model, member.x, member.labels, self.settings, signed=member.signed)
                checks.check_one_hot_width(member.y_raw, plan.n_classes)
            except ValueError as exc:
                raise ValueError(checks.set_message(exc, name)) from None

    def prepare(self, model) -> None:
        """Check everything (:meth:`_check`), take the run's lock, then prepare every set (its plan,
        run.json, relevance engine). A set refused or disabled (a folder that cannot be written)
        undoes the others: the folders this call made are removed, and no set is snapshotted."""
        self._model_name = ""  # set once every set is prepared: the sets page is written from then on
        former = self._former()
        self._check(model, former)
        existed = {name: os.path.lexists(self.log_dir / name) for name in self.members}
        prepared = []
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()  # one writer of the sets at a time (each set's folder has its own lock too)
        except OSError as exc:
            self._disable(f"cannot write to {self.log_dir}: {exc}", [], existed)
            return
        try:
            for name, member in self.members.items():
                try:
                    member.prepare(model)
                except ValueError as exc:
                    raise ValueError(checks.set_message(exc, name)) from None
                prepared.append(member)
                if member.disabled:  # its prepare warned
                    self._disable(member.disabled, prepared, existed, warn=False)
                    return
        except BaseException:
            self._undo(prepared, existed)
            raise
        self._model_name = str(getattr(model, "name", "model") if former is None else
                               (former.get("model") or {}).get("name") or getattr(model, "name", "model"))
        self._former_doc, self._existed = former, existed
        names = [] if former is None else [entry["name"] for entry in former["sets"]]
        self._order = names + [n for n in self.names if n not in names]
        self._others = {n: self._read_former(n) for n in names if n not in self.members}
        samples = {name: len(m.x) for name, m in self.members.items()}
        try:
            info = store.sets_info(self._order, model_name=self._model_name, fingerprint=fingerprint(model),
                                   samples={n: samples.get(n, self._former_samples(n)) for n in self._order})
            store.write_sets_info(self.log_dir, info)
        except (OSError, ValueError) as exc:
            if self.settings.on_error == "raise":
                self._undo(prepared, existed)
                raise SnapshotError(f"log_dir: cannot write {self.log_dir / store.SETS_FILE}: {exc}") from exc
            self._disable(f"cannot write {self.log_dir / store.SETS_FILE}: {exc}", prepared, existed)
            return
        # the page is rewritten with the first snapshot written: a fit refused at its first epoch
        # (:meth:`unprepare`) leaves the run's page as it was

    def unprepare(self) -> None:
        """Undo :meth:`prepare` for a fit refused before its first snapshot: the sets' run.json and
        sets.json as this fit found them, the folders it made removed, the lock released."""
        existed = {name: self._existed.get(name, True) for name in self.members}
        try:
            for name, member in self.members.items():
                if existed[name]:
                    member.unprepare()
            if self._former_doc is not None and not self.disabled:
                store.write_sets_info(self.log_dir, self._former_doc)
        finally:  # the sets this fit added: stopped and their folders removed; the lock released
            self._undo([m for name, m in self.members.items() if not existed[name]], existed)

    def _undo(self, prepared: List[Snapshotter], existed: Dict[str, bool]) -> None:
        """Stop the sets prepared, remove the folders this prepare made, release the run's lock."""
        for member in prepared:
            member.abort()
        for name, member in self.members.items():
            if not existed[name]:
                shutil.rmtree(member.log_dir, ignore_errors=True)
        self.lock.release()

    def _disable(self, reason: str, prepared: List[Snapshotter], existed: Dict[str, bool], *,
                 warn: bool = True) -> None:
        """A set or the run cannot be written (on_error="warn"): no set is snapshotted, training goes on."""
        self._undo(prepared, existed)
        for member in self.members.values():
            member.disabled = member.disabled or reason
        if warn:
            warnings.warn(f"FlowCallback: log_dir: {reason}; no snapshot will be taken, training goes on",
                          RuntimeWarning, stacklevel=3)

    def _read_former(self, name: str) -> dict:
        """What the sets page shows of a set an earlier fit wrote and this one does not analyse."""
        from flowcallback.run import load_run

        try:
            return runpage.run_epoch_metrics(load_run(store.set_dir(self.log_dir, name)))
        except Exception:  # unreadable: listed without epochs (load_run says why)
            return {}

    def _former_samples(self, name: str) -> int:
        try:
            return int(store.read_run_info(self.log_dir / name)["config"].get("n_samples") or 1)
        except Exception:
            return 1

    def take(self, epoch: int, *, title_prefix: str = "") -> dict:
        """Capture every set at ``epoch`` (in the training thread) and hand each to the background;
        returns ``{set: page, Future of it, or None}``."""
        self._started[epoch] = time.perf_counter()
        return {name: m.take(epoch, title_prefix=f"{title_prefix} · {name}" if title_prefix else name)
                for name, m in self.members.items()}

    def raise_failed(self) -> None:
        for m in self.members.values():
            m.raise_failed()

    def flush(self) -> list:
        pages, error = [], None
        for m in self.members.values():
            try:
                pages += m.flush()
            except Exception as exc:  # the other sets are still written
                error = error or exc
        if error is not None:
            raise error
        return pages

    def close(self) -> None:
        error = None
        try:
            for m in self.members.values():
                try:
                    m.close()
                except Exception as exc:
                    error = error or exc
        finally:
            self.lock.release()
        if error is not None:
            raise error

    def abort(self) -> None:
        try:
            for m in self.members.values():
                m.abort()
        finally:
            self.lock.release()

    def record_schedule(self, summary: dict) -> None:
        for m in self.members.values():
            m.record_schedule(summary)

    def rewrite_run_page(self) -> None:
        for m in self.members.values():
            m.rewrite_run_page()
        self._write_page()

    # -- the page of the sets -------------------------------------------------------------------
    def _written(self, epoch: int) -> None:
        """A set's snapshot is written (in the background thread): the sets page shows it."""
        self._write_page()

    def _write_page(self) -> None:
        if self.disabled or not self._model_name:
            return
        with self._page_lock:
            try:
                per_set = {name: self.members[name].page.epoch_metrics() if name in self.members
                           else self._others.get(name, {}) for name in self._order}
                samples = {name: self._former_samples(name) for name in self._order if name not in self.members}
                samples.update({name: len(m.x) for name, m in self.members.items()})
                runpage.write_sets_page(self.log_dir, sets_overview(per_set, samples), self._model_name)
            except Exception as exc:  # the sets' own files stand
                warnings.warn(f"FlowCallback: could not rewrite {self.log_dir / 'index.html'}: {exc}", RuntimeWarning,
                              stacklevel=2)
