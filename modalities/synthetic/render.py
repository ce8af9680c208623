"""Ray-cast a synthetic world with open3d's ``RaycastingScene`` (Embree, CPU).

Frames: every ray is cast in the world's road frame (see ``scene.py``); sensors give
their pose as ``T_road_from_<sensor>``. The lidar frame is nuScenes LIDAR_TOP-like
(a spinning sensor, elevation from the x-y plane, azimuth counter-clockwise from +x);
the camera frame is x right, y down, z forward with pixel centres at integer (u, v),
as ``modalities.camera.calibration.project_points`` assumes::

    ray through pixel (u, v) = R_road_from_cam @ K^-1 @ (u, v, 1)

Because that direction has camera-z = 1, the ray parameter of a hit *is* its camera
depth. A whole lidar sweep is cast from one pose (no motion distortion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from modalities.lidar.sensors import LidarSensor
from modalities.synthetic.classes import SKY_ID, reflectivity_table
from modalities.synthetic.scene import World
from modalities.synthetic.textures import sample_albedo

AMBIENT = 0.38
HAZE_M = 600.0  # distance at which the scene fades by 1/e towards the sky colour
SKY_HORIZON = np.array([0.80, 0.86, 0.92], dtype=np.float32)
SKY_ZENITH = np.array([0.33, 0.52, 0.82], dtype=np.float32)


@dataclass
class LidarScan:
    points: np.ndarray  # (N, 5) float32: x, y, z (lidar frame, m), intensity 0..255, ring index
    labels: np.ndarray  # (N,) uint8 class id
    instance: np.ndarray  # (N,) int32 object index, -1 for stuff


@dataclass
class CameraImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    semantic: np.ndarray  # (H, W) uint8 class id, SKY_ID where no surface
    depth_m: np.ndarray  # (H, W) float32 camera z, 0.0 where no surface
    instance: np.ndarray  # (H, W) int32 object index, -1 for stuff and sky
    objects_unoccluded: np.ndarray  # (H, W) int32 object seen with only objects in the world


def _scene_of(meshes) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    for i, m in enumerate(meshes):
        gid = scene.add_triangles(o3d.core.Tensor(m.vertices), o3d.core.Tensor(m.triangles.astype(np.uint32)))
        if gid != i:
            raise RuntimeError(f"open3d returned geometry id {gid} for mesh {i}; ids must be sequential")
    return scene


class WorldRenderer:
    """Holds the ray-casting scene and per-geometry material tables of one world."""

    def __init__(self, world: World):
        self.world = world
        meshes = world.meshes
        self.scene = _scene_of(meshes)
        self.objects_scene = _scene_of([m for m in meshes if m.instance >= 0])
        self.objects_instance = np.array([m.instance for m in meshes if m.instance >= 0] + [-1], dtype=np.int32)
        # lookup tables indexed by geometry id; the last row answers INVALID_ID (a miss)
        self.cls = np.array([m.class_id for m in meshes] + [SKY_ID], dtype=np.uint8)
        self.instance = np.array([m.instance for m in meshes] + [-1], dtype=np.int32)
        self.texture = np.array([m.material.texture for m in meshes] + [0], dtype=np.int64)
        self.tint = np.array([m.material.tint_rgb for m in meshes] + [(0, 0, 0)], dtype=np.float32)
        self.mix = np.array([m.material.mix for m in meshes] + [0], dtype=np.float32)
        self.scale = np.array([m.material.scale_m for m in meshes] + [1], dtype=np.float32)
        refl = np.asarray(reflectivity_table(), dtype=np.float32)
        self.reflect = np.array(
            [refl[m.class_id] * m.material.reflect_mult for m in meshes] + [0], dtype=np.float32
        )

    def _cast(self, scene, origins: np.ndarray, dirs: np.ndarray) -> dict:
        rays = np.concatenate([origins, dirs], axis=1).astype(np.float32)
        out = scene.cast_rays(o3d.core.Tensor(rays), nthreads=0)
        gid = out["geometry_ids"].numpy().astype(np.int64)
        n_geom = len(self.cls) - 1 if scene is self.scene else len(self.objects_instance) - 1
        gid = np.where(gid >= n_geom, n_geom, gid)  # INVALID_ID -> the "miss" row
        return {"t": out["t_hit"].numpy(), "gid": gid, "normal": out["primitive_normals"].numpy()}

    def _albedo(self, points, normals, gid) -> np.ndarray:
        return sample_albedo(points, normals, self.texture[gid], self.tint[gid], self.mix[gid], self.scale[gid])

    def lidar(self, T_road_from_lidar: np.ndarray, sensor: LidarSensor, rng: np.random.Generator,
              random_dropout: float = 0.0) -> LidarScan:
        """One revolution: beams x columns rays, ordered by firing time (column-major)."""
        elev = np.deg2rad(sensor.elevations_deg())
        az = sensor.azimuths_rad()
        az_g, el_g = np.meshgrid(az, elev, indexing="ij")  # (columns, beams)
        ring = np.broadcast_to(np.arange(sensor.beams), az_g.shape).reshape(-1)
        dirs_lidar = np.stack(
            [np.cos(el_g) * np.cos(az_g), np.cos(el_g) * np.sin(az_g), np.sin(el_g)], axis=-1
        ).reshape(-1, 3)
        R, t = T_road_from_lidar[:3, :3], T_road_from_lidar[:3, 3]
        dirs_road = dirs_lidar @ R.T
        hit = self._cast(self.scene, np.broadcast_to(t, dirs_road.shape), dirs_road)
        noise = rng.normal(0.0, sensor.range_noise_std_m, size=len(dirs_road)) if sensor.range_noise_std_m > 0 \
            else np.zeros(len(dirs_road))
        drop = rng.random(len(dirs_road)) < random_dropout
        range_m = hit["t"].astype(np.float64) + noise
        keep = (
            np.isfinite(hit["t"])
            & (range_m >= sensor.min_range_m)
            & (range_m <= sensor.max_range_m)
            & ~drop
        )
        gid = hit["gid"][keep]
        d = dirs_road[keep]
        p_road = t + d * hit["t"][keep, None]
        n = hit["normal"][keep]
        cos_inc = np.abs(np.sum(n * d, axis=1))
        lum = self._albedo(p_road, n, gid) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        intensity = np.clip(np.round(255.0 * self.reflect[gid] * (0.4 + 0.6 * lum) * cos_inc), 0, 255)
        xyz = dirs_lidar[keep] * range_m[keep, None]
        points = np.concatenate(
            [xyz, intensity[:, None], ring[keep, None].astype(np.float64)], axis=1
        ).astype(np.float32)
        return LidarScan(points, self.cls[gid], self.instance[gid])

    def camera(self, T_road_from_cam: np.ndarray, K: np.ndarray, width: int, height: int,
               shadows: bool = True) -> CameraImage:
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        dirs_cam = np.stack(
            [(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1
        ).reshape(-1, 3)
        R, t = T_road_from_cam[:3, :3], T_road_from_cam[:3, 3]
        dirs_road = dirs_cam @ R.T
        origins = np.broadcast_to(t, dirs_road.shape)
        hit = self._cast(self.scene, origins, dirs_road)
        ok = np.isfinite(hit["t"])
        gid = hit["gid"]
        unit = dirs_road / np.linalg.norm(dirs_road, axis=1, keepdims=True)

        # sky: horizon-to-zenith gradient
        up = np.clip(unit[:, 2], 0.0, 1.0)[:, None].astype(np.float32)
        sky = SKY_HORIZON * (1 - up) + SKY_ZENITH * up
        rgb = sky.copy()

        p = t + dirs_road[ok] * hit["t"][ok, None]
        n = hit["normal"][ok].astype(np.float64)
        n = n * -np.sign(np.sum(n * dirs_road[ok], axis=1, keepdims=True) + 1e-12)  # face the viewer
        albedo = self._albedo(p, n, gid[ok])
        sun = self.world.sun_dir_road
        lambert = np.clip(n @ sun, 0.0, 1.0)
        if shadows:
            lit = lambert > 0
            shadow_rays = np.concatenate(
                [p[lit] + n[lit] * 0.02, np.broadcast_to(sun, (int(lit.sum()), 3))], axis=1
            ).astype(np.float32)
            occluded = self.scene.test_occlusions(o3d.core.Tensor(shadow_rays), nthreads=0).numpy()
            lambert[np.flatnonzero(lit)[occluded]] = 0.0
        shade = (AMBIENT + (1 - AMBIENT) * lambert)[:, None].astype(np.float32)
        dist = np.linalg.norm(p - t, axis=1)
        haze = np.exp(-dist / HAZE_M)[:, None].astype(np.float32)
        rgb[ok] = np.clip(albedo * shade, 0, 1) * haze + SKY_HORIZON * (1 - haze)

        # what the objects-only scene sees: the denominator of nuScenes-style visibility
        obj = self._cast(self.objects_scene, origins, dirs_road)
        objects_unoccluded = self.objects_instance[obj["gid"]]

        depth = np.where(ok, hit["t"], 0.0).astype(np.float32)
        img = CameraImage(
            rgb=np.round(rgb * 255).astype(np.uint8).reshape(height, width, 3),
            semantic=self.cls[gid].reshape(height, width),
            depth_m=depth.reshape(height, width),
            instance=self.instance[gid].reshape(height, width),
            objects_unoccluded=objects_unoccluded.reshape(height, width),
        )
        return img
