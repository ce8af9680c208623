"""The range-image pre-processing the robot runs, against oracles that do not call it.

``RangeImageSpec`` (numpy, torch-free) is what training, evaluation and the deploy adapter
all call. It is checked here against loops and values computed by hand (intensities
divided by 255 by hand, from the raw float32 records of the file), and the deploy
adapter of an exported bundle is checked to feed the engine exactly what training feeds
the student (``pipelines.evaluate.probe``: ``load_labeled_scans`` + ``make_student_input``).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deploy.bundle import load_bundle
from deploy.tasks import adapter_for
from deploy.tasks.point_segmentation import UNKNOWN_LABEL, point_labels
from modalities.lidar.io import read_points
from modalities.lidar.range_spec import RangeImageSpec
from modalities.lidar.range_view import DEFAULT_CHANNEL_STATS, RANGE_CHANNELS
from modalities.lidar.sensors import load_sensor

MODEL = "slidr_range_50pct"


def _stats(channels):
    return [DEFAULT_CHANNEL_STATS[c][0] for c in channels], [DEFAULT_CHANNEL_STATS[c][1] for c in channels]


def _loop_pixel(x, y, z, sensor, ring=None):
    """Oracle: (row, col) of one point, None without a pixel.

    Without a ring: out of range, or farther than half the widest beam gap from every beam
    (nearest beam, ties to the lower one). With a ring: the ring's beam (0 = lowest), only
    the range limits apply.
    """
    el = sensor.elevations_deg()
    r = math.sqrt(x * x + y * y + z * z)
    if not (sensor.min_range_m <= r <= sensor.max_range_m):
        return None
    if ring is None:
        e = math.degrees(math.asin(z / r))
        beam = min(range(sensor.beams), key=lambda b: (abs(e - el[b]), b))
        if abs(e - el[beam]) > 0.5 * max(np.diff(el)):
            return None
    else:
        beam = int(ring)
    col = int(math.floor((math.atan2(y, x) + math.pi) / (2 * math.pi) * sensor.columns)) % sensor.columns
    return sensor.beams - 1 - beam, col


def _oracle_input(points, sensor, channels, width_multiple, height_multiple, ring=None):
    """(image, rows, cols, valid) by loops: per pixel the closest point (ties: lower index), values by hand."""
    means, stds = _stats(channels)
    rings = [None] * len(points) if ring is None else list(ring)
    pixels = [_loop_pixel(*map(float, p[:3]), sensor, rg) for p, rg in zip(points, rings)]
    best = {}
    for i, (p, pix) in enumerate(zip(points, pixels)):
        if pix is not None:
            r = math.sqrt(sum(float(v) ** 2 for v in p[:3]))
            if pix not in best or (r, i) < best[pix]:
                best[pix] = (r, i)
    H = -(-sensor.beams // height_multiple) * height_multiple
    W = -(-sensor.columns // width_multiple) * width_multiple
    image = np.zeros((len(channels), H, W), np.float64)  # empty and padded pixels: 0 in every channel
    for (row, col), (_, i) in best.items():
        x, y, z, intensity = (float(v) for v in points[i, :4])
        values = {"range": math.sqrt(x * x + y * y + z * z), "x": x, "y": y, "z": z, "intensity": intensity, "mask": 1.0}
        for k, name in enumerate(channels):
            image[k, row, col] = (values[name] - means[k]) / stds[k]
    rows = np.array([-1 if p is None else p[0] for p in pixels])
    cols = np.array([-1 if p is None else p[1] for p in pixels])
    return image, rows, cols, rows >= 0


def _check_against_oracle(got, points, sensor, channels, width_multiple, height_multiple, ring=None):
    image, rows, cols, valid = _oracle_input(points, sensor, channels, width_multiple, height_multiple, ring)
    assert got.image.dtype == np.float32 and got.image.shape == image.shape
    np.testing.assert_allclose(got.image, image, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.rows, rows)
    np.testing.assert_array_equal(got.cols, cols)
    np.testing.assert_array_equal(got.valid, valid)
    return valid


@pytest.fixture(scope="module")
def heldout_file(tiny_run) -> Path:
    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    return Path(side["heldout_scans"][0]["lidar"])


@pytest.mark.parametrize("channels", [RANGE_CHANNELS, ("x", "intensity", "range")])
@pytest.mark.parametrize("beam_source", ["ring_if_present", "elevation"])
def test_spec_of_a_scan_file_matches_loop_oracle(heldout_file, channels, beam_source):
    """read_points + from_cloud of a nuScenes .pcd.bin = the loop oracle on its raw records, intensity / 255 by hand."""
    sensor = load_sensor("vlp16")
    raw = np.fromfile(heldout_file, np.float32).reshape(-1, 5)  # x y z intensity(0..255) ring
    assert raw[:, 3].max() > 1.0  # a real 0..255 intensity column, so a missing / wrong scale shows
    pts = np.concatenate([raw[:, :3], raw[:, 3:4] / 255.0], 1)
    spec = RangeImageSpec(sensor=sensor, channels=channels, width_multiple=16, height_multiple=4, beam_source=beam_source)
    got = spec.from_cloud(read_points(heldout_file))
    ring = raw[:, 4].astype(np.int64) if beam_source == "ring_if_present" else None
    _check_against_oracle(got, pts, sensor, channels, 16, 4, ring)
    assert got.image.shape == (len(channels), 16, 1808)


def test_spec_matches_loop_oracle_on_random_points_with_invalid_ones():
    """Many points per pixel (the closest wins), points without a pixel, on another sensor."""
    rng = np.random.default_rng(1)
    sensor = load_sensor("hdl32e")
    pts = np.concatenate([rng.uniform(-80, 80, (3000, 2)), rng.uniform(-3, 3, (3000, 1)), rng.uniform(0, 1, (3000, 1))], 1)
    pts[:10, :3] = 0.0  # inside min range: no pixel
    pts[10:20, 2] = 60.0  # far above every beam: no pixel
    got = RangeImageSpec(sensor=sensor)(pts[:, :3], pts[:, 3])
    valid = _check_against_oracle(got, pts, sensor, RANGE_CHANNELS, 16, 1)
    assert not got.valid[:20].any() and valid[20:].sum() > 1000
    pix = got.rows[valid] * sensor.columns + got.cols[valid]
    assert len(np.unique(pix)) < len(pix)  # some pixels do have several points


def _point(range_m, elevation_deg, column, intensity):
    az = -math.pi + (column + 0.5) * 2 * math.pi / 1800  # the column's centre (vlp16: 1800 columns)
    el = math.radians(elevation_deg)
    return [range_m * math.cos(el) * math.cos(az), range_m * math.cos(el) * math.sin(az), range_m * math.sin(el), intensity]


def test_pixels_and_normalised_values_computed_by_hand():
    """vlp16: beams at -15, -13, ..., 15 deg (beam b -> row 15 - b), 1800 columns, 0.5..100 m; padded to 1808 columns."""
    sensor = load_sensor("vlp16")
    pts = np.array([
        _point(10.0, -1.0, 900, 0.5),   # beam 7 -> row 8, column 900
        _point(20.0, 15.0, 0, 0.25),    # beam 15 -> row 0, column 0
        _point(12.0, -1.0, 900, 0.9),   # same pixel as the first, farther: loses it, still has a pixel
        _point(0.3, 0.0, 10, 0.1),      # closer than 0.5 m: no pixel
        _point(10.0, 40.0, 10, 0.1),    # 25 deg above the top beam: no pixel
        _point(150.0, 1.0, 10, 0.1),    # beyond 100 m: no pixel
        _point(5.0, -15.2, 1799, 0.0),  # beam 0 -> row 15, last column
        _point(8.0, 0.0, 450, 0.7),     # between beams 7 (-1) and 8 (+1): the lower one, row 8
    ], np.float32)
    spec = RangeImageSpec(sensor=sensor, width_multiple=16, height_multiple=4)
    assert spec.image_shape == (6, 16, 1808)
    got = spec(pts[:, :3], pts[:, 3])
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


def test_ring_column_places_points_by_hand():
    """A ring in [0, beams) names the beam (row 15 - ring) whatever the elevation; otherwise the elevation decides."""
    sensor = load_sensor("vlp16")
    pts = np.array([_point(10.0, -1.0, 900, 0.5),    # elevation: beam 7 (row 8); ring 3 -> row 12
                    _point(10.0, 40.0, 10, 0.1),     # far above every beam, but the ring says beam 15 -> row 0
                    _point(0.3, 0.0, 20, 0.1)],      # too close: no pixel, ring or not
                   np.float32)
    ring = np.array([3, 15, 5])
    got = RangeImageSpec(sensor=sensor)(pts[:, :3], pts[:, 3], ring)
    assert got.rows.tolist() == [12, 0, -1] and got.cols.tolist() == [900, 10, -1]
    by_elevation = RangeImageSpec(sensor=sensor, beam_source="elevation")(pts[:, :3], pts[:, 3], ring)
    assert by_elevation.rows.tolist() == [8, -1, -1]
    # A ring that cannot describe this sensor (a 32-beam file's) is ignored: elevation.
    foreign = RangeImageSpec(sensor=sensor)(pts[:, :3], pts[:, 3], np.array([3, 31, 5]))
    assert foreign.rows.tolist() == [8, -1, -1]


def test_kitti_and_nuscenes_files_of_the_same_points_give_the_same_input(heldout_file, tmp_path):
    """Intensity is divided by the FORMAT's full scale: a KITTI .bin (0..1) and a nuScenes .pcd.bin (0..255) agree."""
    raw = np.fromfile(heldout_file, np.float32).reshape(-1, 5)
    kitti = tmp_path / "scan.bin"
    np.concatenate([raw[:, :3], raw[:, 3:4] / 255.0], 1).astype(np.float32).tofile(kitti)
    spec = RangeImageSpec(sensor=load_sensor("vlp16"), width_multiple=16, height_multiple=4, beam_source="elevation")
    a, b = spec.from_cloud(read_points(heldout_file)), spec.from_cloud(read_points(kitti))
    np.testing.assert_allclose(a.image, b.image, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.valid, b.valid)
    # A nuScenes scan saved under a KITTI name is an error naming the file, not a silent x255 input.
    wrong = tmp_path / "nuscenes_as_kitti.bin"
    raw[:, :4].copy().tofile(wrong)
    with pytest.raises(ValueError, match=r"nuscenes_as_kitti\.bin.*outside this format's scale"):
        spec.from_cloud(read_points(wrong))


def test_bundle_adapter_feeds_the_engine_what_training_feeds_the_student(exported_bundle, tiny_run):
    """The adapter (spec read back from metadata.json, the bundle's own copy of the scan) = training's input.

    Training side: the evaluate stage's loader and batcher (``load_labeled_scans``,
    ``StudentSpec.from_record(...).batch``) on the run's original scan, with the spec the
    sidecar carries. Deploy side: ``adapter.read`` + ``adapter.preprocess`` of the scan file
    in ``data/heldout``. Image, pixels, validity and the stored labels must be identical.
    """
    from modalities.lidar.range_spec import project_checked
    from pipelines.evaluate.probe import StudentSpec, load_labeled_scans
    from pipelines.slidr.data import ScanRef

    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    bundle = load_bundle(exported_bundle)
    adapter = adapter_for(bundle.metadata, bundle.path)
    assert adapter.spec == RangeImageSpec.from_dict(side["input"])
    samples = {s.token: s for s in adapter.samples("heldout")}
    assert sorted(samples) == sorted(r["token"] for r in side["heldout_scans"])
    train_spec = StudentSpec.from_record({"kind": "range_net", "input": side["input"]}, load_sensor("vlp16"))
    for ref in side["heldout_scans"]:
        scans = load_labeled_scans([ScanRef(ref["token"], "", Path(ref["lidar"]), Path(ref["lidarseg"]), (), ())])
        train = train_spec.batch(scans)
        cloud = adapter.read(samples[ref["token"]].path)
        feeds, inp = adapter.preprocess(cloud)
        assert list(feeds) == [bundle.inputs[0]["name"]] == ["range_image"]
        assert feeds["range_image"].shape == tuple(bundle.inputs[0]["shape"])
        np.testing.assert_array_equal(feeds["range_image"][0], train.range_input[0].numpy())
        v = inp.valid
        np.testing.assert_array_equal(v, train.point_valid.numpy())
        np.testing.assert_array_equal(inp.rows[v], train.point_row.numpy()[v])
        np.testing.assert_array_equal(inp.cols[v], train.point_col.numpy()[v])
        assert project_checked(cloud, adapter.spec)[1].matches  # the fixture's scans are the sensor's own
        np.testing.assert_array_equal(adapter.load_target(samples[ref["token"]], len(cloud)), scans[0].labels)


def test_point_labels_gathers_argmax_and_marks_pixelless_points_unknown():
    logits = np.zeros((3, 2, 4), np.float32)
    logits[2, 0, 1] = 1.0
    logits[1, 1, 3] = 1.0
    rows, cols = np.array([0, 1, -1]), np.array([1, 3, -1])
    valid = np.array([True, True, False])
    np.testing.assert_array_equal(point_labels(logits, rows, cols, valid), [2, 1, UNKNOWN_LABEL])


def test_spec_round_trips_through_json_and_names_what_it_cannot_read():
    spec = RangeImageSpec(sensor=load_sensor("hdl32e"), channels=("x", "range"), width_multiple=8, height_multiple=2,
                          beam_source="elevation")
    d = json.loads(json.dumps(spec.to_dict()))
    assert RangeImageSpec.from_dict(d) == spec and d["image_shape"] == [2, 32, 1088]  # 1084 columns padded to 8
    with pytest.raises(ValueError, match="spec version 2, this tool reads version 1"):
        RangeImageSpec.from_dict({**d, "version": 2}, "metadata.json task.input")
    del d["stds"]
    with pytest.raises(ValueError, match="metadata.json task.input: missing field 'stds'"):
        RangeImageSpec.from_dict(d, "metadata.json task.input")
    assert replace(spec, width_multiple=16) != spec  # frozen, compared field by field


def test_rejects_points_without_intensity():
    with pytest.raises(ValueError, match=r"expected \(N, 3\) points and \(N,\) intensities"):
        RangeImageSpec(sensor=load_sensor("vlp16"), channels=("x",))(np.zeros((5, 3)), np.zeros(4))
