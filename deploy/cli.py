"""``edgedistill export | quantize | bench | verify | infer``: the deploy subcommands.

Wired into the main CLI by ``pipelines/cli.py``::

    from deploy.cli import add_deploy_commands
    add_deploy_commands(sub)   # sub = parser.add_subparsers(...)

Each handler returns an exit code; errors are ``ValueError`` / ``FileNotFoundError`` with
a message naming the file or field, which the main CLI prints. Heavy imports (torch, onnx,
onnxruntime) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("edgedistill.deploy")


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle
    from .quantize import quantize_bundle

    path = export_bundle(args.run_dir, args.model, args.out, max_scans=args.max_scans, evaluate_stage=args.stage)
    if args.quantize:
        quantize_bundle(path)
    print(path)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_bundle

    bundle = quantize_bundle(args.bundle, tuple(args.precision or ("fp16", "int8")))
    m = bundle.metadata["metrics"]["heldout"]
    print(" ".join(f"{k}={v:.2f}" for k, v in m["by_precision"].items()) + f" {m['metric']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_bundle

    out = verify_bundle(args.bundle, metric_tolerance=args.metric_tolerance)
    parity = out["parity_fp32"]
    print(f"{out['bundle']}: {out['hashes']}; fp32 parity vs PyTorch: "
          + (f"max rel {parity['max_rel_err']:.3g}" if isinstance(parity, dict) else parity) + "; held-out "
          + ", ".join(f"{p} {v:.2f}" for p, v in out["precisions"].items()) + " (as recorded)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    out = run_bench(args.bundle, batch=args.batch, warmup=args.warmup, iters=args.iters, threads=args.threads,
                    backends=tuple(args.backend or ("torch", "onnxruntime", "tensorrt")), out_dir=args.out)
    print((args.out or Path(args.bundle) / "report") / "bench.md")
    log.info("machine: %s", out["machine"])
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runtime import infer_files

    try:  # one line per file as it is done (tqdm.write keeps the progress bar on stderr intact)
        infer_files(Path(args.bundle), [Path(i) for i in args.inputs], args.out, args.precision, args.backend,
                    echo=tqdm.write)
    except ImportError as e:  # --backend tensorrt without TensorRT: a usage error, not a crash
        raise ValueError(str(e)) from e
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except empty ones (None/False), whose help says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export``, ``quantize``, ``bench``, ``verify`` and ``infer`` on an argparse subparsers object."""
    ex = sub.add_parser(
        "export", formatter_class=HelpFormatter, help="fine-tuned model of a run -> verified, self-contained ONNX deploy bundle",
        description="Export a run's fine-tuned model (<evaluate stage>/models/<name>) to RUN_DIR/deploy/<name>/: "
        "model.onnx (opset 17, static shapes, named inputs/outputs), the PyTorch weights, calibration and held-out "
        "samples, metadata.json (format version, task and pre-processing spec, metrics, sha256 of every file), "
        "report.md. Fails, leaving no bundle, if ONNX Runtime disagrees with PyTorch on the held-out samples "
        "(relative error > 1e-4). Lists every node TensorRT 10.3 cannot run.")
    ex.add_argument("run_dir", type=Path, help="pipeline run folder, e.g. runs/demo")
    ex.add_argument("--model", help="model name in RUN_DIR/<stage>/models (default: the only deployable model)")
    ex.add_argument("--stage", help="the evaluate stage that saved it (default: whichever stage did)")
    ex.add_argument("--out", type=Path, help="bundle folder (default RUN_DIR/deploy/<model>)")
    ex.add_argument("--quantize", action="store_true", help="also add fp16 and int8 models (as `quantize`)")
    ex.add_argument("--max-scans", dest="max_scans", type=int, help="copy and use at most this many held-out samples")
    ex.set_defaults(fn=_cmd_export)

    q = sub.add_parser(
        "quantize", formatter_class=HelpFormatter, help="add fp16 and INT8 (explicit QDQ) models to a bundle, with their held-out metric",
        description="FP16 (fp32 I/O) and INT8 QDQ (ONNX Runtime static quantization, per-channel symmetric, "
        "calibrated on the bundle's data/calibration samples). Each precision's metric on the bundle's held-out "
        "samples goes into metadata.json and report.md (INT8 target: at most 2 points below fp32). Reads only the bundle.")
    q.add_argument("bundle", type=Path, help="bundle folder from `edgedistill export`")
    q.add_argument("--precision", action="append", choices=["fp16", "int8"],
                   help="precision to add (repeatable; default both)")
    q.set_defaults(fn=_cmd_quantize)

    b = sub.add_parser(
        "bench", formatter_class=HelpFormatter, help="latency p50/p90/p99, throughput and memory of torch / ONNX Runtime / TensorRT",
        description="Warm-up then timed runs at batch 1 and --batch for torch eager, every ONNX precision of the "
        "bundle on ONNX Runtime and TensorRT where installed; writes report/bench.{json,md,png} into the bundle "
        "(or into --out).")
    b.add_argument("bundle", type=Path, help="bundle folder")
    b.add_argument("--batch", type=int, default=4, help="the larger batch size (benchmark-only model copy)")
    b.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    b.add_argument("--iters", type=int, default=30, help="timed runs per backend, precision and batch")
    b.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (default: all cores)")
    b.add_argument("--backend", action="append", choices=["torch", "onnxruntime", "tensorrt"],
                   help="backend to include (repeatable; default all that are installed)")
    b.add_argument("--out", type=Path, help="write the report here instead of into the bundle (a read-only bundle)")
    b.set_defaults(fn=_cmd_bench)

    v = sub.add_parser(
        "verify", formatter_class=HelpFormatter, help="re-check a bundle: hashes, fp32 parity vs PyTorch, recorded metrics",
        description="From the bundle's own files only: verify every sha256, fp32 ONNX Runtime vs the bundle's PyTorch "
        "weights on its held-out samples (relative error <= 1e-4; skipped without torch), and that each precision's "
        "held-out metric equals the one recorded in metadata.json. Exit code 2 with the reason otherwise.")
    v.add_argument("bundle", type=Path, help="bundle folder")
    v.add_argument("--metric-tolerance", dest="metric_tolerance", type=float, default=1e-6,
                   help="allowed |recomputed - recorded| metric difference; the default asks for the export's own "
                   "result (same library versions); on another runtime (e.g. the robot image's onnxruntime, whose "
                   "INT8 kernels differ between releases) allow e.g. 0.5 points")
    v.set_defaults(fn=_cmd_verify)

    i = sub.add_parser(
        "infer", formatter_class=HelpFormatter,
        help="run a bundle on raw files (lidar scans -> per-point labels; audio clips -> top-k keywords; "
        "IMU recordings -> activity per 5 s window; scans or camera frames -> BEV classes)",
        description="Verify the bundle's hashes, pre-process each file with the bundle's task adapter, run TensorRT "
        "if available else ONNX Runtime, and write the result; prints one line per file (the written file, after "
        "a summary where the task has one). Point segmentation: scans in .pcd.bin (nuScenes, "
        "intensity 0..255), .bin (KITTI, 0..1), .pcd or .ply; writes <stem>.labels.npy (uint8 class index per point "
        "of the file; 255 = the point has no range-image pixel) and warns when a scan's beam layout does not match "
        "the model's sensor. Keyword spotting: .wav or .flac clips (any channel count and sample rate: mixed to "
        "mono, resampled to 16 kHz; the middle second of a longer clip is scored); prints the top-k keywords with "
        "their probabilities and writes them to <stem>.keywords.json. IMU activity: .csv (t, ax, ay, az, gx, gy, gz "
        "as the bundle's input spec names and scales them) or .npy recordings, resampled and cut into the model's "
        "non-overlapping windows (those with a sensor gap are skipped and counted); prints the number of windows and "
        "the majority activity and writes <stem>.activity.json (top-k per window) and <stem>.activity.csv "
        "(start_s,end_s,label,score). BEV segmentation: lidar scans (as above) for a lidar BEV bundle, "
        "<name>.frame.json camera frames (each camera's image, K and T_cam_from_lidar; format in "
        "modalities/camera/bev_inputs.py) for a camera BEV bundle; writes <stem>.bev.npy (uint8 class per BEV cell, "
        "row iy, column ix) and a coloured <stem>.bev.png.")
    i.add_argument("bundle", type=Path, help="bundle folder")
    i.add_argument("inputs", nargs="+", help="input files (lidar scans, audio clips, IMU recordings, camera frame files)")
    i.add_argument("--out", type=Path, help="folder for the result files (default: next to each input)")
    i.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="model of the bundle to run")
    i.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"],
                   help="auto: TensorRT where installed, else ONNX Runtime")
    i.set_defaults(fn=_cmd_infer)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m deploy.cli``), e.g. in the torch-free Jetson image."""
    import sys

    p = argparse.ArgumentParser(prog="edgedistill-deploy", description="Deploy bundles: export, quantize, bench, verify, infer.")
    p.add_argument("-v", "--verbose", action="store_true")
    add_deploy_commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as e:
        if args.verbose:
            raise
        print(f"edgedistill: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
