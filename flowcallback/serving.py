"""Run directories served over HTTP, live: shared by ``flowcallback serve`` and the TensorBoard plugin.

:class:`RunSite` answers a request path (already percent-decoded once, as a WSGI server or
:func:`urllib.parse.unquote` gives it) with a :class:`Response`, whatever carries it: the
standard library's HTTP server of :func:`make_server` (``flowcallback serve``) and the WSGI routes of
:mod:`flowcallback.tensorboard_plugin` both call :meth:`RunSite.respond`. Both therefore refuse
the same paths, find the same runs and draw the same pages.

Everything read from the directory is untrusted, as in :func:`flowcallback.load_run`:

- a path is resolved with :func:`resolve_path`: no ``..``, no hidden name (the writer's lock and
  temporaries), and nothing that resolves outside the served directory (a symlink); only regular
  files are served, never a directory listing;
- the pages are not the files on disk: ``index.html`` and ``epoch_XXX.html`` are drawn anew from
  the run loaded with :func:`flowcallback.load_run` (the untrusted loader), ``plotly.min.js`` is
  the installed plotly package's own copy, and any other HTML, script or SVG file is refused, so
  that a hostile run directory cannot run code in the reader's browser;
- every response says ``X-Content-Type-Options: nosniff``; the drawn pages carry a
  Content-Security-Policy that allows their own inline scripts only (by hash), and raw files one
  that sandboxes them.

The run page polls its own address with ``HEAD`` (:mod:`flowcallback.templates` ``run_page.js``):
the ``ETag`` of a drawn page is a digest of the stat of the run's files (``run.json``, each epoch's
directory, the error records), so a poll costs a few ``stat`` calls and the page is drawn again
only when a snapshot has landed.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import html
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote

__all__ = ["RunSite", "Response", "find_runs", "resolve_path", "make_server", "MAX_DEPTH", "MAX_RUNS"]

PathLike = Union[str, os.PathLike]

#: How deep below the served directory runs are looked for (the directory itself is depth 0).
MAX_DEPTH = 6
#: At most this many runs are listed; at most :data:`MAX_DIRECTORIES` directories are looked at.
MAX_RUNS = 500
MAX_DIRECTORIES = 20_000

#: The file that makes a directory a run (:func:`flowcallback.load_run` reads it first).
RUN_FILE = "run.json"
SETS_FILE = "sets.json"

_PAGE_NAME = re.compile(r"^epoch_([0-9]{3,})\.html$")
#: Files never served raw: a browser would run them (the pages are drawn anew, plotly.js is the package's).
_ACTIVE_SUFFIXES = frozenset({".html", ".htm", ".xhtml", ".xht", ".shtml", ".svg", ".svgz", ".xml", ".xsl",
                              ".js", ".mjs", ".css", ".swf", ".pdf"})
_RAW_TYPES = {".json": "application/json", ".txt": "text/plain; charset=utf-8", ".npz": "application/octet-stream",
              ".png": "image/png", ".csv": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}
_CHUNK = 1 << 16

# The pages allow their own inline scripts (by hash) and plotly.js from the same origin; Plotly
# sets inline styles, and TensorBoard's own policy also allows 'unsafe-eval' for plotly.js.
_PAGE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-eval' {hashes}; style-src 'self' 'unsafe-inline'; "
                "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
_RAW_POLICY = "sandbox; default-src 'none'"
_LIST_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'self'")
_INLINE_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Response:
    """What :meth:`RunSite.respond` answers: status, headers and a body (bytes, or a file to stream).

    Attributes
    ----------
    status : int
    headers : tuple of (str, str)
        Content-Type included.
    body : bytes
        Empty for ``HEAD`` and for a streamed file.
    file : pathlib.Path, optional
        A regular file to send in chunks (:meth:`chunks`), already checked.
    """

    status: int
    headers: Tuple[Tuple[str, str], ...]
    body: bytes = b""
    file: Optional[Path] = None
    file_size: int = 0

    def header(self, name: str) -> Optional[str]:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def chunks(self) -> Iterator[bytes]:
        """The body, in chunks (the file's, read now, at most the size checked)."""
        if self.file is None:
            if self.body:
                yield self.body
            return
        fd = _open_regular_nofollow(self.file)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as f:
            left = self.file_size
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk


def _open_regular_nofollow(path: Path) -> Optional[int]:
    """A read descriptor on ``path`` if it is a regular file (no symlink at its last component, no
    FIFO that would block), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def resolve_path(root: PathLike, path: str) -> Optional[Path]:
    """The file or directory that the request path ``path`` names inside ``root``, or None.

    ``path`` is the URL's path, percent-decoded once (a second decoding is not done: ``%2e%2e``
    sent encoded twice stays a name). Refused (None): a ``..`` or ``.`` component, a backslash or
    NUL, a hidden name (starting with ``.``: the writer's lock and temporaries), anything that does
    not exist, and anything whose real path (symlinks followed) is outside ``root``. Leading slashes
    and empty components are dropped, so an absolute path is read as relative to ``root``.

    Parameters
    ----------
    root : str or path
        The served directory.
    path : str
        ``"/run1/graphs/epoch_001/activations.json"``, say.

    Returns
    -------
    pathlib.Path or None
        The real path, inside ``root``.

    Examples
    --------
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "run.json"), "w").write("{}")
    >>> resolve_path(root, "/run.json").name
    'run.json'
    >>> resolve_path(root, "/../etc/passwd") is None, resolve_path(root, "/.flowcallback.lock") is None
    (True, True)
    """
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p != ""]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        base = Path(root).resolve(strict=True)
        real = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name too long
        return None
    if real != base and base not in real.parents:
        return None
    return real


def find_runs(root: PathLike, *, max_depth: int = MAX_DEPTH, max_runs: int = MAX_RUNS,
              max_directories: int = MAX_DIRECTORIES) -> List[str]:
    """The runs under ``root``: directories holding a ``run.json``, wherever they lie.

    The walk goes breadth first, in name order, at most ``max_depth`` levels down and through at
    most ``max_directories`` directories, and stops at ``max_runs`` runs. It does not follow
    symlinks, skips hidden directories and does not look inside a run (its ``graphs/``,
    ``tensorboard/``), so TensorBoard's own folders beside the runs cost one listing each.

    Parameters
    ----------
    root : str or path
    max_depth, max_runs, max_directories : int

    Returns
    -------
    list of str
        Each run's path relative to ``root``, with ``/`` separators (``"."`` for ``root`` itself).

    Examples
    --------
    >>> import tempfile
    >>> from flowcallback.demo import tiny_run
    >>> root = tempfile.mkdtemp()
    >>> _ = tiny_run(os.path.join(root, "mnist", "run1")), os.makedirs(os.path.join(root, "train"))
    >>> find_runs(root)
    ['mnist/run1']
    """
    base = Path(root)
    found: List[str] = []
    level = [PurePosixPath(".")]
    seen = 0
    for _depth in range(max_depth + 1):
        following = []
        for rel in level:
            d = base / rel
            if os.path.isfile(d / RUN_FILE) and not os.path.islink(d / RUN_FILE):
                found.append(rel.as_posix())
                if len(found) >= max_runs:
                    return found
                continue
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                seen += 1
                if seen > max_directories:
                    return found
                following.append(rel / entry.name)
        level = following
    return found


def script_hashes(page: str) -> List[str]:
    """``'sha256-...'`` sources of the inline scripts of a page drawn by flowcallback (not the
    JSON data element), for a Content-Security-Policy that allows those and no other."""
    out = []
    for m in _INLINE_SCRIPT.finditer(page):
        attrs = m.group("attrs").lower()
        if "src=" in attrs or "application/json" in attrs:
            continue
        digest = hashlib.sha256(m.group("body").encode("utf-8")).digest()
        out.append("'sha256-" + base64.b64encode(digest).decode("ascii") + "'")
    return out


def _headers(content_type: str, policy: str, extra=()) -> Tuple[Tuple[str, str], ...]:
    return (("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", policy), ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-cache")) + tuple(extra)


def _text(status: int, message: str) -> Response:
    return Response(status, _headers("text/plain; charset=utf-8", _RAW_POLICY), message.encode("utf-8"))


@dataclass
class _RunEntry:
    """What :class:`RunSite` keeps of one run between requests."""

    run: object = None
    stamps: Dict[str, tuple] = field(default_factory=dict)
    signature: str = ""
    page: Optional[bytes] = None
    page_signature: str = ""
    page_cache: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


class RunSite:
    """The runs under one directory, served: run pages drawn anew, files checked, paths refused.

    Thread-safe (one lock per run); it keeps, per run, the loaded :class:`flowcallback.Run` and the
    last page drawn, and reloads a run whose ``run.json`` or an already read epoch was rewritten.

    Parameters
    ----------
    root : str or path
        A run directory, or a directory holding runs (at any depth up to ``max_depth``).
    max_depth, max_runs : int
        Bounds of the search for runs (:func:`find_runs`).

    Examples
    --------
    >>> import shutil
    >>> from flowcallback.demo import tiny_run
    >>> site = RunSite(tiny_run())
    >>> r = site.respond("/index.html")
    >>> r.status, r.header("Content-Type"), b"run-data" in r.body
    (200, 'text/html; charset=utf-8', True)
    >>> site.respond("/index.html", method="HEAD").header("ETag") == r.header("ETag")
    True
    >>> site.respond("/../../etc/passwd").status, site.respond("/graphs").status
    (404, 404)
    >>> shutil.rmtree(site.root)
    """

    def __init__(self, root: PathLike, *, max_depth: int = MAX_DEPTH, max_runs: int = MAX_RUNS):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"log_dir: expected a directory (a run, or a directory of runs), got {str(root)!r}")
        self.root = root.resolve()
        self.max_depth = int(max_depth)
        self.max_runs = int(max_runs)
        self._entries: Dict[str, _RunEntry] = {}
        self._lock = threading.Lock()

    # -- the runs -----------------------------------------------------------------------------------
    def run_paths(self) -> List[str]:
        """The runs' paths relative to :attr:`root` (``"."`` when it is a run itself)."""
        return find_runs(self.root, max_depth=self.max_depth, max_runs=self.max_runs)

    def runs(self) -> List[dict]:
        """One dict per run: ``path`` (relative, ``"."`` for the root), ``url`` (of its page, relative
        to the site's root), ``model``, ``epochs`` (the readable ones), ``skipped`` (epochs that
        could not be read) and ``error`` (why the run cannot be read at all, else None)."""
        out = []
        for rel in self.run_paths():
            url = "index.html" if rel == "." else "/".join(quote(p) for p in rel.split("/")) + "/index.html"
            item = {"path": rel, "url": url, "model": None, "epochs": [], "skipped": 0, "error": None}
            try:
                with self._entry(rel).lock:
                    run = self._run(rel)
                    item.update(model=str(run.info["model"]["name"]), epochs=list(run.epochs),
                                skipped=len(run.skipped))
            except Exception as exc:  # an unreadable run is listed with its error; the others still show
                item["error"] = " ".join(str(exc).split())[:500] or type(exc).__name__
            out.append(item)
        return out

    def sets(self, runs: Optional[List[str]] = None) -> List[dict]:
        """One dict per run of several held-out sets under :attr:`root` (a directory with ``sets.json``
        holding runs): ``path``, ``url`` (of the page comparing the sets), ``model``, ``sets`` (names),
        ``epochs`` (those every readable set has), ``skipped`` (0) and ``error``."""
        runs = self.run_paths() if runs is None else runs
        parents = {str(PurePosixPath(r).parent) for r in runs if r != "."} - set(runs)
        out = []
        for rel in sorted(parents, key=lambda r: (r != ".", r)):
            if not self._is_sets(self.root / rel):
                continue
            url = "index.html" if rel == "." else "/".join(quote(p) for p in rel.split("/")) + "/index.html"
            item = {"path": rel, "url": url, "model": None, "sets": [], "epochs": [], "skipped": 0, "error": None}
            try:
                from flowcallback.core import store

                info = store.read_sets_info(self.root / rel)
                item.update(model=str((info.get("model") or {}).get("name", "")),
                            sets=[entry["name"] for entry in info["sets"]])
                common = None
                for name in item["sets"]:
                    child = name if rel == "." else f"{rel}/{name}"
                    if child in runs:
                        with self._entry(child).lock:
                            epochs = set(self._run(child).epochs)
                        common = epochs if common is None else common & epochs
                item["epochs"] = sorted(common or ())
            except Exception as exc:
                item["error"] = " ".join(str(exc).split())[:500] or type(exc).__name__
            out.append(item)
        return out

    def _entry(self, rel: str) -> _RunEntry:
        with self._lock:
            if rel not in self._entries:
                self._entries[rel] = _RunEntry()
            return self._entries[rel]

    def _stamps(self, run_dir: Path) -> Dict[str, tuple]:
        """``{name: (mtime_ns, size)}`` of ``run.json``, each epoch directory and each error record."""
        out = {}
        for name, d in (("", run_dir), ("graphs/", run_dir / "graphs"), ("errors/", run_dir / "errors")):
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.name.startswith(".") or (name == "" and e.name != RUN_FILE):
                            continue
                        st = e.stat(follow_symlinks=False)
                        out[name + e.name] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue
        return out

    def _run(self, rel: str):
        """The loaded run at ``rel`` (reloaded when ``run.json`` or a read epoch changed)."""
        from flowcallback.run import load_run

        run_dir = self.root / rel
        entry = self._entry(rel)
        with entry.lock:
            stamps = self._stamps(run_dir)
            changed = [k for k, v in entry.stamps.items() if k.startswith("graphs/") and stamps.get(k) != v]
            if entry.run is None or stamps.get(RUN_FILE) != entry.stamps.get(RUN_FILE) or changed:
                entry.run = None
                entry.run = load_run(run_dir)
            entry.stamps = stamps
            entry.signature = hashlib.sha256(repr(sorted(stamps.items())).encode()).hexdigest()[:32]
            return entry.run

    def signature(self, rel: str) -> str:
        """A digest of the stat of the run's files: it changes when a snapshot lands (the ``ETag``)."""
        stamps = self._stamps(self.root / rel)
        return hashlib.sha256(repr(sorted(stamps.items())).encode()).hexdigest()[:32]

    # -- requests -----------------------------------------------------------------------------------
    def respond(self, path: str, *, method: str = "GET", if_none_match: Optional[str] = None) -> Response:
        """Answer a request for ``path`` (percent-decoded once, relative to the site's root).

        Parameters
        ----------
        path : str
        method : {"GET", "HEAD"}
            Any other gets 405.
        if_none_match : str, optional
            The request's ``If-None-Match``: a drawn page whose ``ETag`` it matches gets 304.

        Returns
        -------
        Response
        """
        if method not in ("GET", "HEAD"):
            return Response(405, _headers("text/plain; charset=utf-8", _RAW_POLICY, [("Allow", "GET, HEAD")]),
                            b"" if method == "HEAD" else b"method not allowed\n")
        response = self._respond(path, method, if_none_match)
        if method == "HEAD" and (response.body or response.file is not None):
            size = response.file_size if response.file is not None else len(response.body)
            return Response(response.status, response.headers + (("Content-Length", str(size)),))
        return response

    def _respond(self, path: str, method: str, if_none_match: Optional[str]) -> Response:
        runs = self.run_paths()
        parts = [p for p in path.split("/") if p != ""]
        if parts == ["favicon.ico"]:  # asked by every browser: no icon, and no 404 in the reader's console
            return Response(204, _headers("text/plain; charset=utf-8", _RAW_POLICY))
        if not parts and "." not in runs:
            return self._sets_page(".", runs) if self._is_sets(self.root) else self._listing(runs)
        # the pages and plotly.js are drawn or taken from the package, not read: their directory must be a run
        last = parts[-1] if parts else ""
        made = last in ("index.html", "plotly.min.js") or _PAGE_NAME.match(last) is not None
        real = resolve_path(self.root, "/".join(parts[:-1]) if made else path)
        if real is None:
            return _text(404, "not found\n")
        rel = real.relative_to(self.root).as_posix() if real != self.root else "."
        run = next((r for r in sorted(runs, key=len, reverse=True)
                    if r == "." or rel == r or rel.startswith(r + "/")), None)
        if run is None:
            if self._is_sets(real) and (last in ("index.html", "plotly.min.js") or path.endswith("/")):
                return self._plotlyjs() if last == "plotly.min.js" else self._sets_page(rel, runs)
            if self._is_sets(real) and not made:  # the sets' directory: its page, at an address ending in "/"
                return Response(301, _headers("text/plain; charset=utf-8", _RAW_POLICY,
                                              [("Location", quote(parts[-1]) + "/")]))
            return _text(404, "not found (only the files of the runs are served)\n")
        if rel != run:  # a file (or folder) inside the run
            if made or real.suffix.lower() in _ACTIVE_SUFFIXES:
                return _text(404, "not served: a page or script inside a run's folders (the pages are drawn anew)\n")
            return self._file(real)
        if last == "index.html":
            return self._run_page(run, method, if_none_match)
        if last == "plotly.min.js":
            return self._plotlyjs()
        if made:
            return self._epoch_page(run, int(_PAGE_NAME.match(last).group(1)), method)
        if parts and not path.endswith("/"):  # the run directory: its page, at an address ending in "/"
            return Response(301, _headers("text/plain; charset=utf-8", _RAW_POLICY,
                                          [("Location", quote(parts[-1]) + "/")]))
        return self._run_page(run, method, if_none_match)

    def _file(self, real: Path) -> Response:
        fd = _open_regular_nofollow(real)
        if fd is None:
            return _text(404, "not found (not a regular file)\n")
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        content_type = _RAW_TYPES.get(real.suffix.lower(), "application/octet-stream")
        extra = [("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                 ("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"')]
        return Response(200, _headers(content_type, _RAW_POLICY, extra), file=real, file_size=st.st_size)

    def _plotlyjs(self) -> Response:
        from flowcallback.core._files import _plotlyjs_bytes, _plotlyjs_identity

        body = _plotlyjs_bytes()
        tag = _plotlyjs_identity()[1][:32]
        return Response(200, _headers("text/javascript; charset=utf-8", _RAW_POLICY, [("ETag", f'"{tag}"')]), body)

    def _page(self, body: str, etag: str) -> Response:
        policy = _PAGE_POLICY.format(hashes=" ".join(script_hashes(body)))
        return Response(200, _headers("text/html; charset=utf-8", policy, [("ETag", etag)]), body.encode("utf-8"))

    def _run_page(self, rel: str, method: str, if_none_match: Optional[str]) -> Response:
        from flowcallback.core.runpage import run_page_html_for

        entry = self._entry(rel)
        etag = f'"{self.signature(rel)}"'
        if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(304, _headers("text/html; charset=utf-8", _RAW_POLICY, [("ETag", etag)]))
        if method == "HEAD":  # what a poll asks: the ETag, without drawing the page
            return Response(200, _headers("text/html; charset=utf-8", _RAW_POLICY, [("ETag", etag)]))
        try:
            run = self._run(rel)
            with entry.lock:
                if entry.page is None or entry.page_signature != entry.signature:
                    entry.page = run_page_html_for(run, cache=entry.page_cache).encode("utf-8")
                    entry.page_signature = entry.signature
                page, etag = entry.page, f'"{entry.page_signature}"'
        except Exception as exc:  # an unreadable run: its error, as text
            return _text(500, f"flowcallback: this run cannot be read: {' '.join(str(exc).split())}\n")
        return self._page(page.decode("utf-8"), etag)

    @staticmethod
    def _is_sets(directory: Path) -> bool:
        """Whether ``directory`` holds a run of several held-out sets (a regular ``sets.json``, no ``run.json``)."""
        sets_file = directory / SETS_FILE
        return (os.path.isfile(sets_file) and not os.path.islink(sets_file)
                and not os.path.lexists(directory / RUN_FILE))

    def _sets_page(self, rel: str, runs: List[str]) -> Response:
        """The page comparing the held-out sets of the run at ``rel``, drawn from the sets' runs as
        they are now (each set's own page, in its frame, refreshes itself)."""
        from flowcallback.core import store
        from flowcallback.core.runpage import sets_page_html_for

        def open_run(name: str):
            child = name if rel == "." else f"{rel}/{name}"
            if child not in runs:
                return None
            with self._entry(child).lock:
                return self._run(child)

        try:
            body = sets_page_html_for(store.read_sets_info(self.root / rel), open_run)
        except Exception as exc:
            return _text(500, f"flowcallback: this run of held-out sets cannot be read: {' '.join(str(exc).split())}\n")
        return self._page(body, f'"{hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]}"')

    def _epoch_page(self, rel: str, epoch: int, method: str) -> Response:
        from flowcallback.core import render

        entry = self._entry(rel)
        try:
            with entry.lock:
                run = self._run(rel)
                if epoch not in run.epochs:
                    return _text(404, f"epoch {epoch} is not a readable snapshot of this run\n")
                graphs = {a: run.epoch(epoch, a) for a in run.analyses(epoch)}
            page = render.page_html(graphs, title_prefix=str(run.info["model"]["name"]))
        except Exception as exc:
            return _text(500, f"flowcallback: this epoch cannot be read: {' '.join(str(exc).split())}\n")
        return self._page(page, f'"{entry.signature}-{epoch}"')

    def _listing(self, runs: List[str]) -> Response:
        """The site's root when it is not a run: every run, linked, with the error of those that
        cannot be read (names are HTML-escaped; no script)."""
        rows = []
        for item in self.sets(runs):
            name = html.escape(item["path"])
            if item["error"]:
                rows.append(f'<li class="bad"><b>{name}</b>: cannot be read: {html.escape(item["error"])}</li>')
            else:
                rows.append(f'<li><a href="{html.escape(item["url"])}">{name}</a> (held-out sets '
                            f'{html.escape(", ".join(item["sets"]))}, compared)</li>')
        for item in self.runs():
            name = html.escape(item["path"])
            if item["error"]:
                rows.append(f'<li class="bad"><b>{name}</b>: cannot be read: {html.escape(item["error"])}</li>')
            else:
                what = f'{html.escape(item["model"])}, {len(item["epochs"])} snapshot(s)'
                if item["skipped"]:
                    what += f', {item["skipped"]} unreadable'
                rows.append(f'<li><a href="{html.escape(item["url"])}">{name}</a> ({what})</li>')
        body = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>flowcallback runs</title>"
                "<style>body{font-family:Helvetica,Arial,sans-serif;margin:16px}.bad{color:#a33}</style></head>"
                f"<body><h2>flowcallback runs in {html.escape(str(self.root))}</h2>"
                + (f"<ul id=\"runs\">{''.join(rows)}</ul>" if rows else "<p>No run here yet (a run is a directory "
                   "with run.json); this page does not refresh.</p>")
                + "</body></html>")
        return Response(200, _headers("text/html; charset=utf-8", _LIST_POLICY), body.encode("utf-8"))


def make_server(log_dir: PathLike, port: int = 0, *, host: str = "127.0.0.1"):
    """An HTTP server of :class:`RunSite` for ``log_dir`` on ``host:port`` (not started).

    The standard library's :class:`http.server.ThreadingHTTPServer` is used rather than a web
    framework: the site is a handful of GET routes for one reader on this machine, flowcallback
    adds no dependency for it, and each request (a poll, plotly.js, a page being drawn) gets its
    own thread. It binds to the loopback address only: a run page shows the held-out set's
    names and the model's layers, and is not meant to be published.

    Parameters
    ----------
    log_dir : str or path
        A run directory, or a directory holding runs.
    port : int, default=0
        0: a free port, chosen by the system (``server.server_address[1]``).
    host : {"127.0.0.1", "::1", "localhost"}
        A loopback address; any other is refused.

    Returns
    -------
    http.server.ThreadingHTTPServer
        ``serve_forever()`` serves; ``shutdown()`` from another thread stops it.

    Examples
    --------
    >>> import shutil, threading, urllib.request
    >>> from flowcallback.demo import tiny_run
    >>> server = make_server(tiny_run())
    >>> threading.Thread(target=server.serve_forever, daemon=True).start()
    >>> url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    >>> urllib.request.urlopen(url).headers["X-Content-Type-Options"]
    'nosniff'
    >>> server.shutdown(); server.server_close(); shutil.rmtree(server.site.root)
    """
    import http.server
    import socket
    from urllib.parse import unquote, urlsplit

    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"host: expected a loopback address ('127.0.0.1', '::1' or 'localhost'), got {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an int in [0, 65535] (0: a free port), got {port!r}")
    site = RunSite(log_dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "flowcallback"
        sys_version = ""

        def _answer(self, method: str) -> None:
            raw = urlsplit(self.path).path  # an absolute-form request line keeps only its path
            r = site.respond(unquote(raw, errors="strict") if raw else "/", method=method,
                             if_none_match=self.headers.get("If-None-Match"))
            self.send_response(r.status)
            for k, v in r.headers:
                self.send_header(k, v)
            if method == "GET" and r.header("Content-Length") is None and r.status != 204:  # 204: none (RFC 9110)
                self.send_header("Content-Length", str(r.file_size if r.file is not None else len(r.body)))
            self.end_headers()
            if method == "GET":
                for chunk in r.chunks():
                    self.wfile.write(chunk)

        def _safe(self, method: str) -> None:
            try:
                self._answer(method)
            except UnicodeDecodeError:
                self.send_error(404)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._safe("GET")

        def do_HEAD(self):  # noqa: N802
            self._safe("HEAD")

        def _refuse(self):
            self._safe(self.command)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # 405: GET and HEAD only

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass  # quiet: the reader's terminal keeps the URL; errors still go to log_error

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, port), Handler)
    server.site = site
    return server
