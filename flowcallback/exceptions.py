"""Errors raised by flowcallback."""


class FlowCallbackError(Exception):
    """Base class of every error that flowcallback raises on purpose."""


class RunFormatError(FlowCallbackError, ValueError):
    """A run directory or one of its files is missing, corrupted or not a flowcallback file.

    The message names the file and the problem.
    """


class RunInUseError(FlowCallbackError, ValueError):
    """Another live process is writing the run directory (``log_dir``); the message names it."""


class SnapshotError(FlowCallbackError, RuntimeError):
    """A snapshot (or one of its stages) failed; training is not interrupted unless ``on_error="raise"``."""
