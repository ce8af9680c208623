"""A small reader of nuScenes v1.0 JSON tables, without the devkit.

Works on real nuScenes (Caesar et al., "nuScenes: A multimodal dataset for autonomous
driving", CVPR 2020; schema at https://www.nuscenes.org/nuscenes#data-format) and on the
synthetic sets of ``modalities.synthetic``. It reads only what camera-lidar pipelines
need: key-frame samples, their LIDAR_TOP scan and lidarseg labels, and every camera with
its intrinsics and ``T_cam_from_lidar`` through the global frame, each ego pose taken at
its own sensor's timestamp::

    lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera -> pixels (K)

Lidar files (``*.pcd.bin``) are float32 rows of (x, y, z, intensity, ring index) in the
LIDAR_TOP frame; lidarseg files are one uint8 category index per point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from modalities.camera.calibration import nuscenes_T_cam_from_lidar

LIDAR_CHANNEL = "LIDAR_TOP"
REQUIRED_TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor", "scene")


@dataclass(frozen=True)
class CameraView:
    channel: str
    image_path: Path
    K: np.ndarray  # (3, 3) intrinsics
    width: int
    height: int
    T_cam_from_lidar: np.ndarray  # (4, 4) lidar frame (key-frame scan) -> this camera
    timestamp_us: int
    sample_data_token: str


@dataclass(frozen=True)
class SampleRef:
    token: str
    scene_token: str
    timestamp_us: int
    lidar_sample_data_token: str
    lidar_path: Path
    lidarseg_path: Path | None  # None where the set has no lidarseg labels for this scan


def load_points(path: Path) -> np.ndarray:
    """(N, 5) float32 points of a nuScenes ``.pcd.bin`` (x, y, z, intensity 0..255, ring), as stored.

    The one reader is :func:`modalities.lidar.io.read_nuscenes_pcd_bin` (errors name the file);
    this is its raw-array view for code that wants the five columns.
    """
    from modalities.lidar.io import read_nuscenes_pcd_bin

    cloud = read_nuscenes_pcd_bin(path)
    return np.column_stack([cloud.points_xyz, cloud.intensity, cloud.ring.astype(np.float32)]).astype(np.float32)


def load_lidarseg(path: Path, num_points: int | None = None) -> np.ndarray:
    """(N,) uint8 labels; with ``num_points``, raises if the count does not match the scan."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"lidarseg file not found: {path}")
    labels = np.fromfile(path, dtype=np.uint8)
    if num_points is not None and len(labels) != num_points:
        raise ValueError(f"{path}: {len(labels)} labels for a scan of {num_points} points")
    return labels


class NuScenesTables:
    """The JSON tables of ``dataroot/version`` with token lookups."""

    def __init__(self, dataroot: str | Path, version: str):
        self.dataroot = Path(dataroot)
        self.version = version
        self.table_root = self.dataroot / version
        if not self.table_root.is_dir():
            raise FileNotFoundError(f"nuScenes tables not found: {self.table_root} is not a folder")
        self.tables: dict[str, list[dict]] = {name: self._load(name, required=True) for name in REQUIRED_TABLES}
        self.tables["lidarseg"] = self._load("lidarseg", required=False)
        self._index = {name: {r["token"]: r for r in rows} for name, rows in self.tables.items()}
        self._channel_of_cs = {
            cs["token"]: self.get("sensor", cs["sensor_token"])["channel"] for cs in self.tables["calibrated_sensor"]
        }
        self._modality_of_cs = {
            cs["token"]: self.get("sensor", cs["sensor_token"])["modality"] for cs in self.tables["calibrated_sensor"]
        }
        self._key_data: dict[str, dict[str, dict]] = {}
        for sd in self.tables["sample_data"]:
            if sd["is_key_frame"]:
                self._key_data.setdefault(sd["sample_token"], {})[self._channel_of_cs[sd["calibrated_sensor_token"]]] = sd
        self._lidarseg_of = {r["sample_data_token"]: r for r in self.tables["lidarseg"]}

    def _load(self, name: str, required: bool) -> list[dict]:
        path = self.table_root / f"{name}.json"
        if not path.exists():
            if required:
                raise FileNotFoundError(f"nuScenes table missing: {path}")
            return []
        try:
            rows = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "token" in r for r in rows):
            raise ValueError(f"{path}: expected a list of records that each have a 'token'")
        return rows

    def get(self, table: str, token: str) -> dict:
        try:
            return self._index[table][token]
        except KeyError:
            raise KeyError(f"no record with token {token!r} in {self.table_root / (table + '.json')}") from None

    def __len__(self) -> int:
        return len(self.tables["sample"])

    def samples(self) -> Iterator[SampleRef]:
        """Key-frame samples, scene by scene (table order) and in time order within a scene."""
        for scene in self.tables["scene"]:
            token = scene["first_sample_token"]
            while token:
                yield self.sample(token)
                token = self.get("sample", token)["next"]

    def sample(self, token: str) -> SampleRef:
        s = self.get("sample", token)
        data = self._key_data.get(token, {})
        if LIDAR_CHANNEL not in data:
            raise ValueError(f"sample {token} has no key-frame {LIDAR_CHANNEL} in {self.table_root / 'sample_data.json'}")
        sd = data[LIDAR_CHANNEL]
        seg = self._lidarseg_of.get(sd["token"])
        return SampleRef(
            token=token,
            scene_token=s["scene_token"],
            timestamp_us=int(s["timestamp"]),
            lidar_sample_data_token=sd["token"],
            lidar_path=self.dataroot / sd["filename"],
            lidarseg_path=self.dataroot / seg["filename"] if seg else None,
        )

    def load_points(self, sample: SampleRef) -> np.ndarray:
        return load_points(sample.lidar_path)

    def load_lidarseg(self, sample: SampleRef, num_points: int | None = None) -> np.ndarray:
        if sample.lidarseg_path is None:
            raise FileNotFoundError(f"no lidarseg record for lidar sample_data {sample.lidar_sample_data_token}")
        if num_points is None:
            num_points = len(self.load_points(sample))
        return load_lidarseg(sample.lidarseg_path, num_points)

    def cameras(self, sample: SampleRef) -> list[CameraView]:
        """Every key-frame camera of the sample, in sample_data table order."""
        data = self._key_data[sample.token]
        lidar_sd = data[LIDAR_CHANNEL]
        lidar_cs = self.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
        lidar_pose = self.get("ego_pose", lidar_sd["ego_pose_token"])
        views = []
        for channel, sd in data.items():
            if self._modality_of_cs[sd["calibrated_sensor_token"]] != "camera":
                continue
            cs = self.get("calibrated_sensor", sd["calibrated_sensor_token"])
            K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(
                    f"calibrated_sensor {cs['token']} ({channel}) has camera_intrinsic of shape {K.shape}, expected 3x3"
                )
            T = nuscenes_T_cam_from_lidar(lidar_cs, lidar_pose, cs, self.get("ego_pose", sd["ego_pose_token"]))
            views.append(CameraView(channel, self.dataroot / sd["filename"], K, int(sd["width"]), int(sd["height"]),
                                    T, int(sd["timestamp"]), sd["token"]))
        return views
