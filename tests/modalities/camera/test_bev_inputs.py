"""The camera BEV student's numpy inputs: frame files (round trip, errors naming the file), the feeds of a frame
(resize + geometry of the stored image's size), the geometry cache of a fixed rig."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from modalities.bev_labels import BevGridSpec
from modalities.camera.bev_inputs import (
    CameraBevSpec,
    GeometryCache,
    camera_bev_feeds,
    lift_geometry,
    read_frame,
    write_frame,
)
from modalities.errors import DataError

W, H = 160, 90  # stored images
K_SMALL = np.array([[80.0, 0.0, 79.95], [0.0, 80.0, 44.95], [0.0, 0.0, 1.0]])


def _T(yaw_deg: float, center) -> np.ndarray:
    """T_cam_from_lidar of a level camera at ``center`` looking along lidar +y turned by ``yaw_deg`` about z."""
    a = np.deg2rad(yaw_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) @ Rz.T  # camera x right, y down, z forward
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ np.asarray(center, float)
    return T


FRONT = (K_SMALL, _T(0.0, [0.0, 0.0, 1.5]))
BACK = (K_SMALL, _T(180.0, [0.0, -1.0, 1.5]))
GRID = BevGridSpec(x_range_m=(-4.0, 4.0), y_range_m=(-8.0, 8.0), cell_size_m=0.5)
SPEC = CameraBevSpec(("CAM_FRONT", "CAM_BACK"), (32, 64), (-1.0, 0.0), GRID)


def _frame(tmp_path, channels=("CAM_BACK", "CAM_FRONT", "CAM_EXTRA")):
    rng = np.random.default_rng(0)
    entries = []
    for ch in channels:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / f"{ch}.png")
        T = (FRONT if ch != "CAM_BACK" else BACK)[1]
        entries.append((ch, f"{ch}.png", K_SMALL, T))
    return write_frame(tmp_path / "f.frame.json", entries)


def test_frame_round_trip_in_network_order(tmp_path):
    path = _frame(tmp_path)
    cams = read_frame(path, SPEC.cameras)
    assert [c.channel for c in cams] == ["CAM_FRONT", "CAM_BACK"]  # the spec's order; the extra camera is ignored
    assert cams[0].image_path == tmp_path / "CAM_FRONT.png"
    assert np.allclose(cams[1].K, K_SMALL) and np.allclose(cams[1].T_cam_from_lidar, BACK[1])


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("format"), "not a camera frame file"),
    (lambda d: d["cameras"].pop(0), r"missing cameras \['CAM_BACK'\]"),
    (lambda d: d["cameras"][1].update(K=[[1, 0, 0], [0, 1, 0]]), r"cameras\[1\]"),
    (lambda d: d["cameras"][1].pop("image"), r"cameras\[1\].*channel, image"),
    (lambda d: d["cameras"].append(dict(d["cameras"][1])), r"cameras \['CAM_FRONT'\] appear more than once"),
    (lambda d: d["cameras"][0].update(T_cam_from_lidar=[[1, 0], [0, 1]]), "CAM_BACK: T_cam_from_lidar"),
])
def test_bad_frame_files_name_the_file_and_the_problem(tmp_path, edit, match):
    path = _frame(tmp_path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=match) as e:
        read_frame(path, SPEC.cameras)
    assert str(path) in str(e.value)


def test_not_json_and_missing_image(tmp_path):
    bad = tmp_path / "x.frame.json"
    bad.write_text("{nope")
    with pytest.raises(DataError, match="not a JSON camera frame file"):
        read_frame(bad, SPEC.cameras)
    cams = read_frame(_frame(tmp_path), SPEC.cameras)
    (tmp_path / "CAM_BACK.png").unlink()
    with pytest.raises(FileNotFoundError, match="CAM_BACK.png"):
        camera_bev_feeds([c.image_path for c in cams], [(c.K, c.T_cam_from_lidar) for c in cams], SPEC)


def test_feeds_resize_every_image_and_use_the_stored_size_for_the_geometry(tmp_path):
    cams = read_frame(_frame(tmp_path), SPEC.cameras)
    feeds = camera_bev_feeds([c.image_path for c in cams], [(c.K, c.T_cam_from_lidar) for c in cams], SPEC)
    assert feeds["images"].shape == (2, 3, 32, 64) and feeds["images"].dtype == np.float32
    assert 0.0 <= feeds["images"].min() and feeds["images"].max() <= 1.0
    stored = np.asarray(Image.open(tmp_path / "CAM_BACK.png").resize((64, 32), Image.BILINEAR), np.float32) / 255
    assert np.allclose(feeds["images"][1].transpose(1, 2, 0), stored, atol=1e-6)
    grid, valid = lift_geometry([(K_SMALL, FRONT[1], W, H), (K_SMALL, BACK[1], W, H)], GRID, (32, 64), (-1.0, 0.0))
    assert np.array_equal(feeds["sample_grid"], grid) and np.array_equal(feeds["valid"], valid)
    assert valid[0].sum() > 0 and valid[1].sum() > 0  # both cameras see part of the grid


def test_an_unread_camera_is_not_checked_and_a_calibration_of_another_size_is_refused(tmp_path):
    path = _frame(tmp_path)
    doc = json.loads(path.read_text())
    doc["cameras"][2]["K"] = "not a matrix"  # CAM_EXTRA: the model does not read it
    path.write_text(json.dumps(doc))
    cams = read_frame(path, SPEC.cameras)
    with pytest.raises(DataError, match=r"CAM_BACK.png: image is 160 x 90 pixels but its calibration is for 1600 x 900"):
        camera_bev_feeds([c.image_path for c in cams], [(c.K, c.T_cam_from_lidar) for c in cams], SPEC,
                         calibrated_sizes=[(W, H), (1600, 900)])


def test_geometry_cache_reuses_a_fixed_rig_and_recomputes_when_it_moves():
    cache = GeometryCache()
    rig = [(K_SMALL, FRONT[1], W, H), (K_SMALL, BACK[1], W, H)]
    first = cache(rig, GRID, (32, 64), (0.0,))
    assert cache(rig, GRID, (32, 64), (0.0,)) is first
    same_values = [(K.copy(), T.copy(), w, h) for K, T, w, h in rig]  # a new frame file of the same rig
    assert cache(same_values, GRID, (32, 64), (0.0,)) is first
    T = FRONT[1].copy()
    T[0, 3] += 0.5
    second = cache([(K_SMALL, T, W, H), rig[1]], GRID, (32, 64), (0.0,))
    assert second is not first and not np.array_equal(second[0], first[0])
    third = cache(rig, GRID, (32, 64), (0.0,))
    higher = cache(rig, GRID, (32, 64), (0.5,))  # the same rig, another height list: recomputed
    assert higher is not third and not np.array_equal(higher[0], third[0])
