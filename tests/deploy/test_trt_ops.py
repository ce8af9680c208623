"""The TensorRT 10.3 op check names the nodes it cannot run, on hand-made ONNX graphs."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from deploy.trt_ops import unsupported_nodes


def _graph(nodes, inputs, outputs):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_nonzero_and_scatternd_are_flagged_by_node_name():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 1])
    upd = helper.make_tensor_value_info("upd", TensorProto.FLOAT, [2, 4])
    nz = helper.make_tensor_value_info("nz", TensorProto.INT64, [2, None])
    sc = helper.make_tensor_value_info("sc", TensorProto.FLOAT, [4, 4])
    r = helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 4])
    model = _graph([
        helper.make_node("Relu", ["x"], ["r"], name="relu_ok"),
        helper.make_node("NonZero", ["x"], ["nz"], name="find_points"),
        helper.make_node("ScatterND", ["x", "idx", "upd"], ["sc"], name="scatter_back"),
    ], [x, idx, upd], [nz, sc, r])
    onnx.checker.check_model(model)
    issues = unsupported_nodes(model)
    assert [(i.node, i.op_type) for i in issues] == [("find_points", "NonZero"), ("scatter_back", "ScatterND")]
    assert "data-dependent" in str(issues[0])


def test_gridsample_flagged_only_for_5d_inputs():
    def model(rank):
        shape = [1, 2] + [4] * (rank - 2)
        grid = [1] + [4] * (rank - 2) + [rank - 2]
        return _graph([helper.make_node("GridSample", ["x", "grid"], ["y"], name=f"gs{rank}d")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                       helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])

    assert unsupported_nodes(model(4)) == []
    issues = unsupported_nodes(model(5))
    assert len(issues) == 1 and issues[0].node == "gs5d" and "4-D only" in issues[0].reason


def test_unknown_and_custom_domain_ops_are_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    m = _graph([helper.make_node("Hardmax", ["x"], ["h"], name="hm"),
                helper.make_node("MyOp", ["h"], ["y"], name="plugin", domain="com.example")], [x], [y])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    issues = unsupported_nodes(m)
    assert [i.node for i in issues] == ["hm", "plugin"]
    assert "allow-list" in issues[0].reason and "plugin" in issues[1].reason
