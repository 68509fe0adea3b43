"""The snapshot runner's error policy, written once: raise, or record and warn.

A failure inside the analysis never kills the user's training unless ``on_error="raise"`` asks for
it: :meth:`ErrorPolicy.tolerate` raises then (and when ``fit`` was interrupted, so that the
snapshot is dropped); otherwise it appends the traceback to ``errors/epoch_XXX.txt``
(``errors/setup.txt`` before any epoch), hands the text to the run page, and warns with one line
that says what failed, what it costs, and where the details are.
"""
from __future__ import annotations

import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, Optional

from flowcallback.core import store
from flowcallback.core._notes import first_line

__all__ = ["ErrorPolicy"]


class ErrorPolicy:
    """Where a run's errors go.

    Parameters
    ----------
    log_dir : pathlib.Path
    on_error : {"warn", "raise"}
    on_record : callable, optional
        ``on_record(key, text)``: also told of every error recorded (the run page's state), with
        ``key`` an epoch or :data:`flowcallback.core.store.SETUP_ERRORS`.
    aborted : callable, optional
        Whether ``fit`` was interrupted: an error then is raised (the snapshot is dropped), never
        recorded as a failure.
    """

    def __init__(self, log_dir: Path, on_error: str, *, on_record: Optional[Callable[[object, str], None]] = None,
                 aborted: Callable[[], bool] = lambda: False):
        self.log_dir = Path(log_dir)
        self.on_error = on_error
        self.on_record = on_record
        self.aborted = aborted
        self._lock = threading.Lock()

    @property
    def raises(self) -> bool:
        """Whether an error must stop the snapshot rather than cost only its part."""
        return self.on_error == "raise" or self.aborted()

    def record(self, epoch: Optional[int], exc: BaseException, where: str = "") -> Path:
        """Append ``exc`` and its traceback to ``errors/epoch_XXX.txt`` (``setup.txt`` for ``epoch=None``)."""
        name = f"epoch_{epoch:03d}.txt" if epoch is not None else f"{store.SETUP_ERRORS}.txt"
        path = self.log_dir / "errors" / name
        text = (f"[{where}]\n" if where else "") + "".join(traceback.format_exception(type(exc), exc,
                                                                                      exc.__traceback__))
        with self._lock:
            try:
                old = path.read_text("utf-8", "replace") + "\n" if path.is_file() and not path.is_symlink() else ""
                store.atomic_write(path, (old + text).encode("utf-8"))
            except OSError:  # the disk is full or read-only: the warning still says what failed
                pass
            if self.on_record is not None:
                self.on_record(store.SETUP_ERRORS if epoch is None else epoch, text)
        return path

    def tolerate(self, epoch: Optional[int], exc: BaseException, what: str, cost: str, *, where: str = "",
                 stacklevel: int = 3) -> Path:
        """Raise ``exc`` if :attr:`raises`; else record it and warn that ``what`` failed, costing ``cost``.

        Returns the error file's path.
        """
        if self.raises:
            raise exc
        path = self.record(epoch, exc, where or what)
        when = f"epoch {epoch}: " if epoch is not None else ""
        warnings.warn(f"FlowCallback: {when}{what} failed ({type(exc).__name__}: {first_line(exc)}); {cost} "
                      f"and training goes on. Details: {path}", RuntimeWarning, stacklevel=stacklevel)
        return path
