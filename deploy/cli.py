"""``edgedistill export | quantize | bench | infer``: the deploy subcommands.

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
        quantize_bundle(path, max_scans=args.max_scans)
    print(path)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_bundle

    bundle = quantize_bundle(args.bundle, tuple(args.precision or ("fp16", "int8")), max_scans=args.max_scans)
    m = bundle.metadata["metrics"]["miou_heldout"]
    print(" ".join(f"{k}={v:.2f}" for k, v in m.items()) + " mIoU")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    out = run_bench(args.bundle, batch=args.batch, warmup=args.warmup, iters=args.iters, threads=args.threads,
                    backends=tuple(args.backend or ("torch", "onnxruntime", "tensorrt")))
    print(Path(args.bundle) / "report" / "bench.md")
    log.info("machine: %s", out["machine"])
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from .runtime import infer_files

    try:
        written = infer_files(Path(args.bundle), [Path(i) for i in args.inputs], args.out, args.precision, args.backend)
    except ImportError as e:  # --backend tensorrt without TensorRT: a usage error, not a crash
        raise ValueError(str(e)) from e
    for p in written:
        print(p)
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except empty ones (None/False), whose help says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export``, ``quantize``, ``bench`` and ``infer`` on an argparse subparsers object."""
    ex = sub.add_parser(
        "export", formatter_class=HelpFormatter, help="fine-tuned range-view model of a run -> verified ONNX deploy bundle",
        description="Export a run's fine-tuned range_net segmenter (<evaluate stage>/models/<name>) to a bundle: "
        "model.onnx (opset 17, static shape), metadata.json (pre/post-processing, metrics, sha256 of every file), "
        "report.md. Fails, leaving no bundle, if ONNX Runtime disagrees with PyTorch on the held-out scans "
        "(relative error > 1e-4). Lists every node TensorRT 10.3 cannot run.")
    ex.add_argument("run_dir", type=Path, help="pipeline run folder, e.g. runs/demo")
    ex.add_argument("--model", help="model name in RUN_DIR/<stage>/models (default: the only range_net model)")
    ex.add_argument("--stage", help="the evaluate stage that saved it (default: whichever stage did)")
    ex.add_argument("--out", type=Path, help="bundle folder (default RUN_DIR/bundle/<model>)")
    ex.add_argument("--quantize", action="store_true", help="also add fp16 and int8 models (as `quantize`)")
    ex.add_argument("--max-scans", dest="max_scans", type=int, help="use at most this many held-out scans")
    ex.set_defaults(fn=_cmd_export)

    q = sub.add_parser(
        "quantize", formatter_class=HelpFormatter, help="add fp16 and INT8 (explicit QDQ) models to a bundle, with their held-out mIoU",
        description="FP16 (fp32 I/O) and INT8 QDQ (ONNX Runtime static quantization, per-channel symmetric, "
        "calibrated on the run's labeled training scans). Each precision's per-point mIoU on the held-out scans "
        "goes into metadata.json and report.md (INT8 target: at most 2 mIoU points below fp32).")
    q.add_argument("bundle", type=Path, help="bundle folder from `edgedistill export`")
    q.add_argument("--precision", action="append", choices=["fp16", "int8"],
                   help="precision to add (repeatable; default both)")
    q.add_argument("--max-scans", dest="max_scans", type=int, help="use at most this many held-out scans")
    q.set_defaults(fn=_cmd_quantize)

    b = sub.add_parser(
        "bench", formatter_class=HelpFormatter, help="latency p50/p90/p99, throughput and memory of torch / ONNX Runtime / TensorRT",
        description="Warm-up then timed runs at batch 1 and --batch for torch eager, every ONNX precision of the "
        "bundle on ONNX Runtime and TensorRT where installed; writes report/bench.{json,md,png} into the bundle.")
    b.add_argument("bundle", type=Path, help="bundle folder")
    b.add_argument("--batch", type=int, default=4, help="the larger batch size (benchmark-only model copy)")
    b.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    b.add_argument("--iters", type=int, default=30, help="timed runs per backend, precision and batch")
    b.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (default: all cores)")
    b.add_argument("--backend", action="append", choices=["torch", "onnxruntime", "tensorrt"],
                   help="backend to include (repeatable; default all that are installed)")
    b.set_defaults(fn=_cmd_bench)

    i = sub.add_parser(
        "infer", formatter_class=HelpFormatter, help="per-point labels of raw scan files with a bundle",
        description="Verify the bundle's hashes, pre-process each scan (.pcd.bin nuScenes, .bin KITTI), run "
        "TensorRT if available else ONNX Runtime, and write <stem>.labels.npy (uint8 class index per point of "
        "the file; 255 = the point has no range-image pixel).")
    i.add_argument("bundle", type=Path, help="bundle folder")
    i.add_argument("inputs", nargs="+", help="scan files")
    i.add_argument("--out", type=Path, help="folder for the .labels.npy files (default: next to each scan)")
    i.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="model of the bundle to run")
    i.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"],
                   help="auto: TensorRT where installed, else ONNX Runtime")
    i.set_defaults(fn=_cmd_infer)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m deploy.cli``), e.g. in the torch-free Jetson image."""
    import sys

    p = argparse.ArgumentParser(prog="edgedistill-deploy", description="Deploy bundles: export, quantize, bench, infer.")
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
