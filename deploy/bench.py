"""``edgedistill bench BUNDLE``: latency, throughput and memory of every backend/precision of a bundle.

For each of torch eager (fp32, from the bundle's own weights, when torch is installed), ONNX Runtime
fp32 / fp16 / int8 (the bundle's models) and TensorRT (when importable with a GPU), at
batch 1 (the deployed static model) and a larger batch (a copy of the ONNX graph with the
batch dimension set to N, written to a temporary folder: the deployed model stays batch 1):

- ``warmup`` untimed runs, then ``iters`` timed runs; latency p50/p90/p99/mean in ms per
  inference (one call on the whole batch); throughput = batch * 1000 / mean latency (samples
  per second: scans, clips; the key keeps its historical name ``throughput_scans_per_s``);
- end to end at batch 1 (backend ``onnxruntime end-to-end``, ``tensorrt end-to-end``, every
  precision): the task adapter's numpy pre-processing (lidar: range-image projection; audio:
  the log-mel front-end) + the engine + the adapter's post-processing, per sample, on a
  held-out sample already read from its file (a robot gets scans / audio from a driver);
  ``stages_ms`` times each numpy step alone (``read`` the file, ``preprocess``, ``postprocess``).
  Pre-/post-processing and the end-to-end rows use the adapter's ``bench_input`` of the sample:
  one deployed batch of it (IMU: the recording cut to one 5 s window, so resampling +
  normalisation + engine of one window), so every row is per scan / clip / window;
- peak memory: the process RSS increase from before the engine is created to the peak
  after the timed runs (sampled after every run; ONNX Runtime and torch CPU allocations
  are outside Python's tracemalloc), and ``torch.cuda.max_memory_allocated`` for torch on GPU;
- params and multiply-accumulates of the deployed network, counted from the fp32 ONNX
  graph (Conv: ``N * C_out * H_out * W_out * C_in/group * kH * kW``; Gemm/MatMul: ``M * N * K``).

Writes ``report/bench.json``, ``report/bench.md`` and ``report/bench.png`` into the bundle
and refreshes its hashes. The machine (CPU model, core count, GPU) is named in all three.
Timings on a shared machine are noisy: compare backends within one run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from modalities.fileio import atomic_write_json, atomic_write_text

from .bundle import load_bundle, write_metadata
from .report import write_report

log = logging.getLogger("edgedistill.deploy")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}"
    try:
        from .tensorrt import cuda_device_name, l4t_release  # noqa: PLC0415

        gpu = cuda_device_name()
        if gpu:
            desc += f", GPU {gpu}"
        if l4t_release():
            desc += f", L4T {l4t_release()}"
    except Exception:  # noqa: BLE001 - no GPU stack at all
        pass
    return desc


def count_params_macs(onnx_path: Path) -> dict:
    """Parameters (Conv/Gemm/MatMul weights + biases) and MACs per inference of an fp32 ONNX graph."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper, shape_inference  # noqa: PLC0415

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value for d in dims]
    for name, arr in inits.items():
        shapes[name] = list(arr.shape)
    macs = 0
    for node in g.node:
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # (C_out, C_in/group, kH, kW)
            out = shapes[node.output[0]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            k = a[-1]
            n = b[-2] if trans_b else b[-1]
            macs += int(np.prod(a[:-1])) * k * n
    # Weights and biases of the layers (BatchNorm is folded into Conv on export).
    layer_inputs = {i for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") for i in n.input[1:]}
    params = int(sum(inits[name].size for name in layer_inputs if name in inits))
    return {"params": params, "macs": int(macs)}


def with_batch(onnx_path: Path, batch: int, dst: Path) -> Path:
    """Copy of a static model whose input/output batch dimension is ``batch`` (benchmark only)."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(onnx_path))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _rss() -> int:
    import psutil  # noqa: PLC0415

    return psutil.Process().memory_info().rss


def latency_stats(times_ms: list[float], batch: int) -> dict:
    t = np.asarray(times_ms)
    return {"batch": batch, "iters": len(t), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
            "throughput_scans_per_s": float(batch * 1000.0 / t.mean())}


def time_calls(fn, warmup: int, iters: int, rss0: int) -> tuple[list[float], int]:
    """Run ``fn`` warmup + iters times; per-call ms of the timed ones and the peak RSS increase (bytes)."""
    for _ in range(warmup):
        fn()
    peak = _rss()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        peak = max(peak, _rss())
    return times, peak - rss0


def stage_stats(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms)
    return {"iters": len(t), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean())}


def bench_stages(adapter, sample, fp32_model: Path, warmup: int, iters: int) -> tuple[dict, dict[str, np.ndarray], Any, Any]:
    """Times of the adapter's numpy steps on one sample: (stats per step, feeds, pre-processing state, raw sample).

    ``read`` (decode the file), ``preprocess`` (raw sample -> engine feeds) and ``postprocess``
    (engine outputs -> result, with the fp32 ONNX Runtime outputs of the sample); the last two, like the
    returned raw sample, on ``adapter.bench_input`` of the file's sample (one deployed batch of it).
    """
    from .runtime import OrtEngine  # noqa: PLC0415

    raw = adapter.bench_input(adapter.read(sample.path))
    feeds, state = adapter.preprocess(raw)
    outputs = OrtEngine(fp32_model, threads=1).run(feeds)
    steps = {"read": lambda: adapter.read(sample.path), "preprocess": lambda: adapter.preprocess(raw),
             "postprocess": lambda: adapter.postprocess(outputs, state)}
    stats = {name: stage_stats(time_calls(fn, warmup, iters, _rss())[0]) for name, fn in steps.items()}
    return stats, feeds, state, raw


def bench_end_to_end(adapter, engine, raw, warmup: int, iters: int, rss0: int) -> dict:
    """Latency of pre-processing + ``engine`` + post-processing of one raw sample (batch 1)."""
    dtypes = {s.name: s.dtype for s in engine.inputs}

    def call():
        feeds, state = adapter.preprocess(raw)
        adapter.postprocess(engine.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()}),
                            state)

    times, mem = time_calls(call, warmup, iters, rss0)
    return {**latency_stats(times, 1), "peak_mem_mb": mem / 2**20, "memory": "process RSS increase",
            "includes": "adapter.preprocess + engine + adapter.postprocess (sample already read from its file)"}


def bench_ort_end_to_end(adapter, path: Path, raw, warmup: int, iters: int, threads: int) -> dict:
    from .runtime import OrtEngine  # noqa: PLC0415

    rss0 = _rss()
    return bench_end_to_end(adapter, OrtEngine(path, threads=threads), raw, warmup, iters, rss0)


def bench_trt_end_to_end(bundle, adapter, precision: str, raw, warmup: int, iters: int) -> dict:
    from .tensorrt import TrtEngine, build_engine  # noqa: PLC0415

    out = bench_end_to_end(adapter, TrtEngine(build_engine(bundle, precision)), raw, warmup, iters, _rss())
    return {**out, "peak_mem_mb": None, "memory": "n/a (TensorRT device memory)"}


def _batch(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


def bench_ort(path: Path, feeds: dict[str, np.ndarray], warmup: int, iters: int, threads: int) -> dict:
    from .runtime import OrtEngine  # noqa: PLC0415

    rss0 = _rss()
    eng = OrtEngine(path, threads=threads)
    times, mem = time_calls(lambda: eng.run(feeds), warmup, iters, rss0)
    return {**latency_stats(times, _batch(feeds)), "peak_mem_mb": mem / 2**20, "memory": "process RSS increase"}


def bench_torch(bundle, feeds: dict[str, np.ndarray], warmup: int, iters: int, threads: int,
                device: str = "cpu") -> dict:
    import torch  # noqa: PLC0415

    from .tasks import task_module  # noqa: PLC0415

    task_mod = task_module(bundle.metadata["task"]["kind"])
    rss0 = _rss()
    model = task_mod.torch_module(bundle.torch_weights(), bundle.metadata).to(device)
    torch.set_num_threads(threads)
    xs = [torch.from_numpy(v).to(device) for v in feeds.values()]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def call():
        with torch.inference_mode():
            model(*xs)
        if device == "cuda":
            torch.cuda.synchronize()

    times, mem = time_calls(call, warmup, iters, rss0)
    if device == "cuda":
        return {**latency_stats(times, _batch(feeds)), "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
                "memory": "torch.cuda.max_memory_allocated"}
    return {**latency_stats(times, _batch(feeds)), "peak_mem_mb": mem / 2**20, "memory": "process RSS increase"}


def _torch_has_cuda() -> bool:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return False
    return torch.cuda.is_available()


def bench_trt(bundle, precision: str, feeds: dict[str, np.ndarray], warmup: int, iters: int, tmp: Path) -> dict:
    """TensorRT latency; batch > 1 uses an engine built from a batch-N copy of the model (benchmark only)."""
    from modalities.fileio import atomic_write_bytes  # noqa: PLC0415

    from .tensorrt import TrtEngine, build_engine, build_serialized  # noqa: PLC0415

    b = _batch(feeds)
    if b == 1:
        engine_path = build_engine(bundle, precision)
    else:
        onnx_b = with_batch(bundle.model_path(precision), b, tmp / f"trt_{precision}_b{b}.onnx")
        engine_path = tmp / f"{onnx_b.stem}.engine"
        timing = tmp / "timing.cache"
        atomic_write_bytes(engine_path, build_serialized(onnx_b, {k: v.shape for k, v in feeds.items()}, timing))
    eng = TrtEngine(engine_path)
    times, _ = time_calls(lambda: eng.run(feeds), warmup, iters, _rss())
    device = eng.time_device(iters)
    return {**latency_stats(times, b), "device_only_p50_ms": float(np.percentile(device, 50)),
            "memory": "n/a (TensorRT device memory)", "peak_mem_mb": None}


def run_bench(bundle_dir: str | Path, batch: int = 4, warmup: int = 5, iters: int = 30, threads: int | None = None,
              backends: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt"), out_dir: str | Path | None = None) -> dict:
    """Benchmark a bundle; returns the result dict.

    The JSON / Markdown / PNG go to the bundle's ``report/`` (and metadata.json names them),
    or to ``out_dir`` when given, leaving the bundle untouched (e.g. mounted read-only on a robot).
    """
    from tqdm import tqdm  # noqa: PLC0415

    from .tasks import adapter_for  # noqa: PLC0415

    bundle = load_bundle(bundle_dir)
    threads = threads or max(1, os.cpu_count() or 1)
    adapter = adapter_for(bundle.metadata, bundle.path)
    noun = adapter.sample_noun
    # A real held-out input, batch 1, and the time of each numpy step of the task on it.
    stages, example, _, raw = bench_stages(adapter, adapter.samples("heldout")[0], bundle.model_path("fp32"), warmup,
                                           iters)
    log.info("numpy steps per %s: read %.2f ms, pre-process %.2f ms, post-process %.2f ms (p50)", noun,
             stages["read"]["p50_ms"], stages["preprocess"]["p50_ms"], stages["postprocess"]["p50_ms"])
    results: list[dict] = []
    skipped: dict[str, str] = {}
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in sorted({1, batch}):
            x = {k: np.ascontiguousarray(np.repeat(v, b, axis=0)) for k, v in example.items()}
            if "torch" in backends:
                jobs.append(("torch eager", "fp32", b, lambda x=x: bench_torch(bundle, x, warmup, iters, threads)))
                if _torch_has_cuda():
                    jobs.append(("torch eager cuda", "fp32", b,
                                 lambda x=x: bench_torch(bundle, x, warmup, iters, threads, "cuda")))
            if "onnxruntime" in backends:
                for prec in bundle.metadata["precisions"]:
                    path = bundle.model_path(prec)
                    if b != 1:
                        path = with_batch(path, b, Path(tmp) / f"{prec}_b{b}.onnx")
                    jobs.append(("onnxruntime", prec, b, lambda p=path, x=x: bench_ort(p, x, warmup, iters, threads)))
            if "tensorrt" in backends:
                for prec in bundle.metadata["precisions"]:
                    jobs.append(("tensorrt", prec, b,
                                 lambda p=prec, x=x: bench_trt(bundle, p, x, warmup, iters, Path(tmp))))
        for prec in bundle.metadata["precisions"] if "onnxruntime" in backends else ():
            jobs.append(("onnxruntime end-to-end", prec, 1, lambda p=bundle.model_path(prec):
                         bench_ort_end_to_end(adapter, p, raw, warmup, iters, threads)))
        for prec in bundle.metadata["precisions"] if "tensorrt" in backends else ():
            jobs.append(("tensorrt end-to-end", prec, 1, lambda p=prec:
                         bench_trt_end_to_end(bundle, adapter, p, raw, warmup, iters)))
        for backend, prec, b, job in tqdm(jobs, desc="bench", unit="config"):
            try:
                r = job()
            except ImportError as e:  # torch / tensorrt / psutil absent: say so, keep going
                skipped[backend] = str(e).splitlines()[0]
                continue
            except FileNotFoundError as e:
                skipped[f"{backend} {prec}"] = str(e)
                continue
            results.append({"backend": backend, "precision": prec, **r})
            log.info("%s %s batch %d: p50 %.2f ms, %.1f %ss/s", backend, prec, b, r["p50_ms"],
                     r["throughput_scans_per_s"], noun)
    out = {"machine": machine_description(), "threads": threads, "warmup": warmup, "iters": iters,
           "task": bundle.metadata["task"]["kind"], "sample_noun": noun,
           "inputs": {s["name"]: s["shape"] for s in bundle.inputs}, **count_params_macs(bundle.model_path("fp32")),
           "stages_ms": stages, "results": results, "skipped": skipped}
    report = Path(out_dir) if out_dir else bundle.path / "report"
    report.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report / "bench.json", out)
    atomic_write_text(report / "bench.md", render_markdown(out))
    if not plot(out, report / "bench.png"):
        skipped["plot"] = "matplotlib not installed"
    if out_dir:
        return out
    meta = bundle.metadata
    meta["bench"] = {"json": "report/bench.json", "markdown": "report/bench.md", "machine": out["machine"]}
    write_report(bundle.path, meta)
    write_metadata(bundle.path, meta)
    return out


def render_markdown(out: dict) -> str:
    noun = out.get("sample_noun", "sample")
    lines = [f"# Benchmark on {out['machine']}", "",
             f"{out['threads']} intra-op threads, {out['warmup']} warm-up + {out['iters']} timed runs on a held-out "
             f"{noun}; inputs {out['inputs']} (batch 1 deployed; larger batches are benchmark-only copies). "
             f"Deployed network: {out['params'] / 1e6:.3f} M params, {out['macs'] / 1e9:.3f} GMAC per {noun}.", ""]
    st = out.get("stages_ms")
    if st:
        lines += [f"Per {noun}, numpy on the CPU (p50 / p90 ms): read the file {st['read']['p50_ms']:.2f} / "
                  f"{st['read']['p90_ms']:.2f}, pre-processing {st['preprocess']['p50_ms']:.2f} / "
                  f"{st['preprocess']['p90_ms']:.2f}, post-processing {st['postprocess']['p50_ms']:.2f} / "
                  f"{st['postprocess']['p90_ms']:.2f}. The `end-to-end` rows time pre-processing + engine + "
                  f"post-processing of one {noun} (already read from its file); the other rows the engine alone.", ""]
    lines += [f"| backend | precision | batch | p50 ms | p90 ms | p99 ms | {noun}s/s | peak mem MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in out["results"]:
        mem = "-" if r.get("peak_mem_mb") is None else f"{r['peak_mem_mb']:.1f}"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['throughput_scans_per_s']:.1f} | {mem} |")
    for k, v in out["skipped"].items():
        lines.append(f"\nSkipped {k}: {v}")
    return "\n".join(lines) + "\n"


def plot(out: dict, path: Path) -> bool:
    """Bar chart of p50 latency per backend/precision/batch; False when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    rs = out["results"]
    labels = [f"{r['backend']}\n{r['precision']} b{r['batch']}" for r in rs]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rs)), 4))
    ax.bar(range(len(rs)), [r["p50_ms"] for r in rs],
           yerr=[[0] * len(rs), [r["p90_ms"] - r["p50_ms"] for r in rs]], capsize=3, color="tab:blue")
    ax.set_xticks(range(len(rs)), labels, fontsize=7)
    ax.set_ylabel("latency per inference, ms (p50, bar to p90)")
    ax.set_title(out["machine"][:90], fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def load_results(bundle_dir: Path) -> dict:
    return json.loads((Path(bundle_dir) / "report" / "bench.json").read_text())
