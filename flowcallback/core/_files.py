"""Low-level file helpers of a run directory: modes, temporary names, atomic writes, plotly.js, safe reads.

Shared by :mod:`flowcallback.core.store` (graphs, ``run.json``), :mod:`flowcallback.core.render`
(epoch pages) and :mod:`flowcallback.core.runpage` (``index.html``), so that the page writers do not
depend on the run format. :mod:`flowcallback.core.store` re-exports every name, documented there:
files get the modes the umask allows; temporary names carry the writer's process id, so that the
leftovers of a killed writer can be removed (:func:`remove_stale_temporaries`); the run directory's
``plotly.min.js`` is replaced unless it is the installed plotly package's own copy
(:func:`ensure_plotlyjs`); and reading trusts nothing (only regular files inside the run
directory are opened, JSON without non-finite numbers).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, List, Optional, Tuple, Union

from flowcallback.exceptions import RunFormatError

__all__ = ["atomic_write", "ensure_plotlyjs", "remove_stale_temporaries"]

PathLike = Union[str, os.PathLike]

#: The key of the set-up's errors (``errors/setup.txt``) among a run's errors; the other keys are epochs.
SETUP_ERRORS = "setup"


# -- file modes ----------------------------------------------------------------------------------
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it.

    ``os.umask`` can only be read by setting it, which is process-wide and would race with other
    threads creating files; Linux shows it in ``/proc/self/status``. It is read at each write (a
    few microseconds), so files follow the umask in force when they are written.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once (still racy with other libraries' threads)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _file_mode() -> int:
    """Mode of a new file under the current umask (0644 under umask 022), as ``open`` would give."""
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    """Mode of a new directory under the current umask (0755 under umask 022), as ``mkdir`` would give."""
    return 0o777 & ~_umask()


# -- temporary names and the leftovers of dead writers --------------------------------------------
# ``.<target>.<pid>.<random>.tmp``: the random part is tempfile's (lowercase letters, digits, "_").
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>[1-9][0-9]{0,9})\.(?P<random>[a-z0-9_]+)\.tmp$")


def _temp_prefix(target_name: str) -> str:
    """Prefix of a temporary name for ``target_name``: it carries this process's id."""
    return f".{target_name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts; so does a zombie)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OverflowError:  # larger than any pid
        return False
    except OSError:  # EPERM: it exists, but belongs to someone else
        return True
    return True


def remove_stale_temporaries(log_dir: PathLike) -> List[Path]:
    """Remove the temporary files and directories that writers killed mid-write left in a run directory.

    A writer killed by SIGKILL (or a power cut) cannot remove its ``.epoch_XXX.<pid>.<random>.tmp``
    directory or its ``.<name>.<pid>.<random>.tmp`` files. Only those whose writer ``<pid>`` is no
    longer running are removed: a live process (another run writing to the same directory, this
    process) keeps its own. Names without a process id (written by flowcallback 0.1.0) are left
    alone, since nothing tells whether their writer is alive. Symlinks are removed, never followed.
    Best effort: what cannot be removed is left and not reported.

    Parameters
    ----------
    log_dir : str or path
        The run directory; its top level, ``graphs/`` and ``errors/`` are searched.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    log_dir = Path(log_dir)
    removed = []
    for d in (log_dir, log_dir / "graphs", log_dir / "errors"):
        try:
            if d != log_dir and not stat.S_ISDIR(os.lstat(d).st_mode):  # a symlinked graphs/ is not searched
                continue
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in entries:
            m = _TEMPORARY.match(entry.name)
            if m is None or _pid_alive(int(m.group("pid"))):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


# -- atomic writing ------------------------------------------------------------------------------
def _refuse_directory(path: Path) -> None:
    """Raise if ``path`` is a directory: renaming a file over it fails with a bare errno otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: is a directory where flowcallback writes a file; "
                                "remove it or use another directory")


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The file gets the mode the umask allows (0644 under umask 022). A symlink at ``path`` is
    replaced, never written through.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _refuse_directory(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())  # mkstemp creates 0600 whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- plotly.js -----------------------------------------------------------------------------------
_PLOTLYJS = "plotly.min.js"


def _plotlyjs_bytes() -> bytes:
    """plotly.js as shipped in the installed plotly package."""
    import plotly.offline

    return plotly.offline.get_plotlyjs().encode("utf-8")


@lru_cache(maxsize=1)
def _plotlyjs_identity() -> Tuple[int, str]:
    """Size and SHA-256 of the package's plotly.js (computed once; the bytes are not kept)."""
    data = _plotlyjs_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def _is_package_plotlyjs(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a symlink) holding exactly the package's plotly.js."""
    size, digest = _plotlyjs_identity()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # absent, a symlink (ELOOP), unreadable
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:  # a directory, a FIFO, another file
            return False
        h = hashlib.sha256()
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest() == digest


def ensure_plotlyjs(directory: PathLike) -> Path:
    """Put the installed plotly package's own ``plotly.min.js`` in ``directory``.

    The pages load plotly.js from their own directory, so a file there runs in the browser of
    whoever opens them. A run directory may come from someone else: whatever is there (a changed
    file, a symlink, another version) is replaced atomically unless it is a regular file identical
    to the package's copy (same SHA-256). Called at every page write; checking costs one read of
    the 3.5 MB file.

    Parameters
    ----------
    directory : str or path

    Returns
    -------
    pathlib.Path
        The path of ``plotly.min.js``.

    Raises
    ------
    IsADirectoryError
        If ``plotly.min.js`` is a directory.
    """
    path = Path(directory) / _PLOTLYJS
    if not _is_package_plotlyjs(path):
        atomic_write(path, _plotlyjs_bytes())
    return path




def _within(root: PathLike, path: PathLike) -> Path:
    """``path`` if it resolves inside ``root``; a symlink or ``..`` leading elsewhere is refused.

    Raises
    ------
    RunFormatError
        Naming the file and where it leads.
    """
    path = Path(path)
    try:
        base = Path(root).resolve()
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, say
        raise RunFormatError(f"{path}: cannot be resolved ({exc})") from None
    if real != base and base not in real.parents:
        raise RunFormatError(f"{path}: leads to {real}, outside the run directory {base} (a symlink or '..'); refused")
    return path


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading in binary; it must be a regular file (a symlink to one is followed).

    Opening a FIFO for reading blocks until a writer comes, so the type is checked before opening;
    ``O_NONBLOCK`` and a second check on the open descriptor cover a file swapped in between.

    Raises
    ------
    RunFormatError
        If the file is missing, unreadable, or not a regular file.
    """
    def refuse(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        return RunFormatError(f"{path}: is {kind}, expected a regular file; refused")

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RunFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise RunFormatError(f"{path}: cannot be opened ({exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise refuse(mode)
    return os.fdopen(fd, "rb")


def shown(value, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters: a value read from a run
    directory may be megabytes long, and a message repeats only its start and its length.

    Examples
    --------
    >>> shown("dense")
    "'dense'"
    >>> shown("x" * 1000)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (1000 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        size = f"{len(value)} items"
    return f"{text[:limit]}… ({size})"


def _check_size(path: Path, f: BinaryIO, max_bytes: Optional[int]) -> int:
    """The size of the open file ``f`` (``fstat``); RunFormatError when above ``max_bytes``."""
    size = os.fstat(f.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        raise RunFormatError(f"{path}: {size} bytes, more than the {max_bytes} that flowcallback writes "
                             "in such a file; refused unread")
    return size


def _read_bytes(path: Path, max_bytes: Optional[int]) -> bytes:
    """The bytes of a regular file, refused unread (``fstat``) when larger than ``max_bytes``.

    At most ``max_bytes + 1`` bytes are read even if the file grows meanwhile.
    """
    with _open_regular(path) as f:
        _check_size(path, f, max_bytes)
        try:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except OSError as exc:
            raise RunFormatError(f"{path}: cannot be read ({exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise RunFormatError(f"{path}: more than the {max_bytes} bytes that flowcallback writes in such a file "
                             "(it grew while read); refused")
    return data


def _read_text(path: Path, errors: str = "strict", *, max_bytes: Optional[int] = None) -> str:
    """The UTF-8 text of a regular file (see :func:`_open_regular`), at most ``max_bytes`` long."""
    data = _read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise RunFormatError(f"{path}: cannot be read as UTF-8 text ({exc.reason} at byte {exc.start})") from None


#: How many bytes of an error file (``errors/epoch_003.txt``) are read: its end, which holds the
#: last error's message. A longer file is shown from there, after a line saying what was left out.
ERROR_TAIL_BYTES = 256 * 1024


def _read_tail(path: Path, max_bytes: int = ERROR_TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a regular text file, decoded leniently (an error file).

    A longer file is never read whole: the text starts at the first line break within the tail,
    after a line saying how many bytes were left out.
    """
    with _open_regular(path) as f:
        size = _check_size(path, f, None)
        try:
            if size > max_bytes:
                f.seek(size - max_bytes)
            data = f.read(max_bytes)
        except OSError as exc:
            raise RunFormatError(f"{path}: cannot be read ({exc})") from None
    if size <= max_bytes:
        return data.decode("utf-8", "replace")
    cut = data.find(b"\n")
    data = data[cut + 1:] if 0 <= cut < len(data) - 1 else data
    return f"[the first {size - len(data)} bytes of {path.name} are not shown]\n" + data.decode("utf-8", "replace")


# Strings of a JSON text (as bytes: '"' and '\\' never occur inside a UTF-8 multi-byte sequence).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)

#: Every array or object in a document flowcallback writes takes more than this many bytes on
#: average (a cluster ``{"id": 0, "size": 1, "class_counts": [1]}`` takes 18 bytes per container even
#: written without spaces; the writer indents). Parsing costs about 60 bytes of memory per
#: container, so a file of empty lists (``[],[],...``: 21 times its size once parsed) is refused
#: before parsing.
MIN_BYTES_PER_CONTAINER = 16


def _check_containers(path: Path, data: bytes) -> None:
    """Refuse a JSON text holding more arrays and objects than its size allows a real document."""
    count = data.count(b"[") + data.count(b"{")
    allowed = len(data) // MIN_BYTES_PER_CONTAINER + 64
    if count <= allowed:  # the common case: no need to look inside strings
        return
    bare = _JSON_STRING.sub(b"", data)
    count = bare.count(b"[") + bare.count(b"{")
    if count > allowed:
        raise RunFormatError(f"{path}: {count} arrays and objects in {len(data)} bytes, more than the {allowed} "
                             f"that a flowcallback file of that size holds (one per {MIN_BYTES_PER_CONTAINER} "
                             "bytes); refused unparsed")


def _read_json(path: Path, max_bytes: Optional[int] = None) -> dict:
    """A JSON document read without trust: at most ``max_bytes`` (checked before reading), no
    more arrays and objects than its size allows (checked before parsing), no non-finite numbers."""
    data = _read_bytes(path, max_bytes)
    _check_containers(path, data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFormatError(f"{path}: cannot be read as UTF-8 text ({exc.reason} at byte {exc.start})") from None
    del data

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    def finite_float(literal):
        # "1e400" is valid JSON that Python reads as inf: the same non-finite value that
        # parse_constant refuses when spelt "Infinity"
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal[:40]} is out of the float range")
        return value

    try:
        return json.loads(text, parse_constant=no_constants, parse_float=finite_float)
    except (ValueError, RecursionError) as exc:
        raise RunFormatError(f"{path}: invalid JSON ({shorten_message(str(exc))})") from None


def shorten_message(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters, with how long it was (a message quoting a file)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _json_bytes(doc) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
