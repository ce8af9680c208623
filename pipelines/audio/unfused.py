"""Stage kind ``unfused``: DINO teacher -> pseudo-labels -> layered self-distillation into a compact student.

UnFuSeD (Ghosh et al., "UnFuSeD: UNsupervised Finetuning Using SElf supervised Distillation",
arXiv:2303.05668), as DESIGN 5.4 describes it (the reference code does not run as published):

1. embed the target clips (the dataset's training clips, no labels, plus the pool) with the
   frozen DINO teacher backbone (the centred 1 s clip, as evaluation and deploy see it);
2. PCA-whiten to ``pca_dim`` and k-means into ``clusters`` (32) pseudo-classes (scikit-learn);
3. train a randomly initialised compact student: heads on stages 1-3 (pooled stage features ->
   a bottleneck to the final feature width -> a classifier) and a final classifier, all on the
   pseudo-labels, with :func:`pipelines.losses.unfused.unfused_loss` (CE, KL of each head to the
   final classifier, feature MSE; alpha 0.7, beta 0.3, gamma 0.003);
4. fine-tuning on labels is the evaluate stage's (``clip_features`` task).

The heads exist only in training: ``student.safetensors`` is the backbone alone. The cluster
purity against the true keywords of the training clips is reported as a diagnostic (the
labels are read for that figure only, never for training).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from modalities.audio.logmel import LogMelSpec

from ..plots import save_line_plot
from ..ray_train import resume_folder
from ..runner import StageContext, StageResult
from ..student_record import read_student_record
from .config import UnfusedConfig
from .data import ViewParams, eval_input, load_arrays, load_splits, make_view, read_log_mels
from ..train_common import (epoch_bar, fit_on_clips, load_checkpoint, optimizer_step, report_epoch, save_checkpoint,
                           set_lr, unwrap, worker_setup, write_student_record)


class LayeredStudent(nn.Module):
    """A backbone with classifier heads on stages 1-3 and a final classifier (training only)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        D = backbone.feature_dim
        self.bottlenecks = nn.ModuleList(nn.Sequential(nn.Linear(w, D), nn.BatchNorm1d(D), nn.ReLU())
                                         for w in backbone.widths[:3])
        self.head_classifiers = nn.ModuleList(nn.Linear(D, num_classes) for _ in backbone.widths[:3])
        self.classifier = nn.Linear(D, num_classes)

    def forward(self, x: torch.Tensor):
        feats = self.backbone.stage_features(x)
        head_features = [b(f) for b, f in zip(self.bottlenecks, feats[:3])]
        head_logits = [c(f) for c, f in zip(self.head_classifiers, head_features)]
        return head_logits, head_features, self.classifier(feats[3]), feats[3]


@torch.no_grad()
def embed(backbone: nn.Module, inputs: np.ndarray, batch: int = 128) -> np.ndarray:
    backbone.eval()
    return torch.cat([backbone(torch.from_numpy(inputs[i:i + batch])[:, None])
                      for i in range(0, len(inputs), batch)]).numpy()


def pseudo_labels(features: np.ndarray, clusters: int, pca_dim: int, seed: int) -> np.ndarray:
    """PCA-whitened, L2-normalised features -> k-means cluster ids (N,)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    dim = min(pca_dim, features.shape[1], len(features) - 1)
    z = PCA(n_components=dim, whiten=True, random_state=seed).fit_transform(features.astype(np.float64))
    z /= np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    return KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit_predict(z).astype(np.int64)


def purity(clusters: np.ndarray, labels: list[str]) -> float:
    """Fraction of clips whose cluster's majority label is their own (%)."""
    hits = 0
    for c in np.unique(clusters):
        members = [labels[i] for i in np.flatnonzero(clusters == c)]
        hits += max(members.count(x) for x in set(members))
    return 100.0 * hits / len(labels)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train.torch

    from modalities.audio.students import build_audio_student
    from ..evaluate.protocols import warmup_cosine
    from ..losses.unfused import unfused_loss

    cfg = UnfusedConfig.model_validate(loop_config["config"])
    spec = LogMelSpec.from_dict(loop_config["spec"])
    rank, world, device = worker_setup(loop_config)
    clips, targets = load_arrays(Path(loop_config["clips"]))
    targets = torch.from_numpy(targets)

    net = LayeredStudent(build_audio_student("ds_cnn", cfg.student.kwargs()), cfg.clusters)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_epoch, history = 0, []
    folder = resume_folder(loop_config)
    if folder is not None:
        state = load_checkpoint(folder, {"layered": net}, optimizer)
        start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
    attempt_start = start_epoch  # recorded per epoch: > 0 marks epochs trained after a resume
    model = ray.train.torch.prepare_model(net)
    params = ViewParams(6.0, 0.5, 8, 10)
    steps_per_epoch = max(1, int(math.ceil(len(clips) / world)) // cfg.batch_clips)
    total, warmup = steps_per_epoch * cfg.optim.epochs, steps_per_epoch * cfg.optim.warmup_epochs
    for epoch in range(start_epoch, cfg.optim.epochs):
        rng = np.random.default_rng([loop_config["seed"], epoch, rank])
        order = np.random.default_rng([loop_config["seed"], epoch]).permutation(len(clips))[rank::world]
        model.train()
        parts_sum: dict[str, float] = {}
        losses, correct, seen, t0 = [], 0, 0, time.perf_counter()
        bar = epoch_bar("UnFuSeD", epoch, cfg.optim.epochs, steps_per_epoch, rank)
        for s in bar:
            step = epoch * steps_per_epoch + s
            set_lr(optimizer, cfg.optim.lr * warmup_cosine(step, total, warmup))
            idx = order[s * cfg.batch_clips:(s + 1) * cfg.batch_clips]
            others = rng.integers(0, len(clips), size=len(idx))
            x = torch.from_numpy(np.stack([make_view(clips[i], spec.n_frames, spec, rng, params, clips[o])
                                           for i, o in zip(idx, others)]))[:, None].to(device)
            y = targets[idx].to(device)
            head_logits, head_feats, final_logits, final_feats = model(x)
            loss, parts = unfused_loss(head_logits, head_feats, final_logits, final_feats, y, cfg.alpha, cfg.beta,
                                       cfg.gamma, cfg.kl_temperature)
            optimizer_step(loss, optimizer, model, None, "UnFuSeD", epoch, s)
            losses.append(loss.item())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
            correct += int((final_logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        wall = time.perf_counter() - t0
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start, "loss": float(np.mean(losses)),
                   "steps": len(losses),
                   "pseudo_label_accuracy": 100.0 * correct / max(1, seen), "clips_per_s": seen * world / wall,
                   **{k: v / len(losses) for k, v in parts_sum.items()}}
        history.append(metrics)
        report_epoch(rank, metrics, lambda folder: save_checkpoint(
            folder, {"layered": unwrap(model), "student": unwrap(model).backbone}, optimizer, epoch, history))


def run_unfused(ctx: StageContext) -> StageResult:
    from modalities.audio.students import build_audio_student

    cfg: UnfusedConfig = ctx.config  # type: ignore[assignment]
    teacher_dir = ctx.inputs[cfg.teacher]
    record = read_student_record(teacher_dir)
    spec = LogMelSpec.from_dict(record["input"], f"{teacher_dir}/student.json input")
    splits = load_splits(ctx.inputs["dataset"], ctx.dataset)
    train, skip_train = read_log_mels([i.path for i in splits.train], spec, crop=True)
    train_labels = [i.label for i, m in zip(splits.train, train) if m is not None]
    clips = [m for m in train if m is not None]
    n_train = len(clips)
    skipped = len(skip_train)
    if cfg.use_pool and splits.pool:
        pool, skip_pool = read_log_mels(splits.pool, spec, crop=False)
        clips += [m for m in pool if m is not None]
        skipped += len(skip_pool)
    if len(clips) < max(cfg.clusters, cfg.batch_clips * cfg.num_workers):
        raise ValueError(f"{ctx.inputs['dataset']}: {len(clips)} readable clips are too few for {cfg.clusters} "
                         f"clusters and a batch of {cfg.batch_clips}")
    torch.manual_seed(ctx.seed)
    teacher = build_audio_student(record["kind"], record["kwargs"])
    teacher.load_state_dict(load_file(str(teacher_dir / record["weights"])))
    ctx.log.info("embedding %d clips with the DINO teacher of %s", len(clips), cfg.teacher)
    features = embed(teacher, np.stack([eval_input(m, spec) for m in clips]).astype(np.float32))
    labels = pseudo_labels(features, cfg.clusters, cfg.pca_dim, ctx.seed)
    cluster_purity = purity(labels[:n_train], train_labels)
    sizes = np.bincount(labels, minlength=cfg.clusters)
    ctx.log.info("%d pseudo-classes: sizes %d..%d; purity vs the true keywords of the training clips %.1f%%",
                 cfg.clusters, sizes.min(), sizes.max(), cluster_purity)
    history = fit_on_clips(ctx, cfg, train_loop_per_worker, spec.to_dict(), clips, labels, ("student.safetensors",))
    write_student_record(ctx.stage_dir, "ds_cnn", cfg.student.kwargs(), spec.to_dict(),
                         {"name": f"DINO teacher of stage {cfg.teacher} ({record['kind']} {record['kwargs']})",
                          "weights_sha256": record["weights_sha256"]}, "unfused")
    epochs = [h["epoch"] + 1 for h in history]
    save_line_plot(ctx.stage_dir / "loss_curve.png", {"UnFuSeD loss": (epochs, [h["loss"] for h in history])},
                   "epoch", "loss", "UnFuSeD self-distillation on pseudo-labels")
    metrics = {"clips": len(clips), "train_clips": n_train, "skipped_unreadable": skipped, "clusters": cfg.clusters,
               "cluster_sizes_min_max": [int(sizes.min()), int(sizes.max())],
               "cluster_purity_train_pct": round(cluster_purity, 2), "epochs": len(history),
               "loss_first_epoch": history[0]["loss"], "loss_last_epoch": history[-1]["loss"],
               "pseudo_label_accuracy_last_epoch": history[-1]["pseudo_label_accuracy"]}
    md = (f"k-means on the PCA-whitened DINO embeddings: {cfg.clusters} pseudo-classes; their purity against the true "
          f"keywords of the training clips (labels read for this figure only) is {cluster_purity:.1f}% "
          f"(chance: the largest class share).\n\n![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)
