"""What the Ray Train loops of the audio and IMU stages share: checkpoints, epoch reports, the stage's hand-off.

Checkpoint folders (one per epoch, written by rank 0; :mod:`pipelines.ray_train` finds the newest
complete one): ``<name>.safetensors`` per module, ``state.pt`` (optimizer, epoch, history and
extra tensors; tensors and plain types only, read back with ``weights_only=True``) and
``meta.json`` last.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modalities.fileio import atomic_write_json, sha256_file

from .ray_train import META, checkpoint_directory, latest_checkpoint
from .student_record import STUDENT_RECORD


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


def save_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizer, epoch: int, history: list[dict],
                    extra: dict | None = None) -> None:
    for name, m in modules.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in unwrap(m).state_dict().items()},
                  str(folder / f"{name}.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch, "history": history, **(extra or {})},
               folder / "state.pt")
    (folder / META).write_text(json.dumps({"epoch": epoch}))


def load_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizer) -> dict:
    for name, m in modules.items():
        unwrap(m).load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return state


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))


def worker_setup(loop_config: dict) -> tuple[int, int, "torch.device"]:
    """Inside a worker: (rank, world size, device); torch threads and seed set from the loop config."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    torch.manual_seed(loop_config["seed"])
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def report_epoch(rank: int, metrics: dict, write) -> None:
    """Report an epoch's metrics with a checkpoint folder that rank 0 fills with ``write(folder)``."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            write(Path(tmp))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def fit_on_clips(ctx, cfg, train_loop, spec_dict: dict, clips: list, labels, files: tuple[str, ...]) -> list[dict]:
    """Run ``train_loop`` on Ray Train over ``clips`` (cached as one hidden .npz in the stage folder, removed
    after); ``files`` of the last checkpoint are copied into the stage folder. Returns the history."""
    from .audio.data import save_arrays  # noqa: PLC0415

    return fit_with_cache(ctx, cfg, train_loop, spec_dict, lambda cache: save_arrays(cache, clips, labels), files)


def fit_with_cache(ctx, cfg, train_loop, spec_dict: dict, write_cache, files: tuple[str, ...]) -> list[dict]:
    """Run ``train_loop`` on Ray Train over the arrays that ``write_cache(path)`` writes to one hidden .npz in the
    stage folder (the loop config's ``clips``; removed after); ``files`` of the last checkpoint are copied into
    the stage folder. Returns the history."""
    from .ray_train import fit  # noqa: PLC0415

    cache = ctx.stage_dir / ".clips.npz"
    write_cache(cache)
    storage = storage_of(cfg, ctx)
    result = fit(train_loop, {"config": cfg.model_dump(mode="json"), "spec": spec_dict,
                              "clips": str(cache.resolve()), "seed": ctx.seed},
                 storage=storage, num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, max_failures=cfg.max_failures)
    history = finish_fit(result, storage, ctx.stage_dir, files)
    cache.unlink(missing_ok=True)
    return history


def finish_fit(result, storage, stage_dir: Path, files: tuple[str, ...]) -> list[dict]:
    """Copy ``files`` of the fit's last checkpoint into ``stage_dir`` (atomically); returns the history."""
    if result.error:
        raise result.error
    # No checkpoint reported by this fit: every epoch had been trained before an interruption.
    checkpoint = result.checkpoint.as_directory() if result.checkpoint else checkpoint_directory(latest_checkpoint(storage))
    with checkpoint as folder:
        folder = Path(folder)
        for name in files:
            shutil.copyfile(folder / name, stage_dir / f".{name}.tmp")
            (stage_dir / f".{name}.tmp").replace(stage_dir / name)
        history = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)["history"]
    atomic_write_json(stage_dir / "history.json", history)
    return history


def storage_of(cfg, ctx) -> str | Path:
    return (f"{cfg.storage_path.rstrip('/')}/{ctx.run_dir.name}/{ctx.name}" if cfg.storage_path
            else ctx.stage_dir / ".ray_results")


def write_student_record(stage_dir: Path, kind: str, kwargs: dict, spec_dict: dict, teacher: dict, method: str,
                         task: str = "clip_features") -> dict:
    """``student.json`` for a backbone in ``student.safetensors`` (task ``clip_features``: audio clips,
    ``window_features``: IMU windows)."""
    record = {"format": 2, "kind": kind, "kwargs": kwargs, "task": task, "input": spec_dict,
              "teacher": teacher, "method": method, "weights": "student.safetensors",
              "weights_sha256": sha256_file(stage_dir / "student.safetensors")}
    atomic_write_json(stage_dir / STUDENT_RECORD, record)
    return record
