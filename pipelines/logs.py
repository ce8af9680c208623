"""Console + run-folder logging for the CLI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger("edgedistill")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_edgedistill_console", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
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
