"""Snapshot progress: a live bar in a notebook, Keras-style lines in a terminal; and the live figure.

Snapshots run in a background thread while Keras prints its own progress. A line printed from
that thread would land in the middle of Keras's bar, so in a terminal the lines are queued and
printed by the training thread between epochs (:meth:`SnapshotProgress.flush`), where Keras has
finished its line. In a notebook (an IPython kernel) one display, made when the first snapshot
starts, is updated in place from any thread, so it never mixes with Keras's output either.
:class:`LiveFigure` (``FlowCallback(display="live")``) does the same with the last snapshot's Sankey.
"""
from __future__ import annotations

import html
import sys
import threading
from typing import Dict, List, Optional, Tuple

__all__ = ["SnapshotProgress", "LiveFigure"]


def in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter, VS Code, Colab), not a terminal."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - an IPython without a shell
        return False
    return shell is not None and hasattr(shell, "kernel")


class SnapshotProgress:
    """Reports the snapshots of one ``fit`` (or one :func:`~flowcallback.snapshot`).

    Parameters
    ----------
    verbose : int
        0: nothing; 1 or 2: a bar (notebook) or one line per snapshot (terminal).
    notebook : bool, optional
        Default: whether this process is an IPython kernel.
    immediate : bool, default=False
        Print terminal lines at once (no training is printing: :func:`flowcallback.snapshot`).

    Examples
    --------
    >>> p = SnapshotProgress(verbose=1, notebook=False)
    >>> p.update(3, "clustering", 1, 3)
    >>> p.finished(3, "FlowCallback: epoch 3 snapshot written to flows/epoch_003.html (2.0 s)")
    >>> p.flush()
    FlowCallback: epoch 3 snapshot written to flows/epoch_003.html (2.0 s)
    """

    def __init__(self, verbose: int, *, notebook: Optional[bool] = None, immediate: bool = False):
        self.verbose = verbose
        self.notebook = in_notebook() if notebook is None else notebook
        self.immediate = immediate
        self.written = 0
        self._running: Dict[int, Tuple[str, int, int]] = {}  # epoch -> (stage, done, total)
        self._last = ""
        self._lines: List[str] = []
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()  # one display, made once, updated by one thread at a time
        self._handle = None

    def update(self, epoch: int, stage: str, done: int, total: int) -> None:
        """Snapshot ``epoch`` is at ``stage``, step ``done`` of ``total`` (any thread)."""
        if self.verbose == 0:
            return
        with self._lock:
            self._running[epoch] = (stage, done, total)
        self._redraw()

    def finished(self, epoch: int, message: str) -> None:
        """Snapshot ``epoch`` is written (or failed): ``message`` says so (any thread)."""
        if self.verbose == 0:
            return
        with self._lock:
            self._running.pop(epoch, None)
            self.written += 1
            self._last = message
            if not self.notebook:
                self._lines.append(message)
        self._redraw()
        if self.immediate:
            self.flush()

    def note(self, message: str) -> None:
        """A line that is no snapshot's (the share of the budget spent, at the end of ``fit``)."""
        if self.verbose == 0:
            return
        with self._lock:
            self._last = message
            if not self.notebook:
                self._lines.append(message)
        self._redraw()

    def flush(self) -> None:
        """Print the queued terminal lines (the training thread, between Keras's lines)."""
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            print(line, flush=True)

    def _html(self) -> str:
        with self._lock:
            running = sorted(self._running.items())
            written, last = self.written, self._last
        parts = [f"<b>FlowCallback</b> · {written} snapshot(s) written"]
        for epoch, (stage, done, total) in running:
            bar = f"<progress value='{done}' max='{max(total, 1)}' style='width:10em'></progress>"
            parts.append(f"epoch {epoch}: {bar} {html.escape(stage)}")
        if last:
            parts.append(f"<span style='color:#555'>{html.escape(last)}</span>")
        return "<div class='flowcallback-progress'>" + "<br>".join(parts) + "</div>"

    def _redraw(self) -> None:
        if not self.notebook:
            return
        try:
            from IPython.display import HTML, display

            with self._draw_lock:
                if self._handle is None:
                    self._handle = display(HTML(self._html()), display_id=True)
                else:
                    self._handle.update(HTML(self._html()))
        except Exception:  # progress is never worth failing a snapshot for
            pass


class LiveFigure:
    """``FlowCallback(display="live")``: the last snapshot's Sankey, one figure in a notebook that is
    updated in place (IPython's ``display(..., display_id=True)``, then ``update``) as each snapshot
    lands, from whichever thread writes it.

    Outside an IPython kernel it does nothing. A snapshot that lands after a later one (snapshots
    run in the background) does not replace the later figure, and a figure that cannot be drawn
    never fails the snapshot.

    Parameters
    ----------
    notebook : bool, optional
        Default: whether this process is an IPython kernel.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> live = LiveFigure(notebook=False)                   # a script: nothing is shown
    >>> g = build_flow_graph([("d", "Dense", [0, 1])], [0, 1], [0, 1], epoch=1)
    >>> live.show(1, {"activations": g}, title_prefix="m")
    >>> live.shown, live.epoch
    (0, None)
    """

    def __init__(self, *, notebook: Optional[bool] = None):
        self.notebook = in_notebook() if notebook is None else notebook
        self.shown = 0  # figures displayed or updated
        self.epoch: Optional[int] = None  # the epoch shown
        self._handle = None
        self._lock = threading.Lock()

    def sibling(self) -> LiveFigure:
        """Another figure, shown under this one in the same cell (one per held-out set)."""
        return LiveFigure(notebook=self.notebook)

    def show(self, epoch: int, graphs, *, title_prefix: str = "") -> None:
        """Show snapshot ``epoch`` (``graphs``: ``{analysis: FlowGraph}``) in place of the last one."""
        if not self.notebook:
            return
        try:
            from IPython.display import display

            from flowcallback.core.render import figure

            with self._lock:
                if self.epoch is not None and epoch < self.epoch:
                    return
                # the figure's MIME bundle, given raw: a plotly Figure displays itself through its own
                # _ipython_display_, which knows no display_id (each update would add a figure)
                bundle = figure(graphs, title_prefix=title_prefix)._repr_mimebundle_(None, None)
                if self._handle is None:
                    self._handle = display(bundle, raw=True, display_id=True)
                else:
                    self._handle.update(bundle, raw=True)
                self.epoch = int(epoch)
                self.shown += 1
        except Exception:  # the figure is never worth failing a snapshot for
            pass
