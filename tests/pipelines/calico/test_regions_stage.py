"""Stage ``regions`` through the real CLI on a tiny synthetic set: outputs, resume, counted skips."""

import json
from pathlib import Path

import numpy as np
import pytest

from modalities.lidar.io import read_nuscenes_pcd_bin, write_nuscenes_pcd_bin
from modalities.lidar.regions import load_regions
from modalities.nuscenes_tables import NuScenesTables
from pipelines.calico.regions_stage import regions_path
from pipelines.cli import main

CONFIG = "tests/configs/calico_regions_tiny.yaml"


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())["stages"]["regions"]


@pytest.mark.slow
def test_regions_stage_outputs_resume_and_counted_skips(tmp_path):
    assert main(["run", CONFIG, f"runs_dir={tmp_path}"]) == 0
    run_dir = tmp_path / "calico_regions_tiny"
    stage_dir = run_dir / "regions"
    m = _report(run_dir)["metrics"]
    assert m["scans"] == 3 and m["with_regions"] == 3 and m["computed"] == 3 and m["reused"] == 0
    assert m["skipped_no_regions"] == 0 and m["skipped_unreadable"] == 0
    assert 2 <= m["regions_per_scan_min"] <= m["regions_per_scan_mean"] <= m["regions_per_scan_max"]
    assert 0 < m["points_in_regions_pct"] < 50 and m["ground_points_pct"] > 30
    assert m["region_purity"] > 0.8  # a label-free sanity figure: regions rarely straddle two classes
    scans = [s for s in NuScenesTables(run_dir / "synth" / "nuscenes", "v1.0-synthetic").samples()]
    for s in scans:
        n = len(read_nuscenes_pcd_bin(s.lidar_path))
        res = load_regions(regions_path(stage_dir, s.lidar_path), num_points=n)
        assert res.num_regions == res.region_id.max() + 1 and res.boxes.shape == (res.num_regions, 7)
        assert not (res.ground & (res.region_id >= 0)).any()
    assert [s["status"] for s in json.loads((stage_dir / "scans.json").read_text())] == ["ok"] * 3
    assert (stage_dir / "regions_bev.png").stat().st_size > 5000
    assert "regions/regions_bev.png" in (run_dir / "report.md").read_text()

    # Resume: an interrupted stage (no manifest yet) reuses the region files already written.
    before = {p.name: p.read_bytes() for p in (stage_dir / "regions").iterdir()}
    (stage_dir / "manifest.json").unlink()
    assert main(["run", CONFIG, f"runs_dir={tmp_path}"]) == 0
    m2 = _report(run_dir)["metrics"]
    assert m2["reused"] == 3 and m2["computed"] == 0
    assert m2["regions_per_scan_mean"] == m["regions_per_scan_mean"] and m2["region_purity"] == m["region_purity"]
    assert {p.name: p.read_bytes() for p in (stage_dir / "regions").iterdir()} == before

    # Counted skips: a scan of bare road (same point count, so its labels still fit) and a truncated scan.
    flat = read_nuscenes_pcd_bin(scans[0].lidar_path)
    rng = np.random.default_rng(0)
    r, a = rng.uniform(4, 30, len(flat)), rng.uniform(-np.pi, np.pi, len(flat))
    road = np.column_stack([r * np.cos(a), r * np.sin(a), np.full(len(flat), -1.84)])
    write_nuscenes_pcd_bin(scans[0].lidar_path, road, flat.intensity, flat.ring)
    truncated = scans[1].lidar_path.read_bytes()
    scans[1].lidar_path.write_bytes(truncated[:-3])
    assert main(["run", CONFIG, f"runs_dir={tmp_path}", "only=[regions]", "--force", "regions"]) == 0
    m3 = _report(run_dir)["metrics"]
    assert m3["scans"] == 3 and m3["with_regions"] == 1
    assert m3["skipped_no_regions"] == 1 and m3["skipped_unreadable"] == 1
    status = {s["stem"]: s for s in json.loads((stage_dir / "scans.json").read_text())}
    assert [status[p.lidar_path.name.split(".")[0]]["status"] for p in scans] == ["no_regions", "unreadable", "ok"]
    assert "not a multiple" in status[scans[1].lidar_path.name.split(".")[0]]["error"]
    written = sorted(p.name for p in (stage_dir / "regions").iterdir())
    assert written == [regions_path(stage_dir, scans[2].lidar_path).name]
    log = (run_dir / "run.log").read_text()
    assert "skipped an unreadable scan" in log and "no region left after the filters" in log
    report_md = (run_dir / "report.md").read_text()
    assert "1 scan(s) with no region left, 1 unreadable" in report_md


def test_region_params_are_validated_at_load_time():
    from pipelines.config import ConfigError, load_config

    cfg = load_config(CONFIG, ["stages.regions.dbscan_eps_m=0.5"])
    assert cfg.stages["regions"].region_params().dbscan_eps_m == 0.5
    with pytest.raises(ConfigError, match="min_area_m2"):
        load_config(CONFIG, ["stages.regions.min_area_m2=30"])
    with pytest.raises(ConfigError, match=r"stages\.regions\.min_aspect"):
        load_config(CONFIG, ["stages.regions.min_aspect=2"])
