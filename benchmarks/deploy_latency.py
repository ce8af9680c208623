"""ONNX Runtime fp32 vs torch eager latency at batch 1 on this CPU, side by side in one run.

    .venv/bin/python benchmarks/deploy_latency.py [BUNDLE] [--threads N] [--iters N]

Without BUNDLE, a random range-view segmenter of the default RangeNet shape on a 32 x 1088
(HDL-32E) input is exported to a temporary folder. Both runtimes get the same input and
the same number of intra-op threads; ONNX Runtime runs with every graph optimisation on
(``GraphOptimizationLevel.ORT_ENABLE_ALL``, https://onnxruntime.ai/docs/performance/
model-optimizations/graph-optimizations.html). Runs alternate (torch, ORT, torch, ...) so
that load from other processes hits both alike, and ORT's idle threads do not spin
(``session.intra_op.allow_spinning=0``) so they do not slow torch down in between; the
ratio of medians is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.bench import machine_description  # noqa: E402
from deploy.export import export_onnx  # noqa: E402
from deploy.model import RangeSegmenter  # noqa: E402
from deploy.runtime import OrtEngine  # noqa: E402
from modalities.lidar.range_net import RangeNet  # noqa: E402


def _model_and_onnx(bundle: Path | None, tmp: Path, widths: list[int]):
    if bundle is not None:
        from deploy.bundle import load_bundle
        from deploy.tasks.point_segmentation import torch_module

        b = load_bundle(bundle)
        return torch_module(b.torch_weights(), b.metadata), b.model_path("fp32"), tuple(b.inputs[0]["shape"])
    torch.manual_seed(0)
    student = RangeNet(widths=widths)
    model = RangeSegmenter(student, torch.nn.Linear(student.feature_dim, 16)).eval()
    shape = (1, 6, 32, 1088)
    path = tmp / "model.onnx"
    export_onnx(model, {"range_image": np.zeros(shape, np.float32)}, ["logits"], path)
    return model, path, shape


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--widths", type=int, nargs=5, default=[32, 32, 64, 128, 256], help="RangeNet widths (no bundle)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, onnx_path, shape = _model_and_onnx(args.bundle, Path(tmp), args.widths)
        ort = OrtEngine(onnx_path, threads=args.threads, spin=False)  # no busy-wait stealing torch's cores
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                model(xt)

        feeds = {ort.inputs[0].name: x}

        def run_ort():
            ort.run(feeds)

        for _ in range(args.warmup):
            run_torch()
            run_ort()
        times = {"torch eager": [], "onnxruntime": []}
        for _ in range(args.iters):
            for name, fn in (("torch eager", run_torch), ("onnxruntime", run_ort)):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    print(f"machine: {machine_description()}; input {list(shape)}, batch 1, {args.threads} threads, "
          f"{args.iters} alternating runs")
    for name, t in times.items():
        print(f"{name:12s} p50 {np.median(t):8.2f} ms   p90 {np.percentile(t, 90):8.2f} ms")
    ratio = np.median(times["torch eager"]) / np.median(times["onnxruntime"])
    print(f"speed-up of ONNX Runtime over torch eager (median torch / median ORT): {ratio:.2f}x")


if __name__ == "__main__":
    main()
