"""Deploy adapter ``imu_activity``: export, parity, FP16/INT8, infer (JSON + CSV per window), metric, bench, verify.

The fixture writes a tiny run folder as the evaluate stage lays it out
(``evaluate/models/<name>.{safetensors,json}``, sidecar as in /tmp/comodo_api.md): synthetic
``imu.csv`` recordings of four "activities" (acc and gyro oscillating at a class-specific
frequency, random phase, amplitude and noise, gravity on z), stored at 100 Hz with jitter,
200 Hz and 250 Hz so that reading exercises resampling, some starting slightly before t = 0,
one held-out recording with a 0.4 s sensor gap (its second window is skipped). A small
:class:`ImuClassifier` is FITTED on the training windows so that its held-out predictions vary:
a constant argmax would give the same accuracy through any broken deploy path.

Oracle throughout: ``ImuWindowSpec.prepare`` (the imu-data path, not the adapter's) -> the
ImuClassifier in torch -> softmax; no ONNX.
"""

from __future__ import annotations

import csv
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

MODEL = "comodo_10pct"
CLASSES = ["sitting", "walking", "running", "cycling"]
FREQ_HZ = [1.0, 3.0, 6.0, 11.0]  # the oscillation of each activity
STUDENT_KWARGS = {"widths": [8, 8, 16, 16], "kernel": 5}
TRAIN_PER_CLASS, HELDOUT_PER_CLASS = 3, 2
SECONDS = 15.2  # windows at 0, 5 and 10 s
FIT_STEPS = 30
ROOT = Path(__file__).resolve().parents[2]
GAP = (6.0, 6.4)  # seconds missing from the gap recording: its window [5, 10) is skipped


def synth_recording(label: int, rng: np.random.Generator, rate_hz: float, seconds: float, t0: float = 0.0,
                    jitter: float = 0.0) -> np.ndarray:
    """(N, 7) [t, ax, ay, az, gx, gy, gz] of one activity: an oscillation at the class frequency, strongest on
    the class's axis (label % 3) of acc and gyro, + gravity on z + noise."""
    n = int(seconds * rate_hz)
    t = t0 + np.arange(n) / rate_hz + rng.uniform(0, jitter / rate_hz, n)
    t.sort()
    t[0] = t0  # the first sample on t0 (<= 0), so that window 0 lies in the recording
    f = FREQ_HZ[label] * rng.uniform(0.92, 1.08)
    cols = []
    for c in range(6):
        amp = rng.uniform(0.8, 1.2) * (2.0 if c < 3 else 0.8) * (1.0 if c % 3 == label % 3 else 0.3)
        x = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.1, n)
        cols.append(x + (-9.81 if c == 2 else 0.0))
    return np.column_stack([t, *cols])


def write_csv(path: Path, rows: np.ndarray, header=("t", "ax", "ay", "az", "gx", "gy", "gz")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows([[f"{v:.6f}" for v in r] for r in rows])
    return path


def _write_recordings(folder: Path, split: str, per_class: int, rng: np.random.Generator) -> list[dict]:
    refs = []
    for j in range(per_class):
        for label, name in enumerate(CLASSES):
            rate, jitter = ((100.0, 0.3), (200.0, 0.0), (250.0, 0.2))[(j + label) % 3]
            rows = synth_recording(label, rng, rate, SECONDS, t0=-0.004 * (j % 2), jitter=jitter)
            if split == "heldout" and j == 0 and label == 1:  # the gap recording
                rows = rows[(rows[:, 0] < GAP[0]) | (rows[:, 0] > GAP[1])]
            token = f"s{j:02d}/{name}_{split}"  # as the dataset layout names them: "<subject>/<rec dir>"
            path = write_csv(folder / split / f"s{j:02d}" / f"{name}_{split}" / "imu.csv", rows)
            refs.append({"token": token, "imu": str(path), "label": name})
    return refs


def _prepared(spec, paths) -> tuple[torch.Tensor, list[int]]:
    """Valid windows of IMU files through ``ImuWindowSpec.prepare`` (the oracle path) and the count per file."""
    xs, counts = [], []
    for p in paths:
        x, _, ok = spec.prepare(p)
        xs.append(x[ok])
        counts.append(int(ok.sum()))
    return torch.from_numpy(np.concatenate(xs)), counts


def _build(kwargs=STUDENT_KWARGS):
    from modalities.imu.students import ImuClassifier, build_imu_student

    return ImuClassifier(build_imu_student("imu_cnn", kwargs), len(CLASSES))


def make_imu_run(run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/evaluate/models/MODEL.{safetensors,json}`` of a fitted activity model; returns the sidecar."""
    from modalities.imu.spec import ImuWindowSpec, fit_stats

    rng = np.random.default_rng(seed)
    data = run_dir / "data"
    train = _write_recordings(data, "train", TRAIN_PER_CLASS, rng)
    held = _write_recordings(data, "heldout", HELDOUT_PER_CLASS, rng)
    raw = ImuWindowSpec()
    windows = np.concatenate([raw.prepare(r["imu"])[0] for r in train])  # mean 0, std 1: the raw windows
    spec = raw.with_stats(*fit_stats(windows))
    x, counts = _prepared(spec, [r["imu"] for r in train])
    y = torch.tensor(np.repeat([CLASSES.index(r["label"]) for r in train], counts))
    torch.manual_seed(seed)
    model = fit_classifier(_build(), x, y, FIT_STEPS, torch.nn.BatchNorm1d)
    xh, counts = _prepared(spec, [r["imu"] for r in held])
    with torch.no_grad():
        pred = model(xh).argmax(1).numpy()
    acc = float(100.0 * np.mean(pred == np.repeat([CLASSES.index(r["label"]) for r in held], counts)))
    sidecar = {
        "format": 2, "task": "imu_activity", "distill_stage": "comodo",
        "student_record": {"teacher": {"name": "videomae_small"}}, "label_fraction": 0.1,
        "student": "imu_cnn", "student_kwargs": STUDENT_KWARGS, "num_classes": len(CLASSES), "classes": CLASSES,
        "metric_heldout": {"name": "accuracy", "value": acc}, "weights": f"{MODEL}.safetensors",
        "state_dict_layout": "student.* = ImuCNN, classifier.* = nn.Linear(feature_dim, num_classes)",
        "input": spec.to_dict(), "calibration_samples": train[: len(CLASSES)], "heldout_samples": held,
    }
    return write_models(run_dir, MODEL, model, sidecar)


@pytest.fixture(scope="module")
def imu_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("imu") / "run"
    make_imu_run(run)
    return run


@pytest.fixture(scope="module")
def imu_sidecar(imu_run) -> dict:
    return json.loads((imu_run / "evaluate" / "models" / f"{MODEL}.json").read_text())


@pytest.fixture(scope="module")
def oracle(imu_run, imu_sidecar):
    """``probs(path) -> (starts_s of the valid windows, (n, K) softmax)`` of the run's model, all in torch."""
    from safetensors.torch import load_file

    from modalities.imu.spec import ImuWindowSpec

    spec = ImuWindowSpec.from_dict(imu_sidecar["input"])
    model = _build()
    model.load_state_dict(load_file(str(imu_run / "evaluate" / "models" / f"{MODEL}.safetensors")))
    model.eval()

    def probs(path):
        x, starts, ok = spec.prepare(path)
        with torch.no_grad():
            return starts[ok], torch.softmax(model(torch.from_numpy(x[ok])), 1).numpy()

    return probs


@pytest.fixture(scope="module")
def imu_bundle(imu_run) -> Path:
    """The run's bundle with fp32, fp16 and int8 models (built once; tests that modify it copy it)."""
    return export_quantized(imu_run)


@pytest.fixture
def imu_bundle_copy(imu_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(imu_bundle, dst)
    return dst


def _window_labels(side: dict, oracle) -> tuple[np.ndarray, np.ndarray]:
    """(label, torch prediction) of every valid held-out window, recording after recording."""
    labels, preds = [], []
    for r in side["heldout_samples"]:
        _, p = oracle(r["imu"])
        labels += [CLASSES.index(r["label"])] * len(p)
        preds += list(p.argmax(1))
    return np.array(labels), np.array(preds)


def test_fixture_model_is_fitted_and_varied(imu_sidecar, oracle):
    """The held-out predictions vary and beat chance (else every check below is weak); the gap window is skipped."""
    labels, preds = _window_labels(imu_sidecar, oracle)
    assert len(np.unique(preds)) >= 3
    assert np.mean(preds == labels) > 1.0 / len(CLASSES) + 0.25
    assert len(labels) == 3 * len(imu_sidecar["heldout_samples"]) - 1  # 3 windows each, one skipped for the gap


def test_export_parity_metadata_and_accuracy_equal_torch(imu_bundle, imu_sidecar, oracle):
    """Export: parity passes, the task and I/O are declared, and the held-out window accuracy through the
    bundle (the adapter's numpy path + ONNX Runtime) is the torch oracle's, window by window (confusion)."""
    import onnx

    bundle = load_bundle(imu_bundle)
    meta = bundle.metadata
    assert meta["task"]["kind"] == "imu_activity" and meta["task"]["classes"] == CLASSES
    assert meta["task"]["input"] == imu_sidecar["input"] and meta["task"]["top_k"] == 3
    assert meta["model"]["deployed_graph"].startswith("student (IMU encoder")
    assert bundle.inputs == [{"name": "imu", "shape": [1, 6, 1000], "dtype": "float32",
                              "layout": "NCL (window, channel ax ay az gx gy gz, sample)"}]
    assert [(o["name"], o["shape"]) for o in bundle.outputs] == [("logits", [1, len(CLASSES)])]
    model = onnx.load(str(bundle.model_path("fp32")))
    assert model.opset_import[0].version == 17
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 6, 1000]
    assert meta["tensorrt"]["unsupported_nodes"] == []

    labels, preds = _window_labels(imu_sidecar, oracle)
    n_rec = len(imu_sidecar["heldout_samples"])
    par = meta["metrics"]["parity_fp32"]
    assert par["max_rel_err"] <= 1e-4 and par["samples"] == n_rec and par["argmax_agreement"] == 1.0
    want = np.zeros((len(CLASSES),) * 2, int)
    np.add.at(want, (labels, preds), 1)
    held = meta["metrics"]["heldout"]
    assert held["metric"] == "accuracy" and held["samples"] == n_rec and held["points"] == len(labels)
    assert held["confusion_fp32"] == want.tolist()
    acc = 100.0 * np.trace(want) / len(labels)
    assert held["by_precision"]["fp32"] == pytest.approx(acc, abs=1e-9)
    assert meta["metrics"]["pipeline"] == {"name": "accuracy", "value": imu_sidecar["metric_heldout"]["value"]}
    assert imu_sidecar["metric_heldout"]["value"] == pytest.approx(acc)
    assert meta["source"]["distill_teacher"] == "videomae_small"

    report = (imu_bundle / "report.md").read_text()
    assert "input spec `imu_window` v1: IMU columns ['t', 'ax', 'ay', 'az', 'gx', 'gy', 'gz']" in report
    assert "resampled to 200 Hz, non-overlapping 5 s windows (1000 samples)" in report
    assert f"over {len(labels)} windows of {n_rec} samples" in report and "Confusion matrix" in report


def test_bundle_carries_imu_copies_and_labels(imu_bundle, imu_sidecar):
    meta = load_bundle(imu_bundle).metadata
    for split in ("calibration", "heldout"):
        refs = imu_sidecar[f"{split}_samples"]
        entries = meta["data"][split]
        assert [e["token"] for e in entries] == [r["token"] for r in refs]
        for e, ref in zip(entries, refs):
            stem = ref["token"].replace("/", "_")
            assert e["input"] == f"data/{split}/{stem}.csv" and e["target"] == f"data/{split}/{stem}.label.json"
            assert e["input"] in meta["files"] and e["target"] in meta["files"]
            assert (imu_bundle / e["input"]).read_bytes() == Path(ref["imu"]).read_bytes()
            assert json.loads((imu_bundle / e["target"]).read_text()) == {"label": ref["label"],
                                                                         "class_index": CLASSES.index(ref["label"])}


def test_adapter_windows_equal_the_spec_prepare_path(imu_bundle, imu_sidecar):
    """The adapter's read + preprocess (recording in memory) gives ImuWindowSpec.prepare's valid windows."""
    from deploy.tasks import adapter_for

    adapter = adapter_for(load_bundle(imu_bundle).metadata, imu_bundle)
    for ref in imu_sidecar["heldout_samples"][:3]:
        feeds, (starts, skipped) = adapter.preprocess(adapter.read(ref["imu"]))
        x, all_starts, ok = adapter.spec.prepare(ref["imu"])
        assert np.array_equal(feeds["imu"], x[ok]) and feeds["imu"].dtype == np.float32
        assert np.array_equal(starts, all_starts[ok]) and np.array_equal(skipped, all_starts[~ok])


def test_metric_is_the_window_accuracy_counted_by_hand(imu_bundle):
    """A fake engine predicting class 0 for every window of the first two recordings and class 1 for the others:
    accuracy = windows of label 0 among the first two + windows of label 1 among the rest, over all windows."""
    from deploy.tasks import adapter_for

    adapter = adapter_for(load_bundle(imu_bundle).metadata, imu_bundle)
    samples = adapter.samples("heldout")
    calls = []

    def run(feeds):
        n = feeds["imu"].shape[0]
        logits = np.zeros((n, len(CLASSES)), np.float32)
        logits[:, 0 if len(calls) < 2 else 1] = 5.0
        calls.append(n)
        return {"logits": logits}

    m = adapter.metric(run, samples)
    labels = [json.loads(s.target.read_text())["label"] for s in samples]
    # Held-out recordings are written label after label: sitting, walking (with the gap: 2 windows), running, ...
    assert labels[:4] == CLASSES and calls[:4] == [3, 2, 3, 3]
    correct = sum(n for i, (n, lab) in enumerate(zip(calls, labels)) if lab == CLASSES[0 if i < 2 else 1])
    assert correct == 3 + 3  # sitting of subject 0 (predicted 0), walking of subject 1 (predicted 1)
    assert m["value"] == pytest.approx(100.0 * 6 / 23) and m["points"] == sum(calls) == 23
    assert m["samples"] == len(samples) == 8 and m["points_noun"] == "windows"
    conf = np.array(m["confusion"])
    assert conf.sum() == 23 and np.trace(conf) == 6
    assert (conf[0, 0], conf[0, 1], conf[1, 0], conf[1, 1]) == (3, 3, 2, 3)


def test_infer_writes_json_and_csv_per_window(imu_bundle_copy, imu_sidecar, oracle, tmp_path, capsys):
    """`edgedistill infer BUNDLE a.csv b.csv`: per window the torch oracle's top-3; window times; the gap skipped."""
    gap_ref = imu_sidecar["heldout_samples"][1]  # walking, with the gap
    other = imu_sidecar["heldout_samples"][6]
    a = tmp_path / "in" / "gap.csv"
    b = tmp_path / "in" / "b.csv"
    a.parent.mkdir()
    shutil.copyfile(gap_ref["imu"], a)
    shutil.copyfile(other["imu"], b)
    out = tmp_path / "out"
    assert main(["infer", str(imu_bundle_copy), str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    for path, line, gap in zip((a, b), printed, (True, False), strict=True):
        starts, probs = oracle(path)
        got = json.loads((out / f"{path.stem}.activity.json").read_text())
        assert got["file"] == str(path) and got["model"] == MODEL and got["k"] == 3 and got["window_s"] == 5.0
        assert [w["start_s"] for w in got["windows"]] == ([0.0, 10.0] if gap else [0.0, 5.0, 10.0])
        assert [w["end_s"] for w in got["windows"]] == ([5.0, 15.0] if gap else [5.0, 10.0, 15.0])
        assert got["skipped_windows"] == ([{"start_s": 5.0, "end_s": 10.0, "reason": "sensor gap"}] if gap else [])
        for w, p in zip(got["windows"], probs, strict=True):
            order = np.argsort(-p, kind="stable")[:3]
            assert [t["label"] for t in w["top_k"]] == [CLASSES[j] for j in order]
            np.testing.assert_allclose([t["score"] for t in w["top_k"]], p[order], atol=1e-4)
        counts = np.bincount(probs.argmax(1), minlength=len(CLASSES))
        assert got["majority"] == {"label": CLASSES[counts.argmax()], "windows": int(counts.max()), "of": len(probs)}
        rows = list(csv.reader((out / f"{path.stem}.activity.csv").read_text().splitlines()))
        assert rows[0] == ["start_s", "end_s", "label", "score"] and len(rows) == len(probs) + 1
        for r, w in zip(rows[1:], got["windows"], strict=True):
            assert float(r[0]) == w["start_s"] and float(r[1]) == w["end_s"] and r[2] == w["top_k"][0]["label"]
            assert float(r[3]) == pytest.approx(w["top_k"][0]["score"], abs=1e-6)
        skipped = " (1 skipped: sensor gaps)" if gap else ""
        assert line == (f"{path.name}: {len(probs)} windows of 5 s{skipped}, mostly {CLASSES[counts.argmax()]} "
                        f"({counts.max()}/{len(probs)}) -> {out / f'{path.stem}.activity.json'}")


def test_bad_recordings_are_named(imu_bundle_copy, tmp_path, capsys, monkeypatch):
    """Wrong columns, a NaN, a recording shorter than one window, all windows in gaps: exit 2, the file named."""
    import logging

    from deploy.runtime import infer_files

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a root handler of an earlier test is closed
    rng = np.random.default_rng(1)
    good = synth_recording(0, rng, 200.0, 7.0)
    nan = good.copy()
    nan[40, 4] = np.nan
    cases = {
        write_csv(tmp_path / "cols.csv", good, ("time", "ax", "ay", "az", "wx", "wy", "wz")):
            "missing column(s) ['t', 'gx', 'gy', 'gz']",
        write_csv(tmp_path / "nan.csv", nan): "data row 41, column 'gx'",
        write_csv(tmp_path / "short.csv", good[good[:, 0] < 4.0]): "shorter than one 5 s window",
        write_csv(tmp_path / "holes.csv", good[(good[:, 0] < 1.0) | (good[:, 0] > 6.0)]):
            "all 1 5 s window(s) touch a sensor gap longer than max_gap_s 0.1 s",
    }
    for path, problem in cases.items():
        assert main(["infer", str(imu_bundle_copy), str(path)]) == 2
        err = capsys.readouterr().err
        assert f"edgedistill: error: {path}: " in err and problem in err and "Traceback" not in err, err
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        infer_files(imu_bundle_copy, [tmp_path / "nope.csv"])
    assert not list(tmp_path.glob("*.activity.*"))


def test_engine_runs_a_recording_window_by_window(imu_bundle):
    """A batch-1 engine given (n, 6, L) runs the n windows one at a time; other shapes are still refused."""
    from deploy.runtime import OrtEngine
    from deploy.tasks import adapter_for

    bundle = load_bundle(imu_bundle)
    adapter = adapter_for(bundle.metadata, bundle.path)
    x = adapter.preprocess(adapter.read(adapter.samples("heldout")[0].path))[0]["imu"]
    eng = OrtEngine(bundle.model_path("fp32"))
    whole = eng.run({"imu": x})["logits"]
    assert whole.shape == (3, len(CLASSES))
    np.testing.assert_array_equal(whole, np.concatenate([eng.run({"imu": x[i:i + 1]})["logits"] for i in range(3)]))
    with pytest.raises(ValueError, match=r"expected shape \(1, 6, 1000\)"):
        eng.run({"imu": x[:, :, :999]})
    with pytest.raises(ValueError, match=r"expected shape \(1, 6, 1000\)"):
        eng.run({"imu": x[:0]})


def test_fp16_int8_and_verify(imu_bundle_copy, imu_sidecar):
    from deploy.verify import verify_bundle

    meta = load_bundle(imu_bundle_copy).metadata
    by = meta["metrics"]["heldout"]["by_precision"]
    assert sorted(by) == ["fp16", "fp32", "int8"]
    assert meta["precisions"]["int8"]["calibration_samples"] == len(imu_sidecar["calibration_samples"])
    one_window = 100.0 / meta["metrics"]["heldout"]["points"]
    assert abs(by["fp16"] - by["fp32"]) <= one_window + 1e-9
    out = verify_bundle(imu_bundle_copy)
    assert out["parity_fp32"]["max_rel_err"] <= 1e-4 and out["precisions"] == by
    assert_verify_catches_a_flipped_label(imu_bundle_copy, CLASSES)


def test_bench_times_one_window_with_its_preprocessing(imu_bundle_copy, tmp_path, monkeypatch):
    """Bench: per 5 s window at batch 1; the pre-processing stage is shown and the end-to-end rows include it
    (a pre-processing made 30 ms slower makes them >= 30 ms, while the engine-only rows stay below it)."""
    from deploy.bench import run_bench
    from deploy.tasks import adapter_for
    from deploy.tasks.imu_activity import ImuActivity

    out = run_bench(imu_bundle_copy, batch=2, warmup=1, iters=2, threads=1, backends=("torch", "onnxruntime"),
                    out_dir=tmp_path / "plain")
    rows = {(r["backend"], r["precision"], r["batch"]) for r in out["results"]}
    assert {("torch eager", "fp32", 1), ("onnxruntime", "fp32", 2), ("onnxruntime end-to-end", "fp32", 1),
            ("onnxruntime end-to-end", "int8", 1)} <= rows, out["skipped"]
    assert out["task"] == "imu_activity" and out["inputs"] == {"imu": [1, 6, 1000]}
    assert set(out["stages_ms"]) == {"read", "preprocess", "postprocess"}
    assert all(s["p50_ms"] > 0 for s in out["stages_ms"].values())
    md = (tmp_path / "plain" / "bench.md").read_text()
    assert "windows/s" in md and "pre-processing" in md and "onnxruntime end-to-end" in md

    # The benchmarked raw sample is one window of the recording, and its window is the recording's first.
    adapter = adapter_for(load_bundle(imu_bundle_copy).metadata, imu_bundle_copy)
    rec = adapter.read(adapter.samples("heldout")[1].path)  # the gap recording
    one = adapter.bench_input(rec)
    feeds, (starts, skipped) = adapter.preprocess(one)
    assert feeds["imu"].shape == (1, 6, 1000) and list(starts) == [0.0] and len(skipped) == 0
    np.testing.assert_array_equal(feeds["imu"][0], adapter.preprocess(rec)[0]["imu"][0])

    assert_bench_end_to_end_includes_preprocess(imu_bundle_copy, ImuActivity, tmp_path / "slow", monkeypatch)


def test_export_names_missing_files_and_short_recordings(imu_run, tmp_path):
    from deploy.export import export_bundle

    run = tmp_path / "run"
    shutil.copytree(imu_run / "evaluate", run / "evaluate")
    side_path = run / "evaluate" / "models" / f"{MODEL}.json"
    side = json.loads(side_path.read_text())
    gone = side["heldout_samples"][1]["imu"] + ".moved"
    side["heldout_samples"][1]["imu"] = gone
    side_path.write_text(json.dumps(side))
    with pytest.raises(FileNotFoundError, match=rf"heldout\) are missing: \['{gone}'\]"):
        export_bundle(run)
    short = write_csv(tmp_path / "short" / "imu.csv", synth_recording(0, np.random.default_rng(2), 200.0, 3.0))
    side["heldout_samples"][1]["imu"] = str(short)
    side_path.write_text(json.dumps(side))
    with pytest.raises(ValueError, match=f"{short}: .*shorter than one 5 s window"):
        export_bundle(run)
    assert not (run / "deploy").exists() or not any((run / "deploy").iterdir())  # nothing half-written


def test_imu_runtime_imports_without_torch():
    code = ("import sys\nimport deploy.runtime, deploy.tasks.imu_activity, deploy.cli, deploy.report\n"
            "from deploy.tasks import adapter_class\n"
            "assert adapter_class('imu_activity').kind == 'imu_activity'\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
