"""Evaluation task of clip-feature students (DINO backbones, UnFuSeD students): keyword classification.

Labelled data: the ``keywords`` dataset's training clips for the labels (the few-label
subsets are drawn from them), its test clips (other voices) for the metric: accuracy (%).
Inputs are exactly the runtime's: the centred 1 s clip's log-mel, normalised with the
student record's spec. Features: the backbone's pooled embedding, with BatchNorm
recalibrated on the training clips for both inits (as for the lidar task). Fine-tuning:
LP-FT (the linear probe's head, then backbone and head with AdamW, the backbone at
``backbone_lr_scale`` of the head's rate, warm-up + cosine), on augmented views of the labelled
clips. The fine-tuned distilled model is saved with a deploy sidecar (task
``keyword_spotting``, the adapter :mod:`deploy.tasks.keyword_spotting`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modalities.audio.logmel import LogMelSpec
from modalities.audio.students import KeywordClassifier, build_audio_student
from modalities.fileio import atomic_write_json
from modalities.segmentation_metrics import confusion_matrix

from ..audio.data import ViewParams, eval_input, load_splits, make_view, read_log_mels
from .config import EvaluateConfig, segmenter_name
from .protocols import fit_linear_probe, precise_batchnorm, warmup_cosine


def accuracy(conf: np.ndarray) -> float:
    """Top-1 accuracy (%) of a confusion matrix."""
    total = conf.sum()
    return float(np.trace(conf) / total * 100) if total else float("nan")


class ClipClassificationTask:
    """Keyword classification of a ``keywords`` dataset's clips; see the module docstring."""

    metric = "accuracy"
    metric_label = "accuracy"
    sample_noun = "clip"
    confusion_figures = True

    def __init__(self, ctx, cfg: EvaluateConfig):
        if getattr(ctx.dataset, "kind", None) != "keywords":
            raise ValueError(f"clip-feature students are evaluated on a keywords dataset, not {ctx.dataset.kind!r}")
        self.splits = load_splits(ctx.inputs["dataset"], ctx.dataset)
        self.class_names = self.splits.classes
        self.num_classes = len(self.class_names)
        self.cfg, self.seed, self.root = cfg, ctx.seed, Path(ctx.inputs["dataset"])
        self._raw: dict[str, tuple] = {}
        self.skipped = 0

    def score(self, conf: np.ndarray) -> float:
        return accuracy(conf)

    def _load(self, spec: LogMelSpec):
        """(raw train log-mels, train labels, raw test log-mels, test labels), read once per front-end.

        A clip that cannot be read is a counted skip (``self.skipped``, in the stage's metrics),
        dropped from its split on the first read, before any labelled subset is drawn.
        """
        key = str(spec.with_stats(0.0, 1.0).to_dict())  # raw log-mels do not depend on the normalisation
        if key not in self._raw:
            out = []
            for split in ("train", "test"):
                items = getattr(self.splits, split)
                mels, skipped = read_log_mels([i.path for i in items], spec, crop=True)
                self.skipped += len(skipped)
                keep = [k for k, m in enumerate(mels) if m is not None]
                if not keep:
                    raise ValueError(f"{self.root}: no readable clip in the {split} split")
                setattr(self.splits, split, [items[k] for k in keep])
                out += [[mels[k] for k in keep], torch.tensor([self.class_names.index(items[k].label) for k in keep])]
            self._raw = {key: tuple(out)}
        return self._raw[key]

    @property
    def num_train(self) -> int:
        return len(self.splits.train)

    @property
    def test(self) -> list:
        return self.splits.test

    def train_tokens(self, idx) -> list[str]:
        return [str(self.splits.train[i].path.relative_to(self.root)) if self.splits.train[i].path.is_relative_to(self.root)
                else str(self.splits.train[i].path) for i in idx]

    def student(self, record: dict, stage_dir: Path) -> "PreparedClipStudent":
        spec = LogMelSpec.from_dict(record["input"], f"{stage_dir}/student.json input")
        tr, ytr, te, yte = self._load(spec)
        xtr = torch.from_numpy(np.stack([eval_input(m, spec) for m in tr]).astype(np.float32))[:, None]
        xte = torch.from_numpy(np.stack([eval_input(m, spec) for m in te]).astype(np.float32))[:, None]
        nets = {}
        for init in ("distilled", "random"):
            torch.manual_seed(self.seed)
            net = build_audio_student(record["kind"], record["kwargs"])
            if init == "distilled":
                net.load_state_dict(load_file(str(stage_dir / record["weights"])))
            recalibrate_batchnorm(net, xtr, self.cfg.batch_scans * 32)
            nets[init] = net
        return PreparedClipStudent(self, record, spec, nets, (tr, ytr, xtr), (te, yte, xte), self.splits.test)


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, x: torch.Tensor, batch: int) -> None:
    """BatchNorm running statistics re-estimated on ``x`` (cumulative average), no labels; eval mode after."""
    precise_batchnorm(net, (x[i:i + batch] for i in range(0, len(x), batch)), momentum_after=0.1)


@torch.no_grad()
def features(net: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])


class PreparedStudent:
    """A student of a fixed-size-input task (clips, IMU windows), both inits prepared: frozen features, and
    LP-FT fine-tuning on augmented views. A task's subclass gives :meth:`classifier` and :meth:`views`.

    ``train`` = (raw inputs, labels, eval inputs), ``test`` = (raw, labels, eval inputs).
    """

    def __init__(self, task, record, spec, nets, train, test):
        self.task, self.record, self.spec, self.nets = task, record, spec, nets
        self.train, self.test = train, test
        self.feats = {init: (features(n, train[2]), features(n, test[2])) for init, n in nets.items()}

    def labeled_features(self, init: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(idx))
        return self.feats[init][0][idx], self.train[1][idx]

    def test_features(self, init: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feats[init][1], self.test[1]

    def classifier(self, student: torch.nn.Module) -> torch.nn.Module:
        """The deployable model: ``student`` + a linear ``classifier`` (attributes ``.student``, ``.classifier``)."""
        raise NotImplementedError

    def views(self, pick: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """A training batch: augmented views of the training inputs ``pick``, as the network takes them."""
        raise NotImplementedError

    def finetune(self, init: str, idx, seed: int):
        """(confusion on the test inputs, fine-tuned classifier) from ``init`` with labels on training inputs ``idx``."""
        import copy

        t, cfg = self.task, self.task.cfg
        head = fit_linear_probe(*self.labeled_features(init, idx), t.num_classes, cfg.probe_steps, cfg.probe_lr, seed)
        model = self.classifier(copy.deepcopy(self.nets[init]))
        model.classifier.load_state_dict(head.state_dict())
        opt = torch.optim.AdamW([{"params": model.student.parameters(), "lr": cfg.finetune_lr * cfg.backbone_lr_scale},
                                 {"params": model.classifier.parameters(), "lr": cfg.finetune_lr}], weight_decay=1e-2)
        base = [g["lr"] for g in opt.param_groups]
        warmup = int(cfg.warmup_fraction * cfg.finetune_steps)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        labels = self.train[1]
        idx = np.asarray(idx)
        batch = min(len(idx), 64)
        model.train()
        for step in range(cfg.finetune_steps):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * warmup_cosine(step, cfg.finetune_steps, warmup)
            pick = rng.choice(idx, size=batch, replace=len(idx) < batch)
            loss = F.cross_entropy(model(self.views(pick, rng)), labels[torch.as_tensor(pick)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(self.test[2][i:i + 256]) for i in range(0, len(self.test[2]), 256)]).argmax(1)
        return confusion_matrix(pred.numpy(), self.test[1].numpy(), t.num_classes), model


class PreparedClipStudent(PreparedStudent):
    VIEW = ViewParams(gain_db=6.0, noise_mix=0.5, freq_mask=8, time_mask=10)

    def __init__(self, task: ClipClassificationTask, record, spec, nets, train, test, test_items):
        super().__init__(task, record, spec, nets, train, test)
        self.test_items = test_items

    def classifier(self, student: torch.nn.Module) -> KeywordClassifier:
        return KeywordClassifier(student, self.task.num_classes)

    def views(self, pick: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        raw = self.train[0]
        others = rng.integers(0, len(raw), size=len(pick))  # another clip mixed in as background
        return torch.from_numpy(np.stack([make_view(raw[i], self.spec.n_frames, self.spec, rng, self.VIEW, raw[o])
                                          for i, o in zip(pick, others)]))[:, None]

    def save(self, folder: Path, stage: str, model, fraction: float, metric: float, idx) -> Path:
        """``<stage>_<pct>pct.safetensors`` (KeywordClassifier) and its deploy sidecar (task ``keyword_spotting``)."""
        t = self.task
        name = segmenter_name(stage, fraction)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")

        def sample(item) -> dict:
            return {"token": f"{item.label}/{Path(item.path).stem}", "audio": str(Path(item.path).resolve()),
                    "label": item.label}

        atomic_write_json(folder / f"{name}.json", {
            "format": 2, "task": "keyword_spotting", "distill_stage": stage, "student_record": self.record,
            "label_fraction": fraction, "student": self.record["kind"], "student_kwargs": self.record["kwargs"],
            "num_classes": t.num_classes, "classes": list(t.class_names),
            "metric_heldout": {"name": "accuracy", "value": metric}, "weights": f"{name}.safetensors",
            "state_dict_layout": "student.* = AudioCNN, classifier.* = nn.Linear(feature_dim, num_classes)",
            "input": self.spec.to_dict(),
            "calibration_samples": [sample(t.splits.train[i]) for i in idx],
            "heldout_samples": [sample(i) for i in self.test_items],
        })
        return folder / f"{name}.safetensors"
