"""The IMU input contract (DESIGN 5.2) as one frozen, torch-free object: file -> normalised windows.

An :class:`ImuWindowSpec` says everything that turns an IMU recording into the input of an IMU
student. Training, evaluation, the exported bundle's metadata and the torch-free robot runtime
(:meth:`ImuWindowSpec.prepare`, numpy) all build their inputs from the same object, serialised with
:meth:`ImuWindowSpec.to_dict`, so they cannot drift apart through a changed default::

    file --read_imu(columns)--> SI units --resample(rate_hz, max_gap_s)--> uniform grid
      --window_starts(window_s)--> k * window_s inside the recording --windows--> (n, 6, L) raw, ok (n,)
      --normalize: (w - mean[c]) / std[c] per channel c--> (n, 6, L) float32, L = round(rate_hz * window_s)

COMODO (Chen et al. 2025, https://github.com/Breezelled/COMODO): 6 channels (acc xyz, gyro xyz),
200 Hz, non-overlapping 5 s windows (1000 samples) aligned with the video clips. The per-channel
mean and std are fitted on the training windows (:func:`fit_stats`); 0 and 1 mean "not fitted".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalities.field_checks import check_rules, construct, expect_dict, expect_kind_version, required_values

from .io import CHANNELS, ImuColumns, read_imu, resample, window_starts, windows

NUM_CHANNELS = len(CHANNELS)


@dataclass(frozen=True)
class ImuWindowSpec:
    """How an IMU file becomes an IMU network's (6, window_samples) inputs; see the module docstring.

    Attributes:
        rate_hz: the uniform grid every recording is resampled to (200 Hz in COMODO).
        window_s: window length (5 s = one video clip); windows start at k * window_s.
        max_gap_s: a gap between recorded samples longer than this makes the grid samples inside it
            invalid, and a window touching one is flagged not ok. Raise it for sensors that drop
            packets in bursts; keep it well above the recording's sample period.
        columns: CSV column names and declared units (:class:`modalities.imu.io.ImuColumns`).
        mean, std: per-channel normalisation in channel order ax, ay, az, gx, gy, gz (SI units).
    """

    rate_hz: float = 200.0
    window_s: float = 5.0
    max_gap_s: float = 0.1
    columns: ImuColumns = ImuColumns()
    mean: tuple[float, ...] = (0.0,) * NUM_CHANNELS
    std: tuple[float, ...] = (1.0,) * NUM_CHANNELS
    kind: ClassVar[str] = "imu_window"
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, tuple(float(v) for v in value))
            except (TypeError, ValueError):
                raise ValueError(f"IMU window spec: field '{name}' = {value!r} is not a sequence of numbers") from None
        if not isinstance(self.columns, ImuColumns):
            raise ValueError("IMU window spec: field 'columns' must be an ImuColumns, "
                             f"got {type(self.columns).__name__}")
        checks = {
            "rate_hz": self.rate_hz > 0 and math.isfinite(self.rate_hz),
            "window_s": self.window_s > 0 and math.isfinite(self.window_s) and round(self.rate_hz * self.window_s) >= 1,
            "max_gap_s": self.max_gap_s > 0,
            "mean": len(self.mean) == NUM_CHANNELS and all(math.isfinite(v) for v in self.mean),
            "std": len(self.std) == NUM_CHANNELS and all(math.isfinite(v) and v > 0 for v in self.std),
        }
        check_rules(self, checks, _FIELD_RULES, "IMU window spec")

    @property
    def window_samples(self) -> int:
        """Samples per window: round(rate_hz * window_s) (1000 by default)."""
        return int(round(self.rate_hz * self.window_s))

    @property
    def shape(self) -> tuple[int, int]:
        """(channels, window_samples) of one window: (6, 1000) by default."""
        return NUM_CHANNELS, self.window_samples

    def with_stats(self, mean: Any, std: Any) -> "ImuWindowSpec":
        """The same spec with the per-channel normalisation ``mean``, ``std`` (6 values each)."""
        return replace(self, mean=tuple(float(v) for v in np.asarray(mean).reshape(-1)),
                       std=tuple(float(v) for v in np.asarray(std).reshape(-1)))

    def normalize(self, w: np.ndarray) -> np.ndarray:
        """(..., 6, L) raw windows -> float32 (w - mean[c]) / std[c] per channel c."""
        x = np.asarray(w)
        if x.ndim < 2 or x.shape[-2] != NUM_CHANNELS:
            raise ValueError(f"normalize: expected (..., {NUM_CHANNELS}, L) windows, got shape {x.shape}")
        mean = np.asarray(self.mean, np.float64)[:, None]
        std = np.asarray(self.std, np.float64)[:, None]
        return ((x - mean) / std).astype(np.float32)

    def prepare(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The robot runtime's whole path: a file -> (normalised (n, 6, L) float32, starts_s (n,), ok (n,) bool).

        read_imu(columns) -> resample(rate_hz, max_gap_s) -> window_starts(window_s) -> windows -> normalize.
        Windows with ok False touch a gap; a caller skips (and counts) them.
        """
        res = resample(read_imu(path, self.columns), self.rate_hz, self.max_gap_s)
        starts = window_starts(res, self.window_s)
        w, ok = windows(res, starts, self.window_samples)
        return self.normalize(w), starts, ok

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "version": self.version}
        for f in fields(self):
            value = getattr(self, f.name)
            d[f.name] = value.to_dict() if f.name == "columns" else (list(value) if isinstance(value, tuple) else value)
        d.update({"channels": list(CHANNELS), "units": ["m/s^2"] * 3 + ["rad/s"] * 3,
                  "shape": list(self.shape), "window_samples": self.window_samples,
                  "windows": "non-overlapping, starting at k * window_s on the recording clock, k >= 0, "
                             "only windows wholly inside the recording",
                  "resampling": "linear interpolation onto n / rate_hz; samples inside gaps > max_gap_s invalid",
                  "normalisation": "(x - mean[c]) / std[c] per channel c"})
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "IMU window spec") -> "ImuWindowSpec":
        """Inverse of :meth:`to_dict`; raises ValueError naming ``where`` and the field that cannot be read."""
        expect_dict(d, where)
        expect_kind_version(d, where, cls.kind, cls.version)
        kwargs: dict[str, Any] = {}
        for f, value in required_values(cls, d, where):
            if f.name == "columns":
                kwargs[f.name] = ImuColumns.from_dict(value, f"{where}: columns")
                continue
            try:
                if f.name in ("mean", "std"):
                    if isinstance(value, (str, bytes)) or any(isinstance(v, bool) for v in value):
                        raise TypeError
                    kwargs[f.name] = tuple(float(v) for v in value)
                else:
                    if isinstance(value, bool):
                        raise TypeError
                    kwargs[f.name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: field '{f.name}' = {value!r} is not "
                                 f"{'a list of numbers' if f.name in ('mean', 'std') else 'a number'}") from None
        return construct(cls, kwargs, where)


_FIELD_RULES = {
    "rate_hz": "must be finite and > 0",
    "window_s": "must be finite, > 0 and hold at least one sample at rate_hz",
    "max_gap_s": "must be > 0",
    "mean": f"needs {NUM_CHANNELS} finite values",
    "std": f"needs {NUM_CHANNELS} finite values > 0",
}


def fit_stats(windows: np.ndarray, ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (each (6,) float64) over every sample of (n, 6, L) raw windows.

    ``ok`` (n,) bool, optional: use only those windows (skip gap-touching ones). Sums in float64.
    Fit on the training split only. Raises ValueError for no windows or a constant channel.
    """
    w = np.asarray(windows)
    if w.ndim != 3 or w.shape[1] != NUM_CHANNELS:
        raise ValueError(f"fit_stats: expected (n, {NUM_CHANNELS}, L) windows, got shape {w.shape}")
    if ok is not None:
        w = w[np.asarray(ok, bool)]
    if w.shape[0] == 0 or w.shape[2] == 0:
        raise ValueError("fit_stats: no windows given (or none with ok True)")
    x = w.astype(np.float64)
    mean = x.mean(axis=(0, 2))
    std = x.std(axis=(0, 2))
    flat = [CHANNELS[c] for c in range(NUM_CHANNELS) if not std[c] > 1e-8 * max(1.0, abs(mean[c]))]
    if flat:
        raise ValueError(f"fit_stats: channel(s) {flat} are constant over every window (std 0); "
                         "fit the normalisation on real recordings")
    return mean, std
