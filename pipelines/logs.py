"""Console + run-folder logging for the CLI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """A console handler that writes to ``sys.stderr`` as it is at each record, not as it was when the handler was
    made (a test harness or a notebook swaps the stream; a handler keeping the old one writes to a closed file)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger("edgedistill")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_edgedistill_console", False) for h in root.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        h._edgedistill_console = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.propagate = False


def log_to_file(path: Path) -> logging.Handler:
    """Also append the edgedistill log to ``path`` (the run's ``run.log``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("edgedistill").addHandler(h)
    return h
