"""Our nuScenes table reader on a tiny synthetic set, and its errors on broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modalities.camera.calibration import invert_transform, pose_matrix
from modalities.nuscenes_tables import NuScenesTables, load_lidarseg, load_points
from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset

CFG = SynthConfig(seed=11, scenes=2, samples_per_scene=2, sweeps_per_sample=0, image_width=64, image_height=36,
                  shadows=False)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_nuscenes")
    generate_dataset(root, CFG)
    return root


@pytest.fixture
def copy_of(tiny_set, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_set, dst)
    return dst


def test_reads_key_frames_in_scene_order(tiny_set):
    tables = NuScenesTables(tiny_set, CFG.version)
    samples = list(tables.samples())
    assert len(samples) == len(tables) == CFG.scenes * CFG.samples_per_scene
    assert [s.scene_token for s in samples][:2] == [samples[0].scene_token] * 2
    assert samples[0].timestamp_us < samples[1].timestamp_us
    for s in samples:
        points = tables.load_points(s)
        assert points.dtype == np.float32 and points.shape[1] == 5
        assert len(tables.load_lidarseg(s)) == len(points)
        views = tables.cameras(s)
        assert len(views) == 6
        for v in views:
            assert v.image_path.exists() and (v.width, v.height) == (64, 36)
            assert v.K.shape == (3, 3) and v.T_cam_from_lidar.shape == (4, 4)


def test_T_cam_from_lidar_uses_each_sensors_ego_pose(tiny_set):
    tables = NuScenesTables(tiny_set, CFG.version)
    s = next(iter(tables.samples()))
    lidar_sd = tables.get("sample_data", s.lidar_sample_data_token)
    view = next(v for v in tables.cameras(s) if v.channel == "CAM_FRONT")
    cam_sd = tables.get("sample_data", view.sample_data_token)
    assert cam_sd["timestamp"] != lidar_sd["timestamp"]

    def T(rec):
        return pose_matrix(rec["translation"], rec["rotation"])

    expected = (invert_transform(T(tables.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])))
                @ invert_transform(T(tables.get("ego_pose", cam_sd["ego_pose_token"])))
                @ T(tables.get("ego_pose", lidar_sd["ego_pose_token"]))
                @ T(tables.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])))
    np.testing.assert_allclose(view.T_cam_from_lidar, expected, atol=1e-9)


def test_missing_and_corrupt_tables_name_the_file(copy_of):
    (copy_of / CFG.version / "ego_pose.json").unlink()
    with pytest.raises(FileNotFoundError, match="ego_pose.json"):
        NuScenesTables(copy_of, CFG.version)
    (copy_of / CFG.version / "ego_pose.json").write_text('[{"token": ')
    with pytest.raises(ValueError, match="ego_pose.json"):
        NuScenesTables(copy_of, CFG.version)
    with pytest.raises(FileNotFoundError, match="v9.9"):
        NuScenesTables(copy_of, "v9.9")


def test_corrupt_points_and_labels_name_the_file(copy_of):
    tables = NuScenesTables(copy_of, CFG.version)
    s = next(iter(tables.samples()))
    points = load_points(s.lidar_path)
    s.lidar_path.write_bytes(points.tobytes()[:-4])
    with pytest.raises(ValueError, match=s.lidar_path.name):
        tables.load_points(s)
    bad = points.copy()
    bad[3, 1] = np.nan
    s.lidar_path.write_bytes(bad.tobytes())
    with pytest.raises(ValueError, match="NaN"):
        tables.load_points(s)
    s.lidar_path.write_bytes(points.tobytes())
    s.lidarseg_path.write_bytes(np.zeros(len(points) - 1, np.uint8).tobytes())
    with pytest.raises(ValueError, match=s.lidarseg_path.name):
        tables.load_lidarseg(s)
    with pytest.raises(ValueError, match="labels for a scan of"):
        load_lidarseg(s.lidarseg_path, len(points))


def test_unknown_token_names_the_table(tiny_set):
    tables = NuScenesTables(tiny_set, CFG.version)
    with pytest.raises(KeyError, match="sample.json"):
        tables.sample("0" * 32)


def test_works_without_lidarseg(copy_of):
    """Without lidarseg.json every sample of sample.json is still listed with its points and cameras; only labels are missing."""
    (copy_of / CFG.version / "lidarseg.json").unlink()
    tables = NuScenesTables(copy_of, CFG.version)
    samples = list(tables.samples())
    listed = json.loads((copy_of / CFG.version / "sample.json").read_text())
    assert sorted(s.token for s in samples) == sorted(r["token"] for r in listed)
    assert len(samples) == CFG.scenes * CFG.samples_per_scene
    for s in samples:
        assert s.lidarseg_path is None
        assert tables.load_points(s).shape[1] == 5 and len(tables.cameras(s)) == 6
        with pytest.raises(FileNotFoundError, match="lidarseg"):
            tables.load_lidarseg(s)
