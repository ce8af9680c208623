import numpy as np
import pytest
import torch

from modalities.camera.superpixels import load_superpixels, save_superpixels
from modalities.errors import DataError
from modalities.lidar.range_spec import range_spec_for_student
from modalities.lidar.range_view import RANGE_CHANNELS
from modalities.lidar.sensors import load_sensor
from pipelines.slidr.config import AugmentConfig, DistillConfig
from pipelines.slidr.data import Collate, SlidrDataset, list_scans, scan_pairs, split_by_scene
from pipelines.slidr.model import build_image_teacher, build_student
from pipelines.slidr.step import distill_loss
from pipelines.student_inputs import PointFeatureNet

BUDGET, VERSION = 256, "v1.0-synthetic"  # as in conftest.py

AUG = AugmentConfig(crop_hw=(96, 176), min_pairs_per_image=64)


def test_pairs_project_inside_images(slidr_set):
    root, sp_dir = slidr_set
    scan = list_scans(root, VERSION, sp_dir)[0]
    pts = np.fromfile(scan.lidar_path, dtype=np.float32).reshape(-1, 5)
    pp, pc, rc = scan_pairs(pts[:, :3], scan.cameras)
    assert len(pp) > 1000 and set(np.unique(pc)) == set(range(6))
    for c, cam in enumerate(scan.cameras):
        sel = rc[pc == c]
        assert sel[:, 0].min() >= 0 and sel[:, 0].max() < cam.height
        assert sel[:, 1].min() >= 0 and sel[:, 1].max() < cam.width


def test_split_holds_out_whole_scenes(slidr_set):
    scans = list_scans(slidr_set[0], VERSION, None)
    train, held = split_by_scene(scans, 1)
    assert len(train) == len(held) == 2
    assert not {s.scene_token for s in train} & {s.scene_token for s in held}
    with pytest.raises(ValueError, match="holdout_scenes=2 leaves no training scene"):
        split_by_scene(scans, 2)


def test_item_pairs_follow_the_crop(slidr_set, monkeypatch):
    """On every item, a pair's pixel in the crop carries the superpixel of its pixel in the full image.

    Cuboid dropping stays on: the keep mask of each item is recorded, and item point i is
    original point ``flatnonzero(keep)[i]``, so the re-indexing of the pairs is checked too.
    """
    import pipelines.slidr.data as data

    keeps, real_drop_cuboid_mask = [], data.drop_cuboid_mask

    def recording_drop_cuboid_mask(*args, **kwargs):
        keeps.append(real_drop_cuboid_mask(*args, **kwargs))
        return keeps[-1]

    monkeypatch.setattr(data, "drop_cuboid_mask", recording_drop_cuboid_mask)
    root, sp_dir = slidr_set
    scans = list_scans(root, VERSION, sp_dir)
    ds = SlidrDataset(scans, AUG, BUDGET, seed=0)
    for index, scan in enumerate(scans):
        item = ds[index]
        keep = keeps[index]
        original = np.flatnonzero(keep)  # item point -> original point
        pts = np.fromfile(scan.lidar_path, dtype=np.float32).reshape(-1, 5)
        assert item.images.shape == (6, 96, 176, 3) and item.superpixels.shape == (6, 96, 176)
        assert 0 < len(item.pair_point) and item.pair_point.max() < len(item.points_xyz)
        # The kept points, rotated about z and flipped: z as it was, ranges in the x-y plane kept.
        assert len(item.points_xyz) == len(original)
        np.testing.assert_array_equal(item.points_xyz[:, 2], pts[original, 2])
        np.testing.assert_allclose(np.linalg.norm(item.points_xyz[:, :2], axis=1),
                                   np.linalg.norm(pts[original, :2], axis=1), rtol=1e-5, atol=1e-5)
        # Superpixel at the crop pixel == superpixel at the original pixel, for most pairs of
        # every camera (nearest resizing can move a boundary by one pixel).
        full_pp, full_pc, full_rc = scan_pairs(pts[:, :3], scan.cameras)
        for c in range(6):
            sp_full = load_superpixels(scan.superpixel_paths[c], BUDGET)
            sel = item.pair_camera == c
            assert sel.sum() > 0, (index, c)
            crop_ids = item.superpixels[c][item.pair_rc[sel, 0], item.pair_rc[sel, 1]]
            lookup = {p: tuple(rc) for p, cc, rc in zip(full_pp, full_pc, full_rc) if cc == c}
            points = original[item.pair_point[sel]]
            unpaired = [p for p in points if p not in lookup]
            assert not unpaired, f"item {index} camera {c}: points not paired with it in the full image: {unpaired[:5]}"
            orig_ids = np.array([sp_full[lookup[p]] for p in points])
            assert np.mean(crop_ids == orig_ids) > 0.9, (index, c, np.mean(crop_ids == orig_ids))
    assert len(keeps) == len(scans) and any(not k.all() for k in keeps)  # cuboids were dropped


def test_same_seed_same_item_and_epoch_changes_it(slidr_set):
    root, sp_dir = slidr_set
    scans = list_scans(root, VERSION, sp_dir)
    a, b = SlidrDataset(scans, AUG, BUDGET, seed=0)[1], SlidrDataset(scans, AUG, BUDGET, seed=0)[1]
    np.testing.assert_array_equal(a.pair_rc, b.pair_rc)
    ds = SlidrDataset(scans, AUG, BUDGET, seed=0)
    ds.set_epoch(1)
    assert not np.array_equal(ds[1].images, a.images)


@pytest.mark.parametrize("student", ["sparse_unet", "range_net"])
def test_collate_global_ids_and_loss_falls(slidr_set, student):
    root, sp_dir = slidr_set
    train, _ = split_by_scene(list_scans(root, VERSION, sp_dir), 1)
    ds = SlidrDataset(train, AUG, BUDGET, seed=0)
    spec = range_spec_for_student((4, 16), RANGE_CHANNELS, load_sensor("hdl32e"))
    collate = Collate(student, BUDGET, range_spec=spec)
    batch = collate([ds[0], ds[1], None])
    assert batch.stats["skipped_no_pairs"] == 1 and batch.stats["scans"] == 2
    assert batch.superpixels.max() < batch.num_superpixels == 2 * 6 * BUDGET
    # Ids of image i live in [i * budget, (i + 1) * budget): images never share a superpixel.
    for i in range(12):
        ids = batch.superpixels[i]
        assert ids.min() >= i * BUDGET and ids.max() < (i + 1) * BUDGET
    cfg = DistillConfig(dataset="driving", superpixels="superpixels", student=student,
                        sparse_unet={"planes": [8, 16, 16, 16, 16, 16, 16, 16], "layers": [1] * 8},
                        range_net={"base_channels": 8, "channels": RANGE_CHANNELS})  # the spec's channels above
    torch.manual_seed(0)
    model, teacher = build_student(cfg), build_image_teacher(cfg.teacher, cfg.out_dim)
    opt = torch.optim.Adam(list(model.parameters()) + list(teacher.head.parameters()), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = distill_loss(PointFeatureNet(model), teacher, batch, cfg.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


def test_superpixel_file_over_budget_is_an_error_naming_it(slidr_set, tmp_path):
    root, sp_dir = slidr_set
    scans = list_scans(root, VERSION, sp_dir)
    bad = scans[0].superpixel_paths[2]
    ids = load_superpixels(bad, BUDGET)
    original = bad.read_bytes()
    try:
        save_superpixels(bad, np.where(ids == 0, 300, ids))  # an id at/over the budget
        with pytest.raises(DataError, match=bad.name):
            SlidrDataset(scans, AUG, BUDGET, seed=0)[0]
    finally:
        bad.write_bytes(original)


def test_missing_superpixel_file_is_an_error(slidr_set, tmp_path):
    root, _ = slidr_set
    scans = list_scans(root, VERSION, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SlidrDataset(scans, AUG, BUDGET, seed=0)[0]
