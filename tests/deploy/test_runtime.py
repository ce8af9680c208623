"""Runtime: raw scan file -> labels through the CLI, torch-free import path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.bundle import load_bundle
from deploy.cli import main
from deploy.runtime import OrtEngine, Segmenter

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
    seg = Segmenter(bundle, OrtEngine(bundle.model_path("fp32")))
    pts = np.array([[10.0, 0.0, 0.0, 100.0], [0.1, 0.0, 0.0, 5.0], [1.0, 0.0, 50.0, 5.0]], np.float32)
    labels = seg.predict(pts)
    assert labels[0] < 16 and labels[1] == 255 and labels[2] == 255  # too close; far above every beam


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
    code = ("import sys\nimport deploy.runtime, deploy.tensorrt, deploy.preprocess, deploy.bundle, deploy.cli, "
            "deploy.report, deploy.sidecar, deploy.trt_ops, modalities.segmentation_metrics\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_help_of_every_subcommand(capsys):
    for cmd in ("export", "quantize", "bench", "infer"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "labels.npy" in capsys.readouterr().out


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="tensorrt installed")
def test_infer_with_tensorrt_backend_but_no_tensorrt_is_a_clean_cli_error(bundle_copy, tmp_path, capsys):
    assert main(["infer", str(bundle_copy), str(tmp_path / "x.pcd.bin"), "--backend", "tensorrt"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
