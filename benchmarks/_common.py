"""What the deployed-model benchmarks (``benchmarks/audio.py``, ``benchmarks/imu.py``) share.

- Latency: :func:`time_interleaved` runs every stage once per round in a rotating order (so that
  load from other processes hits all alike) and summarises each with :func:`percentiles`.
- Training throughput: each setting is an object with ``step(record)`` and ``result(warmup)``;
  :func:`take_turns` runs their steps in turns under a time budget; :class:`PhaseClock` and
  :func:`record_phases` keep a step's phase times, :func:`step_rates` sums them up,
  :func:`device_fields` names the setting's device.
- Report: :func:`report_header` (machine, load, versions), :func:`header_line`,
  :func:`latency_rows` and :func:`phase_text` for the Markdown, :func:`write_report` for the
  ``<name>.json`` + ``<name>.md`` pair.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deploy.bench import machine_description

# What the two ORT settings of the latency tables mean (written into the JSON report).
ORT_INTRA_OP_THREADS = {"1 thread": 1, "default threads": "0: ONNX Runtime's choice, one per physical core"}


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": int(a.size)}


def time_interleaved(fns: dict[str, Callable[[], object]], iters: int, warmup: int) -> dict[str, dict[str, float]]:
    """Latency (ms) :func:`percentiles` of each named stage: ``warmup`` untimed rounds, then ``iters`` timed ones,
    every stage once per round, the order rotated by one each round (no stage always follows the same one)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(iters):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: percentiles(t) for n, t in times.items()}


def load_bundle_model(bundle_dir: Path, kind: str):
    """(torch module from the bundle's weights, its fp32 model.onnx, its metadata) of a bundle of task ``kind``."""
    from deploy.bundle import load_bundle  # noqa: PLC0415
    from deploy.tasks import task_module  # noqa: PLC0415

    b = load_bundle(bundle_dir)
    if b.metadata["task"]["kind"] != kind:
        raise SystemExit(f"{bundle_dir}: task {b.metadata['task']['kind']!r} is not {kind!r}")
    return task_module(kind).torch_module(b.torch_weights(), b.metadata), b.model_path("fp32"), b.metadata


# ----------------------------------------------------------------------------- training steps taking turns


def sync(device: torch.device) -> None:
    """Wait for the GPU (before reading a clock) when ``device`` is CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseClock:
    """The clock of one step's phases: started (after a GPU sync) on construction, :meth:`lap` at each phase's end."""

    def __init__(self, device: torch.device):
        self.device = device
        sync(device)
        self.marks = [time.perf_counter()]

    def lap(self, wait: bool = True) -> None:
        """End a phase (``wait``: after the GPU's queued work, so that it counts in this phase)."""
        if wait:
            sync(self.device)
        self.marks.append(time.perf_counter())


def record_phases(timed: dict[str, list[float]], phases: tuple[str, ...], marks: list[float]) -> None:
    """Append a step's time (``marks[-1] - marks[0]``) and each phase's (between consecutive marks) to ``timed``."""
    timed["step"].append(marks[-1] - marks[0])
    for k, t0, t1 in zip(phases, marks[:-1], marks[1:], strict=True):
        timed[k].append(t1 - t0)


def step_rates(timed: dict[str, list[float]], phases: tuple[str, ...], batch: int, warmup: int, unit: str) -> dict:
    """warmup_steps, timed_steps, s_per_step, ``<unit>_per_s`` (whole step), ``net_<unit>_per_s`` (without the
    ``views`` phase) and phase_s_per_step of a setting's :func:`record_phases` times."""
    step_s, views_s = timed["step"], timed["views"]
    wall, views_wall, n = float(sum(step_s)), float(sum(views_s)), len(step_s)
    return {
        "warmup_steps": warmup,
        "timed_steps": n,
        "s_per_step": wall / n,
        f"{unit}_per_s": batch * n / wall,
        f"net_{unit}_per_s": batch * n / max(wall - views_wall, 1e-9),
        "phase_s_per_step": {k: float(np.mean(timed[k])) for k in phases},
    }


def cuda_peak(device: torch.device) -> dict:
    """On CUDA, the peak memory (MiB) since the last reset: the settings take turns, so it is the peak of all
    CUDA settings of the run; empty on the CPU."""
    if device.type != "cuda":
        return {}
    return {"peak_cuda_memory_mib_all_cuda_settings": torch.cuda.max_memory_allocated(device) / 2**20}


def device_fields(device: torch.device, threads: int) -> dict:
    """``device``, ``device_name`` (the GPU's, or the CPU's from the machine description) and ``torch_threads``."""
    return {"device": device.type,
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else machine_description().split(",")[0]),
            "torch_threads": threads}


def take_turns(runs: list, steps: int, warmup: int, budget_s: float) -> list[dict]:
    """Each run's ``result(warmup)`` after ``warmup`` untimed + ``steps`` timed ``step(record)`` calls, in turns.

    With ``budget_s`` > 0, stops after the round in which that many seconds have passed, once every run
    has at least one timed step (a loaded machine can make a CPU step take tens of seconds).
    """
    t0, stopped = time.perf_counter(), False
    for i in range(warmup + steps):
        for run in runs:
            run.step(record=i >= warmup)
        if budget_s > 0 and i >= warmup and i < warmup + steps - 1 and time.perf_counter() - t0 > budget_s:
            stopped = True
            break
    return [{**run.result(warmup), "steps_asked": steps, "stopped_by_time_budget": stopped} for run in runs]


# ----------------------------------------------------------------------------- report


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def report_header(benchmark: str, load_start: str, onnxruntime_version: str) -> dict:
    """The report's first keys: benchmark, machine, cpu_count, load averages (start, now) and versions."""
    return {
        "benchmark": benchmark,
        "machine": machine_description(),
        "cpu_count": os.cpu_count(),
        "load_average": load_start,
        "load_average_end": load_average(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     "onnxruntime": onnxruntime_version},
    }


def header_line(report: dict) -> list[str]:
    """The Markdown's first line (machine, load averages, versions) and a blank line."""
    ver = report["versions"]
    return [f"machine: {report['machine']}; load average {report['load_average']} (start) / "
            f"{report['load_average_end']} (end); torch {ver['torch']}, onnxruntime {ver['onnxruntime']}", ""]


def latency_rows(head: list[str], latency_ms: dict[str, dict]) -> list[str]:
    """One Markdown row per stage (p50, p90, p99 ms); the ``head`` cells stand on the first row only."""
    rows = []
    for i, (stage, v) in enumerate(latency_ms.items()):
        cells = head if i == 0 else [""] * len(head)
        rows.append(f"| {' | '.join(cells)} | {stage} | {v['p50']:.3f} | {v['p90']:.3f} | {v['p99']:.3f} |")
    return rows


def device_label(d: dict) -> str:
    """``cuda (<name>)`` or ``cpu, <n> thread(s)`` of a setting's :func:`device_fields`."""
    n = d["torch_threads"]
    return f"cuda ({d['device_name']})" if d["device"] == "cuda" else f"cpu, {n} thread{'s' if n != 1 else ''}"


def phase_text(d: dict) -> str:
    """``<phase> <s/step>, ...`` of a setting's ``phase_s_per_step``."""
    return ", ".join(f"{k} {v:.3f}" for k, v in d["phase_s_per_step"].items())


def write_report(out: Path, name: str, report: dict, md: str) -> None:
    """Print the Markdown and write ``out/<name>.json`` and ``out/<name>.md``."""
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(md)
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.md'}")
