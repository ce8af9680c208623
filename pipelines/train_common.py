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


def resume_training(loop_config: dict, modules: dict[str, torch.nn.Module], optimizer) -> tuple[int, list[dict], dict]:
    """(first epoch to train, history so far, the checkpoint's state or {}): the modules and optimizer are loaded
    from the newest complete checkpoint of this run when there is one (:func:`pipelines.ray_train.resume_folder`)."""
    from .ray_train import resume_folder  # noqa: PLC0415

    folder = resume_folder(loop_config)
    if folder is None:
        return 0, [], {}
    state = load_checkpoint(folder, modules, optimizer)
    return int(state["epoch"]) + 1, list(state["history"]), state


def step_schedule(n: int, world: int, batch: int, epochs: int, warmup_fraction: float,
                  min_batch: int = 1) -> tuple[int, int, int, int]:
    """(batch, steps per epoch, total steps, warm-up steps) for ``n`` samples split over ``world`` workers."""
    batch = min(batch, max(min_batch, n // world))
    steps_per_epoch = max(1, (n // world) // batch)
    total = steps_per_epoch * epochs
    return batch, steps_per_epoch, total, int(round(warmup_fraction * total))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(loss: torch.Tensor, optimizer, model: torch.nn.Module, max_grad_norm: float | None, method: str,
                   epoch: int, step: int) -> None:
    """Refuse a non-finite loss (naming the method, epoch and step), then backward, clip the gradient norm, step."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{method} loss is {loss.item()} at epoch {epoch}, step {step}: lower optim.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()


def epoch_bar(method: str, epoch: int, epochs: int, steps: int, rank: int):
    """The progress bar of one epoch (rank 0 only)."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(range(steps), desc=f"{method} epoch {epoch + 1}/{epochs}", disable=rank != 0, mininterval=5,
                dynamic_ncols=True)


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
