"""BEV label format (modalities.bev_labels) and the synthetic world's BEV ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalities.bev_labels import (
    BEV_CLASS_OF_NUSCENES,
    BEV_CLASSES,
    DRIVABLE,
    IGNORE_ID,
    PEDESTRIAN,
    PRIORITY,
    SIDEWALK,
    STATIC_OBSTACLE,
    TERRAIN_VEGETATION,
    VALID_IDS,
    VEHICLE,
    BevGridSpec,
    bev_label_path,
    grid_document,
    highest_priority,
    read_bev_labels,
    read_grid,
    write_bev_labels,
)
from modalities.errors import DataError

# ---------------------------------------------------------------- the grid spec


def test_spec_default_and_round_trip():
    spec = BevGridSpec()
    assert (spec.nx, spec.ny, spec.shape) == (128, 128, (128, 128))
    odd = BevGridSpec((-20, 40), (-10.0, 10.0), 0.25)
    assert odd.shape == (80, 240)
    for s in (spec, odd):
        assert BevGridSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(x_range_m=(5.0, -5.0)), "x_range_m"),
        (dict(y_range_m=(0.0, float("nan"))), "y_range_m"),
        (dict(y_range_m=(1.0,)), "y_range_m"),
        (dict(cell_size_m=0.0), "cell_size_m"),
        (dict(cell_size_m=0.3), "x_range_m"),  # 64 m is not a whole number of 0.3 m cells
    ],
)
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BevGridSpec(**kwargs)


@pytest.mark.parametrize(
    "d, field",
    [
        ({"x_range_m": [-1, 1], "y_range_m": [-1, 1]}, "cell_size_m"),
        ({"x_range_m": [-1, 1], "y_range_m": [-1, 1], "cell_size_m": 0.5, "z_range_m": [0, 1]}, "z_range_m"),
        ({"x_range_m": "wide", "y_range_m": [-1, 1], "cell_size_m": 0.5}, "x_range_m"),
    ],
)
def test_spec_from_dict_names_the_field(d, field):
    with pytest.raises(ValueError, match=field):
        BevGridSpec.from_dict(d)


def test_cells_follow_the_pillar_convention():
    """Cell centres fall in their own (ix, iy), and pillarize puts them at the same coords."""
    from modalities.lidar.pillars import pillarize

    spec = BevGridSpec((-4.0, 6.0), (-3.0, 2.0), 0.5)
    centers = spec.cell_centers_lidar()
    assert centers.shape == (spec.ny, spec.nx, 2)
    iy, ix = np.meshgrid(np.arange(spec.ny), np.arange(spec.nx), indexing="ij")
    cx, cy, inside = spec.cell_of(centers.reshape(-1, 2))
    assert inside.all() and np.array_equal(cx, ix.ravel()) and np.array_equal(cy, iy.ravel())
    xyz = np.concatenate([centers.reshape(-1, 2), np.zeros((spec.nx * spec.ny, 1))], axis=1)
    p = pillarize(xyz, xyz, spec.x_range_m, spec.y_range_m, (spec.cell_size_m,) * 2, 1, spec.nx * spec.ny)
    assert np.array_equal(p.coords[p.point_to_pillar], np.stack([ix.ravel(), iy.ravel()], axis=1))


# ---------------------------------------------------------------- classes


def test_every_nuscenes_and_synthetic_category_has_a_bev_class():
    from modalities.synthetic.classes import CATEGORIES, USED_CLASSES

    assert {c.name for c in CATEGORIES} == set(BEV_CLASS_OF_NUSCENES)  # the 32 lidarseg categories
    in_world = {BEV_CLASS_OF_NUSCENES[CATEGORIES[i].name] for i in USED_CLASSES}
    assert in_world == set(range(len(BEV_CLASSES)))  # the synthetic world has every BEV class
    assert BEV_CLASS_OF_NUSCENES["vehicle.car"] == VEHICLE and BEV_CLASS_OF_NUSCENES["static.manmade"] == STATIC_OBSTACLE
    assert sorted(PRIORITY) == list(range(len(BEV_CLASSES)))


def test_highest_priority_matches_a_loop():
    rng = np.random.default_rng(0)
    n = 50
    ray_ids = rng.integers(0, n, 300)
    bev_ids = rng.choice(sorted(VALID_IDS), 300).astype(np.uint8)
    got = highest_priority(ray_ids, bev_ids, n)
    for r in range(n):
        present = set(bev_ids[ray_ids == r].tolist())
        expected = next((c for c in PRIORITY if c in present), IGNORE_ID)
        assert got[r] == expected


# ---------------------------------------------------------------- files


def _random_labels(spec: BevGridSpec, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(sorted(VALID_IDS), size=spec.shape).astype(np.uint8)


def test_write_read_round_trip(tmp_path):
    spec = BevGridSpec((-8.0, 8.0), (-4.0, 12.0), 0.5)
    labels = _random_labels(spec)
    path = bev_label_path(tmp_path, "abc123")
    write_bev_labels(path, labels, spec)
    write_bev_labels(bev_label_path(tmp_path, "def456"), labels[::-1].copy(), spec)
    assert path == tmp_path / "bev_labels" / "abc123.png"
    assert np.array_equal(read_bev_labels(path, spec), labels)
    assert read_grid(tmp_path / "bev_labels") == spec
    doc = json.loads((tmp_path / "bev_labels" / "grid.json").read_text())
    assert doc == grid_document(spec) and doc["classes"]["3"] == "vehicle" and doc["classes"]["255"] == "unknown"
    assert sorted(p.name for p in (tmp_path / "bev_labels").iterdir()) == ["abc123.png", "def456.png", "grid.json"]
    # the image is what a user would draw: row iy, column ix, 8-bit greyscale
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (spec.nx, spec.ny)
    # one folder holds one grid
    with pytest.raises(DataError, match="grid.json"):
        write_bev_labels(bev_label_path(tmp_path, "x"), np.zeros((4, 4), np.uint8), BevGridSpec((0, 2), (0, 2), 0.5))
    with pytest.raises(ValueError, match="not BEV classes"):
        write_bev_labels(path, np.full(spec.shape, 9, np.uint8), spec)


def test_bad_files_are_named(tmp_path):
    spec = BevGridSpec((-2.0, 2.0), (-2.0, 2.0), 0.5)
    folder = tmp_path / "bev_labels"
    folder.mkdir()
    wrong_size = folder / "wrong_size.png"
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(wrong_size)
    unknown = folder / "unknown.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(unknown)
    rgb = folder / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    garbage = folder / "garbage.png"
    garbage.write_bytes(b"not a png")
    for path, match in [(wrong_size, "shape"), (unknown, r"unknown class ids \[7\]"), (rgb, "single-channel"),
                        (garbage, "not a readable image")]:
        with pytest.raises(DataError, match=match) as info:
            read_bev_labels(path, spec)
        assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_bev_labels(folder / "missing.png", spec)
    grid = folder / "grid.json"
    for doc, match in [("{", "not valid JSON"),
                       (json.dumps({"grid": {"x_range_m": [0, 1]}, "classes": {}}), "cell_size_m"),
                       (json.dumps({**grid_document(spec), "classes": {"0": "road"}}), "classes")]:
        grid.write_text(doc)
        with pytest.raises(DataError, match=match) as info:
            read_grid(folder)
        assert str(grid) in str(info.value)


# ---------------------------------------------------------------- rasterising a world (oracle)


def test_vertical_rays_match_a_footprint_oracle():
    """A hand-made world, rasterised by rays, equals a straightforward footprint-and-band check."""
    o3d = pytest.importorskip("open3d")
    from modalities.synthetic import classes as C
    from modalities.synthetic.bev import COLUMN_BOTTOM_M, COLUMN_TOP_M, bev_labels_of_scene
    from modalities.synthetic.scene import box, quad, rot_z

    # (x0, x1, y0, y1, z0, z1, class) in the road frame; z0 == z1 is a flat quad
    prims = [
        (50, 125, -5, 15, 0, 0, C.ROAD),
        (50, 125, 15, 60, 0, 0, C.TERRAIN),
        (50, 125, -8, -5, 0, 0.15, C.SIDEWALK),
        (50, 125, -60, -8, 0, 0, C.TERRAIN),
        (110, 120, 20, 30, 0, 10, C.MANMADE),  # a building: its bottom is coplanar with the grass
        (95, 99.5, 0, 1.8, 0.3, 1.6, C.CAR),
        (97, 101, 1, 4, 1.2, 3.0, C.VEGETATION),  # a low crown, partly over the car: the car wins
        (70, 76, 0, 4, 2.5, 3.5, C.MANMADE),  # above the 2 m band: not an obstacle
        (90, 90.6, -7, -6.4, 0.15, 1.9, C.PEDESTRIAN),
    ]
    scene = o3d.t.geometry.RaycastingScene()
    for x0, x1, y0, y1, z0, z1, _ in prims:
        v, f = quad(x0, x1, y0, y1, z0) if z0 == z1 else box((x1 - x0, y1 - y0, z1 - z0),
                                                           ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2))
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    T = np.eye(4)
    T[:3, :3] = rot_z(np.pi / 2)  # lidar x = road y, lidar y = -road x: the frame change is exercised
    T[:3, 3] = (100.0, 5.0, 1.84)
    spec = BevGridSpec()
    got = bev_labels_of_scene(scene, np.array([p[-1] for p in prims]), T, spec)

    c = spec.cell_centers_lidar().reshape(-1, 2)
    xy = c @ T[:2, :2].T + T[:2, 3]
    expected = np.full(len(xy), IGNORE_ID, np.uint8)
    for k, (x, y) in enumerate(xy):
        present = {BEV_CLASS_OF_NUSCENES[C.CATEGORIES[cls].name] for x0, x1, y0, y1, z0, z1, cls in prims
                   if x0 < x < x1 and y0 < y < y1 and z0 <= COLUMN_TOP_M and z1 >= COLUMN_BOTTOM_M}
        expected[k] = next((p for p in PRIORITY if p in present), IGNORE_ID)
    expected = expected.reshape(spec.shape)
    assert np.array_equal(got, expected), np.argwhere(got != expected)[:10]
    for cls in (DRIVABLE, SIDEWALK, TERRAIN_VEGETATION, VEHICLE, PEDESTRIAN, STATIC_OBSTACLE, IGNORE_ID):
        assert (got == cls).any(), cls
    # the road runs along road x = lidar -y: a column of cells (fixed ix), as the scan would show
    assert got[:, spec.nx // 2].tolist().count(DRIVABLE) > 100


# ---------------------------------------------------------------- the synthetic generator

TINY = dict(seed=3, scenes=1, samples_per_scene=2, sweeps_per_sample=0, image_width=64, image_height=36,
            lidar_sensor="vlp16")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    pytest.importorskip("open3d")
    from modalities.synthetic.config import SynthConfig
    from modalities.synthetic.nuscenes_writer import generate_dataset

    on_cfg, off_cfg = SynthConfig(**TINY, bev_labels=True), SynthConfig(**TINY)
    on, off = tmp_path_factory.mktemp("bev_on"), tmp_path_factory.mktemp("bev_off")
    generate_dataset(on, on_cfg)
    generate_dataset(off, off_cfg)
    return on, off, on_cfg


def test_flag_off_writes_nothing_new_and_changes_no_other_file(tiny_sets):
    on, off, _ = tiny_sets
    assert not (off / "bev_labels").exists()
    assert "bev_labels" not in json.loads((off / "synthetic.json").read_text())["config"]
    assert json.loads((on / "synthetic.json").read_text())["config"]["bev_labels"] is True
    h_on, h_off = _hashes(on), _hashes(off)
    bev = {k for k in h_on if k.startswith("bev_labels/")}
    assert len(bev) == TINY["samples_per_scene"] + 1  # one grid per key frame + grid.json
    for k in ("synthetic.json", *bev):
        h_on.pop(k)
    h_off.pop("synthetic.json")
    assert h_on == h_off


def test_config_flag_passes_through_the_stage_config():
    from modalities.synthetic.config import SynthConfig
    from pipelines.data.config import SynthDrivingConfig

    assert SynthDrivingConfig(bev_labels=True).generator_config().bev_labels is True
    assert "bev_labels" not in SynthConfig().model_dump()  # off: config hashes of existing runs unchanged
    assert SynthConfig(bev_labels=True).model_dump()["bev_labels"] is True


def _sample_geometry(root: Path, version: str):
    """Per key frame: (SampleRef, T_lidar_from_global, T_ego_from_lidar)."""
    from modalities.camera.calibration import invert_transform, pose_matrix
    from modalities.nuscenes_tables import NuScenesTables

    t = NuScenesTables(root, version)
    for s in t.samples():
        sd = t.get("sample_data", s.lidar_sample_data_token)
        cs = t.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = t.get("ego_pose", sd["ego_pose_token"])
        T_ego_from_lidar = pose_matrix(cs["translation"], cs["rotation"])
        T_global_from_lidar = pose_matrix(pose["translation"], pose["rotation"]) @ T_ego_from_lidar
        yield s, invert_transform(T_global_from_lidar), T_ego_from_lidar


def _boxes_lidar(root: Path, version: str, sample_token: str, T_lidar_from_global, prefix: str):
    """(T_lidar_from_box, (w, l, h)) of every annotation of ``prefix`` categories at the sample."""
    from modalities.camera.calibration import pose_matrix

    table = lambda name: json.loads((root / version / f"{name}.json").read_text())  # noqa: E731
    cat = {c["token"]: c["name"] for c in table("category")}
    inst = {i["token"]: cat[i["category_token"]] for i in table("instance")}
    return [(T_lidar_from_global @ pose_matrix(a["translation"], a["rotation"]), a["size"])
            for a in table("sample_annotation")
            if a["sample_token"] == sample_token and inst[a["instance_token"]].startswith(prefix)]


def _inside(centers_lidar: np.ndarray, T_lidar_from_box: np.ndarray, wlh, margin_m: float) -> np.ndarray:
    """Cells (N, 2) whose centre lies in the box footprint grown by ``margin_m`` (negative: shrunk)."""
    from modalities.camera.calibration import invert_transform

    p = np.concatenate([centers_lidar, np.full((len(centers_lidar), 1), T_lidar_from_box[2, 3]),
                        np.ones((len(centers_lidar), 1))], axis=1)
    q = p @ invert_transform(T_lidar_from_box).T
    w, length, _ = wlh
    return (np.abs(q[:, 0]) < length / 2 + margin_m) & (np.abs(q[:, 1]) < w / 2 + margin_m)


def test_generated_labels_agree_with_boxes_ego_and_scan(tiny_sets):
    from modalities.nuscenes_tables import load_lidarseg, load_points
    from modalities.synthetic import classes as C

    root, _, cfg = tiny_sets
    spec = read_grid(root / "bev_labels")
    assert spec == BevGridSpec()
    centers = spec.cell_centers_lidar().reshape(-1, 2)
    n_cars = 0
    for s, T_lidar_from_global, T_ego_from_lidar in _sample_geometry(root, cfg.version):
        labels = read_bev_labels(bev_label_path(root, s.token), spec)
        flat = labels.ravel()

        # the ego's own footprint (ego frame: x forward from the rear axle, y left) is road
        ex, ey = np.meshgrid(np.linspace(-0.5, 3.5, 9), np.linspace(-0.8, 0.8, 5))
        ego = np.stack([ex.ravel(), ey.ravel(), np.zeros(ex.size), np.ones(ex.size)], axis=1)
        ix, iy, inside = spec.cell_of((ego @ np.linalg.inv(T_ego_from_lidar).T)[:, :2])
        assert inside.all() and np.all(labels[iy, ix] == DRIVABLE)

        # vehicles: the annotation boxes, taken into the lidar frame, are the vehicle cells
        boxes = _boxes_lidar(root, cfg.version, s.token, T_lidar_from_global, "vehicle.")
        in_any = np.zeros(len(centers), bool)
        for T_box, wlh in boxes:
            core = _inside(centers, T_box, wlh, -0.15)
            if core.sum() >= 10:  # well inside the grid
                n_cars += 1
                assert np.all(flat[core] == VEHICLE)
            in_any |= _inside(centers, T_box, wlh, 0.05)
        assert np.all(in_any[flat == VEHICLE])
        inside_boxes = np.zeros(len(centers), bool)
        for T_box, wlh in boxes:
            inside_boxes |= _inside(centers, T_box, wlh, 0.0)
        iou = (inside_boxes & (flat == VEHICLE)).sum() / max(1, (inside_boxes | (flat == VEHICLE)).sum())
        assert iou > 0.95, iou
        peds = _boxes_lidar(root, cfg.version, s.token, T_lidar_from_global, "human.pedestrian.")
        ped_zone = np.zeros(len(centers), bool)
        for T_box, wlh in peds:
            ped_zone |= _inside(centers, T_box, wlh, 0.05)
        assert np.all(ped_zone[flat == PEDESTRIAN])

        # the key frame's own scan: ground points fall in cells of their class (checks the axes)
        points = load_points(s.lidar_path)
        seg = load_lidarseg(s.lidarseg_path, len(points))
        ix, iy, inside = spec.cell_of(points[:, :2])
        for cat, bev, min_frac in [(C.ROAD, DRIVABLE, 0.95), (C.SIDEWALK, SIDEWALK, 0.75),
                                   (C.TERRAIN, TERRAIN_VEGETATION, 0.9)]:
            sel = inside & (seg == cat)
            assert sel.sum() > 100
            frac = np.mean(labels[iy[sel], ix[sel]] == bev)
            assert frac >= min_frac, (C.CATEGORIES[cat].name, frac)

        # a sensible street: a road band, sidewalks, grass or trees, buildings, nothing unknown
        share = np.bincount(flat, minlength=256) / flat.size
        assert 0.1 < share[DRIVABLE] < 0.5, share[:6]
        assert share[SIDEWALK] > 0.03 and share[TERRAIN_VEGETATION] > 0.05 and share[STATIC_OBSTACLE] > 0.02
        assert share[IGNORE_ID] == 0.0
    assert n_cars >= 1, "no car in the grid: pick another seed for this test"
