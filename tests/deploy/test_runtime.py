"""Runtime: raw scan file -> labels through the CLI and ``Predictor``, torch-free import path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.bundle import load_bundle
from deploy.cli import main
from deploy.runtime import OrtEngine, Predictor
from modalities.lidar.io import PointCloud

MODEL = "slidr_range_50pct"


def test_infer_cli_writes_uint8_labels_per_point(bundle_copy, tiny_run, tmp_path, capsys, torch_point_labels):
    """Raw scan file -> CLI -> labels file: each point's label is the torch segmenter's (255 without a pixel).

    The oracle (``torch_point_labels``) reads the scan, pre-processes and gathers with the
    training code in torch; the fixture's segmenter predicts several classes, so a label
    file with the wrong order, scaling or gather differs from it.
    """
    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    scans = [Path(r["lidar"]) for r in side["heldout_scans"]]
    assert main(["infer", str(bundle_copy), *map(str, scans), "--out", str(tmp_path / "labels")]) == 0
    for ref, scan in zip(side["heldout_scans"], scans):
        out = tmp_path / "labels" / scan.name.replace(".pcd.bin", ".labels.npy")
        labels = np.load(out)
        n = scan.stat().st_size // 20  # 5 float32 per point
        assert labels.dtype == np.uint8 and labels.shape == (n,)
        assert np.all((labels < 16) | (labels == 255))
        np.testing.assert_array_equal(labels, torch_point_labels(ref))
        assert len(np.unique(labels[labels != 255])) >= 5  # varied predictions, not one class everywhere
    assert str(tmp_path / "labels") in capsys.readouterr().out


def test_points_without_a_pixel_get_255(bundle_copy):
    bundle = load_bundle(bundle_copy)
    pred = Predictor(bundle, OrtEngine(bundle.model_path("fp32")))
    assert pred.adapter.kind == "point_segmentation"
    cloud = PointCloud(np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0], [1.0, 0.0, 50.0]], np.float32),
                       np.array([100.0, 5.0, 5.0], np.float32), intensity_full_scale=255.0)
    labels = pred.predict(cloud)
    assert labels.dtype == np.uint8 and labels.shape == (3,)
    assert labels[0] < 16 and labels[1] == 255 and labels[2] == 255  # too close; far above every beam


def test_kitti_file_of_the_same_points_gets_the_same_labels(bundle_copy, tiny_run, tmp_path, torch_point_labels):
    """A KITTI .bin (intensity 0..1, no ring) of a held-out scan's points: the torch oracle's labels too.

    The fixture's scans lie on the sensor's beams (ring = nearest beam by elevation), so the
    labels may not depend on the file format; an intensity divided by the wrong full scale
    (x255 or /255 twice) changes the input and with it some labels.
    """
    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    ref = side["heldout_scans"][0]
    raw = np.fromfile(ref["lidar"], np.float32).reshape(-1, 5)
    kitti = tmp_path / "scan.bin"
    np.concatenate([raw[:, :3], raw[:, 3:4] / 255.0], 1).astype(np.float32).tofile(kitti)
    pred = Predictor(load_bundle(bundle_copy), OrtEngine(load_bundle(bundle_copy).model_path("fp32")))
    want = torch_point_labels(ref)
    np.testing.assert_array_equal(pred.predict_file(Path(ref["lidar"])), want)
    np.testing.assert_array_equal(pred.predict_file(kitti), want)
    assert main(["infer", str(bundle_copy), str(kitti), "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "scan.labels.npy"), want)


def test_cli_reports_tampered_bundle_without_traceback(bundle_copy, tmp_path, capsys):
    (bundle_copy / "report.md").write_text("edited")
    assert main(["infer", str(bundle_copy), str(tmp_path / "x.pcd.bin")]) == 2
    assert "report.md: sha256 mismatch" in capsys.readouterr().err


def test_missing_scan_file_is_named(bundle_copy, tmp_path):
    from deploy.runtime import infer_files

    with pytest.raises(FileNotFoundError, match="nope.pcd.bin"):
        infer_files(bundle_copy, [tmp_path / "nope.pcd.bin"])


def test_runtime_path_imports_without_torch():
    """The Jetson image has no torch: the runtime modules must not import it."""
    code = ("import sys\nimport deploy.runtime, deploy.tensorrt, deploy.tasks, deploy.tasks.point_segmentation, "
            "deploy.bundle, deploy.cli, deploy.report, deploy.sidecar, deploy.trt_ops, deploy.verify, "
            "modalities.lidar.io, modalities.lidar.range_spec, modalities.segmentation_metrics\n"
            "from deploy.tasks import adapter_class\n"
            "assert adapter_class('point_segmentation').kind == 'point_segmentation'\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_help_of_every_subcommand(capsys):
    for cmd in ("export", "quantize", "bench", "verify", "infer"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "labels.npy" in capsys.readouterr().out


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="tensorrt installed")
def test_infer_with_tensorrt_backend_but_no_tensorrt_is_a_clean_cli_error(bundle_copy, tmp_path, capsys):
    assert main(["infer", str(bundle_copy), str(tmp_path / "x.pcd.bin"), "--backend", "tensorrt"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_verify_on_the_robot_without_torch_still_checks_every_precision(bundle_copy):
    """Without torch (the Jetson image) ``verify`` skips only the PyTorch parity, and says so."""
    code = ("import sys\nsys.modules['torch'] = None  # as if not installed\n"
            "from deploy.verify import verify_bundle\n"
            f"out = verify_bundle({str(bundle_copy)!r})\n"
            "assert out['parity_fp32'].startswith('skipped'), out['parity_fp32']\n"
            "assert sorted(out['precisions']) == ['fp16', 'fp32', 'int8'], out\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
