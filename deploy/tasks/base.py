"""The interface every deploy adapter implements (numpy only: it runs on the robot)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]  # engine input name -> array (with the batch dimension)


@dataclass(frozen=True)
class Sample:
    """A labelled example stored in the bundle (calibration or held-out)."""

    token: str
    path: Path  # the raw input file, in the format the robot reads
    target: Path  # the reference output (e.g. per-point labels .npy)


class TaskAdapter(ABC):
    """Raw file -> named engine inputs -> named engine outputs -> result file, plus the task metric.

    Subclasses set :attr:`kind` and implement every method below. ``metadata`` is the
    bundle's ``metadata.json``; ``bundle_dir`` its folder (None while exporting).
    """

    kind: str = ""
    sample_noun: str = "sample"  # what one input is called in reports ("scan", "clip")
    int8_calibration: str = "minmax"  # activation ranges of INT8 (deploy.quantize.CALIBRATION_METHODS)
    int8_float_fallback: int = 0  # convolutions kept in float, the most INT8-sensitive (deploy.quantize)

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        self.meta = metadata
        self.bundle_dir = None if bundle_dir is None else Path(bundle_dir)

    @abstractmethod
    def read(self, path: Path) -> Any:
        """A raw input file -> the task's in-memory sample (errors name the file)."""

    @abstractmethod
    def preprocess(self, raw: Any) -> tuple[Feeds, Any]:
        """(engine feeds, state needed by :meth:`postprocess`) of one raw sample."""

    @abstractmethod
    def postprocess(self, outputs: Feeds, state: Any) -> np.ndarray:
        """The task's result of one sample from the engine's named outputs."""

    @abstractmethod
    def write(self, result: np.ndarray, source: Path, out_dir: Path | None) -> Path:
        """Write ``result`` of the input file ``source`` (atomically); returns the path."""

    def summary(self, result: np.ndarray, source: Path) -> str | None:
        """One line about ``result`` for the console (``edgedistill infer``); None: only the written path is shown."""
        return None

    def samples(self, split: str) -> list[Sample]:
        """The bundle's stored samples of ``split`` (``calibration`` or ``heldout``)."""
        if self.bundle_dir is None:
            raise ValueError("samples(): the adapter is not bound to a bundle folder")
        return [Sample(s["token"], self.bundle_dir / s["input"], self.bundle_dir / s["target"])
                for s in self.meta["data"][split]]

    @abstractmethod
    def metric(self, run: Callable[[Feeds], Feeds], samples: list[Sample]) -> dict:
        """The task metric of an engine (``run``: feeds -> outputs) on ``samples``: {"name", "value", "samples", ...}.

        Optional keys: ``points`` (the number of elements the metric counts, e.g. lidar points),
        ``points_noun`` (what they are called in report.md when not "points", e.g. "windows")
        and ``confusion`` (the (K, K) confusion matrix as nested lists, rows = target).
        """

    def bench_input(self, raw: Any) -> Any:
        """The raw sample ``edgedistill bench`` times end to end: ``raw`` itself, or the part of it that makes one
        deployed batch (an IMU recording cut to one window), so that latencies are per :attr:`sample_noun`."""
        return raw
