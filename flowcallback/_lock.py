"""One writer per run directory: :class:`RunLock`, an advisory lock that the writing process holds.

Two processes writing one log_dir would mix two models' epochs, or replace each other's, so the
runner takes ``log_dir/.flowcallback.lock`` with ``fcntl.flock`` before it reads or writes the run,
and releases it when the run ends. The kernel releases the lock of a process that dies (SIGKILL, a
crash), so a stale lock file never blocks a resume: only a live holder refuses. The file keeps the
holder's process id, host and command, for the error message; it stays in the directory (removing a
lock file races with the next taker).

``flock`` is used rather than a lock library (``filelock``, ``portalocker``) because it is the one
primitive with those semantics in the standard library. Where ``fcntl`` is missing (Windows), the
lock is a no-op, as docs/reliability.md says.
"""
from __future__ import annotations

import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Optional

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

from flowcallback.exceptions import RunInUseError

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = ".flowcallback.lock"
#: What is read of another holder's lock file (its description), at most.
_MAX_HOLDER_BYTES = 512
#: How long a run held by this very process is waited for before RunInUseError: a fit that ended
#: abnormally (an interrupt the script caught) lets its run go within a second or so.
OWN_RELEASE_SECONDS = 5.0


class RunLock:
    """The advisory lock of one run directory, held by the process that writes the run.

    Parameters
    ----------
    log_dir : path
        The run directory (it must exist).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> first, second = RunLock(d), RunLock(d)
    >>> first.acquire(); first.held
    True
    >>> try:
    ...     second.acquire()
    ... except RunInUseError as exc:
    ...     print(str(exc).split(" by ")[0].endswith("is being written"))
    True
    >>> first.release(); second.acquire(); second.held
    True
    >>> second.release()
    """

    def __init__(self, log_dir):
        self.path = Path(log_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunInUseError` naming the live process that holds it.

        Raises
        ------
        RunInUseError
            Another process (or another run of this one) holds the lock.
        OSError
            The lock file cannot be made (a read-only directory) or is not a regular file.
        """
        if self._fd is not None or fcntl is None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)  # the umask applies
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, _MAX_HOLDER_BYTES).decode("utf-8", "replace").strip()
                holder = "".join(c if c.isprintable() else "?" for c in holder) or "an unknown process"
                ours = holder.startswith(f"process {os.getpid()} on {socket.gethostname()} ")
                # this process: a fit that ended abnormally (an interrupt caught by the script) is
                # still letting its run go (its guard looks every 50 ms, then stops its snapshots)
                if ours and self._wait_for_release(fd, OWN_RELEASE_SECONDS):
                    ours = holder = None
                if ours:
                    holder = ("this process: another FlowCallback (or snapshot) of it writes this run, two "
                              "callbacks of one fit on one log_dir, say")
                if holder is not None:
                    raise RunInUseError(
                        f"log_dir: {self.path.parent} is being written by {holder} (it holds {LOCK_NAME}); "
                        "use another log_dir, or wait until that run ends") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n"
                     .encode("utf-8", "replace"))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _wait_for_release(fd: int, seconds: float) -> bool:
        """Whether the lock could be taken on ``fd`` within ``seconds`` (then it is held)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                continue
        return False

    def release(self) -> None:
        """Release the lock (closing the file releases it); nothing when it is not held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
