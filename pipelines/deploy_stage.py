"""Stage ``deploy``: the fine-tuned range-view student of this run -> a verified edge bundle.

Export (ONNX opset 17, parity against PyTorch on real held-out scans), FP16 and INT8
(explicit QDQ calibrated on the labeled training scans) with each precision's held-out
metric, and the latency benchmark. The bundle lands in ``<run>/<stage>/<model>/``, i.e.
``runs/<id>/deploy/<model>/`` as ``edgedistill export`` writes it; the implementation is
:mod:`deploy` (this module only adapts it to the runner).
"""

from __future__ import annotations

from .deploy_config import DeployConfig
from .runner import StageContext, StageResult


def run_deploy(ctx: StageContext) -> StageResult:
    from deploy.bench import run_bench
    from deploy.export import export_bundle
    from deploy.quantize import quantize_bundle

    cfg: DeployConfig = ctx.config  # type: ignore[assignment]
    from deploy.sidecar import choose_model

    name = choose_model(ctx.run_dir, cfg.model, cfg.evaluate).stem
    bundle_dir = export_bundle(ctx.run_dir, name, ctx.stage_dir / name, max_scans=cfg.max_scans,
                               evaluate_stage=cfg.evaluate)
    bundle = quantize_bundle(bundle_dir, tuple(cfg.precisions))
    m = bundle.metadata["metrics"]
    metric = m["heldout"]["metric"]
    rel = f"{ctx.name}/{name}"
    metrics = {
        "model": name, "bundle": rel,
        "parity_max_abs_err": m["parity_fp32"]["max_abs_err"],
        "parity_max_rel_err": m["parity_fp32"]["max_rel_err"],
        **{f"{metric}_{p}": round(v, 2) for p, v in m["heldout"]["by_precision"].items()},
    }
    if "int8_drop" in m:
        metrics[f"int8_{metric}_drop"] = round(m["int8_drop"], 2)
    md = [f"Bundle `{rel}/` ([report]({rel}/report.md)): ONNX parity vs PyTorch max abs "
          f"{m['parity_fp32']['max_abs_err']:.2g}, max rel {m['parity_fp32']['max_rel_err']:.2g}; held-out {metric} "
          + ", ".join(f"{p} {v:.2f}" for p, v in m["heldout"]["by_precision"].items()) + "."]
    if cfg.bench:
        out = run_bench(bundle_dir, batch=cfg.bench_batch, iters=cfg.bench_iters)
        for r in out["results"]:
            backend = r["backend"].replace(" ", "_")
            metrics[f"p50_ms_{backend}_{r['precision']}_b{r['batch']}"] = round(r["p50_ms"], 2)
        md += ["", f"Latency on {out['machine']}:", "", f"![bench]({rel}/report/bench.png)"]
    return StageResult(metrics=metrics, report_md="\n".join(md) + "\n")
