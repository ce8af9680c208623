"""SLidR training throughput per student: data loading alone vs the training step, and peak memory.

Measured side by side in one run on the same scans (nuScenes scale by default: HDL-32E
scans of ~34k points, 6 cameras at 1600x900 cropped to 224x416):

- loading: scans/s through the real ``SlidrDataset`` + ``Collate`` (JPEG decode, superpixel
  maps, pairs, augmentation, voxelization or range projection), in the main process;
- step: scans/s of forward + backward + SGD step of student and teacher head on batches
  already in memory (on the GPU when there is one, with AMP as the pipeline uses it);
- peak memory: CUDA max allocated on GPU, else the growth of the process's resident memory
  during the training steps (sampled; model, activations, gradients, optimizer state).

    python benchmarks/slidr_throughput.py                 # generates a small set in a temp dir
    python benchmarks/slidr_throughput.py --data DIR --superpixels DIR --out results.json

Context: the SLidR reference trains at about 3 scans/s on a V100; the design target on one
modern GPU is >= 100 scans/s at nuScenes scale. Timings are wall-clock on this machine;
compare only numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modalities.camera.io import read_image  # noqa: E402
from modalities.camera.superpixels import compute_superpixels, save_superpixels  # noqa: E402
from modalities.lidar.sensors import load_sensor  # noqa: E402
from modalities.synthetic.config import SynthConfig  # noqa: E402
from modalities.synthetic.nuscenes_writer import generate_dataset  # noqa: E402
from pipelines.data.superpixels_stage import list_camera_jobs  # noqa: E402
from pipelines.slidr.config import DistillConfig  # noqa: E402
from pipelines.slidr.data import Collate, SlidrDataset, list_scans  # noqa: E402
from pipelines.slidr.model import build_image_teacher, build_student  # noqa: E402
from pipelines.slidr.step import train_step  # noqa: E402
from pipelines.student_inputs import PointFeatureNet, range_spec_of  # noqa: E402

BUDGET = 256


def make_dataset(root: Path, scans: int, width: int, height: int, sensor: str) -> tuple[Path, Path]:
    data, sp = root / "nuscenes", root / "superpixels"
    generate_dataset(data, SynthConfig(seed=0, scenes=1, samples_per_scene=scans, sweeps_per_sample=0,
                                       image_width=width, image_height=height, lidar_sensor=sensor))
    for image_path, sp_path, _, _ in list_camera_jobs(data, "v1.0-synthetic", sp):
        save_superpixels(sp_path, compute_superpixels(read_image(image_path), "slic_downsampled", BUDGET))
    return data, sp


class PeakRss:
    """Peak resident memory of this process while the block runs, sampled every 2 ms (MiB)."""

    def __enter__(self) -> "PeakRss":
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.baseline = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


def bench_student(student: str, scans, sensor, batch: int, steps: int, device: torch.device, crop) -> dict:
    cfg = DistillConfig(dataset="bench", superpixels="superpixels", student=student, batch_scans=batch,
                        augment={"crop_hw": crop, "min_pairs_per_image": 256})
    ds = SlidrDataset(scans, cfg.augment, BUDGET, seed=0)
    collate = Collate(student, BUDGET, cfg.sparse_unet.voxel_size, range_spec_of(build_student(cfg), sensor))
    groups = [[(i * batch + j) % len(scans) for j in range(batch)] for i in range(steps + 1)]

    t0 = time.perf_counter()
    batches = [collate([ds[i] for i in g]) for g in groups]
    load_s = time.perf_counter() - t0

    torch.manual_seed(0)
    model, teacher = build_student(cfg).to(device), build_image_teacher(cfg.teacher, cfg.out_dim).to(device)
    opt = torch.optim.SGD(list(model.parameters()) + list(teacher.head.parameters()), lr=0.05, momentum=0.9)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with PeakRss() as rss:
        for k, b in enumerate(batches):
            b.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss = train_step(PointFeatureNet(model), teacher, b, opt, scaler, cfg.temperature, device.type, use_amp)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k > 0:  # the first step warms up allocators / kernels
                times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss.growth_mib
    n_points = float(np.mean([len(b.student_input.point_batch) / b.student_input.batch_size for b in batches]))
    return {
        "student": student,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "points_per_scan": n_points,
        "load_scans_per_s": len(groups) * batch / load_s,
        "step_scans_per_s": batch * len(times) / sum(times),
        "step_ms": 1000 * float(np.median(times)),
        "peak_memory_mib": peak,
        "last_loss": loss.item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="nuScenes-format root (default: generate one)")
    ap.add_argument("--superpixels", type=Path, help="superpixel folder for --data")
    ap.add_argument("--scans", type=int, default=4, help="scans to generate")
    ap.add_argument("--image", default="1600x900", help="generated image size WxH")
    ap.add_argument("--crop", default="224x416", help="crop HxW")
    ap.add_argument("--batch", type=int, default=2, help="scans per step")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    ap.add_argument("--sensor", default="hdl32e")
    ap.add_argument("--students", default="sparse_unet,range_net")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    crop = tuple(int(v) for v in args.crop.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data, sp = args.data, args.superpixels
        else:
            w, h = (int(v) for v in args.image.split("x"))
            print(f"generating {args.scans} scans at {w}x{h} ...", file=sys.stderr)
            data, sp = make_dataset(Path(tmp), args.scans, w, h, args.sensor)
        scans = list_scans(data, "v1.0-synthetic", sp)
        sensor = load_sensor(args.sensor)
        rows = [bench_student(s, scans, sensor, args.batch, args.steps, device, crop) for s in args.students.split(",")]
    machine = {
        "cpu": platform.processor() or platform.machine(), "cpu_count": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None, "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(f"\nmachine: {machine}")
    print(f"batch {args.batch} scans x 6 cameras, crop {args.crop}, device {device}\n")
    print(f"{'student':<12} {'params M':>8} {'pts/scan':>9} {'load scans/s':>13} {'step scans/s':>13} "
          f"{'step ms':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['student']:<12} {r['params_m']:>8.2f} {r['points_per_scan']:>9.0f} {r['load_scans_per_s']:>13.2f} "
              f"{r['step_scans_per_s']:>13.2f} {r['step_ms']:>8.0f} {r['peak_memory_mib']:>9.0f}")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "args": vars(args) | {"out": str(args.out)},
                                        "results": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
