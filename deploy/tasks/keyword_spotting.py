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

import logging
from pathlib import Path

import numpy as np

from modalities.audio.io import read_audio
from modalities.audio.logmel import LogMelSpec
from modalities.fileio import atomic_write_json

from .base import Feeds
from .classification import DEFAULT_TOP_K, ClassificationAdapter, load_classifier, softmax, write_labelled_samples

log = logging.getLogger("edgedistill.deploy")

KIND = "keyword_spotting"
INPUT_NAME = "log_mel"
OUTPUT_NAME = "logits"
RESULT_SUFFIX = ".keywords.json"
DEPLOYED_GRAPH = ("student (AudioCNN: stem + 4 depthwise-separable stages -> mean over mel and time) "
                  "-> Linear(classifier) -> clip logits")


def keywords_path(out_dir: Path, source: Path) -> Path:
    """``out_dir/<stem>.keywords.json`` of an audio file (``a.wav`` -> ``a.keywords.json``)."""
    return Path(out_dir) / f"{Path(source).stem}{RESULT_SUFFIX}"


class KeywordSpotting(ClassificationAdapter):
    """Clip classification of spoken keywords through a log-mel CNN (result: the clip's (K,) probabilities)."""

    kind = KIND
    sample_noun = "clip"
    spec_class = LogMelSpec
    # All-INT8 cost 8.8-10.8 of 22.1 accuracy points on configs/audio_kws.yaml's student, whatever the calibration
    # method; with the most sensitive convolution (the stem: one input channel, the log-mel) in float, at most 1.7
    # (minmax: -0.8; benchmarks/int8_calibration.py). The sensitivity analysis picks it on the calibration clips.
    int8_float_fallback = 1

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


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` (audio file + label) into ``folder/data/<split>/``
    (:func:`deploy.tasks.classification.write_labelled_samples`); a corrupt clip fails the export there, named."""
    return write_labelled_samples(folder, sidecar, split, max_samples, file_key="audio", file_noun="audio",
                                  check=read_audio)


def torch_module(weights: Path, meta: dict):
    """The deployed graph (:class:`KeywordClassifier`, eval mode) from the weights stored in a bundle."""
    from modalities.audio.students import KeywordClassifier, build_audio_student  # noqa: PLC0415

    return load_classifier(weights, meta, KeywordClassifier, build_audio_student)
