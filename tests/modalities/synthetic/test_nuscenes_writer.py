"""The synthetic writer produces a nuScenes set the official devkit loads, reproducibly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
from PIL import Image

from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_scene, write_tables
from modalities.synthetic.rig import CAMERA_CHANNELS


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_devkit_loads_the_set(synth_set):
    pytest.importorskip("nuscenes")
    from nuscenes.nuscenes import NuScenes

    root, cfg, summary = synth_set
    nusc = NuScenes(version=cfg.version, dataroot=str(root), verbose=False)
    assert len(nusc.scene) == cfg.scenes
    assert len(nusc.sample) == cfg.scenes * cfg.samples_per_scene
    assert summary["tables"]["sample"] == len(nusc.sample)
    for scene in nusc.scene:
        token, n = scene["first_sample_token"], 0
        while token:
            sample = nusc.get("sample", token)
            assert set(sample["data"]) == {"LIDAR_TOP", *CAMERA_CHANNELS}
            token, n = sample["next"], n + 1
        assert n == scene["nbr_samples"]
    for sample in nusc.sample:
        lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        seg_path = Path(nusc.dataroot) / nusc.get("lidarseg", lidar_sd["token"])["filename"]
        assert seg_path.exists()
        points = np.fromfile(nusc.get_sample_data_path(lidar_sd["token"]), dtype=np.float32).reshape(-1, 5)
        labels = np.fromfile(seg_path, dtype=np.uint8)
        assert len(labels) == len(points) > 10_000
        assert set(np.unique(labels)) <= set(nusc.lidarseg_idx2name_mapping)
        assert np.all(points[:, 4] >= 0) and np.all(points[:, 4] < 32)  # ring index of an hdl32e
        # sweeps: the configured number of non-key sweeps before each key frame
        prev, sweeps = lidar_sd["prev"], 0
        while prev and not nusc.get("sample_data", prev)["is_key_frame"]:
            assert nusc.get("sample_data", prev)["filename"].startswith("sweeps/LIDAR_TOP/")
            prev, sweeps = nusc.get("sample_data", prev)["prev"], sweeps + 1
        assert sweeps == cfg.sweeps_per_sample
        for channel in CAMERA_CHANNELS:
            cam = nusc.get("sample_data", sample["data"][channel])
            with Image.open(nusc.get_sample_data_path(cam["token"])) as im:
                assert im.size == (cfg.image_width, cfg.image_height)
    # boxes: the devkit turns our annotations into boxes, with points inside for most
    assert len(nusc.sample_annotation) > 0
    names = {a["category_name"] for a in nusc.sample_annotation}
    assert "vehicle.car" in names
    _, boxes, _ = nusc.get_sample_data(nusc.sample[0]["data"]["LIDAR_TOP"])
    assert boxes
    # devkit lidarseg statistics run over our labels
    nusc.list_lidarseg_categories(sort_by="count")


def test_groundtruth_layout(synth_set):
    root, cfg, _ = synth_set
    classes = json.loads((root / "groundtruth" / "classes.json").read_text())["classes"]
    assert classes["17"]["name"] == "vehicle.car" and classes["255"]["name"] == "sky"
    for channel in CAMERA_CHANNELS:
        images = sorted((root / "samples" / channel).glob("*.jpg"))
        assert len(images) == cfg.samples_per_scene
        for img in images:
            sem = np.asarray(Image.open(root / "groundtruth" / channel / f"{img.stem}_semantic.png"))
            depth = np.load(root / "groundtruth" / channel / f"{img.stem}_depth.npy")
            assert sem.dtype == np.uint8 and sem.shape == (cfg.image_height, cfg.image_width)
            assert depth.dtype == np.float32 and depth.shape == sem.shape
            assert np.all((depth == 0) == (sem == 255))  # sky: no depth
            assert set(np.unique(sem)) <= {int(k) for k in classes}


def test_byte_identical_and_seed_dependent(synth_set, tmp_path):
    root, cfg, _ = synth_set
    again = tmp_path / "again"
    records = [generate_scene(again, cfg, 0)]
    write_tables(again, cfg, records)
    first, second = _hashes(root), _hashes(again)
    assert first == second
    assert not any(".tmp-" in name for name in first)

    other_cfg = SynthConfig(**{**cfg.model_dump(), "seed": cfg.seed + 1, "samples_per_scene": 1, "sweeps_per_sample": 0})
    other = tmp_path / "other"
    write_tables(other, other_cfg, [generate_scene(other, other_cfg, 0)])
    other_hashes = _hashes(other)
    lidar = lambda h: sorted(v for k, v in h.items() if k.startswith("samples/LIDAR_TOP"))  # noqa: E731
    assert set(lidar(other_hashes)).isdisjoint(lidar(first))
    assert other_hashes[f"{cfg.version}/sample.json"] != first[f"{cfg.version}/sample.json"]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"image_width": 8}, "image_width"),
        ({"scenes": 0}, "scenes"),
        ({"lidar_sensor": "no_such_lidar"}, "lidar_sensor"),
        ({"sweeps_per_sample": -1}, "sweeps_per_sample"),
        ({"version": "../escape"}, "version"),
        ({"ego_speed_mps": (9.0, 2.0)}, "ego_speed_mps"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_name_the_field(bad, field):
    with pytest.raises(pydantic.ValidationError) as info:
        SynthConfig(**bad)
    assert field in str(info.value)
