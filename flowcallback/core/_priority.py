"""Lower the CPU priority of the threads and the process that compute snapshots in the background.

A snapshot shares the machine with the training it observes. With the same priority, its threads
(the LRP worker's TensorFlow, FAISS, the MCL kernel) take turns with TensorFlow's training threads,
and training slows down far more than the snapshot's own work: a training step waits for its
slowest thread. With a higher niceness the training threads run first and the snapshot uses the
time they leave; what is left runs once ``fit`` is over, before it returns.

Linux schedules threads one by one, so raising the niceness of our own threads leaves the user's
threads (and the user's process) as they were. Threads started by a lowered thread (numba's MCL
threads, FAISS' OpenMP team) inherit its niceness. On other systems nothing is changed.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Optional

from flowcallback.core import _params

__all__ = ["background_niceness", "NICE", "lower_current_thread", "thread_nice"]

#: A niceness increment.
NICE = _params.integer(0, 19, "an integer from 0 (same priority as training) to 19 (lowest)")


def _supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def thread_nice(native_id: Optional[int] = None) -> int:
    """Niceness of a thread (the calling one by default); 0 where it cannot be read."""
    if not _supported():
        return 0
    tid = threading.get_native_id() if native_id is None else native_id
    try:
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        return 0


def background_niceness(increment: int) -> int:
    """Niceness for background work: that of the process's main thread plus ``increment`` (at most 19).

    Relative to the main thread (where Keras trains) rather than to the calling thread, so that work
    started from an already lowered thread ends at the same level.
    """
    return min(19, thread_nice(os.getpid()) + int(increment))


def lower_current_thread(target: int) -> int:
    """Raise the calling thread's niceness to ``target`` if it is lower; return the niceness it has.

    On Linux ``setpriority(PRIO_PROCESS, tid)`` applies to that thread only. A failure (a sandbox
    that forbids it) leaves the priority unchanged: priority is an optimisation, never a reason to
    fail a snapshot.
    """
    if _supported() and thread_nice() < target:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, int(target)))
        except OSError:
            pass
    return thread_nice()
