"""Audio pipeline speed (DESIGN 5.4): deployed keyword-spotter latency per clip and DINO pre-training throughput.

    .venv/bin/python benchmarks/audio.py [--bundle PATH] [--widths 32,64,64,96 ...] [--iters N]
                                         [--dino-widths 32,64,64,96 ...] [--dino-steps N] [--quick] [--out DIR]

1. Latency of the deployed student per 1 s clip at batch 1 on this CPU, p50/p90/p99 over
   ``--iters`` timed runs after ``--warmup`` untimed ones, each stage timed on its own:

   - ``front-end numpy``: ``LogMelSpec(...)(wave)``, the robot runtime's front-end (16 kHz
     wave -> normalised (64, 101) log-mel; the mean/std are fitted on a few synthetic clips,
     so they look like a real dataset's);
   - ``front-end torchaudio``: :class:`modalities.audio.logmel_torch.TorchLogMel` on the same
     wave (the training front-end; context for the numpy one, their ratio is printed);
   - ``ORT fp32, 1 thread`` (robot-like: one intra-op thread) and ``ORT fp32, default threads``
     (ONNX Runtime's choice, one per physical core): :class:`deploy.runtime.OrtEngine` on the
     fp32 ONNX graph, all graph optimisations on;
   - ``torch eager fp32, 1 thread``: the same :class:`KeywordClassifier` in PyTorch (context);
   - ``total``: what the runtime does per clip, the ``keyword_spotting`` task adapter's
     numpy front-end + the ORT engine + the softmax (``deploy.tasks.keyword_spotting``).

   Without ``--bundle``, a randomly initialised ``KeywordClassifier`` (20 keywords) is built
   for each of ``--widths`` (default: the shipped student, widths 32, 64, 64, 96) and exported
   to a temporary folder (opset 17, TorchScript exporter, input ``log_mel`` (1, 1, 64, 101),
   output ``logits``); with ``--bundle`` the bundle's ``model.onnx``, its torch weights and
   its ``metadata.json`` ``task.input`` front-end spec are used instead. Every stage runs
   once per round, in a rotating order, so that load from other processes hits all alike;
   ORT's idle threads do not spin (``session.intra_op.allow_spinning=0``) so they do not
   slow the other stages down. Torch runs on one thread in this part.

2. The student's parameter count (PyTorch, BatchNorm included) and its multiply-accumulates
   per clip, counted from the ONNX graph (:func:`deploy.bench.count_params_macs`).

3. DINO pre-training throughput in clips/s: ``--dino-steps`` timed steps after
   ``--dino-warmup`` untimed ones of the step of :func:`pipelines.audio.dino.train_loop_per_worker`
   (multi-crop views of synthetic random log-mels by ``views_of_batch``: 2 global + 4 local;
   teacher forward on the global views, student ``MultiCropNet`` forward on all, ``dino_loss``,
   backward, gradient clipping, AdamW step, ``ema_update``, centre update, the teacher
   entropy) at batch ``--dino-batch`` (64) for each of ``--dino-widths`` (default 32, 64, 64,
   96; the presets pre-train 64, 128, 128, 192), on the CPU with torch's default thread count
   and with one thread (``--dino-threads``; on a machine whose cores other jobs keep busy,
   torch's OpenMP threads wait on each other at every operator, and one thread can be many
   times faster), and on CUDA too when ``torch.cuda.is_available()`` (device named).
   ``clips/s`` counts the whole step (view building included); ``net clips/s`` leaves out the
   numpy view building; the time of each phase of the step is listed below the table. The
   settings take turns step by step; after ``--dino-budget-s`` (60 s) the steps stop once each
   setting has one timed step (the table's ``timed steps`` says how many ran).

Prints a Markdown report (machine named on its first line) and writes ``audio.json`` and
``audio.md`` into ``--out`` (default ``benchmarks/results/audio/``). Absolute times are
context for the machine named; on a shared machine compare the stages within one run.
``--quick`` (30 timed runs, one DINO step at batch 16) is a smoke check.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (ORT_INTRA_OP_THREADS, PhaseClock, cuda_peak, device_fields,  # noqa: E402
                                device_label, header_line, latency_rows, load_average, load_bundle_model,
                                phase_text, record_phases, report_header, step_rates, take_turns,
                                time_interleaved, write_report)
from deploy.bench import count_params_macs  # noqa: E402
from deploy.export import export_onnx  # noqa: E402
from deploy.runtime import OrtEngine  # noqa: E402
from deploy.tasks.keyword_spotting import KIND as KWS_KIND  # noqa: E402
from deploy.tasks.keyword_spotting import KeywordSpotting, io_metadata, task_metadata  # noqa: E402
from modalities.audio.logmel import LogMelSpec, fit_normalisation  # noqa: E402
from modalities.audio.students import KeywordClassifier, build_audio_student, count_parameters  # noqa: E402

SHIPPED_WIDTHS = (32, 64, 64, 96)
KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
STAGES = ("front-end numpy", "front-end torchaudio", "ORT fp32, 1 thread", "ORT fp32, default threads",
          "torch eager fp32, 1 thread", "total (numpy + ORT 1 thread + softmax)",
          "total (numpy + ORT default threads + softmax)")


def parse_widths(text: str) -> tuple[int, int, int, int]:
    try:
        w = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths: expected 4 comma-separated integers, got {text!r}") from None
    if len(w) != 4 or min(w) < 1:
        raise argparse.ArgumentTypeError(f"widths: expected 4 positive integers, got {text!r}")
    return w  # type: ignore[return-value]


def synthetic_wave(rng: np.random.Generator, sr: int = 16_000) -> np.ndarray:
    """1 s of something speech-shaped: a voiced burst (harmonics of a gliding pitch) in noise, float32."""
    t = np.arange(sr) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    start, length = rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.5)
    envelope = np.exp(-0.5 * ((t - start - length / 2) / (length / 4)) ** 2)
    wave = 0.3 * envelope * voiced + 0.01 * rng.standard_normal(sr)
    return wave.astype(np.float32)


# ----------------------------------------------------------------------------- 1 + 2: deployed student


def synthetic_model(widths: tuple[int, ...], spec: LogMelSpec, tmp: Path):
    """(eval-mode KeywordClassifier, fp32 ONNX path, task metadata) of a random student of ``widths``."""
    torch.manual_seed(0)
    model = KeywordClassifier(build_audio_student("ds_cnn", {"widths": list(widths), "blocks": [1, 1, 1, 1]}),
                              len(KEYWORDS)).eval()
    path = tmp / f"kws_{'_'.join(map(str, widths))}.onnx"
    sidecar = {"input": spec.to_dict(), "classes": list(KEYWORDS), "num_classes": len(KEYWORDS)}
    inputs, outputs = io_metadata(sidecar)
    with warnings.catch_warnings():  # DSBlock's shape check is static for a static input: the trace is right
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        export_onnx(model, {inputs[0]["name"]: np.zeros(inputs[0]["shape"], np.float32)}, [outputs[0]["name"]], path)
    meta = {"task": task_metadata(sidecar), "inputs": inputs, "outputs": outputs,
            "model": {"name": f"random ds_cnn {list(widths)}", "student": "ds_cnn",
                      "student_kwargs": {"widths": list(widths)}, "classes": list(KEYWORDS),
                      "num_classes": len(KEYWORDS)}}
    return model, path, meta


def time_student(model: torch.nn.Module, onnx_path: Path, meta: dict, wave: np.ndarray, iters: int,
                 warmup: int) -> dict:
    """Per-stage latency (ms) of one deployed student, all stages interleaved (module docstring)."""
    from modalities.audio.logmel_torch import TorchLogMel  # noqa: PLC0415

    adapter = KeywordSpotting(meta)
    spec = adapter.spec
    tmel = TorchLogMel(spec).eval()
    eng1 = OrtEngine(onnx_path, threads=1, spin=False)
    engd = OrtEngine(onnx_path, threads=None, spin=False)
    wave_t = torch.from_numpy(wave)
    feeds, _ = adapter.preprocess(wave)
    x = torch.from_numpy(feeds[adapter.input_name])

    with torch.inference_mode():
        ref_np, ref_ta = spec(wave), tmel(wave_t).numpy()
        logits_torch = model(x).numpy()
    logits_ort = eng1.run(feeds)[adapter.output_name]
    checks = {"front_end_max_abs_diff_numpy_vs_torchaudio": float(np.abs(ref_np - ref_ta).max()),
              "logits_max_abs_diff_ort_vs_torch": float(np.abs(logits_ort - logits_torch).max())}

    def total(engine):
        def run():
            f, state = adapter.preprocess(wave)
            return adapter.postprocess(engine.run(f), state)
        return run

    def torchaudio_front_end():
        with torch.inference_mode():
            tmel(wave_t)

    def torch_eager():
        with torch.inference_mode():
            model(x)

    fns = dict(zip(STAGES, (lambda: spec(wave), torchaudio_front_end, lambda: eng1.run(feeds),
                            lambda: engd.run(feeds), torch_eager, total(eng1), total(engd)), strict=True))
    lat = time_interleaved(fns, iters, warmup)
    p50 = {n: v["p50"] for n, v in lat.items()}
    student = model.student
    return {
        "model": meta["model"].get("name"),
        "widths": list(getattr(student, "widths", [])),
        "input_shape": list(feeds[adapter.input_name].shape),
        "classes": adapter.num_classes,
        "params": count_parameters(model),
        "params_backbone": count_parameters(student),
        "onnx": count_params_macs(onnx_path),
        "ort_intra_op_threads": ORT_INTRA_OP_THREADS,
        "latency_ms": lat,
        "ratios_of_p50": {
            "front_end_numpy_over_torchaudio": p50["front-end numpy"] / p50["front-end torchaudio"],
            "torch_eager_over_ort_1_thread": p50["torch eager fp32, 1 thread"] / p50["ORT fp32, 1 thread"],
            "ort_default_threads_over_1_thread": p50["ORT fp32, default threads"] / p50["ORT fp32, 1 thread"],
            "front_end_share_of_total_1_thread": p50["front-end numpy"] / p50["total (numpy + ORT 1 thread + softmax)"],
        },
        "checks": checks,
    }


# ----------------------------------------------------------------------------- 3: DINO throughput


class DinoStep:
    """The DINO step of :func:`pipelines.audio.dino.train_loop_per_worker` on synthetic log-mels, timed by phase.

    One instance per (backbone widths, device, torch CPU threads); :meth:`step` runs one step
    with its thread count, so that several instances can take turns (load hits all alike).
    """

    PHASES = ("views", "teacher forward", "student forward + loss", "backward", "update")

    def __init__(self, widths: tuple[int, ...], device: torch.device, threads: int, batch: int, total_steps: int,
                 seed: int = 0):
        from modalities.audio.students import DINOHead  # noqa: PLC0415
        from pipelines.audio.config import DinoConfig  # noqa: PLC0415
        from pipelines.audio.dino import MultiCropNet  # noqa: PLC0415
        from pipelines.losses.dino import teacher_temperature  # noqa: PLC0415

        self.device, self.threads, self.batch, self.total_steps = device, threads, batch, total_steps
        self.cfg = cfg = DinoConfig.model_validate({"dataset": "synthetic", "backbone": {"widths": list(widths)},
                                                    "batch_clips": batch})
        self.rng = rng = np.random.default_rng(seed)
        spec = LogMelSpec()
        floor = float(np.log(spec.eps))
        # Raw log(mel + eps) of 1 s clips: values around -6 over a silent floor, as the real ones.
        self.clips = [np.maximum(rng.normal(-6.0, 3.0, spec.feature_shape), floor).astype(np.float32)
                      for _ in range(max(4 * batch, 128))]
        values = np.concatenate([c.ravel() for c in self.clips[:32]])
        self.spec = spec.with_stats(float(values.mean()), float(values.std()))
        torch.manual_seed(seed)
        self.backbone = build_audio_student("ds_cnn", cfg.backbone.kwargs())
        self.student = MultiCropNet(self.backbone, DINOHead(self.backbone.feature_dim, cfg.out_dim, cfg.hidden_dim,
                                                            cfg.bottleneck_dim))
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW([p for p in self.student.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.student.to(device).train()
        self.teacher.to(device).train()
        self.center = torch.zeros(cfg.out_dim, device=device)
        self.t_temp = teacher_temperature(0, cfg.teacher_temp_warmup_epochs, cfg.teacher_temp, cfg.teacher_temp_final)
        self.step_index, self.losses = 0, []
        self.timed: dict[str, list[float]] = {k: [] for k in ("step", *self.PHASES)}

    def step(self, record: bool) -> None:
        from pipelines.audio.dino import _entropy, views_of_batch  # noqa: PLC0415
        from pipelines.evaluate.protocols import warmup_cosine  # noqa: PLC0415
        from pipelines.losses.dino import dino_loss, ema_momentum, ema_update, update_center  # noqa: PLC0415

        cfg, step, device = self.cfg, self.step_index, self.device
        torch.set_num_threads(self.threads)
        clock = PhaseClock(device)
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.optim.lr * warmup_cosine(step, self.total_steps, 1)
        idx = self.rng.permutation(len(self.clips))[: self.batch]
        views = [v.to(device) for v in views_of_batch(self.clips, idx, cfg, self.spec, self.rng)]
        clock.lap(wait=False)
        B = views[0].shape[0]
        with torch.no_grad():
            t_out = self.teacher(views[:2]).view(2, B, -1)
        clock.lap()
        s_out = self.student(views).view(len(views), B, -1)
        loss = dino_loss(s_out, t_out, self.center, cfg.student_temp, self.t_temp)
        clock.lap()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        ema_update(self.teacher, self.student, ema_momentum(step, self.total_steps, cfg.ema_momentum, 1.0))
        self.center = update_center(self.center, t_out.mean(dim=(0, 1))[None, None], cfg.center_momentum)
        self.losses.append(loss.item())
        _entropy(t_out.reshape(-1, t_out.shape[-1]), self.center, self.t_temp)
        clock.lap()
        self.step_index += 1
        if record:
            record_phases(self.timed, self.PHASES, clock.marks)

    def result(self, warmup: int) -> dict:
        c = self.cfg.crops
        return {
            **device_fields(self.device, self.threads),
            "widths": list(self.cfg.backbone.widths),
            "batch_clips": self.batch,
            "views": [f"2 global x {c.global_frames} frames", f"{c.local_crops} local x {c.local_frames} frames"],
            "params_backbone": count_parameters(self.backbone),
            "params_student_with_head": count_parameters(self.student),
            **step_rates(self.timed, self.PHASES, self.batch, warmup, "clips"),
            "loss_finite": bool(np.all(np.isfinite(self.losses))),
            **cuda_peak(self.device),
        }


def dino_throughput(configs: list[tuple[tuple[int, ...], torch.device, int]], batch: int, steps: int,
                    warmup: int, budget_s: float = 0.0) -> list[dict]:
    """DINO clips/s of each (widths, device, CPU threads), their steps taking turns (``warmup`` untimed each first;
    ``budget_s``: :func:`benchmarks._common.take_turns`)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return take_turns([DinoStep(w, dev, threads, batch, warmup + steps) for w, dev, threads in configs], steps, warmup,
                      budget_s)


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = header_line(report)
    lat = report["latency"]
    lines += [f"Deployed keyword spotter, batch 1, one 1 s clip (16 kHz -> log-mel "
              f"{lat['students'][0]['input_shape']}), {lat['iters']} interleaved runs after {lat['warmup']} "
              "warm-up, ms:",
              "",
              "| student widths | params | MMACs | stage | p50 | p90 | p99 |", "|---|---:|---:|---|---:|---:|---:|"]
    for s in lat["students"]:
        head = [f"{','.join(map(str, s['widths']))}", f"{s['params'] / 1e3:.1f}k", f"{s['onnx']['macs'] / 1e6:.2f}"]
        lines += latency_rows(head, s["latency_ms"])
    lines.append("")
    for s in lat["students"]:
        r = s["ratios_of_p50"]
        lines.append(f"- widths {','.join(map(str, s['widths']))} (p50 ratios): front-end numpy / torchaudio "
                     f"{r['front_end_numpy_over_torchaudio']:.2f}x; torch eager / ORT (1 thread) "
                     f"{r['torch_eager_over_ort_1_thread']:.2f}x; ORT default / 1 thread "
                     f"{r['ort_default_threads_over_1_thread']:.2f}x; front-end share of the total "
                     f"{100 * r['front_end_share_of_total_1_thread']:.0f}%; ORT vs torch logits max |diff| "
                     f"{s['checks']['logits_max_abs_diff_ort_vs_torch']:.1e}")
    if report["dino"]:
        d0, budget = report["dino"][0], report["dino_budget_s"]
        lines += ["", f"DINO pre-training step ({' + '.join(d0['views'])} views of synthetic log-mels; teacher and "
                  "student forward, loss, backward, AdamW, EMA), after "
                  f"{d0['warmup_steps']} warm-up step(s)"
                  + (f"; stopped by the {budget:g} s time budget before {d0['steps_asked']} timed steps"
                     if d0["stopped_by_time_budget"] else "") + ":", "",
                  "| device | backbone widths | params (+ head) | batch | timed steps | s/step | clips/s "
                  "| net clips/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for d in report["dino"]:
            head = (d["params_student_with_head"] - d["params_backbone"]) / 1e3
            lines.append(f"| {device_label(d)} | {','.join(map(str, d['widths']))} | {d['params_backbone'] / 1e3:.0f}k "
                         f"(+{head:.0f}k) | {d['batch_clips']} | {d['timed_steps']} | {d['s_per_step']:.3f} | "
                         f"{d['clips_per_s']:.1f} | {d['net_clips_per_s']:.1f} |")
        lines.append("")
        for d in report["dino"]:
            lines.append(f"- {device_label(d)}, widths {','.join(map(str, d['widths']))}: s/step by phase: "
                         f"{phase_text(d)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="a keyword-spotting bundle (its model.onnx and front-end)")
    p.add_argument("--widths", type=parse_widths, nargs="+", default=[SHIPPED_WIDTHS],
                   help="student widths to time without --bundle, e.g. 32,64,64,96 64,128,128,192")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--dino-widths", type=parse_widths, nargs="*", default=[SHIPPED_WIDTHS],
                   help="DINO backbone widths (none: skip the DINO part)")
    p.add_argument("--dino-batch", type=int, default=64)
    p.add_argument("--dino-steps", type=int, default=5)
    p.add_argument("--dino-warmup", type=int, default=1)
    p.add_argument("--dino-budget-s", type=float, default=60.0,
                   help="stop the DINO steps after this many seconds, once each setting has one timed step (0: off)")
    p.add_argument("--dino-threads", type=int, nargs="+", default=None,
                   help="torch CPU threads for the DINO step (default: torch's default and 1)")
    p.add_argument("--no-cuda", action="store_true", help="DINO on the CPU only, even where CUDA is available")
    p.add_argument("--quick", action="store_true", help="smoke check: 30 timed runs, 1 DINO step at batch 16")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "audio")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.dino_steps, args.dino_warmup, args.dino_batch = 30, 3, 1, 1, 16
    if args.iters < 1 or args.dino_steps < 1 or args.dino_batch < 2:
        p.error("--iters and --dino-steps must be >= 1, --dino-batch >= 2")

    import onnxruntime  # noqa: PLC0415

    t_start = time.perf_counter()
    default_threads = torch.get_num_threads()
    load_start = load_average()
    wave = synthetic_wave(np.random.default_rng(0))
    spec = fit_normalisation(LogMelSpec(), [synthetic_wave(np.random.default_rng(s)) for s in range(1, 5)])
    students = []
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = ([load_bundle_model(args.bundle, KWS_KIND)] if args.bundle is not None
                  else [synthetic_model(w, spec, Path(tmp)) for w in args.widths])
        front_end_spec = KeywordSpotting(models[0][2]).spec.to_dict()
        for model, onnx_path, meta in models:
            students.append(time_student(model, onnx_path, meta, wave, args.iters, args.warmup))
            print(f"timed {students[-1]['model']} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    torch.set_num_threads(default_threads)

    runs = [(torch.device("cpu"), t) for t in dict.fromkeys(args.dino_threads or [default_threads, 1])]
    if torch.cuda.is_available() and not args.no_cuda:
        runs.append((torch.device("cuda"), default_threads))
    dino = dino_throughput([(w, dev, t) for w in args.dino_widths for dev, t in runs], args.dino_batch,
                           args.dino_steps, args.dino_warmup, args.dino_budget_s)
    torch.set_num_threads(default_threads)
    print(f"DINO steps done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

    report = {
        **report_header("audio", load_start, onnxruntime.__version__),
        "quick": args.quick,
        "latency": {"iters": args.iters, "warmup": args.warmup, "bundle": str(args.bundle) if args.bundle else None,
                    "front_end_spec": front_end_spec,
                    "torch_threads": 1, "students": students},
        "dino_budget_s": args.dino_budget_s,
        "dino": dino,
    }
    write_report(args.out, "audio", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
