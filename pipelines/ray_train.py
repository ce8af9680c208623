"""The only place that builds a Ray Train ``TorchTrainer`` (Train V2).

A training stage hands over its per-worker loop and a picklable config; this module picks
the resources, points Ray's checkpoint storage at ``storage`` and passes the newest
complete checkpoint left by an earlier, interrupted run of the same stage as
``loop_config["resume_from"]``. The loop resumes from ``ray.train.get_checkpoint()`` (a
worker restarted within this run) or else from the newest complete checkpoint in the storage
(``loop_config["checkpoint_storage"]``; see :func:`resume_folder`).

``storage`` is a local folder (the stage folder by default), a shared folder every node
mounts, or any URI Ray Train accepts as ``RunConfig.storage_path`` (``s3://``, ``gs://``,
``file://``...): listing and reading go through ``pyarrow.fs``, the filesystem layer Ray
Train itself uses (https://docs.ray.io/en/latest/train/user-guides/persistent-storage.html).

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


def is_uri(storage: str | Path) -> bool:
    return "://" in str(storage)


def storage_fs(storage: str | Path):
    """(pyarrow filesystem, path inside it) of a local folder or a URI."""
    import pyarrow.fs as pafs

    if is_uri(storage):
        return pafs.FileSystem.from_uri(str(storage))
    return pafs.LocalFileSystem(), str(Path(storage).resolve())


def _join(storage: str | Path, fs_path: str, root: str) -> str | Path:
    """``fs_path`` (under ``root``) in the form ``storage`` was given: a Path, or a URI."""
    if not is_uri(storage):
        return Path(fs_path)
    return str(storage).rstrip("/") + fs_path[len(root.rstrip("/")):]


def latest_checkpoint(storage: str | Path) -> str | Path | None:
    """Newest complete checkpoint folder under ``storage`` (any earlier run), or None.

    A local ``storage`` gives a :class:`Path`, a URI gives the checkpoint's URI.
    """
    import pyarrow.fs as pafs

    fs, root = storage_fs(storage)
    best: tuple[int, str] | None = None
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        rel = info.path[len(root.rstrip("/")) + 1:].split("/")
        if len(rel) != 3 or rel[2] != META or not rel[1].startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(info.path) as f:
                epoch = int(json.loads(f.read().decode())["epoch"])
        except (ValueError, KeyError, UnicodeDecodeError):
            continue  # a checkpoint cut off while it was being written
        if best is None or epoch > best[0]:
            best = (epoch, info.path.rsplit("/", 1)[0])
    return _join(storage, best[1], root) if best else None


def checkpoint_directory(checkpoint: str | Path):
    """Context manager: a local folder with the checkpoint's files (downloaded from a URI when needed)."""
    import ray.train

    if is_uri(checkpoint):
        return ray.train.Checkpoint(str(checkpoint)).as_directory()
    return ray.train.Checkpoint.from_directory(str(checkpoint)).as_directory()


def fit(
    train_loop: Callable[[dict], Any],
    loop_config: dict,
    storage: str | Path,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    max_failures: int = 2,
):
    """Run ``train_loop`` on ``num_workers`` Ray Train workers; returns the Ray ``Result``.

    ``storage``: where Ray Train writes checkpoints (module docstring); a folder or a URI.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    if use_gpu is None:
        use_gpu = resources.get("GPU", 0) >= num_workers
    if cpus_per_worker is None:
        cpus_per_worker = max(1.0, resources.get("CPU", 1) // num_workers)
    import pyarrow.fs as pafs

    fs, root = storage_fs(storage)
    fs.create_dir(root, recursive=True)
    storage = storage if is_uri(storage) else Path(root)
    resume = latest_checkpoint(storage)
    runs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    name = f"run-{sum(1 for i in runs if i.type == pafs.FileType.Directory and i.base_name.startswith('run-'))}"
    if resume:
        log.info("resuming from checkpoint %s", resume)
    trainer = TorchTrainer(
        train_loop,
        # Train V2 refuses `resume_from_checkpoint` (ray-project/ray#49454): the loop loads
        # `resume_from` itself when Ray has no checkpoint of this run yet.
        train_loop_config={**loop_config, "cpus_per_worker": cpus_per_worker,
                           "resume_from": str(resume) if resume else None, "checkpoint_storage": str(storage)},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def resume_folder(loop_config: dict) -> Path | None:
    """Inside a worker: the checkpoint folder to start from, or None for a fresh start.

    Ray's own latest checkpoint of this run wins (a restarted worker); otherwise the one an
    earlier run of the stage left (``loop_config["resume_from"]``, a folder or a URI). The
    path is local (Ray copies a remote checkpoint into a temporary folder).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        return Path(checkpoint.to_directory())
    # Ray registers a reported checkpoint asynchronously: a worker killed right after reporting can be
    # restarted with no checkpoint from Ray although complete ones are in storage (seen with sub-second
    # epochs: the restart retrained from epoch 0). The newest complete checkpoint in the storage, of this
    # run or an earlier one, is where to resume.
    storage = loop_config.get("checkpoint_storage")
    resume = latest_checkpoint(storage) if storage else loop_config.get("resume_from")
    if not resume:
        return None
    return Path(ray.train.Checkpoint(str(resume)).to_directory()) if is_uri(resume) else Path(resume)
