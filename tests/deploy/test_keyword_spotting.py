"""Deploy adapter ``keyword_spotting``: export, parity, FP16/INT8 accuracy, infer (top-k JSON), bench, verify.

The fixture writes a tiny run folder as the evaluate stage lays it out
(``evaluate/models/<name>.{safetensors,json}``): synthetic 1 s clips of four "keywords" (a low
tone, a high tone, a rising and a falling chirp, with random pitch, onset, gain and noise),
some stored at 8 kHz and some in stereo so that reading exercises resampling and the mono
mixdown, and a small :class:`KeywordClassifier` FITTED on the training clips (through the
torchaudio front-end, as training does) so that its held-out predictions vary: a constant
argmax would give the same accuracy through any broken deploy path.

Oracle throughout: the PyTorch path (``read_audio`` -> :class:`TorchLogMel` -> the
KeywordClassifier in torch -> softmax); no ONNX, no numpy front-end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.bundle import load_bundle
from deploy.cli import main
from tests.deploy.classifier_runs import (assert_bench_end_to_end_includes_preprocess,
                                          assert_verify_catches_a_flipped_label, export_quantized, fit_classifier,
                                          write_models)

MODEL = "kws_unfused_10pct"
CLASSES = ["yes", "no", "up", "down"]
STUDENT_KWARGS = {"widths": [8, 16, 16, 16]}
TRAIN_PER_CLASS, HELDOUT_PER_CLASS, CALIB_PER_CLASS = 6, 3, 2
FIT_STEPS = 40
ROOT = Path(__file__).resolve().parents[2]


def synth_clip(label: int, rng: np.random.Generator, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    """A noisy ~0.5 s burst of the class's sound at a random onset: (N,) or (N, channels) float32."""
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    s = rng.uniform(0.9, 1.1)  # pitch jitter
    dur = 0.5
    onset = rng.uniform(0.05, max(0.06, seconds - dur - 0.05))
    tau = np.clip(t - onset, 0.0, dur)
    if label == 0:
        phase = 2 * np.pi * 400 * s * tau
    elif label == 1:
        phase = 2 * np.pi * 1800 * s * tau
    else:
        f_a, f_b = (300 * s, 3000 * s) if label == 2 else (3000 * s, 300 * s)
        phase = 2 * np.pi * (f_a * tau + (f_b - f_a) * tau**2 / (2 * dur))
    env = np.where((t >= onset) & (t <= onset + dur), np.sin(np.pi * tau / dur) ** 2, 0.0)
    x = rng.uniform(0.1, 0.5) * env * np.sin(phase) + rng.normal(0, rng.uniform(0.02, 0.2), n)  # SNR varies
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * g for g in rng.uniform(0.7, 1.0, channels)], 1).astype(np.float32)


def _write_clips(folder: Path, split: str, per_class: int, rng: np.random.Generator) -> list[dict]:
    from modalities.audio.io import write_wav

    refs = []
    for j in range(per_class):
        for label, name in enumerate(CLASSES):
            rate, channels = ((16000, 1), (8000, 1), (16000, 2))[j % 3]  # resampling and mono mixdown too
            seconds = (1.0, 0.8, 1.3)[(j + label) % 3]  # padded and centre-cropped clips
            token = f"{name}/{split}_{j}"  # as the evaluate stage writes them: "<label>/<clip stem>"
            path = folder / split / name / f"{split}_{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, synth_clip(label, rng, rate, seconds, channels), rate)
            refs.append({"token": token, "audio": str(path), "label": name})
    return refs


def _features(spec, paths) -> torch.Tensor:
    """(B, 1, n_mels, n_frames) of audio files through the torchaudio front-end (as training computes them)."""
    from modalities.audio.io import read_audio
    from modalities.audio.logmel_torch import TorchLogMel

    waves = np.stack([spec.fix_length(read_audio(p)[0]) for p in paths])
    with torch.no_grad():
        return TorchLogMel(spec)(torch.from_numpy(waves))[:, None]


def _load_model(models: Path):
    from safetensors.torch import load_file

    from modalities.audio.students import KeywordClassifier, build_audio_student

    model = KeywordClassifier(build_audio_student("ds_cnn", STUDENT_KWARGS), len(CLASSES))
    model.load_state_dict(load_file(str(models / f"{MODEL}.safetensors")))
    return model.eval()


def make_kws_run(run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/evaluate/models/MODEL.{safetensors,json}`` of a fitted keyword spotter; returns the sidecar."""
    from modalities.audio.logmel import LogMelSpec, fit_normalisation
    from modalities.audio.students import KeywordClassifier, build_audio_student

    rng = np.random.default_rng(seed)
    data = run_dir / "clips"
    train = _write_clips(data, "train", TRAIN_PER_CLASS, rng)
    held = _write_clips(data, "heldout", HELDOUT_PER_CLASS, rng)
    spec = fit_normalisation(LogMelSpec(), [r["audio"] for r in train])
    x = _features(spec, [r["audio"] for r in train])
    y = torch.tensor([CLASSES.index(r["label"]) for r in train])
    torch.manual_seed(seed)
    model = fit_classifier(KeywordClassifier(build_audio_student("ds_cnn", STUDENT_KWARGS), len(CLASSES)), x, y,
                           FIT_STEPS, torch.nn.BatchNorm2d)
    with torch.no_grad():
        pred = model(_features(spec, [r["audio"] for r in held])).argmax(1).numpy()
    acc = float(100.0 * np.mean(pred == np.array([CLASSES.index(r["label"]) for r in held])))
    calib = [r for r in train if int(r["token"].rsplit("_", 1)[1]) < CALIB_PER_CLASS]
    sidecar = {
        "format": 2, "task": "keyword_spotting", "distill_stage": "unfused",
        "student_record": {"teacher": {"name": "dino_audio"}}, "label_fraction": 0.1,
        "student": "ds_cnn", "student_kwargs": STUDENT_KWARGS, "num_classes": len(CLASSES), "classes": CLASSES,
        "metric_heldout": {"name": "accuracy", "value": acc}, "weights": f"{MODEL}.safetensors",
        "state_dict_layout": "student.* = AudioCNN, classifier.* = nn.Linear(feature_dim, num_classes)",
        "input": spec.to_dict(), "calibration_samples": calib, "heldout_samples": held,
    }
    return write_models(run_dir, MODEL, model, sidecar)


@pytest.fixture(scope="module")
def kws_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("kws") / "run"
    make_kws_run(run)
    return run


@pytest.fixture(scope="module")
def kws_sidecar(kws_run) -> dict:
    return json.loads((kws_run / "evaluate" / "models" / f"{MODEL}.json").read_text())


@pytest.fixture(scope="module")
def torch_probs(kws_run, kws_sidecar):
    """Oracle: ``probs(paths) -> (B, K)`` softmax of the run's model on audio files, all in torch."""
    from modalities.audio.logmel import LogMelSpec

    spec = LogMelSpec.from_dict(kws_sidecar["input"])
    model = _load_model(kws_run / "evaluate" / "models")

    def probs(paths) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(_features(spec, paths)), 1).numpy()

    return probs


@pytest.fixture(scope="module")
def kws_bundle(kws_run) -> Path:
    """The run's bundle with fp32, fp16 and int8 models (built once; tests that modify it copy it)."""
    return export_quantized(kws_run)


@pytest.fixture
def kws_bundle_copy(kws_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(kws_bundle, dst)
    return dst


def _heldout_labels(side: dict) -> np.ndarray:
    return np.array([CLASSES.index(r["label"]) for r in side["heldout_samples"]])


def test_fixture_model_is_fitted_and_varied(kws_sidecar, torch_probs):
    """The held-out predictions of the fixture's model vary and beat chance (else every check below is weak)."""
    pred = torch_probs([r["audio"] for r in kws_sidecar["heldout_samples"]]).argmax(1)
    assert len(np.unique(pred)) >= 2
    assert np.mean(pred == _heldout_labels(kws_sidecar)) > 1.0 / len(CLASSES) + 0.2


def test_export_parity_metadata_and_accuracy_equal_torch(kws_bundle, kws_sidecar, torch_probs):
    """Export: parity passes, the task and I/O are declared, and the held-out accuracy through the
    bundle (numpy front-end + ONNX Runtime) is the torch oracle's, clip by clip (confusion matrix)."""
    import onnx

    from deploy.trt_ops import unsupported_nodes

    bundle = load_bundle(kws_bundle)
    meta = bundle.metadata
    assert meta["task"]["kind"] == "keyword_spotting" and meta["task"]["classes"] == CLASSES
    assert meta["task"]["input"] == kws_sidecar["input"] and meta["task"]["top_k"] == 3
    assert meta["model"]["deployed_graph"].startswith("student (AudioCNN")
    assert bundle.inputs == [{"name": "log_mel", "shape": [1, 1, 64, 101], "dtype": "float32",
                              "layout": "NCHW (batch, 1, mel band, frame)"}]
    assert [(o["name"], o["shape"]) for o in bundle.outputs] == [("logits", [1, len(CLASSES)])]
    model = onnx.load(str(bundle.model_path("fp32")))
    assert model.opset_import[0].version == 17
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 64, 101]
    assert meta["tensorrt"]["unsupported_nodes"] == [str(i) for i in unsupported_nodes(model)]

    par = meta["metrics"]["parity_fp32"]
    n = len(kws_sidecar["heldout_samples"])
    assert par["max_rel_err"] <= 1e-4 and par["samples"] == n and par["argmax_agreement"] == 1.0

    probs = torch_probs([r["audio"] for r in kws_sidecar["heldout_samples"]])
    labels = _heldout_labels(kws_sidecar)
    want = np.zeros((len(CLASSES),) * 2, int)
    np.add.at(want, (labels, probs.argmax(1)), 1)
    held = meta["metrics"]["heldout"]
    assert held["metric"] == "accuracy" and held["samples"] == held["points"] == n
    assert held["confusion_fp32"] == want.tolist()
    acc = 100.0 * np.trace(want) / n
    assert held["by_precision"]["fp32"] == pytest.approx(acc, abs=1e-9)
    assert meta["precisions"]["fp32"]["heldout_metric"] == held["by_precision"]["fp32"]
    assert meta["metrics"]["pipeline"] == {"name": "accuracy", "value": kws_sidecar["metric_heldout"]["value"]}
    assert kws_sidecar["metric_heldout"]["value"] == pytest.approx(acc)
    assert meta["source"]["distill_teacher"] == "dino_audio"

    report = (kws_bundle / "report.md").read_text()
    assert "input spec `log_mel` v1: 16000 Hz mono" in report and "Confusion matrix" in report
    assert f"over {n} samples" in report and "points of" not in report


def test_bundle_carries_audio_byte_copies_and_labels(kws_bundle, kws_sidecar):
    meta = load_bundle(kws_bundle).metadata
    for split in ("calibration", "heldout"):
        refs = kws_sidecar[f"{split}_samples"]
        entries = meta["data"][split]
        assert [e["token"] for e in entries] == [r["token"] for r in refs]
        for e, ref in zip(entries, refs):
            stem = ref["token"].replace("/", "_")  # a safe file name of the token "<label>/<clip stem>"
            assert e["input"] == f"data/{split}/{stem}.wav" and e["target"] == f"data/{split}/{stem}.label.json"
            assert e["input"] in meta["files"] and e["target"] in meta["files"]
            assert (kws_bundle / e["input"]).read_bytes() == Path(ref["audio"]).read_bytes()
            assert json.loads((kws_bundle / e["target"]).read_text()) == {"label": ref["label"],
                                                                         "class_index": CLASSES.index(ref["label"])}
    assert not {e["token"] for e in meta["data"]["calibration"]} & {e["token"] for e in meta["data"]["heldout"]}


def test_fp16_and_int8_accuracy_is_recorded_per_precision(kws_bundle, kws_sidecar):
    import onnx

    from deploy.runtime import OrtEngine
    from deploy.tasks import adapter_for

    bundle = load_bundle(kws_bundle)
    meta = bundle.metadata
    by = meta["metrics"]["heldout"]["by_precision"]
    assert sorted(by) == ["fp16", "fp32", "int8"]
    for prec in by:
        assert meta["precisions"][prec]["heldout_metric"] == by[prec]
    assert meta["precisions"]["int8"]["calibration_samples"] == len(kws_sidecar["calibration_samples"])
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(bundle.model_path("int8"))).graph.node}
    one_clip = 100.0 / len(kws_sidecar["heldout_samples"])
    assert abs(by["fp16"] - by["fp32"]) <= one_clip + 1e-9
    assert by["int8"] >= by["fp32"] - 3 * one_clip - 1e-9  # loose: 8 calibration clips, 12 held-out ones
    assert meta["metrics"]["int8_drop"] == pytest.approx(by["fp32"] - by["int8"])
    # The recorded value is the adapter's accuracy of that model (recomputed here from its predictions).
    adapter = adapter_for(meta, bundle.path)
    eng = OrtEngine(bundle.model_path("int8"))
    preds = [adapter.postprocess(eng.run(adapter.preprocess(adapter.read(s.path))[0]), None).argmax()
             for s in adapter.samples("heldout")]
    assert by["int8"] == pytest.approx(100.0 * np.mean(np.array(preds) == _heldout_labels(kws_sidecar)))
    assert "| int8 |" in (kws_bundle / "report.md").read_text()


def test_infer_prints_and_writes_top_k_keywords(kws_bundle_copy, kws_sidecar, torch_probs, tmp_path, capsys):
    """`edgedistill infer BUNDLE a.wav b.flac`: per file, the top-3 keywords with the torch oracle's scores."""
    import soundfile

    from modalities.audio.io import read_audio

    a = Path(kws_sidecar["heldout_samples"][0]["audio"])
    src = Path(kws_sidecar["heldout_samples"][5]["audio"])  # stored at 8 kHz
    b = tmp_path / "clips" / "b.flac"
    b.parent.mkdir()
    wave, _ = soundfile.read(src, dtype="float32")
    soundfile.write(b, wave, soundfile.info(src).samplerate, format="FLAC")
    assert np.array_equal(read_audio(b)[0], read_audio(src)[0])
    out = tmp_path / "out"
    assert main(["infer", str(kws_bundle_copy), str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    want = torch_probs([a, b])
    for i, (path, line) in enumerate(zip((a, b), printed, strict=True)):
        result = out / f"{path.stem}.keywords.json"
        got = json.loads(result.read_text())
        assert got["file"] == str(path) and got["model"] == MODEL and got["k"] == 3
        top = got["top_k"]
        scores = [t["score"] for t in top]
        assert len(top) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6
        order = np.argsort(-want[i], kind="stable")[:3]
        assert [t["label"] for t in top] == [CLASSES[j] for j in order]
        np.testing.assert_allclose(scores, want[i][order], atol=1e-4)
        assert line == (f"{path.name}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in top) + f" -> {result}")


def test_corrupt_and_missing_audio_files_are_named(kws_bundle_copy, tmp_path, capsys, monkeypatch):
    import logging

    from deploy.runtime import infer_files

    # A root handler left by an earlier test writes to that test's closed stream; main() installs its own.
    monkeypatch.setattr(logging.getLogger(), "handlers", [])

    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    assert main(["infer", str(kws_bundle_copy), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot decode as WAV/FLAC audio" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="noise.wav"):
        infer_files(kws_bundle_copy, [bad])
    with pytest.raises(FileNotFoundError, match="nope.flac"):
        infer_files(kws_bundle_copy, [tmp_path / "nope.flac"])
    assert not list(tmp_path.glob("*.keywords.json"))


def test_bench_latency_includes_the_numpy_front_end(kws_bundle_copy, tmp_path, monkeypatch):
    """The end-to-end rows time pre-processing: a pre-processing made 30 ms slower makes them >= 30 ms,
    while the engine-only rows stay below it."""
    from deploy.bench import run_bench
    from deploy.tasks.keyword_spotting import KeywordSpotting

    out = run_bench(kws_bundle_copy, batch=2, warmup=1, iters=2, threads=1, backends=("torch", "onnxruntime"),
                    out_dir=tmp_path / "plain")
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in out["results"]}
    assert {("torch eager", "fp32", 1), ("onnxruntime", "int8", 2), ("onnxruntime end-to-end", "fp32", 1),
            ("onnxruntime end-to-end", "fp16", 1), ("onnxruntime end-to-end", "int8", 1)} <= set(rows), out["skipped"]
    assert out["task"] == "keyword_spotting" and out["inputs"] == {"log_mel": [1, 1, 64, 101]}
    assert set(out["stages_ms"]) == {"read", "preprocess", "postprocess"}
    assert all(s["p50_ms"] > 0 for s in out["stages_ms"].values())
    md = (tmp_path / "plain" / "bench.md").read_text()
    assert "clips/s" in md and "pre-processing" in md and "onnxruntime end-to-end" in md

    assert_bench_end_to_end_includes_preprocess(kws_bundle_copy, KeywordSpotting, tmp_path / "slow", monkeypatch)


def test_verify_passes_and_catches_a_changed_label(kws_bundle_copy, capsys):
    from deploy.verify import verify_bundle

    out = verify_bundle(kws_bundle_copy)
    assert out["parity_fp32"]["max_rel_err"] <= 1e-4 and sorted(out["precisions"]) == ["fp16", "fp32", "int8"]
    assert main(["verify", str(kws_bundle_copy)]) == 0
    assert "as recorded" in capsys.readouterr().out
    assert_verify_catches_a_flipped_label(kws_bundle_copy, CLASSES)


def test_export_names_missing_audio_and_unknown_labels(kws_run, tmp_path):
    from deploy.export import export_bundle

    run = tmp_path / "run"
    shutil.copytree(kws_run / "evaluate", run / "evaluate")
    side_path = run / "evaluate" / "models" / f"{MODEL}.json"
    side = json.loads(side_path.read_text())
    gone = side["heldout_samples"][1]["audio"] + ".moved"
    side["heldout_samples"][1]["audio"] = gone
    side_path.write_text(json.dumps(side))
    with pytest.raises(FileNotFoundError, match=rf"heldout\) are missing: \['{gone}'\]"):
        export_bundle(run)
    side["heldout_samples"][1]["audio"] = gone[: -len(".moved")]
    side["calibration_samples"][0]["label"] = "maybe"
    side_path.write_text(json.dumps(side))
    with pytest.raises(ValueError, match="label 'maybe' .* is not one of the model's classes"):
        export_bundle(run)
    assert not (run / "deploy").exists() or not any((run / "deploy").iterdir())  # nothing half-written


def test_keyword_spotting_runtime_imports_without_torch():
    code = ("import sys\nimport deploy.runtime, deploy.tasks.keyword_spotting, deploy.cli, deploy.report\n"
            "from deploy.tasks import adapter_class\n"
            "assert adapter_class('keyword_spotting').kind == 'keyword_spotting'\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_file_stems_of_tokens_are_safe_and_unique():
    from deploy.tasks.classification import file_stem

    used: set[str] = set()
    assert [file_stem(t, used) for t in ("yes/a_nohash_0", "yes_a_nohash_0", "../x", "..", "ok-1.2")] == \
        ["yes_a_nohash_0", "yes_a_nohash_0_1", "_x", "sample", "ok-1.2"]


def test_softmax_and_top_k():
    from deploy.tasks.classification import softmax, top_k

    p = softmax(np.array([1000.0, 1001.0, 999.0, 1001.0]))
    assert p.dtype == np.float32 and np.isfinite(p).all() and abs(float(p.sum()) - 1.0) < 1e-6
    assert [t["label"] for t in top_k(p, CLASSES, 3)] == ["no", "down", "yes"]  # ties: lower index first
    assert len(top_k(p, CLASSES, 10)) == len(CLASSES)
