"""The runtime's numpy pre-processing against oracles that do not call it: loops, and values computed by hand.

Training's ``build_range_input`` (torch) is a thin wrapper of the same numpy function, so
comparing the two only checks the wrapper; it is kept as such, next to the oracles.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploy.preprocess import UNKNOWN_LABEL, point_labels, range_image_input, sensor_from_dict
from modalities.lidar.range_net import DEFAULT_CHANNEL_STATS, RANGE_CHANNELS, build_range_input
from modalities.lidar.sensors import load_sensor
from tests.modalities.lidar.test_range_view import _loop_project


def _stats(channels):
    return [DEFAULT_CHANNEL_STATS[c][0] for c in channels], [DEFAULT_CHANNEL_STATS[c][1] for c in channels]


def _loop_pixel(x, y, z, sensor):
    """Oracle: (row, col) of one point, None without a pixel (out of range, or farther than half the widest beam gap from every beam)."""
    el = sensor.elevations_deg()
    r = math.sqrt(x * x + y * y + z * z)
    if not (sensor.min_range_m <= r <= sensor.max_range_m):
        return None
    e = math.degrees(math.asin(z / r))
    beam = min(range(sensor.beams), key=lambda b: (abs(e - el[b]), b))  # nearest beam, ties to the lower one
    if abs(e - el[beam]) > 0.5 * max(np.diff(el)):
        return None
    col = int(math.floor((math.atan2(y, x) + math.pi) / (2 * math.pi) * sensor.columns)) % sensor.columns
    return sensor.beams - 1 - beam, col


def _oracle_input(points, sensor, channels, width_multiple, height_multiple):
    """(image, rows, cols, valid) by loops: pixel winners from test_range_view's loop projection, values by hand."""
    means, stds = _stats(channels)
    _, winner = _loop_project(points[:, :3].astype(np.float64), sensor)
    H = -(-sensor.beams // height_multiple) * height_multiple
    W = -(-sensor.columns // width_multiple) * width_multiple
    image = np.zeros((len(channels), H, W), np.float64)  # empty and padded pixels: 0 in every channel
    for r, c in zip(*np.nonzero(winner >= 0)):
        x, y, z, intensity = (float(v) for v in points[winner[r, c], :4])
        values = {"range": math.sqrt(x * x + y * y + z * z), "x": x, "y": y, "z": z, "intensity": intensity, "mask": 1.0}
        for k, name in enumerate(channels):
            image[k, r, c] = (values[name] - means[k]) / stds[k]
    pixels = [_loop_pixel(*map(float, p[:3]), sensor) for p in points]
    rows = np.array([-1 if p is None else p[0] for p in pixels])
    cols = np.array([-1 if p is None else p[1] for p in pixels])
    return image, rows, cols, rows >= 0


def _check_against_oracle(got, points, sensor, channels, width_multiple, height_multiple):
    image, rows, cols, valid = _oracle_input(points, sensor, channels, width_multiple, height_multiple)
    assert got.image.dtype == np.float32 and got.image.shape == image.shape
    np.testing.assert_allclose(got.image, image, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.rows, rows)
    np.testing.assert_array_equal(got.cols, cols)
    np.testing.assert_array_equal(got.valid, valid)
    return valid


@pytest.mark.parametrize("channels", [RANGE_CHANNELS, ("x", "intensity", "range")])
def test_range_image_input_matches_loop_oracle_on_real_scan(heldout_points, channels):
    sensor = load_sensor("vlp16")
    pts = np.concatenate([heldout_points[:, :3], heldout_points[:, 3:4] / 255.0], 1)
    means, stds = _stats(channels)
    got = range_image_input(pts, sensor, channels, means, stds, width_multiple=16, height_multiple=4)
    _check_against_oracle(got, pts, sensor, channels, 16, 4)
    assert got.image.shape == (len(channels), 16, 1808)
    # The training wrapper (torch) returns the same arrays, bit for bit.
    ref_img, ref_row, ref_col, ref_valid = build_range_input(pts, sensor, channels, width_multiple=16, height_multiple=4)
    np.testing.assert_array_equal(got.image, ref_img.numpy())
    np.testing.assert_array_equal(got.rows, ref_row.numpy())
    np.testing.assert_array_equal(got.cols, ref_col.numpy())
    np.testing.assert_array_equal(got.valid, ref_valid.numpy())


def test_range_image_input_matches_loop_oracle_on_random_points_with_invalid_ones():
    """Many points per pixel (the closest wins), points without a pixel, on another sensor."""
    rng = np.random.default_rng(1)
    sensor = load_sensor("hdl32e")
    pts = np.concatenate([rng.uniform(-80, 80, (3000, 2)), rng.uniform(-3, 3, (3000, 1)), rng.uniform(0, 1, (3000, 1))], 1)
    pts[:10, :3] = 0.0  # inside min range: no pixel
    pts[10:20, 2] = 60.0  # far above every beam: no pixel
    means, stds = _stats(RANGE_CHANNELS)
    got = range_image_input(pts, sensor, RANGE_CHANNELS, means, stds, 16, 1)
    valid = _check_against_oracle(got, pts, sensor, RANGE_CHANNELS, 16, 1)
    assert not got.valid[:20].any() and valid[20:].sum() > 1000
    pix = got.rows[valid] * sensor.columns + got.cols[valid]
    assert len(np.unique(pix)) < len(pix)  # some pixels do have several points
    ref = build_range_input(pts, sensor)  # the training wrapper
    np.testing.assert_array_equal(got.image, ref[0].numpy())
    np.testing.assert_array_equal(got.valid, ref[3].numpy())


def test_pixels_and_normalised_values_computed_by_hand():
    """vlp16: beams at -15, -13, ..., 15 deg (beam b -> row 15 - b), 1800 columns, 0.5..100 m; padded to 1808 columns."""
    sensor = load_sensor("vlp16")

    def point(range_m, elevation_deg, column, intensity):
        az = -math.pi + (column + 0.5) * 2 * math.pi / 1800  # the column's centre
        el = math.radians(elevation_deg)
        return [range_m * math.cos(el) * math.cos(az), range_m * math.cos(el) * math.sin(az), range_m * math.sin(el), intensity]

    pts = np.array([
        point(10.0, -1.0, 900, 0.5),   # beam 7 -> row 8, column 900
        point(20.0, 15.0, 0, 0.25),    # beam 15 -> row 0, column 0
        point(12.0, -1.0, 900, 0.9),   # same pixel as the first, farther: loses it, still has a pixel
        point(0.3, 0.0, 10, 0.1),      # closer than 0.5 m: no pixel
        point(10.0, 40.0, 10, 0.1),    # 25 deg above the top beam: no pixel
        point(150.0, 1.0, 10, 0.1),    # beyond 100 m: no pixel
        point(5.0, -15.2, 1799, 0.0),  # beam 0 -> row 15, last column
        point(8.0, 0.0, 450, 0.7),     # between beams 7 (-1) and 8 (+1): the lower one, row 8
    ], np.float32)
    got = range_image_input(pts, sensor, RANGE_CHANNELS, *_stats(RANGE_CHANNELS), width_multiple=16, height_multiple=4)
    assert got.rows.tolist() == [8, 0, 8, -1, -1, -1, 15, 8]
    assert got.cols.tolist() == [900, 0, 900, -1, -1, -1, 1799, 450]
    assert got.valid.tolist() == [True, True, True, False, False, False, True, True]
    assert got.image.shape == (6, 16, 1808)
    # range, x, y, z, intensity, mask: (v - mean) / std with the KITTI constants; mask 1.
    stats = {name: DEFAULT_CHANNEL_STATS[name] for name in RANGE_CHANNELS}
    for i, r, c, range_m in ((0, 8, 900, 10.0), (1, 0, 0, 20.0), (6, 15, 1799, 5.0), (7, 8, 450, 8.0)):
        x, y, z, intensity = pts[i].astype(np.float64)
        values = (range_m, x, y, z, intensity, 1.0)
        want = [(v - stats[n][0]) / stats[n][1] for n, v in zip(RANGE_CHANNELS, values)]
        np.testing.assert_allclose(got.image[:, r, c], want, rtol=1e-5, atol=1e-6)
    assert got.image[:, 8, 900][RANGE_CHANNELS.index("intensity")] == pytest.approx((0.5 - 0.21) / 0.16, rel=1e-6)
    assert np.count_nonzero(got.image.any(axis=0)) == 4  # every other pixel (and the padding) is 0


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
