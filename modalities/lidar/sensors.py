"""Spinning lidar sensor models, as data.

A sensor model is a small frozen dataclass loaded from YAML: the presets live in
``modalities/lidar/sensor_presets/<name>.yaml`` and a user may pass the path of their own
file anywhere a preset name is accepted. Nothing else in edgedistill hard-codes a beam
count, a field of view or a range.

Angles follow the lidar frame: elevation is measured from the x-y plane (positive up),
azimuth counter-clockwise from +x::

        z (up)
        |   y
        |  /
        | /
        +------ x        azimuth = atan2(y, x), elevation = asin(z / range)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

PRESET_DIR = Path(__file__).with_name("sensor_presets")


@dataclass(frozen=True)
class LidarSensor:
    """A rotating multi-beam lidar.

    ``beam_elevations_deg`` gives an explicit (non-uniform) beam table; when empty the
    beams are spread uniformly over ``vertical_fov_deg`` (min, max), beam 0 lowest.
    """

    name: str
    beams: int
    vertical_fov_deg: tuple[float, float]
    columns: int  # firings per beam per revolution (the range-image width)
    min_range_m: float
    max_range_m: float
    range_noise_std_m: float = 0.0
    rotation_hz: float = 10.0
    beam_elevations_deg: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        lo, hi = self.vertical_fov_deg
        problems = []
        if self.beams < 1:
            problems.append(f"beams must be >= 1, got {self.beams}")
        if not lo < hi:
            problems.append(f"vertical_fov_deg must be (min, max) with min < max, got {self.vertical_fov_deg}")
        if self.columns < 1:
            problems.append(f"columns must be >= 1, got {self.columns}")
        if not 0 <= self.min_range_m < self.max_range_m:
            problems.append(
                f"need 0 <= min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}"
            )
        if self.beam_elevations_deg and len(self.beam_elevations_deg) != self.beams:
            problems.append(
                f"beam_elevations_deg has {len(self.beam_elevations_deg)} entries for {self.beams} beams"
            )
        if problems:
            raise ValueError(f"lidar sensor '{self.name}': " + "; ".join(problems))

    def elevations_deg(self) -> np.ndarray:
        """(beams,) elevation of each beam in degrees, ascending (beam 0 lowest)."""
        if self.beam_elevations_deg:
            return np.sort(np.asarray(self.beam_elevations_deg, dtype=np.float64))
        lo, hi = self.vertical_fov_deg
        return np.linspace(lo, hi, self.beams, dtype=np.float64)

    def azimuths_rad(self) -> np.ndarray:
        """(columns,) firing azimuths in radians over one revolution, in [-pi, pi)."""
        return -np.pi + (np.arange(self.columns, dtype=np.float64) + 0.5) * (2 * np.pi / self.columns)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vertical_fov_deg"] = list(self.vertical_fov_deg)
        d["beam_elevations_deg"] = list(self.beam_elevations_deg)
        return d


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_sensor(name_or_path: str | Path) -> LidarSensor:
    """Load a preset by name (``hdl32e``) or a sensor YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(
                f"unknown lidar sensor preset '{name_or_path}'; presets: {', '.join(available_presets())}"
                " (or give the path of a sensor YAML file)"
            )
    if not path.exists():
        raise FileNotFoundError(f"lidar sensor file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sensor fields")
    fields = set(LidarSensor.__dataclass_fields__)
    unknown = set(raw) - fields
    if unknown:
        raise ValueError(f"{path}: unknown sensor field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    try:
        return sensor_from_dict(raw)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: bad or missing sensor field: {e}") from e


def sensor_from_dict(d: dict) -> LidarSensor:
    """``LidarSensor`` of a mapping such as YAML or ``to_dict()`` read back from JSON (lists -> tuples)."""
    d = dict(d)
    d["vertical_fov_deg"] = tuple(float(v) for v in d["vertical_fov_deg"])
    d["beam_elevations_deg"] = tuple(float(v) for v in d.get("beam_elevations_deg", ()))
    return LidarSensor(**d)
