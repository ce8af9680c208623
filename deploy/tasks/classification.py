"""The part shared by the deploy adapters whose result is class scores (``keyword_spotting``, ``imu_activity``).

Runtime side (numpy only at import: it runs on the robot): :func:`softmax`, :func:`top_k` and
:class:`ClassificationAdapter`, which reads the classes and top-k from ``metadata.json``, loads the
``<token>.label.json`` targets and computes the accuracy (%) with its (K, K) confusion matrix.
A subclass sets :attr:`ClassificationAdapter.spec_class` (the input contract) and implements
read / preprocess / postprocess / write; when its result is not the (..., K) probabilities
themselves it overrides :meth:`ClassificationAdapter.class_probs`.

Export side: :func:`file_stem`, :func:`write_labelled_samples` (a sidecar's samples: one input
file + one label each) and :func:`load_classifier` (torch imported lazily).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalities.fileio import atomic_write_json

from .base import Feeds, Sample, TaskAdapter

DEFAULT_TOP_K = 3
TARGET_SUFFIX = ".label.json"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis (computed in float64, max-subtracted; float32 out)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """The ``k`` most probable classes as ``[{"label", "score"}]``, by descending score (ties: lower index first)."""
    probs = np.asarray(probs)
    if probs.ndim != 1 or len(probs) != len(classes):
        raise ValueError(f"probabilities: expected ({len(classes)},), got {probs.shape}")
    order = np.argsort(-probs, kind="stable")[: max(1, min(int(k), len(classes)))]
    return [{"label": classes[i], "score": float(probs[i])} for i in order]


class ClassificationAdapter(TaskAdapter):
    """A :class:`TaskAdapter` whose result carries class probabilities; the metric is accuracy (%).

    ``metadata.json`` gives the classes (``model.classes``, ``model.num_classes``), the top-k
    (``task.top_k``) and the input contract (``task.input``, read with :attr:`spec_class`).
    """

    spec_class: ClassVar[Any]  # the input contract: a class with ``from_dict(mapping, where)``
    points_noun: ClassVar[str | None] = None  # what the metric counts when not one per sample (report.md)

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = self.spec_class.from_dict(metadata["task"]["input"], "metadata.json task.input")
        self.input_name = metadata["inputs"][0]["name"]
        self.output_name = metadata["outputs"][0]["name"]
        self.classes = [str(c) for c in metadata["model"]["classes"]]
        self.num_classes = int(metadata["model"]["num_classes"])
        if len(self.classes) != self.num_classes:
            raise ValueError(f"metadata.json: {len(self.classes)} classes listed for num_classes {self.num_classes}")
        self.k = max(1, min(int(metadata["task"].get("top_k", DEFAULT_TOP_K)), self.num_classes))

    def class_probs(self, result: Any) -> np.ndarray:
        """The (..., K) class probabilities of a :meth:`postprocess` result (the result itself by default)."""
        return result

    def top(self, probs: np.ndarray) -> list[dict]:
        """The top-k classes of one (K,) probability vector."""
        return top_k(probs, self.classes, self.k)

    def load_target(self, sample: Sample) -> int:
        """The class index stored for a sample (``<token>.label.json``), checked against the bundle's classes."""
        try:
            ref = json.loads(Path(sample.target).read_text())
            index, label = int(ref["class_index"]), ref["label"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{sample.target}: not a label file of this bundle ({e})") from None
        if not 0 <= index < self.num_classes or self.classes[index] != label:
            raise ValueError(f"{sample.target}: label {label!r} / class index {index} does not match the bundle's "
                             f"classes {self.classes}")
        return index

    def metric(self, run: Callable[[Feeds], Feeds], samples: list[Sample]) -> dict:
        """Accuracy (%) of ``run`` on ``samples`` (every prediction of a sample carries the sample's label),
        plus the (K, K) confusion matrix (rows = label)."""
        K = self.num_classes
        conf = np.zeros((K, K), np.int64)
        for s in samples:
            feeds, state = self.preprocess(self.read(s.path))
            pred = self.class_probs(self.postprocess(run(feeds), state)).argmax(-1)
            np.add.at(conf, (self.load_target(s), pred), 1)
        n = int(conf.sum())
        value = float(100.0 * np.trace(conf) / n) if n else float("nan")
        noun = {"points_noun": self.points_noun} if self.points_noun else {}
        return {"name": "accuracy", "value": value, "samples": len(samples), "points": n, **noun,
                "confusion": conf.tolist()}


# ----------------------------------------------------------------------------- export side


def file_stem(token: str, used: set[str]) -> str:
    """A file name stem for a sample token, unique within ``used`` (which it joins).

    Tokens may hold ``/`` (the evaluate stage writes ``<label>/<clip stem>``) or other characters
    unsafe in a file name: those become ``_``; a leading dot is dropped (hidden files are not
    hashed into metadata.json); a stem already taken gets ``_<n>`` appended.
    """
    base = re.sub(r"[^A-Za-z0-9._-]", "_", str(token)).lstrip(".") or "sample"
    stem, n = base, 1
    while stem in used:
        stem, n = f"{base}_{n}", n + 1
    used.add(stem)
    return stem


def write_labelled_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None, *, file_key: str,
                           file_noun: str, check: Callable[[Path], object]) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` (input file + label) into ``folder/data/<split>/``.

    Each input file (``ref[file_key]``) is copied byte for byte (the format the robot reads) to
    ``<token><suffix>`` (the token made a safe file name by :func:`file_stem`) after ``check(path)``
    has read it (a bad file fails the export there, named); its label goes to ``<token>.label.json``
    (``{"label", "class_index"}``). Missing files (``file_noun`` names them), unknown labels and
    repeated tokens raise, naming them. Returns the bundle's ``{"token", "input", "target"}`` entries.
    """
    refs = sidecar.get(f"{split}_samples")
    if refs is None:
        raise ValueError(f"model sidecar: no '{split}_samples' list")
    refs = refs[:max_samples] if max_samples else refs
    classes = [str(c) for c in sidecar["classes"]]
    missing = [ref.get(file_key) for ref in refs if not ref.get(file_key) or not Path(ref[file_key]).is_file()]
    if missing:
        raise FileNotFoundError(f"{file_noun} files named by the model's sidecar ({split}) are missing: {missing}")
    tokens = [str(ref["token"]) for ref in refs]
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise ValueError(f"model sidecar ({split}): sample tokens {repeated} are repeated")
    out = []
    dest = folder / "data" / split
    dest.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for ref, token in zip(refs, tokens, strict=True):
        src = Path(ref[file_key])
        if ref.get("label") not in classes:
            raise ValueError(f"{src}: label {ref.get('label')!r} ({split} sample {token}) is not one of the model's "
                             f"classes {classes}")
        check(src)
        stem = file_stem(token, used)
        input_rel, label_rel = f"data/{split}/{stem}{src.suffix}", f"data/{split}/{stem}{TARGET_SUFFIX}"
        shutil.copyfile(src, folder / input_rel)
        atomic_write_json(folder / label_rel, {"label": ref["label"], "class_index": classes.index(ref["label"])})
        out.append({"token": token, "input": input_rel, "target": label_rel})
    return out


def load_classifier(weights: Path, meta: dict, classifier_cls: type, build_student: Callable):
    """``classifier_cls(build_student(student, student_kwargs), num_classes)`` (eval mode) with the weights stored
    in a bundle; FileNotFoundError / ValueError naming the file when they are missing or do not fit."""
    from safetensors.torch import load_file  # noqa: PLC0415

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    model = classifier_cls(build_student(meta["model"]["student"], meta["model"]["student_kwargs"]),
                           int(meta["model"]["num_classes"]))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise ValueError(f"{weights}: not the weights of a {meta['model']['student']} {classifier_cls.__name__} with "
                         f"{meta['model']['student_kwargs']} ({str(e).splitlines()[0]})") from None
    return model.eval()
