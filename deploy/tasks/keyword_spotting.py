"""Deploy adapter ``keyword_spotting``: an audio clip file -> the top-k keywords with their probabilities.

Runtime path (numpy only; the front-end is :class:`modalities.audio.logmel.LogMelSpec`, read
from ``metadata.json`` ``task.input``, the object training and evaluation used, with the
dataset's normalisation)::

    audio file (.wav | .flac, any channel count, any rate)
      -> modalities.audio.io.read_audio: mono mixdown, resampled to 16 kHz (errors name the file)
      -> LogMelSpec (numpy): centre-crop / zero-pad to 1 s, STFT, log-mel, (v - mean) / std
      -> feeds {"log_mel": (1, 1, n_mels, n_frames)}      [engine]  -> {"logits": (1, K)}
      -> softmax -> probabilities (K,)
      -> <stem>.keywords.json: the file, the top-k keywords with their scores (descending)

The mel front-end stays outside the engine (DESIGN 6: JetPack 6's TensorRT 10.3 has no STFT).
The deployed network is the fine-tuned :class:`modalities.audio.students.KeywordClassifier`
(the student's AudioCNN + its linear classifier), exported as is.
Metric: clip accuracy (%) over the bundle's held-out clips (argmax of the logits vs the label),
with the confusion matrix (rows = label, columns = prediction).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modalities.audio.io import read_audio
from modalities.audio.logmel import LogMelSpec
from modalities.fileio import atomic_write_json

from .base import Feeds, Sample, TaskAdapter

log = logging.getLogger("edgedistill.deploy")

KIND = "keyword_spotting"
INPUT_NAME = "log_mel"
OUTPUT_NAME = "logits"
DEFAULT_TOP_K = 3
RESULT_SUFFIX = ".keywords.json"
TARGET_SUFFIX = ".label.json"
DEPLOYED_GRAPH = ("student (AudioCNN: stem + 4 depthwise-separable stages -> mean over mel and time) "
                  "-> Linear(classifier) -> clip logits")


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


def keywords_path(out_dir: Path, source: Path) -> Path:
    """``out_dir/<stem>.keywords.json`` of an audio file (``a.wav`` -> ``a.keywords.json``)."""
    return Path(out_dir) / f"{Path(source).stem}{RESULT_SUFFIX}"


class KeywordSpotting(TaskAdapter):
    """Clip classification of spoken keywords through a log-mel CNN."""

    kind = KIND
    sample_noun = "clip"

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = LogMelSpec.from_dict(metadata["task"]["input"], "metadata.json task.input")
        self.input_name = metadata["inputs"][0]["name"]
        self.output_name = metadata["outputs"][0]["name"]
        self.classes = [str(c) for c in metadata["model"]["classes"]]
        self.num_classes = int(metadata["model"]["num_classes"])
        if len(self.classes) != self.num_classes:
            raise ValueError(f"metadata.json: {len(self.classes)} classes listed for num_classes {self.num_classes}")
        self.k = max(1, min(int(metadata["task"].get("top_k", DEFAULT_TOP_K)), self.num_classes))

    def read(self, path: Path) -> np.ndarray:
        """(N,) float32 mono waveform at the spec's rate; DataError / MissingDataError naming the file."""
        wave, _ = read_audio(Path(path), self.spec.sample_rate_hz)
        return wave

    def preprocess(self, raw: np.ndarray) -> tuple[Feeds, None]:
        wave = np.asarray(raw, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"keyword spotting: expected a (N,) mono waveform, got shape {wave.shape}")
        return {self.input_name: self.spec(wave)[None, None]}, None

    def postprocess(self, outputs: Feeds, state: None) -> np.ndarray:
        logits = outputs[self.output_name]
        if logits.shape != (1, self.num_classes):
            raise ValueError(f"output '{self.output_name}': expected (1, {self.num_classes}), got {logits.shape}")
        return softmax(logits[0])

    def top(self, result: np.ndarray) -> list[dict]:
        return top_k(result, self.classes, self.k)

    def write(self, result: np.ndarray, source: Path, out_dir: Path | None) -> Path:
        source = Path(source)
        dest = keywords_path(Path(out_dir) if out_dir else source.parent, source)
        best = self.top(result)
        atomic_write_json(dest, {"file": str(source), "model": self.meta["model"]["name"], "k": len(best),
                                 "top_k": best})
        log.info("%s: %s (%.3f) -> %s", source.name, best[0]["label"], best[0]["score"], dest)
        return dest

    def summary(self, result: np.ndarray, source: Path) -> str:
        return f"{Path(source).name}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in self.top(result))

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
        """Clip accuracy (%) of ``run`` on ``samples``, plus the (K, K) confusion matrix (rows = label)."""
        K = self.num_classes
        conf = np.zeros((K, K), np.int64)
        for s in samples:
            feeds, state = self.preprocess(self.read(s.path))
            pred = int(self.postprocess(run(feeds), state).argmax())
            conf[self.load_target(s), pred] += 1
        n = int(conf.sum())
        value = float(100.0 * np.trace(conf) / n) if n else float("nan")
        return {"name": "accuracy", "value": value, "samples": len(samples), "points": n,
                "confusion": conf.tolist()}


# ----------------------------------------------------------------------------- export side


def task_metadata(sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of a keyword-spotting model's sidecar."""
    spec = LogMelSpec.from_dict(sidecar["input"], "sidecar input")
    return {"kind": KIND, "input": spec.to_dict(), "classes": list(sidecar["classes"]),
            "top_k": min(DEFAULT_TOP_K, int(sidecar["num_classes"])),
            "preprocessing": "read_audio (mono mixdown, resample to sample_rate_hz) -> LogMelSpec (numpy): "
                             "1 s clip, log-mel, (v - mean) / std",
            "postprocessing": "softmax over the logits -> probability per keyword; the top_k keywords by score"}


def describe_input(task: dict) -> str:
    """One line of report.md about the input contract."""
    s = task["input"]
    return (f"input spec `{s['kind']}` v{s['version']}: {s['sample_rate_hz']} Hz mono, {s['clip_seconds']} s clips "
            f"({s['length']}), n_fft {s['n_fft']}, hop {s['hop_length']}, {s['n_mels']} mel bands "
            f"{s['f_min_hz']}-{s['f_max_hz']} Hz, features {s['feature_shape']}; normalisation mean "
            f"{s['mean']:.4g}, std {s['std']:.4g}; output: top-{task.get('top_k', DEFAULT_TOP_K)} keywords")


def io_metadata(sidecar: dict) -> tuple[list[dict], list[dict]]:
    """Named input and output specs (batch 1, static) of the deployed graph."""
    spec = LogMelSpec.from_dict(sidecar["input"], "sidecar input")
    n_mels, n_frames = spec.feature_shape
    K = int(sidecar["num_classes"])
    return ([{"name": INPUT_NAME, "shape": [1, 1, n_mels, n_frames], "dtype": "float32",
              "layout": "NCHW (batch, 1, mel band, frame)"}],
            [{"name": OUTPUT_NAME, "shape": [1, K], "dtype": "float32", "layout": "NC (batch, keyword)"}])


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


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` (audio file + label) into ``folder/data/<split>/``.

    Each audio file is copied byte for byte (the format the robot reads) to
    ``<token><suffix>`` (the token made a safe file name by :func:`file_stem`); its label goes to
    ``<token>.label.json`` (``{"label", "class_index"}``). Missing files, unknown labels and
    repeated tokens raise, naming them.
    """
    refs = sidecar.get(f"{split}_samples")
    if refs is None:
        raise ValueError(f"model sidecar: no '{split}_samples' list")
    refs = refs[:max_samples] if max_samples else refs
    classes = [str(c) for c in sidecar["classes"]]
    missing = [ref.get("audio") for ref in refs if not ref.get("audio") or not Path(ref["audio"]).is_file()]
    if missing:
        raise FileNotFoundError(f"audio files named by the model's sidecar ({split}) are missing: {missing}")
    tokens = [str(ref["token"]) for ref in refs]
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise ValueError(f"model sidecar ({split}): sample tokens {repeated} are repeated")
    out = []
    dest = folder / "data" / split
    dest.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for ref, token in zip(refs, tokens, strict=True):
        src = Path(ref["audio"])
        if ref.get("label") not in classes:
            raise ValueError(f"{src}: label {ref.get('label')!r} ({split} sample {token}) is not one of the model's "
                             f"classes {classes}")
        read_audio(src)  # a corrupt clip fails the export here, named, not in a later step
        stem = file_stem(token, used)
        audio_rel, label_rel = f"data/{split}/{stem}{src.suffix}", f"data/{split}/{stem}{TARGET_SUFFIX}"
        shutil.copyfile(src, folder / audio_rel)
        atomic_write_json(folder / label_rel, {"label": ref["label"], "class_index": classes.index(ref["label"])})
        out.append({"token": token, "input": audio_rel, "target": label_rel})
    return out


def torch_module(weights: Path, meta: dict):
    """The deployed graph (:class:`KeywordClassifier`, eval mode) from the weights stored in a bundle."""
    from safetensors.torch import load_file  # noqa: PLC0415

    from modalities.audio.students import KeywordClassifier, build_audio_student  # noqa: PLC0415

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    model = KeywordClassifier(build_audio_student(meta["model"]["student"], meta["model"]["student_kwargs"]),
                              int(meta["model"]["num_classes"]))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise ValueError(f"{weights}: not the weights of a {meta['model']['student']} KeywordClassifier with "
                         f"{meta['model']['student_kwargs']} ({str(e).splitlines()[0]})") from None
    return model.eval()
