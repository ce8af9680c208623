"""Write synthetic scenes in the nuScenes v1.0 on-disk layout, plus dense ground truth.

Layout (Caesar et al., "nuScenes: A multimodal dataset for autonomous driving", CVPR
2020; schema: https://www.nuscenes.org/nuscenes#data-format and the devkit's
``docs/schema_nuscenes.md``; lidarseg: ``docs/schema_lidarseg.md``)::

    DIR/<version>/{attribute,calibrated_sensor,category,ego_pose,instance,lidarseg,log,map,
                   sample,sample_annotation,sample_data,scene,sensor,visibility}.json
    DIR/samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin   float32 (N, 5): x y z intensity ring
    DIR/sweeps/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin    non-key sweeps before each key frame
    DIR/samples/CAM_*/<log>__CAM_*__<us>.jpg
    DIR/lidarseg/<version>/<lidar sample_data token>_lidarseg.bin   uint8, one label per point
    DIR/maps/<map token>.png                                semantic prior (road + sidewalk), 0.1 m/px
    DIR/groundtruth/<CAM_*>/<image stem>_semantic.png       uint8 class id per pixel (255 = sky)
    DIR/groundtruth/<CAM_*>/<image stem>_depth.npy          float32 camera z in m (0.0 = sky)
    DIR/groundtruth/classes.json                            id -> name, colour, reflectivity
    DIR/bev_labels/<sample token>.png, grid.json            BEV class per cell (only with bev_labels; see
                                                            modalities.bev_labels and modalities.synthetic.bev)
    DIR/synthetic.json                                      resolved options + counts

Reproducibility: tokens are seeded hashes, timestamps come from the seed and scene index,
JSON keys keep a fixed order, JPEG quality is fixed, and every file is written to a temp
name in its folder and renamed, so a killed run never leaves a complete-looking file.
``generate_scene`` touches only its own scene's files and may run in parallel processes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from modalities.bev_labels import BevGridSpec, bev_label_path, write_bev_labels
from modalities.camera.calibration import rotation_to_quaternion
from modalities.synthetic import classes as C
from modalities.synthetic import rig
from modalities.synthetic.bev import bev_labels_of_scene
from modalities.synthetic.config import SynthConfig
from modalities.synthetic.render import WorldRenderer
from modalities.synthetic.scene import MAP_RESOLUTION_M, World, build_world, rot_z

KEYFRAME_PERIOD_US = 500_000  # nuScenes annotates key frames at 2 Hz
BEV_GRID = BevGridSpec()  # of bev_labels: [-32, 32) m x [-32, 32) m around LIDAR_TOP at 0.5 m, 128 x 128
ANNOTATION_RADIUS_M = 60.0  # objects closer than this to the ego get a box at a sample
ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)
VISIBILITY = (("1", "v0-40", 0.0), ("2", "v40-60", 0.4), ("3", "v60-80", 0.6), ("4", "v80-100", 0.8))


# ---------------------------------------------------------------- small helpers


def make_token(seed: int, *parts) -> str:
    """32 hex characters, like nuScenes tokens, from a hash of the seed and the parts."""
    text = "edgedistill-synthetic/" + "/".join(str(p) for p in (seed, *parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _jpg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _pose_record(token: str, T: np.ndarray, **extra) -> dict:
    return {
        "token": token,
        **extra,
        "translation": [float(x) for x in T[:3, 3]],
        "rotation": [float(x) for x in rotation_to_quaternion(T[:3, :3])],
    }


def _scene_base_us(cfg: SynthConfig, scene_index: int) -> int:
    day = 86_400_000_000
    return 1_530_000_000_000_000 + (cfg.seed % 997) * day + scene_index * 3_600_000_000


# ---------------------------------------------------------------- one scene


def _map_png(world: World) -> bytes:
    w, h = world.map_size_px
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for poly in world.map_polygons_road:
        xy = poly @ world.T_global_from_road[:2, :2].T + world.T_global_from_road[:2, 3]
        draw.polygon([(x / MAP_RESOLUTION_M, h - y / MAP_RESOLUTION_M) for x, y in xy], fill=255)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def generate_scene(out_dir: Path, cfg: SynthConfig, scene_index: int) -> dict:
    """Render one scene and write its sensor, label and map files.

    Returns the scene's table rows, ``{table name: [record, ...]}`` (plain JSON types,
    picklable), for ``write_tables``.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng([cfg.seed, scene_index])
    sensor = cfg.sensor()
    speed = float(rng.uniform(*cfg.ego_speed_mps))
    duration_s = (cfg.samples_per_scene - 1) * KEYFRAME_PERIOD_US / 1e6
    world = build_world(rng, max(speed * duration_s, 1.0), speed, cfg.cars_per_100m,
                        cfg.pedestrians_per_100m, cfg.trees_per_100m)
    renderer = WorldRenderer(world)
    tok = lambda *parts: make_token(cfg.seed, "scene", scene_index, *parts)  # noqa: E731
    base_us = _scene_base_us(cfg, scene_index)
    start_us = base_us + 1_000_000  # scene time 0; sweeps of the first sample come before it
    log_name = f"synth-{cfg.seed:04d}-{dt.datetime.fromtimestamp(base_us // 1_000_000, dt.timezone.utc):%Y-%m-%d-%H-%M-%S}-{scene_index:04d}"
    T_global_from_road = world.T_global_from_road

    def T_global_from_ego(ts_us: int) -> np.ndarray:
        return T_global_from_road @ world.T_road_from_ego((ts_us - start_us) / 1e6)

    rec: dict[str, list] = {k: [] for k in (
        "log", "map", "scene", "sample", "sample_data", "ego_pose", "calibrated_sensor",
        "instance", "sample_annotation", "lidarseg")}
    log_token, map_token, scene_token = tok("log"), tok("map"), tok("scene")
    rec["log"].append({
        "token": log_token, "logfile": log_name, "vehicle": "edgedistill-synthetic-ego",
        "date_captured": f"{dt.datetime.fromtimestamp(base_us // 1_000_000, dt.timezone.utc):%Y-%m-%d}",
        "location": f"synthetic-street-{scene_index:04d}",
    })
    atomic_write_bytes(out_dir / "maps" / f"{map_token}.png", _map_png(world))
    rec["map"].append({"token": map_token, "log_tokens": [log_token], "category": "semantic_prior",
                       "filename": f"maps/{map_token}.png"})

    # calibration (one calibrated_sensor per sensor per scene, as in nuScenes)
    calib_rng = np.random.default_rng([cfg.seed, scene_index, 7])
    T_ego_from_lidar = rig.lidar_extrinsic(calib_rng)
    lidar_cs = tok("cs", rig.LIDAR_CHANNEL)
    rec["calibrated_sensor"].append({**_pose_record(lidar_cs, T_ego_from_lidar,
                                                    sensor_token=make_token(cfg.seed, "sensor", rig.LIDAR_CHANNEL)),
                                     "camera_intrinsic": []})
    cams = []
    for channel, yaw_deg, position in rig.CAMERAS:
        hfov = cfg.back_camera_hfov_deg if channel == "CAM_BACK" else cfg.camera_hfov_deg
        K = rig.intrinsics(cfg.image_width, cfg.image_height, hfov)
        T_ego_from_cam = rig.camera_extrinsic(yaw_deg, position, calib_rng)
        cs = tok("cs", channel)
        rec["calibrated_sensor"].append({**_pose_record(cs, T_ego_from_cam,
                                                        sensor_token=make_token(cfg.seed, "sensor", channel)),
                                         "camera_intrinsic": [[float(x) for x in row] for row in K]})
        cams.append((channel, yaw_deg, K, T_ego_from_cam, cs))

    sample_tokens = [tok("sample", k) for k in range(cfg.samples_per_scene)]
    lidar_chain: list[dict] = []
    cam_chains: dict[str, list[dict]] = {c: [] for c, *_ in cams}
    per_sample_objects: list[dict[int, dict]] = []

    def add_sample_data(token, sample_token, ts_us, cs_token, filename, fmt, key, w=0, h=0) -> dict:
        rec["ego_pose"].append(_pose_record(token, T_global_from_ego(ts_us), timestamp=ts_us))
        return {"token": token, "sample_token": sample_token, "ego_pose_token": token,
              "calibrated_sensor_token": cs_token, "timestamp": ts_us, "fileformat": fmt,
              "is_key_frame": key, "height": h, "width": w, "filename": filename, "prev": "", "next": ""}

    def lidar_sweep(ts_us: int, sample_token: str, key: bool, sweep_id) -> np.ndarray:
        T_road_from_lidar = world.T_road_from_ego((ts_us - start_us) / 1e6) @ T_ego_from_lidar
        scan = renderer.lidar(T_road_from_lidar, sensor, np.random.default_rng([cfg.seed, scene_index, 11, *sweep_id]),
                              cfg.lidar_random_dropout)
        folder = "samples" if key else "sweeps"
        filename = f"{folder}/{rig.LIDAR_CHANNEL}/{log_name}__{rig.LIDAR_CHANNEL}__{ts_us}.pcd.bin"
        atomic_write_bytes(out_dir / filename, scan.points.tobytes())
        sd_token = tok("sd", rig.LIDAR_CHANNEL, ts_us)
        lidar_chain.append(add_sample_data(sd_token, sample_token, ts_us, lidar_cs, filename, "pcd", key))
        if key:
            seg_name = f"lidarseg/{cfg.version}/{sd_token}_lidarseg.bin"
            atomic_write_bytes(out_dir / seg_name, scan.labels.astype(np.uint8).tobytes())
            rec["lidarseg"].append({"token": sd_token, "sample_data_token": sd_token, "filename": seg_name})
        return scan.instance

    for k, sample_token in enumerate(sample_tokens):
        key_us = start_us + k * KEYFRAME_PERIOD_US
        for j in range(cfg.sweeps_per_sample, 0, -1):
            sweep_us = key_us - j * KEYFRAME_PERIOD_US // (cfg.sweeps_per_sample + 1)
            lidar_sweep(sweep_us, sample_token, False, (k, j))
        point_instance = lidar_sweep(key_us, sample_token, True, (k, 0))
        if cfg.bev_labels:  # the world around the key frame's LIDAR_TOP, the frame of its scan
            T_road_from_lidar = world.T_road_from_ego((key_us - start_us) / 1e6) @ T_ego_from_lidar
            labels = bev_labels_of_scene(renderer.scene, renderer.cls[:-1], T_road_from_lidar, BEV_GRID)
            write_bev_labels(bev_label_path(out_dir, sample_token), labels, BEV_GRID)
        rec["sample"].append({"token": sample_token, "timestamp": key_us, "prev": "", "next": "",
                              "scene_token": scene_token})
        visible = np.zeros(len(world.objects) + 1, dtype=np.int64)
        unoccluded = np.zeros(len(world.objects) + 1, dtype=np.int64)
        for channel, yaw_deg, K, T_ego_from_cam, cs in cams:
            cam_us = key_us + rig.camera_time_offset_us(yaw_deg, sensor.rotation_hz)
            T_road_from_cam = world.T_road_from_ego((cam_us - start_us) / 1e6) @ T_ego_from_cam
            img = renderer.camera(T_road_from_cam, K, cfg.image_width, cfg.image_height, cfg.shadows)
            stem = f"{log_name}__{channel}__{cam_us}"
            filename = f"samples/{channel}/{stem}.jpg"
            atomic_write_bytes(out_dir / filename, _jpg(img.rgb, cfg.jpeg_quality))
            atomic_write_bytes(out_dir / "groundtruth" / channel / f"{stem}_semantic.png", _png(img.semantic))
            atomic_write_bytes(out_dir / "groundtruth" / channel / f"{stem}_depth.npy", _npy(img.depth_m))
            visible += np.bincount(img.instance.ravel() + 1, minlength=len(visible))
            unoccluded += np.bincount(img.objects_unoccluded.ravel() + 1, minlength=len(visible))
            cam_chains[channel].append(add_sample_data(tok("sd", channel, cam_us), sample_token, cam_us, cs,
                                                       filename, "jpg", True,
                                                       cfg.image_width, cfg.image_height))
        ego_xy = world.T_road_from_ego((key_us - start_us) / 1e6)[:2, 3]
        n_points = np.bincount(point_instance + 1, minlength=len(world.objects) + 1)[1:]
        near = {}
        for i, obj in enumerate(world.objects):
            if np.linalg.norm(obj.center_road[:2] - ego_xy) <= ANNOTATION_RADIUS_M:
                ratio = visible[i + 1] / unoccluded[i + 1] if unoccluded[i + 1] else 0.0
                near[i] = {"num_lidar_pts": int(n_points[i]), "visibility": ratio}
        per_sample_objects.append(near)

    for chain in [lidar_chain, *cam_chains.values(), rec["sample"]]:
        chain.sort(key=lambda r: r["timestamp"])
        for a, b in zip(chain[:-1], chain[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
    rec["sample_data"] = lidar_chain + [sd for c, *_ in cams for sd in cam_chains[c]]
    rec["ego_pose"].sort(key=lambda r: (r["timestamp"], r["token"]))
    _annotations(rec, world, cfg, scene_index, sample_tokens, per_sample_objects)
    rec["scene"].append({
        "token": scene_token, "log_token": log_token, "nbr_samples": len(sample_tokens),
        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
        "name": f"scene-{scene_index:04d}",
        "description": f"synthetic street, seed {cfg.seed}, {len(world.objects)} objects, ego {speed:.1f} m/s",
    })
    return rec


def _annotations(rec, world: World, cfg: SynthConfig, scene_index: int, sample_tokens, per_sample_objects) -> None:
    """One instance per object seen near the ego, one box per sample while it is near."""
    seed = cfg.seed
    yaw_g = float(np.arctan2(world.T_global_from_road[1, 0], world.T_global_from_road[0, 0]))
    for i, obj in enumerate(world.objects):
        samples = [k for k, near in enumerate(per_sample_objects) if i in near]
        if not samples:
            continue
        inst_token = make_token(seed, "scene", scene_index, "instance", i)
        cat = C.CATEGORIES[obj.class_id]
        ann_tokens = [make_token(seed, "scene", scene_index, "ann", i, k) for k in samples]
        center = world.T_global_from_road[:3, :3] @ obj.center_road + world.T_global_from_road[:3, 3]
        q = rotation_to_quaternion(rot_z(yaw_g + obj.yaw_rad))
        for n, (k, ann) in enumerate(zip(samples, ann_tokens)):
            info = per_sample_objects[k][i]
            vis = [t for t, _, lo in VISIBILITY if info["visibility"] >= lo][-1]
            rec["sample_annotation"].append({
                "token": ann, "sample_token": sample_tokens[k], "instance_token": inst_token,
                "visibility_token": vis,
                "attribute_tokens": [make_token(seed, "attribute", obj.attribute)] if obj.attribute else [],
                "translation": [float(x) for x in center], "size": [float(x) for x in obj.size_wlh],
                "rotation": [float(x) for x in q], "prev": ann_tokens[n - 1] if n else "",
                "next": ann_tokens[n + 1] if n + 1 < len(ann_tokens) else "",
                "num_lidar_pts": info["num_lidar_pts"], "num_radar_pts": 0,
            })
        rec["instance"].append({"token": inst_token, "category_token": make_token(seed, "category", cat.name),
                                "nbr_annotations": len(ann_tokens), "first_annotation_token": ann_tokens[0],
                                "last_annotation_token": ann_tokens[-1]})


# ---------------------------------------------------------------- tables and driver


def _global_tables(cfg: SynthConfig) -> dict[str, list]:
    s = cfg.seed
    return {
        "category": [{"token": make_token(s, "category", c.name), "name": c.name, "description": c.description,
                      "index": c.index} for c in C.CATEGORIES],
        "attribute": [{"token": make_token(s, "attribute", n), "name": n, "description": d} for n, d in ATTRIBUTES],
        "visibility": [{"description": f"visibility of whole object is between {lo * 100:.0f} and"
                        f" {(lo + (0.4 if lo == 0 else 0.2)) * 100:.0f} %", "token": t, "level": lvl}
                       for t, lvl, lo in VISIBILITY],
        "sensor": [{"token": make_token(s, "sensor", ch), "channel": ch, "modality": m}
                   for ch, m in [(rig.LIDAR_CHANNEL, "lidar")] + [(c, "camera") for c in rig.CAMERA_CHANNELS]],
    }


TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "lidarseg", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")


def write_tables(out_dir: Path, cfg: SynthConfig, scene_records: list[dict]) -> dict:
    """Write ``<version>/*.json``, ``groundtruth/classes.json`` and ``synthetic.json``.

    ``scene_records`` are ``generate_scene`` results in scene order. Returns the row count
    of every table.
    """
    out_dir = Path(out_dir)
    tables = _global_tables(cfg)
    for rec in scene_records:
        for name, rows in rec.items():
            tables.setdefault(name, []).extend(rows)
    counts = {}
    for name in TABLES:
        rows = tables.get(name, [])
        atomic_write_bytes(out_dir / cfg.version / f"{name}.json", json.dumps(rows, indent=1).encode())
        counts[name] = len(rows)
    atomic_write_bytes(out_dir / "groundtruth" / "classes.json", json.dumps(C.classes_json(), indent=1).encode())
    summary = {"version": cfg.version, "config": cfg.resolved(), "tables": counts}
    atomic_write_bytes(out_dir / "synthetic.json", json.dumps(summary, indent=1).encode())
    return counts


def generate_dataset(out_dir: Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate every scene one after the other, then the tables. Returns ``synthetic.json``'s content."""
    records = []
    for i in range(cfg.scenes):
        records.append(generate_scene(out_dir, cfg, i))
        if progress is not None:
            progress(i + 1, cfg.scenes)
    counts = write_tables(out_dir, cfg, records)
    return {"version": cfg.version, "config": cfg.resolved(), "tables": counts}
