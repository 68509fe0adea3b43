"""The threads of a run's snapshots: one coordinator thread (a snapshot after its capture, with
``background=True``) and a pool for the per-layer kNN + MCL jobs.

Both are made at first use and run at a lower priority than training when ``background=True``
(:mod:`flowcallback.core._priority`). :meth:`SnapshotThreads.shutdown` stops the coordinator
first, then the layer pool, which a snapshot still running may create meanwhile: when it returns,
no thread of the run is left.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from flowcallback.core import _priority

__all__ = ["SnapshotThreads"]


def _init_thread(niceness: Optional[int]) -> None:
    if niceness is not None:
        _priority.lower_current_thread(niceness)


class SnapshotThreads:
    """The coordinator thread and the layer pool of one run.

    Parameters
    ----------
    background : bool
        Whether snapshots run in the background (their threads are then lowered by ``nice``).
    nice : int
        The niceness added to the threads (0 to 19).

    Examples
    --------
    >>> threads = SnapshotThreads(background=False, nice=0)
    >>> threads.idle, threads.layer_pool().submit(sum, [1, 2]).result(), threads.idle
    (True, 3, False)
    >>> threads.shutdown(cancel=False); threads.idle
    True
    """

    def __init__(self, *, background: bool, nice: int):
        self.background = background
        self.nice = nice
        self._coordinator: Optional[ThreadPoolExecutor] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._stopping = False  # shutdown(cancel=True) under way: no new layer pool

    @property
    def idle(self) -> bool:
        """Whether no thread exists (none made yet, or all shut down)."""
        return self._coordinator is None and self._pool is None

    def _executor(self, workers: int, prefix: str) -> ThreadPoolExecutor:
        # Background snapshots yield the CPU to training. The layer pool is shared with synchronous
        # snapshots, which wait for it anyway. The initializer is a plain function, not a bound
        # method: a worker thread keeps its initializer, and through a bound method it would keep
        # this object and its executors alive, so that executors nobody shut down (their owner
        # dropped) would never let their threads go.
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix, initializer=_init_thread,
                                  initargs=(_priority.background_niceness(self.nice) if self.background else None,))

    def coordinator(self) -> ThreadPoolExecutor:
        """The one thread that runs snapshots after their capture, in epoch order."""
        if self._coordinator is None:
            self._coordinator = self._executor(1, "flowcallback")
        return self._coordinator

    def layer_pool(self) -> ThreadPoolExecutor:
        """The pool of the per-layer jobs (two threads: FAISS and the MCL kernel use several cores each)."""
        if self._stopping:
            raise RuntimeError("the snapshot threads are stopping")
        if self._pool is None:
            self._pool = self._executor(2, "flowcallback-layer")
        return self._pool

    def shutdown(self, *, cancel: bool) -> None:
        """Stop the coordinator (waiting for its snapshot), then the layer pool.

        ``cancel`` drops the jobs not started: the snapshots waiting for the coordinator, and the
        running snapshot's layer jobs (it then fails at once, and is dropped by its runner); no new
        layer pool is made until this returns. Interrupted (Ctrl-C), it can be called again: it
        goes on where it was.
        """
        if cancel:
            self._stopping = True
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
        for name in ("_coordinator", "_pool"):  # the pool is read after the coordinator has stopped
            pool = getattr(self, name)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=cancel)
                setattr(self, name, None)
        self._stopping = False
