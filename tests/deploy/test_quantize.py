"""FP16 and INT8 QDQ variants: they run on ONNX Runtime CPU and their held-out mIoU is recorded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from deploy.bundle import load_bundle
from deploy.runtime import OrtEngine


def test_int8_model_is_explicit_qdq_and_its_miou_is_recorded(exported_bundle):
    bundle = load_bundle(exported_bundle)
    model = onnx.load(str(bundle.model_path("int8")))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    # Symmetric activations (TensorRT needs zero points of 0) and per-channel conv weights.
    zps = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name}
    assert zps and all(np.all(v == 0) for v in zps.values())
    assert any(v.size > 1 for v in zps.values())
    meta = bundle.metadata
    int8 = meta["precisions"]["int8"]
    assert np.isfinite(int8["miou"]) and meta["metrics"]["miou_heldout"]["int8"] == int8["miou"]
    assert meta["metrics"]["int8_drop"] == pytest.approx(meta["precisions"]["fp32"]["miou"] - int8["miou"])
    assert int8["calibration_scans"] == 1 and int8["unsupported_nodes"] == []
    assert "INT8: explicit QDQ" in (exported_bundle / "report.md").read_text()


def test_fp16_model_has_fp16_weights_fp32_io_and_matches_fp32(exported_bundle):
    bundle = load_bundle(exported_bundle)
    model = onnx.load(str(bundle.model_path("fp16")))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_w = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert conv_w and all(types[w] == TensorProto.FLOAT16 for w in conv_w)
    x = np.random.default_rng(0).standard_normal(bundle.input_spec["shape"]).astype(np.float32)
    a = OrtEngine(bundle.model_path("fp16")).run(x)
    b = OrtEngine(bundle.model_path("fp32")).run(x)
    assert a.dtype == np.float32 and np.abs(a - b).max() / np.abs(b).max() < 1e-2
    assert bundle.metadata["precisions"]["fp16"]["max_rel_err_vs_fp32"] < 1e-2


def test_calibration_must_not_see_heldout_scans(tiny_run_factory, tmp_path):
    import json

    from deploy.export import export_bundle
    from deploy.quantize import quantize_bundle

    side_path = tiny_run_factory(tmp_path / "run", seed=4)
    side = json.loads(side_path.read_text())
    side["calibration_scans"] = side["heldout_scans"][:1]
    side_path.write_text(json.dumps(side))
    path = export_bundle(tmp_path / "run", max_scans=1)
    with pytest.raises(ValueError, match="calibration must not see held-out data"):
        quantize_bundle(path, ("int8",))
