"""INT8 calibration methods side by side on one bundle: the held-out metric of each, in one run.

    .venv/bin/python benchmarks/int8_calibration.py BUNDLE [--subsets 2 8] [--out benchmarks/results/<name>]

For each activation-range method of :data:`deploy.quantize.CALIBRATION_METHODS` (ONNX Runtime
``quantize_static``, QDQ, per-channel symmetric int8 weights, symmetric int8 activations, through
the deploy stage's own :func:`deploy.quantize.quantize_prepared`) and for the bundle's
calibration samples (all of them, and the first N for each ``--subsets`` N), the INT8 model is
built in a temporary folder and measured with the bundle's task metric on its held-out samples,
next to the fp32 model's; with ``--float-fallback N``, also with the N most INT8-sensitive
convolutions kept in float, chosen on the calibration samples by
:func:`deploy.quantize.float_fallback_nodes`. Nothing in the bundle is changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import header_line, load_average, report_header, write_report  # noqa: E402
from deploy.quantize import CALIBRATION_METHODS, float_fallback_nodes, quantize_prepared  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--subsets", type=int, nargs="*", default=[2], help="also calibrate on the first N samples")
    ap.add_argument("--methods", nargs="*", default=list(CALIBRATION_METHODS), choices=list(CALIBRATION_METHODS))
    ap.add_argument("--float-fallback", type=int, nargs="*", default=[0, 1],
                    help="also keep this many of the most INT8-sensitive convolutions in float (deploy.quantize)")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/results/<bundle name>)")
    args = ap.parse_args()

    import onnxruntime  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    from deploy.bundle import load_bundle  # noqa: PLC0415
    from deploy.runtime import OrtEngine, split_batches  # noqa: PLC0415
    from deploy.tasks import adapter_for  # noqa: PLC0415

    load0 = load_average()
    bundle = load_bundle(args.bundle)
    adapter = adapter_for(bundle.metadata, bundle.path)
    held = adapter.samples("heldout")
    fp32 = OrtEngine(bundle.model_path("fp32"))
    calib = [f for s in adapter.samples("calibration") for f in split_batches(
        adapter.preprocess(adapter.read(s.path))[0], fp32.inputs)]
    fp32_value = adapter.metric(fp32.run, held)["value"]
    subsets = {f"all {len(calib)}": calib, **{f"first {n}": calib[:n] for n in args.subsets if n < len(calib)}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(bundle.model_path("fp32")), str(prepared))
        for subset, feeds in subsets.items():
            for method in args.methods:
                for fallback in args.float_fallback:
                    dst = Path(tmp) / f"{method}.onnx"
                    t0 = time.perf_counter()
                    nodes = []
                    if fallback:
                        ranked = float_fallback_nodes(bundle.model_path("fp32"), prepared, feeds, method, Path(tmp))
                        nodes = [r["node"] for r in ranked[:fallback]]
                    quantize_prepared(prepared, dst, feeds, method, nodes)
                    seconds = time.perf_counter() - t0
                    value = adapter.metric(OrtEngine(dst).run, held)["value"]
                    rows.append({"calibration": subset, "method": method, "float_nodes": nodes, "metric": value,
                                 "drop": fp32_value - value, "calibrate_s": seconds})
                    print(f"{subset:>8} {method:<22} {nodes} {value:7.2f} (drop {fp32_value - value:+.2f})", flush=True)
    metric = bundle.metadata["metrics"]["heldout"]["metric"]
    report = {**report_header("int8_calibration", load0, onnxruntime.__version__), "bundle": str(args.bundle),
              "task": bundle.metadata["task"]["kind"], "metric": metric, "heldout_samples": len(held),
              "fp32": fp32_value, "rows": rows}
    md = [f"# INT8 calibration methods: {args.bundle.name} ({report['task']}, held-out {metric} on {len(held)} "
          f"{adapter.sample_noun}s)", "", *header_line(report),
          f"fp32: {fp32_value:.2f}", "", f"| calibration samples | method | kept in float | INT8 {metric} | drop vs fp32 | calibrate s |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['calibration']} | {r['method']} | {', '.join(r['float_nodes']) or '-'} | {r['metric']:.2f} | "
           f"{r['drop']:.2f} | {r['calibrate_s']:.1f} |" for r in rows]
    write_report(args.out or Path(__file__).resolve().parent / "results" / args.bundle.name, "int8_calibration",
                 report, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
