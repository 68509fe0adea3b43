"""Videos of the views across training: Plotly figures rendered frame by frame, written as MP4 or GIF.

:meth:`flowcallback.Run.save_animation` (and ``flowcallback animate`` on the command line) builds
one figure per snapshot epoch and hands them to :func:`write_animation`, which

1. checks its arguments, that the writer is installed (the ``video`` extra:
   ``pip install "flowcallback[video]"``, which brings imageio, imageio-ffmpeg and kaleido) and that
   a Chromium-based browser is there, before any frame is drawn;
2. renders each figure to a PNG with Plotly's own static export, kaleido (version 1 and later), in
   one headless browser started once for all the frames;
3. writes the frames with imageio: an H.264 MP4 through the ffmpeg binary that the imageio-ffmpeg
   wheel ships, or an animated GIF through Pillow; into a temporary directory beside the target,
   then renamed over it, so that a failure (or Ctrl-C) leaves no half-written video.

Why kaleido and not a page screenshot (Playwright): kaleido is the exporter behind Plotly's
``fig.write_image``, so a frame is what users get from Plotly itself, sized exactly as asked, and it
renders a figure without a page of ours around it. Kaleido never downloads a browser on its own
(only its ``get_chrome`` does, which flowcallback never calls): :func:`find_browser` gives it an
explicit path, and MathJax (fetched from a CDN by default) is turned off, so that nothing is
requested from the network.

Nothing here changes a global setting: no Plotly default, no kaleido server, no event loop of the
caller's thread (the browser is driven from a worker thread of its own, which also makes it work
inside a notebook's running event loop).
"""
from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

import numpy as np

from flowcallback.core._files import _file_mode, _refuse_directory, _temp_prefix

__all__ = ["FORMATS", "VIDEO_EXTRA", "BROWSER_NAMES", "video_format", "check_options", "find_browser",
           "require_writer", "static_frames", "write_animation", "epoch_title"]

PathLike = Union[str, os.PathLike]

#: The video formats, by file suffix.
FORMATS = {".mp4": "mp4", ".gif": "gif"}
#: What to install for videos.
VIDEO_EXTRA = 'pip install "flowcallback[video]"'
#: Executable names searched on ``PATH`` when neither ``browser=`` nor ``BROWSER_PATH`` names one:
#: Debian's and Ubuntu's Chromium, then Google Chrome.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: The largest frame side accepted, in pixels (frames are held as RGB arrays while a GIF is written).
MAX_SIDE = 8192
#: Seconds allowed to render one frame.
FRAME_TIMEOUT = 90


def video_format(path: PathLike) -> str:
    """``"mp4"`` or ``"gif"``, from the suffix of ``path`` (any case).

    Raises
    ------
    ValueError
        For another suffix, naming ``path`` and the suffixes accepted.

    Examples
    --------
    >>> video_format("training.MP4"), video_format("flows/projection.gif")
    ('mp4', 'gif')
    >>> video_format("training.avi")
    Traceback (most recent call last):
    ...
    ValueError: path: expected a file name ending in .mp4 (H.264 video) or .gif (animated GIF), got 'training.avi'
    """
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"path: expected a file name ending in .mp4 (H.264 video) or .gif (animated GIF), "
                         f"got {os.fspath(path)!r}")
    return FORMATS[suffix]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_SIDE:
        raise ValueError(f"{name}: expected a whole number of pixels from 1 to {MAX_SIDE}, got {value!r}")
    return int(value)


def check_options(path: PathLike, *, fps: float, width: int, height: int) -> str:
    """Check a video's path and options; return its format (``"mp4"`` or ``"gif"``).

    Parameters
    ----------
    path : str or path
        Ends in ``.mp4`` or ``.gif``; not a directory.
    fps : float
        Frames (epochs) per second, a finite number above 0.
    width, height : int
        Frame size in pixels, 1 to :data:`MAX_SIDE`; even for an MP4 (H.264 stores colour at half
        resolution, in blocks of 2 × 2 pixels).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Naming the argument and what it takes.
    IsADirectoryError
        If ``path`` is a directory.

    Examples
    --------
    >>> check_options("run.mp4", fps=2, width=1280, height=720)
    'mp4'
    >>> check_options("run.gif", fps=0, width=640, height=480)
    Traceback (most recent call last):
    ...
    ValueError: fps: expected a number of frames per second above 0, got 0
    >>> check_options("run.mp4", fps=2, width=641, height=480)
    Traceback (most recent call last):
    ...
    ValueError: width: an MP4 (H.264, yuv420p) needs an even number of pixels, got 641; use 640 or 642, or a .gif
    """
    fmt = video_format(path)
    if (isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"fps: expected a number of frames per second above 0, got {fps!r}")
    sizes = {"width": _positive_int("width", width), "height": _positive_int("height", height)}
    if fmt == "mp4":
        for name, value in sizes.items():
            if value % 2:
                raise ValueError(f"{name}: an MP4 (H.264, yuv420p) needs an even number of pixels, got {value}; "
                                 f"use {value - 1} or {value + 1}, or a .gif")
    _refuse_directory(Path(path))
    return fmt


def find_browser(browser: Optional[PathLike] = None) -> str:
    """The Chromium-based browser that renders the frames: ``browser``, else ``$BROWSER_PATH``
    (the variable kaleido's browser driver, choreographer, reads), else the first of
    :data:`BROWSER_NAMES` on ``PATH``. Never downloads one.

    Raises
    ------
    RuntimeError
        If none is found, or the one named is not an executable file; saying what to install.
    """
    where = "browser=" if browser is not None else "BROWSER_PATH=" if os.environ.get("BROWSER_PATH") else None
    path = browser if browser is not None else os.environ.get("BROWSER_PATH")
    if path is None:
        path = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
        if path is None:
            raise RuntimeError("a video needs Chromium or Google Chrome to render its frames, and none was found on "
                               f"PATH (looked for {', '.join(BROWSER_NAMES)}): install it (Debian/Ubuntu: "
                               "apt-get install chromium), or pass browser= or set BROWSER_PATH to its executable. "
                               "flowcallback never downloads a browser")
        return path
    path = os.fspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"{where}{path!r}: not an executable file; a video needs Chromium or Google Chrome to "
                           "render its frames (Debian/Ubuntu: apt-get install chromium)")
    return path


def require_writer(fmt: str) -> None:
    """Import what writing a ``fmt`` video needs (imageio, imageio-ffmpeg for MP4, kaleido >= 1).

    Raises
    ------
    ImportError
        Naming the missing package and the extra to install: ``pip install "flowcallback[video]"``.
    """
    needed = ["imageio"] + (["imageio_ffmpeg"] if fmt == "mp4" else []) + ["kaleido"]
    for module in needed:
        try:
            __import__(module)
        except ImportError as exc:
            raise ImportError(f"writing a {fmt.upper()} video needs the {module.replace('_', '-')} package, which "
                              f"is not installed ({exc}); install the video extra: {VIDEO_EXTRA}") from exc
    import kaleido

    if not hasattr(kaleido, "Kaleido"):  # kaleido 0.x bundled its own Chromium and had another API
        version = getattr(kaleido, "__version__", "< 1.0")
        raise ImportError(f"writing a video needs kaleido 1.0 or later (it renders through the installed "
                          f"Chromium), found {version}; install the video extra: {VIDEO_EXTRA}")


def static_frames(fig, title: Optional[Callable[[str], str]] = None) -> Iterable:
    """One still figure per frame of an animated Plotly figure, for a video.

    Each still has the frame's traces and the animation's layout (its fixed axes, legend and size)
    without the play button and the slider.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        With ``frames`` (:func:`flowcallback.core.views_figures.projection_figure`).
    title : callable, optional
        ``title(frame_name)``: the still's title; default: the figure's title, then the frame's name.

    Yields
    ------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import plotly.graph_objects as go
    >>> fig = go.Figure(go.Scatter(x=[0], y=[0]), frames=[go.Frame(data=[go.Scatter(x=[i], y=[i])], name=str(i))
    ...                                                  for i in (1, 2)], layout=dict(title="moving"))
    >>> [(f.layout.title.text, f.data[0].x) for f in static_frames(fig)]
    [('moving · 1', (1,)), ('moving · 2', (2,))]
    """
    import plotly.graph_objects as go

    base = fig.layout.title.text or ""
    layout = fig.layout.to_plotly_json()
    layout.pop("updatemenus", None)
    layout.pop("sliders", None)
    for frame in fig.frames:
        still = go.Figure(data=frame.data, layout=layout)
        still.update_layout(title_text=title(frame.name) if title is not None else
                            " · ".join(t for t in (base, frame.name) if t))
        yield still


def _rgb(png: bytes, width: int, height: int) -> np.ndarray:
    """A PNG's pixels as ``(height, width, 3)`` uint8, any transparency laid over white."""
    import imageio.v3 as iio

    img = np.asarray(iio.imread(png))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[:2] != (height, width):
        raise RuntimeError(f"the browser rendered a frame of {img.shape[1]} × {img.shape[0]} pixels where "
                           f"{width} × {height} was asked")
    if img.shape[2] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = np.rint(img[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3], dtype=np.uint8)


class _Writer:
    """Frames appended one by one to ``path`` (an MP4 is streamed to ffmpeg; a GIF is written at close)."""

    def __init__(self, path: Path, fmt: str, fps: float):
        self.path, self.fmt, self.fps = path, fmt, float(fps)
        self.frames: List[np.ndarray] = []
        self.count = 0
        self._ffmpeg = None
        if fmt == "mp4":
            import imageio.v2 as iio2

            # quality 8 (of 10): H.264 at CRF 10, crisp points and text; macro_block_size=2 keeps the
            # asked size exactly (the default, 16, would resize); faststart: playable while loading
            self._ffmpeg = iio2.get_writer(str(path), format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                           pixelformat="yuv420p", quality=8, macro_block_size=2,
                                           ffmpeg_log_level="error", output_params=["-movflags", "+faststart"])

    def append(self, frame: np.ndarray) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.append_data(frame)
        else:
            self.frames.append(frame)
        self.count += 1

    def close(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            self._ffmpeg = None
        elif self.frames:
            import imageio.v3 as iio

            # Pillow's GIF: duration in milliseconds per frame, loop=0 plays forever
            iio.imwrite(self.path, np.stack(self.frames), extension=".gif", duration=round(1000 / self.fps), loop=0)
            self.frames = []

    def abort(self) -> None:
        self.frames = []
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway; the first error is the one to report
                pass
            self._ffmpeg = None


def _render(figures: Iterable, writer: _Writer, *, width: int, height: int, browser: str,
            stop: threading.Event) -> None:
    """Render each figure in one kaleido browser and append it to ``writer`` (run in a worker thread)."""
    import asyncio

    import kaleido

    opts = {"format": "png", "width": width, "height": height, "scale": 1}

    async def main():
        # path: the browser found by find_browser (kaleido would otherwise search, and prefer a copy
        # it downloaded); mathjax=False: no request to its CDN (no figure here uses LaTeX)
        k = kaleido.Kaleido(n=1, timeout=FRAME_TIMEOUT, path=browser, mathjax=False)
        try:
            await k.open()
        except Exception as exc:  # noqa: BLE001 - kaleido's and choreographer's errors, told in one sentence
            try:
                await k.close()  # whatever it had started
            except Exception:  # noqa: BLE001, S110 - the error to report is the first one
                pass
            # the cause is chained; its text (choreographer's) suggests downloading Chrome, which is
            # not what to do here
            raise RuntimeError(f"the browser {browser} could not be started to render the frames "
                               f"({type(exc).__name__}); it must be Chromium or Google Chrome: pass browser= or "
                               "set BROWSER_PATH to its executable") from exc
        try:
            for i, fig in enumerate(figures):  # an error of the figures themselves goes out as it is
                if stop.is_set():
                    return
                try:
                    png = await k.calc_fig(fig, opts=opts)
                except Exception as exc:  # noqa: BLE001 - a timeout, a crashed browser, a JavaScript error
                    raise RuntimeError(f"frame {i + 1} could not be rendered by {browser} "
                                       f"({type(exc).__name__}: {_one_line(exc)})") from exc
                writer.append(_rgb(png, width, height))
        finally:
            await k.close()

    asyncio.run(main())


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_animation(figures: Iterable, path: PathLike, *, fps: float = 2.0, width: int = 1280, height: int = 720,
                    browser: Optional[PathLike] = None) -> Path:
    """Render Plotly figures, one per frame, and write them as an MP4 or an animated GIF.

    The arguments, the writer and the browser are checked before the first figure is taken from
    ``figures`` (a generator is built only then). The video is written to a temporary directory
    beside ``path`` and renamed over it once complete: on any failure, or Ctrl-C, nothing is left
    and a previous file at ``path`` is kept. The file gets the mode the umask allows.

    Parameters
    ----------
    figures : iterable of plotly.graph_objects.Figure
        The frames, in order (:func:`static_frames` turns an animated figure into them).
    path : str or path
        ``.mp4`` (H.264, yuv420p: plays in browsers, slides and chats) or ``.gif``; missing parent
        directories are made.
    fps : float, default=2
        Frames per second.
    width, height : int, default=1280, 720
        Frame size in pixels (even for an MP4).
    browser : str or path, optional
        The Chromium or Chrome executable; default ``$BROWSER_PATH``, else ``chromium`` (or Chrome)
        on ``PATH``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        For a bad suffix, fps or size (naming the argument), or when ``figures`` is empty.
    ImportError
        If the video extra is missing (``pip install "flowcallback[video]"``).
    RuntimeError
        If no browser is found, or a frame cannot be rendered.

    Examples
    --------
    >>> import plotly.graph_objects as go
    >>> figures = (go.Figure(go.Bar(y=[1, i])) for i in range(1, 4))
    >>> write_animation(figures, "bars.gif", fps=1, width=320, height=240)  # doctest: +SKIP
    PosixPath('bars.gif')
    """
    import concurrent.futures

    fmt = check_options(path, fps=fps, width=width, height=height)
    require_writer(fmt)
    exe = find_browser(browser)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a directory (not a file) beside the target: ffmpeg chooses the container by the file's suffix,
    # and the run directory's clean-up (store.remove_stale_temporaries) knows this name pattern
    tmp_dir = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    stop = threading.Event()
    try:
        tmp = tmp_dir / f"video{path.suffix.lower()}"
        writer = _Writer(tmp, fmt, fps)
        try:
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flowcallback-video") as pool:
                job = pool.submit(_render, iter(figures), writer, width=int(width), height=int(height), browser=exe,
                                  stop=stop)
                try:
                    job.result()
                except BaseException:
                    stop.set()  # Ctrl-C: the worker stops after its frame and closes the browser
                    raise
            if writer.count == 0:
                raise ValueError("figures: expected at least one figure (frame), got none")
            writer.close()
        except BaseException:
            writer.abort()
            raise
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def epoch_title(text: str, epoch, accuracy: Optional[float] = None) -> str:
    """A frame's title: ``text · epoch E · accuracy A`` (``text`` HTML-escaped: names are untrusted).

    Examples
    --------
    >>> epoch_title("Activations of <b>x</b>", 3, 0.91234)
    'Activations of &lt;b&gt;x&lt;/b&gt; · epoch 3 · accuracy 0.912'
    """
    parts = [html.escape(text, quote=False), f"epoch {epoch}"]
    if accuracy is not None and math.isfinite(accuracy):
        parts.append(f"accuracy {accuracy:.3f}")
    return " · ".join(parts)
