"""IMU readers, resampling to a uniform grid and windows aligned with video clips (DESIGN 5.2).

COMODO (Chen et al. 2025, "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric
Human Activity Recognition", https://github.com/Breezelled/COMODO) feeds the IMU student 6 channels
(accelerometer xyz, gyroscope xyz) at 200 Hz in non-overlapping 5 s windows (1000 samples) that
cover the same interval as the video clip the teacher sees. Every recording passes through::

    file (.csv: header + rows; .npy: (N, 7) = t + 6 channels)  --read_imu(path, ImuColumns)-->
      ImuRecording: t (N,) float64 s, strictly increasing; data (N, 6) float32
                    [ax, ay, az in m/s^2, gx, gy, gz in rad/s] (units converted from the declared ones)
      --resample(rec, 200 Hz, max_gap_s)-->
      ResampledImu: samples at n / rate_hz for every integer n with t_first <= n / rate_hz <= t_last
                    (linear interpolation, no extrapolation); valid[i] False inside a gap > max_gap_s
      --window_starts(res, window_s)-->  k * window_s, k >= 0, for every window whose samples all
                    lie inside [t_first, t_last] (windows before the first IMU sample are not made)
      --windows(res, starts, L)-->  (n, 6, L) float32 and ok (n,) bool (False: the window touches an
                    invalid sample or leaves the recording, so a caller can count the skips)

Times are on the recording clock (the video's clock plus the sensor offset); window k covers
``[k * window_s, (k + 1) * window_s)``, as video clip k does.

Bad input raises :class:`modalities.errors.DataError` naming the file and, where it applies, the
1-based data row (the row after the header is data row 1) and the column: an empty file, fewer than
2 rows, missing columns (the present ones are listed), a value that is not a number, NaN/Inf,
a timestamp earlier than the previous row's. Rows with a timestamp equal to the previous row's are
dropped (the first is kept) and counted in ``ImuRecording.dropped_duplicates``.

Linear interpolation does not low-pass filter: a recording sampled well above 200 Hz keeps content
above 100 Hz folded into the band (human-motion IMU signals carry little energy there).
The module is numpy-only: the torch-free robot runtime reads through it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalities.errors import DataError, require_file
from modalities.field_checks import construct, expect_dict, reject_unknown

TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
STANDARD_GRAVITY_MS2 = 9.80665  # CGPM 1901; 1 g in m/s^2
ACC_UNITS_MS2 = {"m/s^2": 1.0, "g": STANDARD_GRAVITY_MS2}
GYRO_UNITS_RADS = {"rad/s": 1.0, "deg/s": math.pi / 180.0}
CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")  # the order of the 6 output channels
IMU_SUFFIXES = (".csv", ".npy")
# Grid points within this fraction of a sample period of the first/last timestamp still count as
# inside the recording (absorbs float rounding of t = n / rate_hz and of unit conversions).
_GRID_TOL = 1e-3


@dataclass(frozen=True)
class ImuColumns:
    """How to read a recording: CSV column names and the declared units of the file.

    Attributes:
        time: timestamp column (the recording clock); time_unit: "s", "ms", "us" or "ns".
        acc: accelerometer x, y, z columns; acc_unit: "m/s^2" or "g" (1 g = 9.80665 m/s^2).
        gyro: gyroscope x, y, z columns; gyro_unit: "rad/s" or "deg/s".
    For ``.npy`` files the names are unused (column order is t, acc xyz, gyro xyz); the units apply.
    """

    time: str = "t"
    acc: tuple[str, str, str] = ("ax", "ay", "az")
    gyro: tuple[str, str, str] = ("gx", "gy", "gz")
    time_unit: str = "s"
    acc_unit: str = "m/s^2"
    gyro_unit: str = "rad/s"

    def __post_init__(self) -> None:
        object.__setattr__(self, "acc", tuple(self.acc))
        object.__setattr__(self, "gyro", tuple(self.gyro))
        for name, value, known in (("time_unit", self.time_unit, TIME_UNITS_S),
                                   ("acc_unit", self.acc_unit, ACC_UNITS_MS2),
                                   ("gyro_unit", self.gyro_unit, GYRO_UNITS_RADS)):
            if value not in known:
                raise ValueError(f"IMU columns: {name} {value!r} is not a known unit; use one of {list(known)}")
        if len(self.acc) != 3 or len(self.gyro) != 3:
            raise ValueError(f"IMU columns: acc and gyro need 3 column names each, got {list(self.acc)} "
                             f"and {list(self.gyro)}")
        names = self.names
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"IMU columns: every column name must be a non-empty string, got {list(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"IMU columns: the 7 column names must differ, got {list(names)}")

    @property
    def names(self) -> tuple[str, ...]:
        """(time, ax, ay, az, gx, gy, gz) column names, in the order of the output."""
        return (self.time, *self.acc, *self.gyro)

    def scales(self) -> np.ndarray:
        """(7,) float64 factors to s, m/s^2 (x3), rad/s (x3)."""
        return np.array([TIME_UNITS_S[self.time_unit]] + [ACC_UNITS_MS2[self.acc_unit]] * 3
                        + [GYRO_UNITS_RADS[self.gyro_unit]] * 3, np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "acc": list(self.acc), "gyro": list(self.gyro), "time_unit": self.time_unit,
                "acc_unit": self.acc_unit, "gyro_unit": self.gyro_unit}

    @classmethod
    def from_dict(cls, d: dict, where: str = "IMU columns") -> "ImuColumns":
        """Inverse of :meth:`to_dict` (missing keys take the defaults); ValueError naming ``where``."""
        expect_dict(d, where)
        reject_unknown(d, ("time", "acc", "gyro", "time_unit", "acc_unit", "gyro_unit"), where)
        kwargs = dict(d)
        for key in ("acc", "gyro"):
            if key in kwargs:
                if not isinstance(kwargs[key], (list, tuple)):
                    raise ValueError(f"{where}: '{key}' must be a list of 3 column names, got {kwargs[key]!r}")
                kwargs[key] = tuple(kwargs[key])
        return construct(cls, kwargs, where)


@dataclass(frozen=True)
class ImuRecording:
    """One recording in SI units.

    Attributes:
        path: the file it was read from.
        t: (N,) float64 seconds on the recording clock, strictly increasing, N >= 2.
        data: (N, 6) float32 [ax, ay, az (m/s^2), gx, gy, gz (rad/s)].
        dropped_duplicates: rows dropped because their timestamp repeated the previous row's.
    """

    path: Path
    t: np.ndarray
    data: np.ndarray
    dropped_duplicates: int = 0

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] - self.t[0])


@dataclass(frozen=True)
class ResampledImu:
    """A recording on the uniform grid t0 + i / rate_hz, i < M (t0 is a multiple of 1 / rate_hz).

    Attributes:
        t0: time of data[0] (s, recording clock); rate_hz: grid rate.
        data: (M, 6) float32 in SI units; valid: (M,) bool, False inside a gap longer than max_gap_s.
    """

    t0: float
    rate_hz: float
    data: np.ndarray
    valid: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def times(self) -> np.ndarray:
        """(M,) float64 grid times."""
        return self.t0 + np.arange(self.num_samples) / self.rate_hz

    @property
    def first_index(self) -> int:
        """The integer n with t0 = n / rate_hz."""
        return int(round(self.t0 * self.rate_hz))


def read_imu(path: str | Path, columns: ImuColumns = ImuColumns()) -> ImuRecording:
    """Read a ``.csv`` (header row naming the columns) or ``.npy`` ((N, 7): t + 6 channels) IMU file.

    Values are converted from the units declared in ``columns`` to s, m/s^2 and rad/s. Rows whose
    timestamp equals the previous row's are dropped (first kept, counted). Raises DataError naming
    the file (and data row / column) for the failures listed in the module docstring and
    MissingDataError when the file does not exist.
    """
    p = require_file(path, "IMU file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(p, columns)
    elif suffix == ".npy":
        raw = _read_npy(p)
    else:
        raise DataError(p, f"unknown IMU file type {p.suffix!r}; expected one of {list(IMU_SUFFIXES)}")
    _check_finite(p, raw, columns.names)
    raw = raw * columns.scales()
    t = raw[:, 0]
    dt = np.diff(t)
    back = np.flatnonzero(dt < 0)
    if back.size:
        i = int(back[0]) + 1  # 0-based index of the offending row
        raise DataError(p, f"data row {i + 1}: timestamp {t[i]:.9g} s is earlier than data row {i}'s {t[i - 1]:.9g} s "
                           f"(column {columns.time!r}); timestamps must not decrease (sort the rows or fix the clock)")
    keep = np.concatenate([[True], dt > 0])
    dropped = int((~keep).sum())
    if keep.sum() < 2:
        raise DataError(p, f"only {int(keep.sum())} distinct timestamp(s); an IMU recording needs at least 2")
    return ImuRecording(path=p, t=np.ascontiguousarray(t[keep]), data=raw[keep, 1:].astype(np.float32),
                        dropped_duplicates=dropped)


def _read_csv(p: Path, columns: ImuColumns) -> np.ndarray:
    """(N, 7) float64 in the file's units, columns in ``columns.names`` order."""
    text = p.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataError(p, "the file is empty; expected a header row and at least 2 data rows")
    first_nl = text.find("\n")
    header_line = text if first_nl < 0 else text[:first_nl]
    header = [h.strip() for h in next(csv.reader([header_line]))]
    missing = [c for c in columns.names if c not in header]
    if missing:
        raise DataError(p, f"missing column(s) {missing}; the header has {header} (set the IMU column names "
                           "to match the file)")
    body = "" if first_nl < 0 else text[first_nl + 1:]
    if not body.strip():
        raise DataError(p, "a header but no data rows; an IMU recording needs at least 2")
    use = [header.index(c) for c in columns.names]
    try:
        raw = np.loadtxt(io.StringIO(body), delimiter=",", usecols=use, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        raw = _parse_rows_slow(p, body, header, use)
    if raw.shape[0] < 2:
        raise DataError(p, f"{raw.shape[0]} data row(s); an IMU recording needs at least 2")
    return raw


def _parse_rows_slow(p: Path, body: str, header: list[str], use: list[int]) -> np.ndarray:
    """The csv-module path, taken only when numpy cannot parse the body: finds the bad row and column."""
    rows = []
    for row_no, row in enumerate(csv.reader(io.StringIO(body)), start=1):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) != len(header):
            raise DataError(p, f"data row {row_no}: {len(row)} field(s) but the header has {len(header)}")
        values = []
        for j in use:
            try:
                values.append(float(row[j]))
            except ValueError:
                raise DataError(p, f"data row {row_no}, column {header[j]!r}: {row[j]!r} is not a number") from None
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, len(use))


def _read_npy(p: Path) -> np.ndarray:
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(p, f"cannot read as a .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise DataError(p, f"array of shape {arr.shape}; expected (N, 7): t, ax, ay, az, gx, gy, gz")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(p, f"array dtype {arr.dtype} is not numeric")
    if arr.shape[0] < 2:
        raise DataError(p, f"{arr.shape[0]} row(s); an IMU recording needs at least 2")
    return arr.astype(np.float64)


def _check_finite(p: Path, raw: np.ndarray, names: tuple[str, ...]) -> None:
    bad = ~np.isfinite(raw)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(p, f"data row {i + 1}, column {names[j]!r}: value {raw[i, j]} is not finite "
                           f"({int(bad.sum())} non-finite value(s) in the file)")


def resample(rec: ImuRecording, rate_hz: float = 200.0, max_gap_s: float = 0.1) -> ResampledImu:
    """Linearly interpolate ``rec`` onto the grid n / rate_hz inside [t_first, t_last].

    A grid sample is invalid when it falls strictly inside an interval between two consecutive
    recorded samples that are more than ``max_gap_s`` apart (the recorded samples at the gap's
    edges stay valid). No extrapolation: the grid starts at the first multiple of 1 / rate_hz at
    or after t_first. A recording shorter than one grid period gives M = 0 samples.
    """
    if not rate_hz > 0 or not max_gap_s > 0:
        raise ValueError(f"resample: rate_hz ({rate_hz}) and max_gap_s ({max_gap_s}) must be > 0")
    t = rec.t
    n0 = math.ceil(t[0] * rate_hz - _GRID_TOL)
    n1 = math.floor(t[-1] * rate_hz + _GRID_TOL)
    m = max(0, n1 - n0 + 1)
    grid = (n0 + np.arange(m)) / rate_hz
    x = rec.data.astype(np.float64)
    data = np.empty((m, x.shape[1]), np.float32)
    for c in range(x.shape[1]):
        data[:, c] = np.interp(grid, t, x[:, c])
    # Interval j = [t[j], t[j+1]] holding each grid point; a point within tolerance of a recorded sample is that sample.
    tol = _GRID_TOL / rate_hz
    j = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 2)
    in_gap = (t[j + 1] - t[j]) > max_gap_s
    on_sample = (np.abs(grid - t[j]) <= tol) | (np.abs(grid - t[j + 1]) <= tol)
    valid = ~in_gap | on_sample
    return ResampledImu(t0=n0 / rate_hz, rate_hz=float(rate_hz), data=data, valid=valid)


def window_starts(rec_or_resampled: ImuRecording | ResampledImu, window_s: float,
                  rate_hz: float = 200.0) -> np.ndarray:
    """(n,) float64 starts k * window_s (k >= 0) of the windows whose samples all lie in the recording.

    Window k holds the L = round(window_s * rate) samples at k * window_s + i / rate, i < L; it is
    listed when the first of them is at or after t_first and the last at or before t_last. For a
    :class:`ResampledImu` the rate is its own (and the rule is: the window fits in its grid);
    ``rate_hz`` is used only for an :class:`ImuRecording`.
    """
    if not window_s > 0:
        raise ValueError(f"window_starts: window_s must be > 0, got {window_s}")
    if isinstance(rec_or_resampled, ResampledImu):
        res = rec_or_resampled
        rate = res.rate_hz
        if res.num_samples == 0:
            return np.zeros(0, np.float64)
        t_first, t_last = res.t0, res.t0 + (res.num_samples - 1) / rate
    else:
        rate = rate_hz
        t_first, t_last = float(rec_or_resampled.t[0]), float(rec_or_resampled.t[-1])
    if not rate > 0:
        raise ValueError(f"window_starts: rate_hz must be > 0, got {rate}")
    span = (round(window_s * rate) - 1) / rate  # first to last sample of a window
    tol = _GRID_TOL / rate
    k_first = max(0, math.ceil((t_first - tol) / window_s))
    k_last = math.floor((t_last + tol - span) / window_s)
    if k_last < k_first:
        return np.zeros(0, np.float64)
    return np.arange(k_first, k_last + 1, dtype=np.float64) * window_s


def windows(res: ResampledImu, starts_s: np.ndarray | list[float],
            window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (n, 6, L) float32 windows starting at ``starts_s`` (s, recording clock) and their ok flags.

    A start is snapped to the nearest grid sample. ok[i] is False when window i touches an invalid
    (gap) sample or reaches outside the resampled recording; samples outside are zeros.
    """
    if window_samples < 1:
        raise ValueError(f"windows: window_samples must be >= 1, got {window_samples}")
    starts = np.asarray(starts_s, np.float64).reshape(-1)
    n, m, length = starts.size, res.num_samples, int(window_samples)
    first = np.rint(starts * res.rate_hz).astype(np.int64) - res.first_index  # index into res.data
    idx = first[:, None] + np.arange(length)[None, :]  # (n, L)
    inside = (idx >= 0) & (idx < m)
    safe = np.clip(idx, 0, max(m - 1, 0))
    if m:
        out = res.data[safe]  # (n, L, 6)
        out[~inside] = 0.0
        ok = (inside & res.valid[safe]).all(axis=1)
    else:
        out = np.zeros((n, length, res.data.shape[1] if res.data.ndim == 2 else len(CHANNELS)), np.float32)
        ok = np.zeros(n, bool)
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32), ok
