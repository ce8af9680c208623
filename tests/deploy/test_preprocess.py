"""The numpy pre-processing of the runtime equals the training pre-processing (torch), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.preprocess import UNKNOWN_LABEL, point_labels, range_image_input, sensor_from_dict
from modalities.lidar.range_net import DEFAULT_CHANNEL_STATS, RANGE_CHANNELS, build_range_input
from modalities.lidar.sensors import load_sensor


def _stats(channels):
    return [DEFAULT_CHANNEL_STATS[c][0] for c in channels], [DEFAULT_CHANNEL_STATS[c][1] for c in channels]


@pytest.mark.parametrize("channels", [RANGE_CHANNELS, ("x", "intensity", "range")])
def test_numpy_matches_torch_build_range_input_on_real_scan(heldout_points, channels):
    sensor = load_sensor("vlp16")
    pts = np.concatenate([heldout_points[:, :3], heldout_points[:, 3:4] / 255.0], 1)
    means, stds = _stats(channels)
    ref_img, ref_row, ref_col, ref_valid = build_range_input(pts, sensor, channels, width_multiple=16, height_multiple=4)
    got = range_image_input(pts, sensor, channels, means, stds, width_multiple=16, height_multiple=4)
    np.testing.assert_array_equal(got.image, ref_img.numpy())
    np.testing.assert_array_equal(got.rows, ref_row.numpy())
    np.testing.assert_array_equal(got.cols, ref_col.numpy())
    np.testing.assert_array_equal(got.valid, ref_valid.numpy())
    assert got.image.dtype == np.float32 and got.image.shape == (len(channels), 16, 1808)


def test_numpy_matches_torch_on_random_points_with_invalid_ones():
    rng = np.random.default_rng(1)
    sensor = load_sensor("hdl32e")
    pts = np.concatenate([rng.uniform(-80, 80, (3000, 2)), rng.uniform(-3, 3, (3000, 1)), rng.uniform(0, 1, (3000, 1))], 1)
    pts[:10, :3] = 0.0  # inside min range: no pixel
    pts[10:20, 2] = 60.0  # far above every beam: no pixel
    means, stds = _stats(RANGE_CHANNELS)
    ref = build_range_input(pts, sensor)
    got = range_image_input(pts, sensor, RANGE_CHANNELS, means, stds, 16, 1)
    np.testing.assert_array_equal(got.image, ref[0].numpy())
    np.testing.assert_array_equal(got.valid, ref[3].numpy())
    assert not got.valid[:20].any()


def test_point_labels_gathers_argmax_and_marks_pixelless_points_unknown():
    logits = np.zeros((3, 2, 4), np.float32)
    logits[2, 0, 1] = 1.0
    logits[1, 1, 3] = 1.0
    rows, cols = np.array([0, 1, -1]), np.array([1, 3, -1])
    valid = np.array([True, True, False])
    np.testing.assert_array_equal(point_labels(logits, rows, cols, valid), [2, 1, UNKNOWN_LABEL])


def test_sensor_from_json_dict_round_trips():
    s = load_sensor("hdl32e")
    import json

    assert sensor_from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_rejects_points_without_intensity():
    with pytest.raises(ValueError, match="expected \\(N, >=4\\)"):
        range_image_input(np.zeros((5, 3)), load_sensor("vlp16"), ["x"], [0.0], [1.0], 16, 1)
