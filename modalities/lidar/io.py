"""Lidar scan readers: KITTI / SemanticKITTI ``.bin`` + ``.label``, nuScenes ``.pcd.bin``, PCD/PLY.

Every reader returns a :class:`PointCloud` in the sensor's own (lidar) frame, in metres,
as stored in the file; the axes are right-handed with z up, but "forward" differs::

        z (up)                         KITTI velodyne:     x forward, y left
        |   y                          nuScenes LIDAR_TOP: x right,   y forward
        |  /                           (the car's front is at +90 deg azimuth)
        | /
        +------ x

On-disk formats (all little-endian, no header):

* KITTI / SemanticKITTI ``velodyne/*.bin``: float32 records ``(x, y, z, reflectance)``,
  reflectance in [0, 1].
* SemanticKITTI ``labels/*.label``: one uint32 per point; the lower 16 bits are the
  semantic class, the upper 16 bits the instance id (Behley et al., ICCV 2019).
* nuScenes ``samples/LIDAR_TOP/*.pcd.bin``: float32 records ``(x, y, z, intensity, ring)``,
  intensity in [0, 255], ring = beam index 0..31 (nuscenes-devkit ``LidarPointCloud``
  reads the same layout and keeps the first four columns).
* ``.pcd`` / ``.ply``: through open3d's tensor API, which keeps extra per-point
  attributes (``intensity``, ``ring``, ``label``) when the file has them.

Bad input raises :class:`modalities.errors.DataError` (a ``ValueError``) or
:class:`modalities.errors.MissingDataError` (also a ``FileNotFoundError``), each naming the
file and the problem. Non-finite points are an error unless ``drop_nonfinite=True``, in
which case the finite points are kept (in their original order) and the count dropped is
reported in ``PointCloud.num_dropped_nonfinite``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modalities.errors import DataError, require_file
from modalities.fileio import atomic_write_bytes

KITTI_RECORD_FLOATS = 4  # x, y, z, reflectance
# Full scale of the intensity column, by file format: intensity / full scale is in [0, 1],
# the one scale every student and bundle sees (a KITTI and a nuScenes file of the same
# points give the same network input).
KITTI_INTENSITY_FULL_SCALE = 1.0
NUSCENES_INTENSITY_FULL_SCALE = 255.0
NUSCENES_RECORD_FLOATS = 5  # x, y, z, intensity, ring
SEMANTIC_MASK = 0xFFFF  # lower 16 bits of a SemanticKITTI label


@dataclass(frozen=True)
class PointCloud:
    """One lidar scan in the sensor frame.

    Attributes:
        points_xyz: (N, 3) float32 metres, lidar frame.
        intensity: (N,) float32, in the file's own scale (KITTI [0, 1], nuScenes [0, 255]);
            :meth:`unit_intensity` puts it in [0, 1].
        ring: (N,) int64 beam index (0 = lowest beam) when the file stores it, else None.
        labels: (N,) int64 semantic class per point when known, else None.
        instance_ids: (N,) int64 instance id per point (SemanticKITTI upper 16 bits), else None.
        source: the file the points came from.
        num_dropped_nonfinite: points removed because a coordinate or the intensity was
            NaN/inf (only non-zero when read with ``drop_nonfinite=True``).
        intensity_full_scale: the intensity of a fully reflective return in this file's
            format (KITTI 1, nuScenes 255, PCD/PLY: 255 when the values exceed 1, else 1).
    """

    points_xyz: np.ndarray
    intensity: np.ndarray
    ring: np.ndarray | None = None
    labels: np.ndarray | None = None
    instance_ids: np.ndarray | None = None
    source: Path | None = None
    num_dropped_nonfinite: int = 0
    intensity_full_scale: float = 1.0

    def __post_init__(self) -> None:
        n = self.points_xyz.shape[0]
        if self.points_xyz.ndim != 2 or self.points_xyz.shape[1] != 3:
            raise ValueError(f"points_xyz must be (N, 3), got {self.points_xyz.shape}")
        for name in ("intensity", "ring", "labels", "instance_ids"):
            a = getattr(self, name)
            if a is not None and a.shape != (n,):
                raise ValueError(f"{name} must be ({n},) to match points_xyz, got {a.shape}")

    def __len__(self) -> int:
        return int(self.points_xyz.shape[0])

    def unit_intensity(self) -> np.ndarray:
        """(N,) float32 intensity / ``intensity_full_scale``, in [0, 1].

        Raises:
            DataError: naming the file when a value lies outside the format's scale (e.g. a
                nuScenes scan saved under a KITTI ``.bin`` name, or negative intensities).
        """
        scaled = self.intensity / np.float32(self.intensity_full_scale)
        if scaled.size and (float(scaled.min()) < 0.0 or float(scaled.max()) > 1.0 + 1e-6):
            raise DataError(
                self.source or Path("<points>"),
                f"intensity in [{float(self.intensity.min()):g}, {float(self.intensity.max()):g}] is outside this "
                f"format's scale [0, {self.intensity_full_scale:g}]; is the file in another format (KITTI .bin "
                "stores 0..1, nuScenes .pcd.bin 0..255)?",
            )
        return scaled.astype(np.float32, copy=False)

    def with_labels(self, labels: np.ndarray, instance_ids: np.ndarray | None = None) -> "PointCloud":
        """A copy with per-point labels attached (shapes are checked)."""
        return replace(self, labels=labels, instance_ids=instance_ids)


# --------------------------------------------------------------------------- helpers


def _read_records(path: Path, dtype: np.dtype, record_len: int, layout: str) -> np.ndarray:
    """(N, record_len) array of a headerless binary file, with size checks that name the file."""
    size = path.stat().st_size
    record_bytes = np.dtype(dtype).itemsize * record_len
    if size == 0:
        raise DataError(path, f"file is empty (expected {record_bytes}-byte records of {layout})")
    if size % record_bytes:
        raise DataError(
            path,
            f"{size} bytes is not a multiple of the {record_bytes}-byte record ({layout}); "
            "the file is truncated or in another format",
        )
    return np.fromfile(path, dtype=dtype).reshape(-1, record_len)


def _finite_mask(path: Path, columns: np.ndarray, drop_nonfinite: bool) -> np.ndarray | None:
    """None if every row is finite; the keep-mask if ``drop_nonfinite``; else raise."""
    finite = np.isfinite(columns).all(axis=1)
    if finite.all():
        return None
    bad = int((~finite).sum())
    if not drop_nonfinite:
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(
            path,
            f"{bad} of {len(finite)} points have NaN/inf values (first at index {first}); "
            "pass drop_nonfinite=True to keep only the finite points",
        )
    return finite


def _cloud(
    path: Path,
    xyz: np.ndarray,
    intensity: np.ndarray,
    drop_nonfinite: bool,
    ring: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    instance_ids: np.ndarray | None = None,
    extra_checked: np.ndarray | None = None,
    intensity_full_scale: float = 1.0,
) -> PointCloud:
    """Build a PointCloud after the non-finite check over xyz, intensity and ``extra_checked``."""
    checked = [xyz, intensity[:, None]] + ([] if extra_checked is None else [extra_checked.reshape(len(xyz), -1)])
    keep = _finite_mask(path, np.concatenate(checked, axis=1), drop_nonfinite)
    dropped = 0
    if keep is not None:
        dropped = int((~keep).sum())
        xyz, intensity = xyz[keep], intensity[keep]
        ring, labels, instance_ids = (None if a is None else a[keep] for a in (ring, labels, instance_ids))
    return PointCloud(
        points_xyz=np.ascontiguousarray(xyz, dtype=np.float32),
        intensity=np.ascontiguousarray(intensity, dtype=np.float32),
        ring=ring,
        labels=labels,
        instance_ids=instance_ids,
        source=path,
        num_dropped_nonfinite=dropped,
        intensity_full_scale=intensity_full_scale,
    )


# --------------------------------------------------------------------------- readers


def read_kitti_bin(path: str | Path, drop_nonfinite: bool = False) -> PointCloud:
    """Read a KITTI / SemanticKITTI velodyne scan (float32 x, y, z, reflectance)."""
    p = require_file(path, "KITTI point file")
    rec = _read_records(p, np.float32, KITTI_RECORD_FLOATS, "float32 x, y, z, reflectance")
    return _cloud(p, rec[:, :3], rec[:, 3], drop_nonfinite, intensity_full_scale=KITTI_INTENSITY_FULL_SCALE)


def read_nuscenes_pcd_bin(path: str | Path, drop_nonfinite: bool = False) -> PointCloud:
    """Read a nuScenes ``.pcd.bin`` sweep (float32 x, y, z, intensity, ring)."""
    p = require_file(path, "nuScenes point file")
    rec = _read_records(p, np.float32, NUSCENES_RECORD_FLOATS, "float32 x, y, z, intensity, ring")
    ring_f = rec[:, 4]
    finite_ring = ring_f[np.isfinite(ring_f)]
    # The ring column is stored as float; non-integral or negative values mean a wrong layout.
    if np.any(finite_ring < 0) or np.any(finite_ring != np.round(finite_ring)):
        raise DataError(
            p,
            "column 5 (ring) holds non-integer or negative values; this is not a nuScenes "
            ".pcd.bin (x, y, z, intensity, ring) file",
        )
    ring = np.where(np.isfinite(ring_f), ring_f, -1).astype(np.int64)
    return _cloud(p, rec[:, :3], rec[:, 3], drop_nonfinite, ring=ring, extra_checked=ring_f,
                  intensity_full_scale=NUSCENES_INTENSITY_FULL_SCALE)


def read_semantickitti_label(path: str | Path, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a SemanticKITTI ``.label`` file.

    Args:
        path: the ``.label`` file.
        num_points: the number of points in the matching scan; a different label count is
            an error (labels would be silently misaligned otherwise).

    Returns:
        semantic (N,) int64 (lower 16 bits) and instance_ids (N,) int64 (upper 16 bits).
    """
    p = require_file(path, "SemanticKITTI label file")
    raw = _read_records(p, np.uint32, 1, "uint32 label per point")[:, 0]
    if num_points is not None and raw.shape[0] != num_points:
        raise DataError(
            p,
            f"has {raw.shape[0]} labels but the scan has {num_points} points; "
            "the label file does not belong to this scan",
        )
    return (raw & SEMANTIC_MASK).astype(np.int64), (raw >> 16).astype(np.int64)


def semantickitti_label_path(scan_path: str | Path) -> Path:
    """``.../sequences/08/velodyne/000123.bin`` -> ``.../sequences/08/labels/000123.label``."""
    p = Path(scan_path)
    return p.parent.parent / "labels" / (p.stem + ".label")


def read_semantickitti(
    scan_path: str | Path, label_path: str | Path | None = None, drop_nonfinite: bool = False
) -> PointCloud:
    """Read a SemanticKITTI scan with its labels (label path inferred from the layout when omitted).

    Labels are checked against the number of points in the file *before* any non-finite
    points are dropped, then dropped alongside them.
    """
    p = require_file(scan_path, "KITTI point file")
    rec = _read_records(p, np.float32, KITTI_RECORD_FLOATS, "float32 x, y, z, reflectance")
    lp = semantickitti_label_path(p) if label_path is None else Path(label_path)
    semantic, instance = read_semantickitti_label(lp, num_points=rec.shape[0])
    return _cloud(p, rec[:, :3], rec[:, 3], drop_nonfinite, labels=semantic, instance_ids=instance,
                  intensity_full_scale=KITTI_INTENSITY_FULL_SCALE)


def read_open3d_cloud(path: str | Path, drop_nonfinite: bool = False) -> PointCloud:
    """Read a ``.pcd`` or ``.ply`` file through open3d, keeping intensity/ring/label attributes.

    A file without an intensity attribute gets zeros. open3d only warns on a corrupt file
    and returns an empty cloud; that is turned into a DataError here.
    """
    p = require_file(path, "point cloud file")
    import open3d as o3d  # heavy import, only when needed

    try:
        pcd = o3d.t.io.read_point_cloud(str(p))
    except Exception as e:  # open3d raises RuntimeError on some malformed headers
        raise DataError(p, f"open3d could not read the file: {e}") from e
    if "positions" not in pcd.point or len(pcd.point["positions"]) == 0:
        raise DataError(p, "no points could be read (empty, corrupt, or not a PCD/PLY point cloud)")
    attrs = pcd.point
    xyz = attrs["positions"].numpy().astype(np.float32).reshape(-1, 3)
    n = xyz.shape[0]

    def column(*names: str) -> np.ndarray | None:
        for name in names:
            if name in attrs:
                return attrs[name].numpy().reshape(n, -1)[:, 0]
        return None

    intensity = column("intensity", "reflectance", "scalar_intensity")
    intensity = np.zeros(n, np.float32) if intensity is None else intensity.astype(np.float32)
    ring = column("ring")
    ring = None if ring is None else ring.astype(np.int64)
    labels = column("label", "labels")
    labels = None if labels is None else labels.astype(np.int64)
    finite = intensity[np.isfinite(intensity)]
    full_scale = 255.0 if finite.size and float(finite.max()) > 1.0 else 1.0
    return _cloud(p, xyz, intensity, drop_nonfinite, ring=ring, labels=labels, intensity_full_scale=full_scale)


def read_points(path: str | Path, drop_nonfinite: bool = False) -> PointCloud:
    """Read any supported scan, dispatching on the file name.

    ``*.pcd.bin`` -> nuScenes, ``*.bin`` -> KITTI, ``*.pcd`` / ``*.ply`` -> open3d.
    SemanticKITTI labels are not attached here; use :func:`read_semantickitti`.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".pcd.bin"):
        return read_nuscenes_pcd_bin(p, drop_nonfinite)
    if name.endswith(".bin"):
        return read_kitti_bin(p, drop_nonfinite)
    if name.endswith((".pcd", ".ply")):
        return read_open3d_cloud(p, drop_nonfinite)
    raise DataError(p, "unknown point cloud format; expected .bin (KITTI), .pcd.bin (nuScenes), .pcd or .ply")


# --------------------------------------------------------------------------- writers
# Used by the synthetic generator and by tests; the inverse of the readers above.


def write_kitti_bin(path: str | Path, points_xyz: np.ndarray, intensity: np.ndarray) -> None:
    """Write float32 (x, y, z, reflectance) records, atomically."""
    rec = np.column_stack([np.asarray(points_xyz, np.float32), np.asarray(intensity, np.float32)])
    atomic_write_bytes(path, np.ascontiguousarray(rec, dtype="<f4").tobytes())


def write_nuscenes_pcd_bin(path: str | Path, points_xyz: np.ndarray, intensity: np.ndarray, ring: np.ndarray) -> None:
    """Write float32 (x, y, z, intensity, ring) records, atomically."""
    rec = np.column_stack(
        [np.asarray(points_xyz, np.float32), np.asarray(intensity, np.float32), np.asarray(ring, np.float32)]
    )
    atomic_write_bytes(path, np.ascontiguousarray(rec, dtype="<f4").tobytes())


def write_semantickitti_label(path: str | Path, semantic: np.ndarray, instance_ids: np.ndarray | None = None) -> None:
    """Write uint32 labels: ``semantic | instance << 16``, atomically."""
    sem = np.asarray(semantic, dtype=np.int64)
    inst = np.zeros_like(sem) if instance_ids is None else np.asarray(instance_ids, dtype=np.int64)
    if np.any((sem < 0) | (sem > SEMANTIC_MASK)) or np.any((inst < 0) | (inst > SEMANTIC_MASK)):
        raise ValueError("semantic and instance ids must each fit in 16 bits (0..65535)")
    raw = (sem | (inst << 16)).astype("<u4")
    atomic_write_bytes(path, raw.tobytes())
