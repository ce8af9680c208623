"""Real-format scan files through ``edgedistill infer``: one intensity scale, ring or elevation, sensor mismatch.

The bundle (``exported_bundle``) is a VLP-16 range-view segmenter whose predictions vary
(several classes); its held-out scans are nuScenes ``.pcd.bin`` files (intensity 0..255,
with a ring column).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from deploy.bundle import BundleError, load_bundle
from deploy.cli import main
from modalities.lidar.io import read_points, write_kitti_bin, write_nuscenes_pcd_bin
from modalities.lidar.range_spec import RangeImageSpec, project_checked


def _heldout_scan(bundle: Path) -> Path:
    meta = json.loads((bundle / "metadata.json").read_text())
    return bundle / meta["data"]["heldout"][0]["input"]


def test_kitti_and_nuscenes_files_of_the_same_points_get_identical_inputs_and_labels(exported_bundle, tmp_path):
    """The same points as nuScenes (0..255, ring) and KITTI (0..1, no ring) -> identical images and labels.

    Planted bugs this catches: one intensity scale applied to both formats (the KITTI
    intensities would be divided by 255 again: a different intensity channel), or a ring
    column read with the wrong beam order (different rows than elevation binning).
    """
    src = read_points(_heldout_scan(exported_bundle))
    assert src.ring is not None and src.intensity.max() > 1.0  # a real nuScenes-scale scan with a ring
    nus, kitti = tmp_path / "scan.pcd.bin", tmp_path / "scan.bin"
    write_nuscenes_pcd_bin(nus, src.points_xyz, src.intensity, src.ring)
    write_kitti_bin(kitti, src.points_xyz, src.intensity / np.float32(255.0))

    spec = RangeImageSpec.from_dict(load_bundle(exported_bundle).metadata["task"]["input"])
    a, b = spec.from_cloud(read_points(nus)), spec.from_cloud(read_points(kitti))
    assert read_points(kitti).ring is None
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.rows, b.rows)

    assert main(["infer", str(exported_bundle), str(nus), "--out", str(tmp_path / "nus")]) == 0
    assert main(["infer", str(exported_bundle), str(kitti), "--out", str(tmp_path / "kitti")]) == 0
    la, lb = np.load(tmp_path / "nus" / "scan.labels.npy"), np.load(tmp_path / "kitti" / "scan.labels.npy")
    np.testing.assert_array_equal(la, lb)
    assert len(np.unique(la[la != 255])) >= 3  # varied labels, not a constant model


def test_kitti_file_with_nuscenes_intensities_is_an_error_naming_it(tmp_path):
    path = tmp_path / "000001.bin"
    write_kitti_bin(path, np.ones((4, 3), np.float32) * 5, np.array([0, 10, 200, 255], np.float32))
    with pytest.raises(ValueError, match=r"000001\.bin: intensity in \[0, 255\] is outside this format's scale"):
        read_points(path).unit_intensity()


@pytest.fixture(scope="module")
def hdl32e_scan(tmp_path_factory) -> Path:
    """A synthetic 32-beam (HDL-32E) nuScenes scan: another beam layout than the bundle's VLP-16."""
    from modalities.synthetic.config import SynthConfig
    from modalities.synthetic.nuscenes_writer import generate_dataset

    root = tmp_path_factory.mktemp("hdl32e")
    generate_dataset(root, SynthConfig(scenes=1, samples_per_scene=1, sweeps_per_sample=0, lidar_sensor="hdl32e",
                                       image_width=64, image_height=36, seed=3))
    return next((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))


@pytest.mark.parametrize("fmt", ["pcd.bin", "bin"])
def test_a_32_beam_scan_given_to_a_16_beam_bundle_warns_with_both_layouts(exported_bundle, hdl32e_scan, tmp_path,
                                                                           caplog, fmt):
    """With a ring column (32 values) and without one (KITTI): the warning names the bundle's sensor, the scan's
    beam count and the fraction of in-range points without a pixel; a matching scan gives no warning."""
    cloud = read_points(hdl32e_scan)
    scan = tmp_path / f"other.{fmt}"
    if fmt == "bin":
        write_kitti_bin(scan, cloud.points_xyz, cloud.unit_intensity())
    else:
        shutil.copyfile(hdl32e_scan, scan)
    with caplog.at_level(logging.WARNING, logger="edgedistill.deploy"):
        assert main(["infer", str(exported_bundle), str(scan), "--out", str(tmp_path / "out")]) == 0
    warnings = [r.getMessage() for r in caplog.records if "beam layout does not match" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    msg = warnings[0]
    assert f"other.{fmt}" in msg and "'vlp16' (16 beams" in msg
    if fmt == "pcd.bin":
        assert "32 beams by its ring column" in msg
    else:
        n = int(re.search(r"about (\d+) beams by its point elevations", msg).group(1))
        assert 24 <= n <= 32  # the HDL-32E's beams that hit something
    labels = np.load(tmp_path / "out" / "other.labels.npy")
    spec = RangeImageSpec.from_dict(load_bundle(exported_bundle).metadata["task"]["input"])
    _, report = project_checked(read_points(scan), spec)
    assert not report.matches and 0.05 < report.no_pixel_fraction < 0.95
    assert f"{report.no_pixel_fraction:.1%} of its in-range points found no pixel" in msg
    # The ring of another sensor is not trusted: the points are placed by elevation, like the ring-less file.
    assert (labels == 255).mean() == pytest.approx(
        (~RangeImageSpec.from_dict({**spec.to_dict(), "beam_source": "elevation"}).from_cloud(read_points(scan)).valid).mean())

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgedistill.deploy"):
        assert main(["infer", str(exported_bundle), str(_heldout_scan(exported_bundle)), "--out", str(tmp_path / "ok")]) == 0
    assert "beam layout" not in caplog.text


def test_a_format_1_bundle_says_how_to_re_export(bundle_copy, capsys):
    meta = json.loads((bundle_copy / "metadata.json").read_text())
    meta["format_version"] = 1
    meta["source"]["run_dir"] = "/data/runs/demo"
    (bundle_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"bundle format 1 was written by an older edgedistill.*edgedistill export "
                                          r"/data/runs/demo --model slidr_range_50pct"):
        load_bundle(bundle_copy)
    assert main(["infer", str(bundle_copy), "x.pcd.bin"]) == 2
    assert "re-export it" in capsys.readouterr().err.lower()
