"""Command line: ``flowcallback demo``."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _demo(args) -> int:
    import time

    from flowcallback.demo import run_demo
    from flowcallback.core.store import load_run

    t0 = time.perf_counter()
    run_dir = run_demo(args.log_dir, epochs=args.epochs, lrp=not args.no_lrp, verbose=args.verbose)
    run = load_run(run_dir)
    print(f"\nflowcallback demo finished in {time.perf_counter() - t0:.0f} s. Open these pages in a browser:")
    for e in run.epochs:
        print(f"  epoch {e}: {run.page(e).resolve()}")
    errors = run.errors()
    if errors:
        print(f"some snapshots recorded errors: {sorted(errors)} (see {run_dir}/errors)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="flowcallback", description="Layer-wise cluster flows of Keras classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a small CNN on scikit-learn's digits with the callback")
    d.add_argument("--log-dir", default="flows/demo", help="run directory (default: flows/demo)")
    d.add_argument("--epochs", type=int, default=4, help="training epochs (default: 4)")
    d.add_argument("--no-lrp", action="store_true", help="skip the LRP analysis")
    d.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    d.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    if getattr(args, "epochs", 1) is not None and args.command == "demo" and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
