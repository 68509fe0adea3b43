"""Command line: ``flowcallback demo``, ``flowcallback compare RUN_DIR E1 E2``, ``flowcallback report RUN_DIR``,
``flowcallback animate RUN_DIR OUT``, ``flowcallback serve LOG_DIR``."""
from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from typing import Optional, Sequence


def _printable(text: str) -> str:
    r"""``text`` with its control and format characters shown as escapes (``\x1b``): names read
    from a run directory are untrusted, and a terminal would obey an escape sequence in them.
    Line breaks are kept.

    Examples
    --------
    >>> print(_printable("cat\x1b[2J\x1b]0;title\x07\nDense"))
    cat\x1b[2J\x1b]0;title\x07
    Dense
    """
    return "".join(ch if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
                   else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _say(text: str = "", file=None) -> None:
    print(_printable(str(text)), file=file or sys.stdout)


def _demo(args) -> int:
    import time

    from flowcallback.core.store import SETUP_ERRORS
    from flowcallback.demo import run_demo
    from flowcallback.run import load_run

    t0 = time.perf_counter()
    run_dir = run_demo(args.log_dir, epochs=args.epochs, lrp=not args.no_lrp, verbose=args.verbose)
    run = load_run(run_dir)
    print(f"\nflowcallback demo finished in {time.perf_counter() - t0:.0f} s. Open these pages in a browser:")
    print(f"  all epochs (slider): {(run.path / 'index.html').resolve()}")
    for e in run.epochs:
        print(f"  epoch {e}: {run.page(e).resolve()}")
    errors = run.errors()
    epochs = sorted(e for e in errors if isinstance(e, int))
    if epochs:
        print(f"some snapshots recorded errors: {epochs} (see {run_dir}/errors)")
    if SETUP_ERRORS in errors:
        print(f"the set-up recorded an error (see {run_dir}/errors/{SETUP_ERRORS}.txt)")
    return 0


def _one_run(run_dir):
    """The run at ``run_dir``; a run of several held-out sets is refused, naming its sets."""
    from flowcallback.run import RunSets, load_run

    run = load_run(run_dir)
    if isinstance(run, RunSets):
        raise ValueError(f"{run_dir} is a run of several held-out sets ({', '.join(run.names)}): name one, "
                         f"e.g. {os.path.join(str(run_dir), run.names[0])}")
    return run


def _compare(args) -> int:
    import pandas as pd

    run = _one_run(args.run_dir)
    cmp = run.compare(args.epoch_a, args.epoch_b, analysis=args.analysis)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        _say(f"{args.run_dir}: epoch {args.epoch_a} -> {args.epoch_b} ({args.analysis})")
        _say(cmp.layers.to_string(index=False))
        predicted = int(sum("Prediction" in v for v in cmp.samples["layers_changed"]))
        _say(f"\n{len(cmp.samples)} of {run.epoch(args.epoch_a, args.analysis).n_samples} samples changed path "
             f"({predicted} changed prediction)")
        if len(cmp.samples):
            by_class = cmp.samples.groupby("class_name").size().sort_values(ascending=False)
            _say("by true class: " + ", ".join(f"{k}: {v}" for k, v in by_class.items()))
            _say(cmp.samples.head(args.show).to_string(index=False))
    return 0


#: Exit status of ``flowcallback report`` when it wrote the pages but left out epochs it could not
#: read (one line each on stderr); 0 when every epoch was read, 2 when nothing could be written.
REPORT_SKIPPED = 1


def _report(args) -> int:
    from flowcallback.core import render
    from flowcallback.core.runpage import write_run_page_for, write_sets_page_for
    from flowcallback.core.store import ensure_plotlyjs
    from flowcallback.exceptions import FlowCallbackError
    from flowcallback.run import RunSets, load_run

    run = load_run(args.run_dir)
    if isinstance(run, RunSets):  # each set, then the page comparing them
        status = 0
        for name in run.names:
            _say(f"held-out set {name}:")
            try:
                status = max(status, _report(argparse.Namespace(run_dir=str(run[name].path))))
            except (FlowCallbackError, ValueError, OSError) as exc:  # the other sets are still reported
                _say(f"flowcallback report: held-out set {name}: error: {' '.join(str(exc).splitlines())}",
                     file=sys.stderr)
                status = 2
        _say(f"sets page: {write_sets_page_for(run)}")
        return status
    # The run directory may come from someone else, and its pages run whatever its plotly.min.js
    # holds: put the package's own copy in place first, before anything else can fail.
    ensure_plotlyjs(run.path)
    for e in run.epochs:  # the epochs that can be read; the others are in run.skipped
        graphs = {a: run.epoch(e, a) for a in run.analyses(e)}
        path = render.write_epoch_page(run.page(e), graphs, title_prefix=run.info["model"]["name"])
        _say(f"epoch {e}: {path}")
    _say(f"run page: {write_run_page_for(run)}")
    for e, why in run.skipped.items():  # one line each: the reason names the file
        _say(f"flowcallback report: epoch {e} skipped: {' '.join(why.splitlines())}", file=sys.stderr)
    return REPORT_SKIPPED if run.skipped else 0


def _animate(args) -> int:
    run = _one_run(args.run_dir)
    try:
        path = run.save_animation(args.out, view=args.view, layer=args.layer, analysis=args.analysis, fps=args.fps,
                                  width=args.width, height=args.height, browser=args.browser)
    except (ImportError, RuntimeError) as exc:  # the video extra or a browser is missing, a frame failed
        _say(f"flowcallback animate: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    _say(f"{args.view} video: {path}")
    return 0


def _serve(args) -> int:
    from flowcallback.serving import make_server

    server = make_server(args.log_dir, args.port)
    try:
        host, port = server.server_address[:2]
        runs = server.site.run_paths()
        where = "its run page" if runs == ["."] else f"{len(runs)} run(s) found"
        print(f"flowcallback serve: {server.site.root} ({where}), live, on http://{host}:{port}/", flush=True)
        print("  pages follow the snapshots as they land; Ctrl-C stops", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _int_from(low: int, high: Optional[int] = None, hint: str = ""):
    """An argparse type: an integer in [low, high]; out of it, the subcommand's own usage and error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{hint}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def main(argv: Optional[Sequence[str]] = None, *, prog: str = "flowcallback") -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Examples
    --------
    >>> main(["compare", "no/such/run", "0", "1"])  # the error goes to stderr
    2
    """
    parser = argparse.ArgumentParser(prog=prog, description="Layer-wise cluster flows of Keras classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a small CNN on scikit-learn's digits with the callback")
    d.add_argument("--log-dir", default="flows/demo", help="run directory (default: flows/demo)")
    d.add_argument("--epochs", type=_int_from(1), default=4, help="training epochs (default: 4)")
    d.add_argument("--no-lrp", action="store_true", help="skip the LRP analysis")
    d.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    d.set_defaults(func=_demo)
    c = sub.add_parser("compare", help="compare two epochs of a run: per-layer ARI and samples whose path changed")
    c.add_argument("run_dir")
    c.add_argument("epoch_a", type=int)
    c.add_argument("epoch_b", type=int)
    c.add_argument("--analysis", default="activations", help="activations (default) or lrp")
    c.add_argument("--show", type=_int_from(0), default=10, help="changed samples to list (default 10)")
    c.set_defaults(func=_compare)
    r = sub.add_parser("report", help="rebuild a run's pages from its saved graphs (no TensorFlow needed)")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)
    a = sub.add_parser("animate", help="write a view over the epochs as a video, .mp4 or .gif (needs the video "
                                       "extra and Chromium; no TensorFlow)")
    a.add_argument("run_dir")
    a.add_argument("out", help="the video to write: a path ending in .mp4 or .gif")
    a.add_argument("--view", default="projection", choices=("projection", "flows"),
                   help="projection: a layer's 2-D projection (default); flows: each epoch's Sankey")
    a.add_argument("--layer", default=None, help="the projected layer (default: the deepest projected one)")
    a.add_argument("--analysis", default="activations", help="activations (default) or lrp")
    a.add_argument("--fps", type=float, default=2.0, help="frames (epochs) per second (default 2)")
    a.add_argument("--width", type=int, default=1280, help="frame width in pixels (default 1280)")
    a.add_argument("--height", type=int, default=720, help="frame height in pixels (default 720)")
    a.add_argument("--browser", default=None, help="Chromium or Chrome executable (default: $BROWSER_PATH, "
                                                   "else chromium on PATH)")
    a.set_defaults(func=_animate)
    s = sub.add_parser("serve", help="serve a run directory (or a directory of runs) on 127.0.0.1; pages refresh live")
    s.add_argument("log_dir", help="a run directory, or a directory holding runs (at any depth up to 6)")
    s.add_argument("--port", type=_int_from(0, 65535, " (0: a free port)"), default=0,
                   help="port on 127.0.0.1 (default: 0, a free one; the URL is printed)")
    s.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    from flowcallback.exceptions import FlowCallbackError

    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader that closed the pipe is seen below
        return status
    except BrokenPipeError:
        # the reader stopped reading (`flowcallback compare ... | head`): what it wanted was
        # written, so no error. Python would flush stdout again at exit and fail: point it at
        # /dev/null (Python's documented recipe, https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (FlowCallbackError, KeyError, ValueError, OSError) as exc:  # OSError: a page cannot be written
        # a KeyError's str() is the repr of its message ('epoch 7 is not in this run...'): its text instead
        text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str) else exc
        message = " ".join(str(text).splitlines())  # one line, whatever the message holds
        _say(f"flowcallback {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
