"""Notices when ``model.fit`` ends without ``on_train_end``, for :class:`~flowcallback.FlowCallback`.

Kept apart from the callback (no TensorFlow needed here) and from the snapshot pipeline, which
does not know about ``fit``.
"""
from __future__ import annotations

import sys
import threading

__all__ = ["FitGuard"]


class FitGuard:
    """Notices when ``model.fit`` ends without calling ``on_train_end`` and cleans up then.

    Keras skips ``on_train_end`` when ``fit`` raises: an exception in a callback or in the data, or
    a ``KeyboardInterrupt`` (Ctrl-C), which can arrive anywhere in Keras's loop, where no callback
    hook sees it. Keras 2 has no hook for that, and wrapping the user's ``fit`` would change their
    model. So a daemon thread (``flowcallback-fit-guard``) checks, every ``period`` seconds, that
    the ``fit`` call that started the callback is still on its thread's stack; once it is gone
    without ``on_train_end``, it calls ``on_abnormal_end`` (:meth:`flowcallback.pipeline.Snapshotter.abort`) and exits.

    Parameters
    ----------
    period : float, default=0.05
        Seconds between two checks.

    Examples
    --------
    >>> guard = FitGuard()
    >>> guard.start(lambda: None)   # outside fit: nothing to watch, no thread
    False
    >>> guard.stop()
    """

    def __init__(self, period: float = 0.05):
        self.period = float(period)
        self._thread = None
        self._stop = self._ended = self._on_abnormal_end = None
        self._lock = threading.Lock()

    @staticmethod
    def _fit_frame():
        frame = sys._getframe(2)
        while frame is not None:
            code = frame.f_code
            if code.co_name in ("fit", "fit_generator") and "keras" in code.co_filename.replace("\\", "/"):
                return frame
            frame = frame.f_back
        return None

    def start(self, on_abnormal_end) -> bool:
        """Watch the ``fit`` call on the current thread's stack. Returns whether one was found.

        A guard still watching an earlier ``fit`` is stopped first (:meth:`stop`)."""
        self.stop()
        frame = self._fit_frame()
        if frame is None:  # callbacks driven by hand: the caller calls on_train_end itself
            return False
        tid, stop = threading.get_ident(), threading.Event()

        def alive() -> bool:
            f = sys._current_frames().get(tid)
            while f is not None:
                if f is frame:
                    return True
                f = f.f_back
            return False

        def ended() -> bool:
            """Whether the watched fit is over, and this is the first to say so (the handler runs once)."""
            nonlocal frame
            with self._lock:
                if frame is None or alive():
                    return False
                frame = None  # let the finished fit's locals go
                return True

        def watch():
            while not stop.wait(self.period):
                if ended():
                    on_abnormal_end()
                    return
                if frame is None:
                    return

        self._stop, self._ended, self._on_abnormal_end = stop, ended, on_abnormal_end
        self._thread = threading.Thread(target=watch, name="flowcallback-fit-guard", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop watching.

        From ``on_train_end``, the ``fit`` watched is still running: the guard just stops. Called
        after that ``fit`` has ended without ``on_train_end`` (a next ``fit``'s ``on_train_begin``,
        or the callback being collected), it waits for the guard's clean-up, or, where the guard had
        not noticed the end yet (it checks every ``period`` seconds), runs ``on_abnormal_end`` itself.
        """
        if self._thread is None:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():  # not from the clean-up's own thread (a __del__)
            self._thread.join()
        ended, on_abnormal_end = self._ended, self._on_abnormal_end
        self._thread = self._stop = self._ended = self._on_abnormal_end = None
        if ended():
            on_abnormal_end()
