import numpy as np
import pytest

from pipelines.slidr.augment import (
    CropBox, choose_crop, crop_pixels, drop_cuboid_mask, random_resized_crop_box, rotate_flip_z,
)


def test_rotation_keeps_ranges_and_heights():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)).astype(np.float32)
    out = rotate_flip_z(pts, rng)
    np.testing.assert_allclose(np.linalg.norm(out[:, :2], axis=1), np.linalg.norm(pts[:, :2], axis=1), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2], pts[:, 2])
    assert not np.shares_memory(out, pts)


@pytest.mark.parametrize("seed", range(20))
def test_crop_box_within_image_and_ratio(seed):
    rng = np.random.default_rng(seed)
    box = random_resized_crop_box(rng, (900, 1600))
    assert 0 <= box.top and box.top + box.height <= 900 and 0 <= box.left and box.left + box.width <= 1600
    assert 14 / 9 - 0.02 <= box.width / box.height <= 17 / 9 + 0.02
    assert 0.3 * 900 * 1600 * 0.97 <= box.width * box.height


def test_crop_pixels_matches_resizing_an_index_image():
    """Oracle: crop+resize an image whose pixels store their own coordinates (nearest)."""
    from PIL import Image

    H, W, out_hw = 90, 160, (48, 80)
    rows, cols = np.mgrid[0:H, 0:W]
    coord = (rows * W + cols).astype(np.int32)
    box = CropBox(top=10, left=30, height=60, width=100)
    resized = np.asarray(Image.fromarray(coord).resize((out_hw[1], out_hw[0]), Image.NEAREST,
                                                      box=(box.left, box.top, box.left + box.width, box.top + box.height)))
    rng = np.random.default_rng(0)
    pix = np.stack([rng.integers(0, H, 2000), rng.integers(0, W, 2000)], 1)
    rc, inside = crop_pixels(pix, box, out_hw)
    assert inside.any() and (~inside).any()
    src = resized[rc[inside, 0], rc[inside, 1]]
    src_r, src_c = src // W, src % W
    # Each mapped pixel lands on the output pixel whose source is at most ~1 output pixel away.
    scale = max(box.height / out_hw[0], box.width / out_hw[1])
    assert np.abs(src_r - pix[inside, 0]).max() <= scale + 1
    assert np.abs(src_c - pix[inside, 1]).max() <= scale + 1


def test_choose_crop_retries_until_enough_pairs():
    rng = np.random.default_rng(1)
    pix = np.stack([rng.integers(800, 900, 3000), rng.integers(0, 100, 3000)], 1)  # a bottom-left cluster
    box, rc, inside, accepted = choose_crop(rng, (900, 1600), pix, (224, 416), min_pairs=1024)
    assert accepted and inside.sum() > 1024


def test_choose_crop_reports_when_it_cannot_succeed():
    rng = np.random.default_rng(2)
    pix = np.array([[0, 0], [899, 1599]])  # opposite corners: never > 75 % in one crop... unless full
    _, _, inside, accepted = choose_crop(rng, (900, 1600), pix, (224, 416), min_pairs=1024, max_tries=3,
                                         scale=(0.3, 0.31))
    assert not accepted and inside.sum() <= 1


def test_drop_cuboid_removes_a_box_or_nothing():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-50, 50, size=(20000, 3))
    pair_point = np.arange(0, 20000, 2)
    pair_cam = pair_point % 6
    for _ in range(10):
        keep = drop_cuboid_mask(pts, pair_point, pair_cam, 6, rng, min_pairs_per_camera=10)
        dropped = pts[~keep]
        if len(dropped):
            lo, hi = dropped.min(0), dropped.max(0)
            inside_box = np.all((pts >= lo) & (pts <= hi), axis=1)
            assert not keep[inside_box].any()  # everything in the dropped box is gone
    # Cancelled when a camera would lose too many pairs.
    keep = drop_cuboid_mask(pts, pair_point, pair_cam, 6, rng, min_pairs_per_camera=10**6)
    assert keep.all()
