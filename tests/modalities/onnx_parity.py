"""Shared check of the BEV students' ONNX exports: no scatter in the graph, ONNX Runtime matches PyTorch."""

import io

import numpy as np
import torch


def assert_onnx_export_matches(net: torch.nn.Module, inputs: tuple, names: list[str], required_op: str,
                               out_shape: tuple) -> None:
    """Export ``net`` (opset 17), check it has no Scatter*/NonZero node and has ``required_op``, and that ONNX
    Runtime reproduces the PyTorch output of ``inputs`` to 1e-4 of its largest magnitude."""
    import onnx
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(net, inputs, buf, opset_version=17, dynamo=False, input_names=names, output_names=["bev"])
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert not {op for op in ops if "Scatter" in op or op == "NonZero"}, ops
    assert required_op in ops
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in zip(names, inputs)})[0]
    with torch.no_grad():
        ref = net(*inputs).numpy()
    assert got.shape == ref.shape == out_shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
