"""Background snapshots run at a lower CPU priority than training, and only our threads do."""
from __future__ import annotations

import os
import sys
import threading

import psutil
import pytest

from flowcallback.core import _priority

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.update(value=fn()))
    t.start()
    t.join()
    return out["value"]


@linux_only
def test_lowering_a_thread_leaves_the_others_and_is_inherited():
    main = _priority.thread_nice()

    def body():
        got = _priority.lower_current_thread(_priority.background_niceness(5))
        child = _in_thread(_priority.thread_nice)  # a thread started from a lowered thread
        again = _priority.lower_current_thread(_priority.background_niceness(5))  # idempotent
        return got, child, again

    got, child, again = _in_thread(body)
    assert got == child == again == min(19, main + 5)
    assert _priority.thread_nice() == main  # the calling (main) thread is untouched
    assert psutil.Process().nice() == main


@linux_only
def test_niceness_is_relative_to_the_main_thread_and_capped():
    main = _priority.thread_nice(os.getpid())
    assert _priority.background_niceness(0) == main
    assert _priority.background_niceness(40) == 19
    # raising never lowers: a thread already at 19 stays there
    assert _in_thread(lambda: (_priority.lower_current_thread(19), _priority.lower_current_thread(3))[1]) == 19
