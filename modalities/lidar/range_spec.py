"""The range-image pre-processing contract, as one frozen, torch-free object.

A :class:`RangeImageSpec` says everything that turns a lidar file into the input of a
range-view network: the sensor model (rows, columns, range limits), the channels and their
normalisation, the padding to the network's stride, where the beam index comes from and the
intensity scale. Training (``pipelines.student_inputs``), evaluation, the exported bundle's
``metadata.json`` and the robot runtime (``deploy.tasks.range_segmentation``) all build
their inputs through the same object, serialised with :meth:`RangeImageSpec.to_dict`, so
they cannot drift apart through a changed default::

    file (.pcd.bin | .bin | .pcd | .ply)  --modalities.lidar.io.read_points-->  PointCloud
      intensity / the FORMAT's full scale (nuScenes 255, KITTI 1)  -> [0, 1]
      beam row  = the file's ring column when it has one, else the nearest beam by elevation
      channels  = (v - mean) / std, empty pixels 0 (RangeNet++), padded to the net's multiple

A scan from another beam layout than the spec's sensor (a 16-beam scan given to a 32-beam
model) is not an error, the points still project, but :func:`project_checked` says so,
naming both layouts and the fraction of points that found no pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from modalities.field_checks import expect_kind_version

from .io import PointCloud
from .range_view import (DEFAULT_CHANNEL_STATS, RANGE_CHANNELS, RangeInput, default_elevation_tolerance_deg,
                         range_image_input)
from .sensors import LidarSensor, sensor_from_dict

BEAM_SOURCES = ("ring_if_present", "elevation")


@dataclass(frozen=True)
class RangeImageSpec:
    """How a scan becomes a range-view network's (C, H, W) input; see the module docstring.

    Attributes:
        sensor: the sensor model the network was trained for (H = beams, W = columns).
        channels: input channel names (from ``RANGE_CHANNELS``), in tensor order.
        means, stds: per-channel normalisation (default: ``DEFAULT_CHANNEL_STATS``).
        width_multiple, height_multiple: pad W (H) to a multiple of these (the net's stride).
        beam_source: ``ring_if_present``: the file's ring column when it has one, else the
            elevation; ``elevation``: always the nearest beam by elevation.
    """

    sensor: LidarSensor
    channels: tuple[str, ...] = RANGE_CHANNELS
    means: tuple[float, ...] = ()
    stds: tuple[float, ...] = ()
    width_multiple: int = 16
    height_multiple: int = 1
    beam_source: str = "ring_if_present"
    kind: ClassVar[str] = "range_image"
    version: ClassVar[int] = 1
    intensity: ClassVar[str] = "unit: the file's intensity divided by its format's full scale (KITTI 1, nuScenes 255)"

    def __post_init__(self) -> None:
        channels = tuple(self.channels)
        unknown = [c for c in channels if c not in DEFAULT_CHANNEL_STATS]
        if unknown or not channels:
            raise ValueError(f"range image spec: unknown channels {unknown} (or none); choose from {list(RANGE_CHANNELS)}")
        object.__setattr__(self, "channels", channels)
        for name, col in (("means", 0), ("stds", 1)):
            values = tuple(float(v) for v in getattr(self, name)) or tuple(DEFAULT_CHANNEL_STATS[c][col] for c in channels)
            if len(values) != len(channels):
                raise ValueError(f"range image spec: {name} needs {len(channels)} values (one per channel), got {len(values)}")
            object.__setattr__(self, name, values)
        if any(s <= 0 for s in self.stds):
            raise ValueError(f"range image spec: stds must be > 0, got {self.stds}")
        if self.width_multiple < 1 or self.height_multiple < 1:
            raise ValueError(f"range image spec: width/height multiple must be >= 1, got "
                             f"{self.width_multiple}/{self.height_multiple}")
        if self.beam_source not in BEAM_SOURCES:
            raise ValueError(f"range image spec: beam_source {self.beam_source!r} is not one of {BEAM_SOURCES}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the padded network input."""
        H = -(-self.sensor.beams // self.height_multiple) * self.height_multiple
        W = -(-self.sensor.columns // self.width_multiple) * self.width_multiple
        return len(self.channels), H, W

    def __call__(self, xyz: np.ndarray, unit_intensity: np.ndarray, ring: np.ndarray | None = None) -> RangeInput:
        """The network input of one scan: (N, 3) points, (N,) intensity in [0, 1], optional (N,) ring."""
        xyz = np.asarray(xyz)
        inten = np.asarray(unit_intensity, np.float32).reshape(-1)
        if xyz.ndim != 2 or xyz.shape[1] < 3 or inten.shape != (xyz.shape[0],):
            raise ValueError(f"expected (N, 3) points and (N,) intensities, got {xyz.shape} and {inten.shape}")
        use_ring = ring if self.beam_source == "ring_if_present" and ring is not None and _ring_fits(ring, self.sensor) else None
        points = np.concatenate([xyz[:, :3].astype(np.float32), inten[:, None]], axis=1)
        return range_image_input(points, self.sensor, self.channels, self.means, self.stds,
                                 self.width_multiple, self.height_multiple, ring=use_ring)

    def from_cloud(self, cloud: PointCloud) -> RangeInput:
        """:meth:`__call__` of a scan read by :func:`modalities.lidar.io.read_points` (intensity by format)."""
        return self(cloud.points_xyz, cloud.unit_intensity(), cloud.ring)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "sensor": self.sensor.to_dict(),
                "channels": list(self.channels), "means": list(self.means), "stds": list(self.stds),
                "width_multiple": self.width_multiple, "height_multiple": self.height_multiple,
                "beam_source": self.beam_source, "intensity": self.intensity,
                "image_shape": list(self.image_shape),
                "normalisation": "(v - mean) / std per channel, then 0 in every channel of empty pixels (RangeNet++)"}

    @classmethod
    def from_dict(cls, d: dict, where: str = "range image spec") -> "RangeImageSpec":
        """Inverse of :meth:`to_dict`; raises naming ``where`` and the field when it cannot be read."""
        expect_kind_version(d, where, cls.kind, cls.version)
        try:
            return cls(sensor=sensor_from_dict(d["sensor"]), channels=tuple(d["channels"]), means=tuple(d["means"]),
                       stds=tuple(d["stds"]), width_multiple=int(d["width_multiple"]),
                       height_multiple=int(d["height_multiple"]), beam_source=d["beam_source"])
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e}") from None


def _ring_fits(ring: np.ndarray, sensor: LidarSensor) -> bool:
    r = np.asarray(ring)
    return r.size == 0 or (int(r.min()) >= 0 and int(r.max()) < sensor.beams)


@dataclass(frozen=True)
class BeamLayoutReport:
    """Whether a scan's beams look like the spec's sensor, and what it costs."""

    matches: bool
    file_beams: int | None  # distinct beams the file's ring column names (None without a ring)
    off_beam_deg: float  # median |elevation - that beam's elevation| of the in-range points
    no_pixel_fraction: float  # in-range points that found no pixel
    message: str


def project_checked(cloud: PointCloud, spec: RangeImageSpec) -> tuple[RangeInput, BeamLayoutReport]:
    """:meth:`RangeImageSpec.from_cloud` plus a check of the scan's beam layout against ``spec.sensor``.

    In-range points of a matching scan sit on their beam's elevation (with a ring column: on
    the elevation of the beam the ring names). A scan from another sensor does not: its
    points fall between, above or below the spec's beams. The layout is declared different
    when the median off-beam distance exceeds a quarter of the beam tolerance (half the
    widest beam gap), or a ring value is outside the sensor's beams. A ring column that
    does not describe the spec's sensor is then ignored: the points are placed by elevation.
    """
    sensor = spec.sensor
    xyz = cloud.points_xyz.astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    in_range = np.isfinite(r) & (r >= sensor.min_range_m) & (r <= sensor.max_range_m) & (r > 0)
    el = np.degrees(np.arcsin(np.clip(xyz[in_range, 2] / np.where(r[in_range] > 0, r[in_range], 1), -1, 1)))
    beams = sensor.elevations_deg()
    tol = default_elevation_tolerance_deg(sensor)
    use_ring = cloud.ring is not None and spec.beam_source == "ring_if_present"
    file_beams, ring_outside = None, False
    if use_ring:
        rr = cloud.ring[in_range]
        file_beams = int(np.unique(rr).size)
        ring_outside = not _ring_fits(rr, sensor)
        off = np.full(el.shape, np.inf) if ring_outside else np.abs(el - beams[rr])
    else:
        off = np.min(np.abs(el[:, None] - beams[None, :]), axis=1) if el.size else np.zeros(0)
    median_off = float(np.median(off)) if off.size else 0.0
    matches = not ring_outside and median_off <= tol / 4
    inp = spec.from_cloud(cloud) if matches or not use_ring else replace(spec, beam_source="elevation").from_cloud(cloud)
    n_in = int(in_range.sum())
    no_pixel = float((in_range & ~inp.valid).sum() / n_in) if n_in else 0.0
    name = cloud.source.name if cloud.source is not None else "scan"
    if matches:
        return inp, BeamLayoutReport(True, file_beams, median_off, no_pixel, f"{name}: beam layout matches '{sensor.name}'")
    if file_beams is not None:
        have = f"{file_beams} beams by its ring column" + (f" (some outside 0..{sensor.beams - 1})" if ring_outside else "")
        have += ", ignored: points placed by elevation"
    else:
        have = f"about {estimate_beams(el)} beams by its point elevations"
    span = f"{el.min():+.1f}..{el.max():+.1f} deg" if el.size else "no in-range points"
    msg = (f"{name}: the scan's beam layout does not match the model's sensor '{sensor.name}' ({sensor.beams} beams, "
           f"{beams[0]:+.1f}..{beams[-1]:+.1f} deg): the scan has {have}, {span}; {no_pixel:.1%} of its in-range points "
           "found no pixel. Its labels are unreliable: use a model trained for this sensor")
    return inp, BeamLayoutReport(False, file_beams, median_off, no_pixel, msg)


def estimate_beams(elevation_deg: np.ndarray, gap_deg: float = 0.25, min_fraction: float = 1e-3) -> int:
    """Number of elevation clusters (beams) in a scan: sorted elevations split at gaps > ``gap_deg``.

    Clusters holding fewer than ``min_fraction`` of the points (stray returns) are not counted.
    """
    el = np.sort(np.asarray(elevation_deg, np.float64))
    if el.size == 0:
        return 0
    cuts = np.flatnonzero(np.diff(el) > gap_deg)
    sizes = np.diff(np.concatenate([[0], cuts + 1, [el.size]]))
    return int((sizes >= max(1, min_fraction * el.size)).sum())


def range_spec_for_student(student_multiple: Sequence[int], channels: Sequence[str], sensor: LidarSensor,
                           **kwargs: Any) -> RangeImageSpec:
    """The spec of a range-view network with total stride ``student_multiple`` = (rows, columns)."""
    mh, mw = (int(v) for v in student_multiple)
    return RangeImageSpec(sensor=sensor, channels=tuple(channels), width_multiple=mw, height_multiple=mh, **kwargs)
