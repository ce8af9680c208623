"""Export: parity with PyTorch on real scans, atomic self-contained bundles that refuse to be trusted blindly, verify."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploy.bundle import FORMAT_VERSION, REQUIRED_FIELDS, BundleError, default_bundle_dir, load_bundle, write_metadata
from deploy.cli import main
from deploy.export import export_bundle
from deploy.runtime import OrtEngine
from deploy.trt_ops import unsupported_nodes
from deploy.verify import ParityError, verify_bundle

MODEL = "slidr_range_50pct"


def test_export_writes_verified_static_bundle(exported_bundle, tiny_run):
    bundle = load_bundle(exported_bundle)
    meta = bundle.metadata
    assert exported_bundle == default_bundle_dir(tiny_run.resolve(), MODEL) == tiny_run.resolve() / "deploy" / MODEL
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["task"]["kind"] == "point_segmentation"
    par = meta["metrics"]["parity_fp32"]
    assert par["max_rel_err"] <= 1e-4 and par["samples"] == 2 and par["argmax_agreement"] > 0.999
    # ... an agreement measured on varied predictions: the fixture's segmenter is fitted to
    # labels (a constant argmax would agree trivially; see test_fp32_mIoU_... for its classes).
    held = meta["metrics"]["heldout"]
    assert held["metric"] == "miou" and held["samples"] == 2 and held["by_precision"]["fp32"] > 10.0
    assert meta["precisions"]["fp32"]["heldout_metric"] == held["by_precision"]["fp32"]
    model = onnx.load(str(bundle.model_path("fp32")))
    assert model.opset_import[0].version == 17
    # Named, static inputs and outputs, as metadata.json declares them.
    assert [i.name for i in model.graph.input] == [s["name"] for s in bundle.inputs] == ["range_image"]
    assert [o.name for o in model.graph.output] == [s["name"] for s in bundle.outputs] == ["logits"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == bundle.inputs[0]["shape"] == [1, 6, 16, 1808]  # vlp16: 1800 columns padded to 16
    assert meta["task"]["input"]["image_shape"] == [6, 16, 1808] and meta["task"]["input"]["sensor"]["columns"] == 1800
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == bundle.outputs[0]["shape"] \
        == [1, 16, 16, 1808]
    assert unsupported_nodes(model) == [] and meta["tensorrt"]["unsupported_nodes"] == []
    assert {"model.onnx", "report.md", "model_fp16.onnx", "model_int8.onnx", "torch/model.safetensors"} <= set(meta["files"])
    assert meta["source"]["distill_teacher"] == "efficientnet_lite0"
    assert "onnxruntime" in meta["versions"] and "torch" in meta["versions"]
    assert "Parity" in (exported_bundle / "report.md").read_text()


def test_bundle_carries_its_weights_and_data(exported_bundle, tiny_run):
    """torch/ and data/ hold byte copies of the run's weights and scans, and each scan's 16-class labels."""
    from modalities.lidar.labels import lidarseg_to_16
    from modalities.nuscenes_tables import load_lidarseg

    meta = load_bundle(exported_bundle).metadata
    models = tiny_run / "evaluate" / "models"
    side = json.loads((models / f"{MODEL}.json").read_text())
    assert (exported_bundle / meta["model"]["torch_weights"]).read_bytes() == (models / side["weights"]).read_bytes()
    for split, refs in (("calibration", side["calibration_scans"]), ("heldout", side["heldout_scans"])):
        entries = meta["data"][split]
        assert [e["token"] for e in entries] == [r["token"] for r in refs]
        for e, ref in zip(entries, refs):
            assert e["input"] == f"data/{split}/{ref['token']}.pcd.bin" and e["input"] in meta["files"]
            assert (exported_bundle / e["input"]).read_bytes() == Path(ref["lidar"]).read_bytes()
            labels = np.load(exported_bundle / e["target"])
            n = Path(ref["lidar"]).stat().st_size // 20
            assert labels.dtype == np.uint8 and e["target"] in meta["files"]
            np.testing.assert_array_equal(labels, lidarseg_to_16(load_lidarseg(Path(ref["lidarseg"]), num_points=n)))


def test_fp32_mIoU_through_onnxruntime_equals_torch_segmenter(exported_bundle, tiny_run, torch_point_labels):
    """Every held-out point's label through the bundle (numpy pre-processing, ORT, gather) equals torch's.

    Oracle: the pipeline's per-point path in torch (``torch_point_labels``: Linear on gathered
    backbone features). The fixture's segmenter predicts several classes with an mIoU well
    above 0, so a wrong gather (rows flipped, columns shifted) or a wrong graph changes the
    labels and the recorded mIoU.
    """
    from deploy.runtime import Predictor
    from deploy.sidecar import read_sidecar
    from modalities.lidar.labels import lidarseg_to_16
    from modalities.nuscenes_tables import load_lidarseg
    from modalities.segmentation_metrics import confusion_matrix, mean_iou

    bundle = load_bundle(exported_bundle)
    pred = Predictor(bundle, OrtEngine(bundle.model_path("fp32")))
    side = read_sidecar(tiny_run / "evaluate" / "models" / f"{MODEL}.json")
    conf = np.zeros((16, 16), np.int64)
    predicted, points = set(), 0
    for ref in side["heldout_scans"]:
        got = pred.predict_file(ref["lidar"])  # the run's original file, not the bundle's copy
        want = torch_point_labels(ref)
        np.testing.assert_array_equal(got, want)
        # Ground truth read here from the run's lidarseg file (the bundle's data/ copy is not trusted).
        labels = lidarseg_to_16(load_lidarseg(Path(ref["lidarseg"]), num_points=len(want)))
        valid = want != 255
        conf += confusion_matrix(want[valid], labels[valid], 16)
        predicted |= set(np.unique(want[valid]).tolist())
        points += int(valid.sum())
    # Varied predictions (observed: 9 classes, mIoU ~19), or the comparisons below prove nothing.
    assert len(predicted) >= 5 and mean_iou(conf) > 10.0, (sorted(predicted), mean_iou(conf))
    assert bundle.metadata["metrics"]["heldout"]["by_precision"]["fp32"] == pytest.approx(mean_iou(conf), abs=1e-9)
    assert bundle.metadata["metrics"]["heldout"]["points"] == points


def test_tampered_model_is_a_clear_error_naming_the_file(bundle_copy):
    path = bundle_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "model_int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model_int8\.onnx: listed in metadata.json but missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("field", ["task.input", "inputs", "model.classes", "data.heldout", "model.torch_weights"])
def test_missing_metadata_field_is_named(bundle_copy, field):
    meta = json.loads((bundle_copy / "metadata.json").read_text())
    node = meta
    *parents, last = field.split(".")
    for p in parents:
        node = node[p]
    del node[last]
    (bundle_copy / "metadata.json").write_text(json.dumps(meta))
    assert field in REQUIRED_FIELDS
    with pytest.raises(BundleError, match=f"missing field '{field}'"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("version, message", [
    (1, r"bundle format 1 was written by an older edgedistill.*Re-export it: `edgedistill export .* --model slidr_range_50pct"),
    (FORMAT_VERSION + 1, f"format_version {FORMAT_VERSION + 1} is newer than this tool"),
    ("2", "no integer format_version"),
])
def test_other_format_versions_are_refused_with_what_to_do(bundle_copy, version, message):
    meta = json.loads((bundle_copy / "metadata.json").read_text())
    meta["format_version"] = version
    (bundle_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_engine_rejects_wrong_shape_and_dtype(exported_bundle):
    engine = OrtEngine(load_bundle(exported_bundle).model_path("fp32"))
    assert [(s.name, s.shape, s.dtype) for s in engine.inputs] == [("range_image", (1, 6, 16, 1808), np.float32)]
    assert [(s.name, s.shape) for s in engine.outputs] == [("logits", (1, 16, 16, 1808))]
    good = np.zeros((1, 6, 16, 1808), np.float32)
    out = engine.run({"range_image": good})
    assert list(out) == ["logits"] and out["logits"].shape == (1, 16, 16, 1808)
    with pytest.raises(ValueError, match=r"input 'range_image': expected shape \(1, 6, 16, 1808\).*got \(1, 6, 16, 1800\)"):
        engine.run({"range_image": np.zeros((1, 6, 16, 1800), np.float32)})
    with pytest.raises(ValueError, match="input 'range_image': expected dtype float32, got float64"):
        engine.run({"range_image": good.astype(np.float64)})
    with pytest.raises(TypeError, match="numpy array"):
        engine.run({"range_image": good.tolist()})
    with pytest.raises(TypeError, match=r"expected a dict \{name: array\}"):
        engine.run(good)


@pytest.mark.parametrize("feeds", [{}, {"image": 0}, {"range_image": 0, "ring": 0}],
                         ids=["missing", "misnamed", "extra"])
def test_engine_rejects_a_missing_or_extra_input_name(exported_bundle, feeds):
    """Inputs go by name: a missing, misnamed or extra one is an error naming the expected names, never ignored."""
    engine = OrtEngine(load_bundle(exported_bundle).model_path("fp32"))
    good = np.zeros((1, 6, 16, 1808), np.float32)
    feeds = {k: good for k in feeds}
    with pytest.raises(ValueError, match=re.escape(f"expected the names ['range_image'], got {sorted(feeds)}")):
        engine.run(feeds)


def test_failed_parity_leaves_no_bundle(tiny_run_factory, tmp_path, monkeypatch):
    run = tmp_path / "run"
    tiny_run_factory(run, seed=1)
    import deploy.export as ex

    real = ex.export_onnx

    def corrupt_export(model, example, output_names, path):  # a wrong graph: the classifier bias is shifted
        real(model, example, output_names, path)
        m = onnx.load(str(path))
        last = [i for i in m.graph.initializer if i.dims == [16]][-1]
        arr = onnx.numpy_helper.to_array(last) + 0.5
        last.CopyFrom(onnx.numpy_helper.from_array(arr, last.name))
        onnx.save(m, str(path))

    monkeypatch.setattr(ex, "export_onnx", corrupt_export)
    with pytest.raises(ParityError, match="relative error"):
        export_bundle(run)
    assert not (run / "deploy" / MODEL).exists()
    assert list((run / "deploy").iterdir()) == []  # no staging leftovers either


def test_reexport_replaces_old_bundle_atomically(tiny_run_factory, tmp_path):
    run = tmp_path / "run"
    tiny_run_factory(run, seed=2)
    first = export_bundle(run, max_scans=1)
    (first / "stale.txt").write_text("old")
    second = export_bundle(run, max_scans=1)
    assert first == second and not (second / "stale.txt").exists()
    assert first == run.resolve() / "deploy" / MODEL
    assert sorted(p.name for p in (run / "deploy").iterdir()) == [MODEL]
    load_bundle(second)


def test_sparse_unet_student_is_refused_with_the_reason(tiny_run_factory, tmp_path):
    run = tmp_path / "run"
    side_path = tiny_run_factory(run, seed=3)
    side = json.loads(side_path.read_text())
    side["student"] = "sparse_unet"
    side_path.with_name("slidr_sparse_50pct.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="spconv, which has no ONNX/TensorRT export"):
        export_bundle(run, "slidr_sparse_50pct")
    shutil.rmtree(run / "deploy", ignore_errors=True)
    export_bundle(run, max_scans=1)  # without --model: the only range_net model is picked


def test_model_is_found_in_whichever_evaluate_stage_saved_it(tiny_run_factory, tmp_path):
    """A pipeline may have several evaluate stages (the demo fine-tunes in `finetune`)."""
    from deploy.sidecar import choose_model

    run = tmp_path / "run"
    tiny_run_factory(run, seed=5)
    (run / "evaluate").rename(run / "finetune")
    expected = run / "finetune" / "models" / f"{MODEL}.json"
    assert choose_model(run, None) == expected and choose_model(run, MODEL, "finetune") == expected
    with pytest.raises(FileNotFoundError, match="no fine-tuned model"):
        choose_model(run, None, "evaluate")
    shutil.copytree(run / "finetune", run / "evaluate")  # the same name saved by two stages
    with pytest.raises(ValueError, match=r"saved by several stages \['evaluate/slidr_range_50pct', 'finetune/"):
        choose_model(run, MODEL)
    assert choose_model(run, MODEL, "evaluate") == run / "evaluate" / "models" / f"{MODEL}.json"


# ----------------------------------------------------------------------------- self-contained bundles and verify


def test_bundle_moved_away_from_its_deleted_run_still_verifies_quantizes_and_benches(tiny_run_factory, tmp_path,
                                                                                      capsys):
    """A bundle needs nothing outside its folder: copy it elsewhere, delete the run, then verify, quantize, bench.

    Through the CLI, as on a robot. Bench must have run torch eager from the bundle's own
    weights (bench reports a missing file as "skipped" rather than failing, so this is
    asserted on its results).
    """
    run = tmp_path / "run"
    tiny_run_factory(run, seed=6)
    bundle = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(export_bundle(run, max_scans=1), bundle)
    shutil.rmtree(run)
    assert main(["verify", str(bundle)]) == 0
    assert main(["quantize", str(bundle)]) == 0
    assert main(["verify", str(bundle)]) == 0
    assert main(["bench", str(bundle), "--batch", "2", "--warmup", "1", "--iters", "2", "--threads", "1",
                 "--backend", "torch", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert out.count("fp32 parity vs PyTorch: max rel") == 2 and "held-out fp32" in out and "int8 " in out
    bench = json.loads((bundle / "report" / "bench.json").read_text())
    ran = {(r["backend"], r["precision"], r["batch"]) for r in bench["results"]}
    assert {("torch eager", "fp32", 1), ("torch eager", "fp32", 2), ("onnxruntime", "fp32", 1),
            ("onnxruntime", "int8", 2)} <= ran, bench["skipped"]
    meta = load_bundle(bundle).metadata  # bench refreshed the hashes
    assert set(meta["precisions"]) == {"fp32", "fp16", "int8"} and meta["precisions"]["int8"]["calibration_samples"] == 1
    assert "report/bench.json" in meta["files"]
    res = verify_bundle(bundle)
    assert res["parity_fp32"]["max_rel_err"] <= 1e-4 and set(res["precisions"]) == {"fp32", "fp16", "int8"}


def test_verify_cli_names_an_altered_heldout_labels_file(bundle_copy, capsys):
    target = load_bundle(bundle_copy).metadata["data"]["heldout"][0]["target"]
    labels = np.load(bundle_copy / target)
    labels[:100] = (labels[:100] + 1) % 16  # still a valid labels file, other classes
    np.save(bundle_copy / target, labels)
    assert main(["verify", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert f"{bundle_copy / target}: sha256 mismatch" in err and "Traceback" not in err


def test_verify_recomputes_the_metric_from_the_bundle_data(bundle_copy):
    """Labels altered and the hashes re-written: every file is consistent, the recorded mIoU is no longer reproduced."""
    meta = load_bundle(bundle_copy).metadata
    for entry in meta["data"]["heldout"]:
        labels = np.load(bundle_copy / entry["target"])
        known = labels != 255
        labels[known] = (labels[known] + 1) % 16
        np.save(bundle_copy / entry["target"], labels)
    write_metadata(bundle_copy, meta)
    load_bundle(bundle_copy)  # the hashes agree again
    with pytest.raises(ParityError, match=r"/model(_fp16|_int8)?\.onnx: held-out miou [\d.]+ differs from the [\d.]+ "
                       "recorded at export"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_verify_catches_a_recorded_metric_mismatch(bundle_copy, precision, capsys):
    assert main(["verify", str(bundle_copy)]) == 0  # the untouched bundle verifies
    out = capsys.readouterr().out
    assert "fp32 parity vs PyTorch: max rel" in out and all(f"{p} " in out for p in ("fp32", "fp16", "int8"))
    meta = load_bundle(bundle_copy).metadata
    meta["precisions"][precision]["heldout_metric"] += 0.01
    write_metadata(bundle_copy, meta)
    file = meta["precisions"][precision]["file"]
    with pytest.raises(ParityError, match=rf"{re.escape(file)}: held-out miou [\d.]+ differs from the [\d.]+ recorded"):
        verify_bundle(bundle_copy)
    assert main(["verify", str(bundle_copy)]) == 2
    assert f"{file}: held-out miou" in capsys.readouterr().err


def test_verify_catches_torch_weights_that_disagree_with_the_onnx_model(bundle_copy):
    from safetensors.numpy import load_file, save_file

    weights = bundle_copy / "torch" / "model.safetensors"
    state = load_file(str(weights))
    state["classifier.bias"] = state["classifier.bias"] + np.float32(0.5)
    save_file(state, str(weights))
    write_metadata(bundle_copy, load_bundle(bundle_copy, verify=False).metadata)
    with pytest.raises(ParityError, match="relative error"):
        verify_bundle(bundle_copy)
