"""Which ONNX nodes TensorRT 10.3 (JetPack 6) can run: an explicit allow-list, checked at export.

Source: the ONNX-TensorRT operator support matrix for TensorRT 10.x
(``onnx/onnx-tensorrt`` ``docs/operators.md``, "TensorRT 10.0 supports operators in the
inclusive range of opset 9 to opset 20") and the TensorRT 10.3 release notes. The list
below holds the ops we know to parse AND build on 10.3; it is deliberately smaller than
the matrix: an op not listed is reported (a false alarm is cheap, a Jetson build failure
is not). Ops that parse but that DESIGN.md section 6 tells us to avoid are reported with
the reason:

- ``NonZero``: data-dependent output shape (no static engine, slow on DLA/GPU);
- ``ScatterND`` / ``ScatterElements``: undefined results with duplicate indices;
- ``GridSample`` on 5-D input: TensorRT's GridSample layer is 4-D only;
- ``STFT`` / ``DFT``: arrived in TensorRT 10.4, absent from JetPack 6's 10.3;
- ``Loop`` / ``If`` / ``Scan``: control flow, kept out of the deployed graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

TRT_VERSION_CHECKED = "10.3"

# Ops of the default ONNX domain that TensorRT 10.3 parses and builds (fp32/fp16/int8 QDQ).
TRT_10_3_ALLOWED_OPS: frozenset[str] = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "DepthToSpace",
    "DequantizeLinear", "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
    "GatherElements", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mish", "Mul", "Neg", "Not",
    "Or", "Pad", "Pow", "PRelu", "QuantizeLinear", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Resize", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose",
    "Unsqueeze", "Upsample", "Where", "Xor", "GridSample",
})

# Reasons given for ops we know to be a problem (reported even when the parser accepts them).
AVOID_REASONS: dict[str, str] = {
    "NonZero": "data-dependent output shape (DESIGN.md 6: avoid NonZero; keep gathers in pre/post-processing)",
    "ScatterND": "undefined result with duplicate indices (DESIGN.md 6); scatter in post-processing instead",
    "ScatterElements": "undefined result with duplicate indices; scatter in post-processing instead",
    "STFT": "STFT arrived in TensorRT 10.4; JetPack 6 ships 10.3 (keep the front-end outside the engine)",
    "DFT": "DFT arrived in TensorRT 10.4; JetPack 6 ships 10.3",
    "Loop": "control flow; keep the deployed graph straight-line",
    "If": "control flow; keep the deployed graph straight-line",
    "Scan": "control flow; keep the deployed graph straight-line",
}


@dataclass(frozen=True)
class OpIssue:
    node: str  # node name (or "#<index>" when unnamed)
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


def _input_rank(model: onnx.ModelProto, tensor: str) -> int | None:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def unsupported_nodes(model: onnx.ModelProto) -> list[OpIssue]:
    """Every node TensorRT 10.3 cannot run (or that we must not ship), in graph order.

    Checks the op type against :data:`TRT_10_3_ALLOWED_OPS` (default domain only; custom
    domains need plugins and are reported) and the rank of GridSample's input (4-D only).
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks are then unknown; GridSample is reported as unknown-rank
        inferred = model
    issues = []
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            issues.append(OpIssue(name, f"{node.domain}::{node.op_type}", "custom-domain op: needs a TensorRT plugin"))
        elif node.op_type in AVOID_REASONS:
            issues.append(OpIssue(name, node.op_type, AVOID_REASONS[node.op_type]))
        elif node.op_type not in TRT_10_3_ALLOWED_OPS:
            issues.append(OpIssue(name, node.op_type, f"not in the TensorRT {TRT_VERSION_CHECKED} allow-list"))
        elif node.op_type == "GridSample":
            rank = _input_rank(inferred, node.input[0])
            if rank != 4:
                issues.append(OpIssue(name, node.op_type, f"GridSample input rank {rank}: TensorRT supports 4-D only"))
    return issues
