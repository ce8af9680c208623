"""Stage ``regions``: CALICO's label-free regions (DESIGN 5.3) for every key-frame lidar scan.

All scenes of the nuScenes-format dataset are used (regions need no label, so the held-out
split does not matter). Scans are split into chunks, one Ray task per chunk. Each scan's
regions go atomically to ``<stage>/regions/<scan stem>.npz`` (see
:func:`modalities.lidar.regions.save_regions`) as soon as they are done, and a file already
on disk is reused, so an interrupted stage resumes where it stopped.

Skips are counted, reported and never fatal: a scan with no region left after the filters
gets no file; an unreadable scan is logged with the reader's message. ``scans.json`` lists
every scan with its status (``ok``, ``no_regions``, ``unreadable``) for the stages that read
the regions.

Where the dataset has lidarseg labels (the synthetic sets do) the stage reports region purity
(the share of labelled region points in their region's majority class, 16 lidarseg benchmark
classes): a label-free sanity figure, the labels are read for that figure only.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from modalities.errors import DataError
from modalities.fileio import atomic_write_json
from modalities.lidar.io import read_nuscenes_pcd_bin
from modalities.lidar.labels import CLASS_NAMES, IGNORE, lidarseg_to_16
from modalities.lidar.regions import (FILTERS, RegionParams, compute_regions, load_regions, region_label_stats,
                                      save_regions)
from modalities.nuscenes_tables import NuScenesTables, load_lidarseg

from ..plots import save_regions_bev_plot
from ..ray_utils import parallel_map
from ..runner import StageContext, StageResult
from .config import RegionsConfig

FIGURE = "regions_bev.png"


def scan_stem(lidar_path: str | Path) -> str:
    """``.../LIDAR_TOP/n015-...__LIDAR_TOP__1533151603547590.pcd.bin`` -> ``n015-...__LIDAR_TOP__1533151603547590``."""
    return Path(lidar_path).name.split(".")[0]


def regions_path(stage_dir: Path, lidar_path: str | Path) -> Path:
    """Where the regions of a lidar scan live inside the stage folder."""
    return Path(stage_dir) / "regions" / f"{scan_stem(lidar_path)}.npz"


def _label_figures(rec: dict, region_id: np.ndarray, lidarseg_path: str | None) -> None:
    """Add the purity counts of one scan to ``rec`` (labels read for this figure only)."""
    if lidarseg_path is None:
        return
    try:
        labels = lidarseg_to_16(load_lidarseg(Path(lidarseg_path), num_points=len(region_id)))
    except (FileNotFoundError, ValueError) as e:
        rec["label_error"] = str(e)
        return
    majority, major, labelled = region_label_stats(region_id, labels, IGNORE)
    rec["purity_counts"] = [int(major.sum()), int(labelled.sum())]
    rec["majority_classes"] = [CLASS_NAMES[m] if m >= 0 else "unlabelled" for m in majority]


def _chunk_task(jobs: list[tuple[str, str | None, str]], params: dict) -> list[dict]:
    import scipy.spatial  # noqa: F401  (imported before the clock starts: seconds_per_scan is compute time)
    import sklearn.cluster  # noqa: F401

    region_params = RegionParams(**params)
    out = []
    for lidar_path, lidarseg_path, out_path in jobs:
        rec: dict = {"stem": scan_stem(lidar_path), "cached": False, "seconds": 0.0}
        try:
            n = len(read_nuscenes_pcd_bin(lidar_path)) if Path(out_path).exists() else None
            result = None
            if n is not None:
                try:
                    result = load_regions(out_path, num_points=n)
                    rec["cached"] = True
                except DataError:
                    result = None  # written by another version or damaged: compute it again
            if result is None:
                cloud = read_nuscenes_pcd_bin(lidar_path)
                t0 = time.perf_counter()
                result = compute_regions(cloud.points_xyz, region_params)
                rec["seconds"] = time.perf_counter() - t0
                if result.num_regions:
                    save_regions(out_path, result)
        except DataError as e:
            rec.update(status="unreadable", error=str(e))
            out.append(rec)
            continue
        rec.update(status="ok" if result.num_regions else "no_regions", **result.stats)
        if result.num_regions:
            _label_figures(rec, result.region_id, lidarseg_path)
        out.append(rec)
    return out


def list_scan_jobs(dataset: Path, version: str, stage_dir: Path) -> list[tuple[str, str | None, str]]:
    """(lidar file, lidarseg file or None, regions file) of every key-frame scan, all scenes."""
    tables = NuScenesTables(dataset, version)
    return [
        (str(s.lidar_path), None if s.lidarseg_path is None else str(s.lidarseg_path),
         str(regions_path(stage_dir, s.lidar_path)))
        for s in tables.samples()
    ]


def run_regions(ctx: StageContext) -> StageResult:
    cfg: RegionsConfig = ctx.config  # type: ignore[assignment]
    params = cfg.region_params()
    dataset = ctx.inputs["dataset"]
    jobs = list_scan_jobs(dataset, ctx.dataset.version, ctx.stage_dir)
    if not jobs:
        raise ValueError(f"no key-frame lidar scans found in {dataset}")
    chunks = [jobs[i : i + cfg.scans_per_task] for i in range(0, len(jobs), cfg.scans_per_task)]
    ctx.log.info("%d scans in %d task(s); %s", len(jobs), len(chunks), params.to_dict())
    per_chunk = parallel_map(_chunk_task, chunks, desc="regions", params=params.to_dict())
    recs = [r for chunk in per_chunk for r in chunk]

    for job, rec in zip(jobs, recs):
        rec["lidar"] = str(Path(job[0]).relative_to(dataset)) if Path(job[0]).is_relative_to(dataset) else job[0]
        if rec["status"] == "unreadable":
            ctx.log.warning("skipped an unreadable scan: %s", rec["error"])
        elif rec["status"] == "no_regions":
            ctx.log.warning("skipped %s: no region left after the filters (%s)", rec["stem"],
                            ", ".join(f"{f} {rec[f'dropped_{f}']}" for f in FILTERS))
        if "label_error" in rec:
            ctx.log.warning("no purity for %s: %s", rec["stem"], rec["label_error"])
    atomic_write_json(ctx.stage_dir / "scans.json", [
        {k: rec[k] for k in ("stem", "lidar", "status", "regions", "error") if k in rec} for rec in recs])

    read = [r for r in recs if r["status"] != "unreadable"]
    ok = [r for r in read if r["status"] == "ok"]
    computed = [r["seconds"] for r in read if not r["cached"]]
    regions = np.array([r["regions"] for r in read]) if read else np.zeros(0)
    points = sum(r["points"] for r in read)
    purity = np.array([r["purity_counts"] for r in ok if "purity_counts" in r]).reshape(-1, 2).sum(0)
    classes: dict[str, int] = {}
    for r in ok:
        for name in r.get("majority_classes", ()):
            classes[name] = classes.get(name, 0) + 1
    metrics = {
        "scans": len(recs),
        "with_regions": len(ok),
        "computed": len(computed),
        "reused": sum(r["cached"] for r in read),
        "skipped_no_regions": len(read) - len(ok),
        "skipped_unreadable": len(recs) - len(read),
        "regions_per_scan_mean": float(regions.mean()) if regions.size else 0.0,
        "regions_per_scan_min": int(regions.min()) if regions.size else 0,
        "regions_per_scan_max": int(regions.max()) if regions.size else 0,
        "points_in_regions_pct": 100.0 * sum(r["points_in_regions"] for r in read) / max(points, 1),
        "ground_points_pct": 100.0 * sum(r["ground_points"] for r in read) / max(points, 1),
        "clusters": sum(r["clusters"] for r in read),
        **{f"dropped_{f}": sum(r[f"dropped_{f}"] for r in read) for f in FILTERS},
        "region_purity": float(purity[0] / purity[1]) if purity[1] else None,
        "regions_by_majority_class": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
        "seconds_per_scan": float(np.mean(computed)) if computed else 0.0,
        "params": params.to_dict(),
    }

    figure = None
    if ok:
        # The scan with the most regions (the first of those), so that the picture shows several.
        best = max((i for i, r in enumerate(recs) if r["status"] == "ok"), key=lambda i: recs[i]["regions"])
        lidar_file, _, regions_file = jobs[best]
        cloud = read_nuscenes_pcd_bin(lidar_file)
        res = load_regions(regions_file, num_points=len(cloud))
        figure = FIGURE
        save_regions_bev_plot(ctx.stage_dir / FIGURE, cloud.points_xyz[:, :2], res.region_id, res.ground, res.boxes,
                              title=f"{scan_stem(lidar_file)}: {res.num_regions} regions")
    return StageResult(metrics=metrics, report_md=_report(ctx.name, metrics, figure))


def _report(name: str, m: dict, figure: str | None) -> str:
    md = (f"Label-free regions (CALICO, DESIGN 5.3) of {m['scans']} scans: {m['regions_per_scan_mean']:.1f} per scan "
          f"(min {m['regions_per_scan_min']}, max {m['regions_per_scan_max']}), {m['points_in_regions_pct']:.1f}% of "
          f"the points in a region, {m['ground_points_pct']:.1f}% ground. Of {m['clusters']} DBSCAN clusters the "
          "filters dropped " + ", ".join(f"{f.replace('_', ' ')} {m[f'dropped_{f}']}" for f in FILTERS) + ". "
          f"Skipped: {m['skipped_no_regions']} scan(s) with no region left, {m['skipped_unreadable']} unreadable.")
    if m["region_purity"] is not None:
        top = ", ".join(f"{k} {v}" for k, v in list(m["regions_by_majority_class"].items())[:6])
        md += (f" Region purity against the lidarseg labels (a sanity figure; labels read for it only): "
               f"{100 * m['region_purity']:.1f}% of the labelled region points are in their region's majority "
               f"class; regions by majority class: {top}.")
    md += f" {m['seconds_per_scan']:.2f} s per computed scan.\n"
    if figure:
        md += f"\n![regions]({name}/{figure})\n"
    return md
