"""The only place that builds a Ray Train ``TorchTrainer`` (Train V2).

A training stage hands over its per-worker loop and a picklable config; this module picks
the resources, points Ray's checkpoint storage into the stage folder and passes the newest
complete checkpoint left by an earlier, interrupted run of the same stage as
``loop_config["resume_from"]``. The loop resumes from ``ray.train.get_checkpoint()`` (a
worker restarted within this run) or else from ``resume_from`` (see :func:`resume_folder`).

Checkpoints are folders written by the worker loop; a checkpoint is complete when its
``meta.json`` (written last) is present and names its epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("edgedistill.train")

META = "meta.json"


def latest_checkpoint(storage_dir: Path) -> Path | None:
    """Newest complete checkpoint folder under ``storage_dir`` (any earlier run), or None."""
    best: tuple[int, Path] | None = None
    for meta in storage_dir.glob(f"*/checkpoint_*/{META}"):
        try:
            epoch = int(json.loads(meta.read_text())["epoch"])
        except (ValueError, KeyError, json.JSONDecodeError):
            continue  # a checkpoint cut off while it was being written
        if best is None or epoch > best[0]:
            best = (epoch, meta.parent)
    return best[1] if best else None


def fit(
    train_loop: Callable[[dict], Any],
    loop_config: dict,
    storage_dir: Path,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    max_failures: int = 2,
):
    """Run ``train_loop`` on ``num_workers`` Ray Train workers; returns the Ray ``Result``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    if use_gpu is None:
        use_gpu = resources.get("GPU", 0) >= num_workers
    if cpus_per_worker is None:
        cpus_per_worker = max(1.0, resources.get("CPU", 1) // num_workers)
    storage_dir = storage_dir.resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    resume = latest_checkpoint(storage_dir)
    name = f"run-{sum(1 for p in storage_dir.iterdir() if p.is_dir() and p.name.startswith('run-'))}"
    if resume:
        log.info("resuming from checkpoint %s", resume)
    trainer = TorchTrainer(
        train_loop,
        # Train V2 refuses `resume_from_checkpoint` (ray-project/ray#49454): the loop loads
        # `resume_from` itself when Ray has no checkpoint of this run yet.
        train_loop_config={**loop_config, "cpus_per_worker": cpus_per_worker,
                           "resume_from": str(resume) if resume else None},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage_dir),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def resume_folder(loop_config: dict) -> Path | None:
    """Inside a worker: the checkpoint folder to start from, or None for a fresh start.

    Ray's own latest checkpoint of this run wins (a restarted worker); otherwise the one an
    earlier run of the stage left (``loop_config["resume_from"]``). The path is local
    (Ray copies a remote checkpoint into a temporary folder).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        return Path(checkpoint.to_directory())
    return Path(loop_config["resume_from"]) if loop_config.get("resume_from") else None
