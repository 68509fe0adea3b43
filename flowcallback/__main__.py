"""``python -m flowcallback``: the ``flowcallback`` command (:mod:`flowcallback.cli`), for an
environment whose ``bin/`` is not on ``PATH``."""
import sys

from flowcallback.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m flowcallback"))
