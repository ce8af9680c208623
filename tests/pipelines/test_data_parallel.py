"""Data-parallel training: a lidar student under DDP, gradients synchronised across workers.

The training loop wraps :class:`pipelines.student_inputs.PointFeatureNet` (student ->
per-point features as one module) in DistributedDataParallel; before, the bare student
was wrapped and every worker crashed on the wrapper. Two gloo processes see different
scans; after a few optimizer steps their weights must still be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modalities.lidar.range_net import RangeNet
from modalities.lidar.sensors import load_sensor
from pipelines.student_inputs import PointFeatureNet, make_student_input, range_spec_of

ROOT = Path(__file__).resolve().parents[2]


def _scan(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = np.concatenate([rng.uniform(-30, 30, (2000, 2)), rng.uniform(-2, 1, (2000, 1))], 1).astype(np.float32)
    return xyz, rng.uniform(0, 1, 2000).astype(np.float32)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial weights on both ranks
    student = RangeNet(out_dim=8, widths=[8, 8, 8, 8, 8])
    model = torch.nn.parallel.DistributedDataParallel(PointFeatureNet(student))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    xyz, inten = _scan(seed=rank)  # a different scan on each rank
    inp = make_student_input("range_net", [xyz], [inten], range_spec=range_spec_of(student, load_sensor("vlp16")))
    for _ in range(3):
        loss = model(inp)[inp.point_valid][:, 0].mean()  # (features are unit-norm: not their norm)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    torch.save(flat, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_point_feature_net_under_ddp_keeps_workers_in_sync(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    initial = torch.cat([p.detach().reshape(-1) for p in RangeNet(out_dim=8, widths=[8, 8, 8, 8, 8]).parameters()])
    assert (a - initial).abs().max() > 1e-3  # the steps moved the weights
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # ... identically on both workers


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_distillation_with_two_ray_train_workers(tmp_path):
    """`num_workers: 2` through the real CLI: two CPU workers over gloo, checkpoints, a distilled student."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"runs_dir={tmp_path}",
         "only=[synth, superpixels, slidr_range]", "stages.slidr_range.num_workers=2",
         "stages.slidr_range.optim.epochs=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    stage = tmp_path / "slidr_tiny" / "slidr_range"
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    # Each worker trains on its half of the scans (DistributedSampler): rank 0 reports 1 of the 2 train scans.
    assert all(h["scans"] == 1 for h in history)
    assert (stage / "student.safetensors").stat().st_size > 0
