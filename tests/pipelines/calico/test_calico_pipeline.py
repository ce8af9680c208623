"""The CALICO pipeline through the real CLI at toy size: regions -> PRC -> RAD -> BEV evaluation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import main

CONFIG = "tests/configs/calico_tiny.yaml"


@pytest.mark.slow
def test_calico_tiny_pipeline(tmp_path):
    assert main(["run", CONFIG, f"runs_dir={tmp_path}"]) == 0
    run_dir = tmp_path / "calico_tiny"
    report = json.loads((run_dir / "report.json").read_text())["stages"]

    prc = report["prc"]["metrics"]
    assert prc["train_scans"] == 3 and prc["heldout_scans_unseen"] == 3 and prc["epochs"] == 2
    assert 100 < prc["pillars_per_scan_max"] <= 4096 and prc["pillars_dropped"] == 0
    for key in ("loss_first_epoch", "loss_last_epoch", "plrc_last_epoch", "rapc_last_epoch"):
        assert 0 < prc[key] < 20
    record = json.loads((run_dir / "prc" / "student.json").read_text())
    assert record["task"] == "bev_features" and record["kind"] == "pillar_bev"
    assert record["input"]["x_range_m"] == [-16.0, 16.0] and record["kwargs"]["ny"] == record["kwargs"]["nx"] == 64

    rad = report["rad"]["metrics"]
    assert rad["train_scans"] == 3 and rad["region_points"] > 3 * 20 and 0 < rad["loss_last_epoch"] < 20
    record = json.loads((run_dir / "rad" / "student.json").read_text())
    assert record["kind"] == "camera_bev" and record["input"]["cameras"] == ["CAM_FRONT", "CAM_BACK"]
    # The camera student was trained: its weights left their initialisation.
    from modalities.bev_students import build_bev_student

    torch.manual_seed(0)
    fresh = build_bev_student(record["kind"], record["kwargs"]).state_dict()
    trained = load_file(str(run_dir / "rad" / "student.safetensors"))
    assert set(trained) == set(fresh)
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh if fresh[k].is_floating_point())

    results = json.loads((run_dir / "evaluate" / "results.json").read_text())
    comps = results["comparisons"]
    assert {(c["student"], c["label_fraction"]) for c in comps} == {(s, f) for s in ("prc", "rad", "prc+rad")
                                                                    for f in (0.5, 1.0)}
    assert next(c for c in comps if c["student"] == "prc+rad")["student_kind"] == "pillar_bev+camera_bev"
    for c in comps:
        assert c["task"] == "bev_features" and c["metric"] == "miou" and c["n_paired"] == 2
        assert 0 <= c["random_mean"] <= 100 and 0 <= c["distilled_mean"] <= 100
        assert set(c["iou_per_class"]["distilled"]) == {"drivable_surface", "sidewalk", "terrain_vegetation", "vehicle",
                                                        "pedestrian", "static_obstacle"}
    # Distilled and random features differ, so their probes do too (a student that never loaded its weights would
    # give identical runs).
    runs = results["runs"]
    for s in ("prc", "rad", "prc+rad"):
        d = [r["miou"] for r in runs if r["student"] == s and r["init"] == "distilled"]
        r_ = [r["miou"] for r in runs if r["student"] == s and r["init"] == "random"]
        assert d != r_
    # The saved probe models: the lidar one deploys (ONNX parity, the held-out mIoU of the PyTorch probe).
    side = json.loads((run_dir / "evaluate" / "models" / "prc_100pct.json").read_text())
    assert side["task"] == "bev_segmentation" and len(side["heldout_samples"]) == 3
    assert not list((run_dir / "evaluate" / "models").glob("prc+rad*"))  # two networks: not deployable
    dep = report["deploy"]["metrics"]
    assert dep["model"] == "prc_100pct" and dep["parity_max_rel_err"] < 1e-4
    # Same network, same cells: the bundle's fp32 mIoU is the evaluate stage's distilled run-0 mIoU at 100%.
    run0 = next(r["miou"] for r in results["runs"] if r["student"] == "prc" and r["init"] == "distilled"
                and r["label_fraction"] == 1.0 and r["run"] == 0)
    assert abs(dep["miou_fp32"] - run0) < 0.5 and abs(side["metric_heldout"]["value"] - run0) < 1e-9
    assert {"miou_fp16", "miou_int8"} <= set(dep)
    int8 = json.loads((run_dir / "deploy" / "prc_100pct" / "metadata.json").read_text())["precisions"]["int8"]
    assert len(int8["float_nodes"]) == 1 and int8["float_nodes"][0].endswith("Conv")  # the most sensitive one
    # The camera student deploys too: frames (images + calibration) in the bundle, parity, the probe's mIoU.
    side = json.loads((run_dir / "evaluate" / "models" / "rad_100pct.json").read_text())
    assert side["task"] == "camera_bev_segmentation" and len(side["calibration_samples"]) == 3
    dep = report["deploy_camera"]["metrics"]
    assert dep["model"] == "rad_100pct" and dep["parity_max_rel_err"] < 1e-4 and "miou_int8" in dep
    run0 = next(r["miou"] for r in results["runs"] if r["student"] == "rad" and r["init"] == "distilled"
                and r["label_fraction"] == 1.0 and r["run"] == 0)
    assert abs(dep["miou_fp32"] - run0) < 0.5
    frames = sorted((run_dir / "deploy_camera" / "rad_100pct" / "data" / "heldout").glob("*.frame.json"))
    assert len(frames) == 3
    from deploy.cli import main as deploy_main

    out = tmp_path / "infer"
    assert deploy_main(["infer", str(run_dir / "deploy_camera" / "rad_100pct"), str(frames[0]), "--out", str(out)]) == 0
    grid = np.load(out / frames[0].name.replace(".frame.json", ".bev.npy"))
    assert grid.shape == (64, 64) and grid.dtype == np.uint8 and len(np.unique(grid)) > 1
    md = (run_dir / "report.md").read_text()
    assert "BEV cell-wise mIoU" in md and "prc/loss_curve.png" in md and "rad/loss_curve.png" in md
    assert "evaluate/predictions.png" in md and (run_dir / "evaluate" / "predictions.png").stat().st_size > 5000
