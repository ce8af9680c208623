import io

import numpy as np
import pytest
import torch
from torch import nn

from modalities.imu.students import (
    IMU_STUDENTS,
    ImuClassifier,
    ImuCNN,
    ImuTransformer,
    build_imu_student,
    count_macs,
    count_parameters,
)


def _windows(seed, batch=3, length=1000):
    return torch.randn(batch, 6, length, generator=torch.Generator().manual_seed(seed))


def _randomise_norm_stats(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so eval mode is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return model


def _conv_params(c_in, c_out, k):
    return c_in * c_out * k + 2 * c_out  # bias-free conv + BatchNorm weight and bias


def test_imu_cnn_parameter_count_and_macs_match_the_architecture():
    model = ImuCNN()
    widths, k = (32, 64, 128, 128), 5
    expected = _conv_params(6, 32, 7)
    c = 32
    for w in widths:
        expected += _conv_params(c, w, k)
        c = w
    assert count_parameters(model) == expected == 140_352
    # Time axis 1000 -> 500 -> 250 -> 125 -> 63 -> 32.
    macs = 500 * 32 * 6 * 7 + 250 * 32 * 32 * 5 + 125 * 64 * 32 * 5 + 63 * 128 * 64 * 5 + 32 * 128 * 128 * 5
    assert count_macs(model) == macs
    assert 100_000 <= count_parameters(model) <= 200_000
    assert model.feature_dim == 128


def test_imu_transformer_parameter_count_in_range():
    model = ImuTransformer()
    assert 80_000 <= count_parameters(model) <= 200_000
    assert model.pos.shape == (1, 40, 64)
    assert 1_000_000 <= count_macs(model) <= 20_000_000


@pytest.mark.parametrize("kind,kwargs,dim", [
    ("imu_cnn", {}, 128),
    ("imu_cnn", {"widths": (8, 16, 16, 24), "blocks": (2, 1, 1, 2)}, 24),
    ("imu_transformer", {}, 64),
    ("imu_transformer", {"dim": 32, "depth": 1, "heads": 2}, 32),
])
def test_output_shapes_and_inputs_change_embeddings(kind, kwargs, dim):
    torch.manual_seed(0)
    model = _randomise_norm_stats(build_imu_student(kind, kwargs)).eval()
    assert isinstance(model, IMU_STUDENTS[kind]) and model.feature_dim == dim
    x = _windows(1, batch=4)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, dim) and torch.isfinite(out).all()
    # No constant model: different windows give different embeddings, and each row depends on its own window only.
    assert (out[0] - out[1]).abs().max() > 1e-3
    with torch.no_grad():
        single = model(x[2:3])
        shifted = model(torch.roll(x[2:3], 37, dims=2))
    assert torch.allclose(single[0], out[2], atol=1e-5)
    assert (shifted - single).abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    for kind in IMU_STUDENTS:
        torch.manual_seed(1)
        model = ImuClassifier(build_imu_student(kind, {}), num_classes=5).train()
        logits = model(_windows(2, batch=4))
        assert logits.shape == (4, 5)
        nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert not missing, (kind, missing)


def test_classifier_layout_matches_the_sidecar_contract():
    model = ImuClassifier(ImuCNN(), num_classes=7)
    keys = model.state_dict().keys()
    assert {"classifier.weight", "classifier.bias"} <= set(keys)
    assert all(k.startswith(("student.", "classifier.")) for k in keys)
    assert model.classifier.weight.shape == (7, 128)
    rebuilt = ImuClassifier(build_imu_student("imu_cnn", {}), num_classes=7)
    rebuilt.load_state_dict(model.state_dict())  # strict


def test_cnn_runs_on_other_lengths_transformer_on_shorter_windows():
    cnn, transformer = ImuCNN().eval(), ImuTransformer().eval()
    with torch.no_grad():
        assert cnn(_windows(3, 2, 400)).shape == (2, 128)
        assert transformer(_windows(3, 2, 500)).shape == (2, 64)  # 20 tokens
        assert transformer(_windows(3, 2, 1010)[:, :, :1000]).shape == (2, 64)
    with pytest.raises(ValueError, match="window length"):
        transformer(_windows(3, 1, 1100))
    with pytest.raises(ValueError, match=r"\(B, 6, L\)"):
        cnn(torch.randn(2, 3, 1000))


def test_bad_constructor_arguments_and_unknown_kind():
    with pytest.raises(ValueError):
        ImuCNN(widths=(32, 64, 128))
    with pytest.raises(ValueError):
        ImuCNN(kernel=4)
    with pytest.raises(ValueError):
        ImuTransformer(dim=64, heads=5)
    with pytest.raises(ValueError, match="known"):
        build_imu_student("lstm", {})


@pytest.mark.parametrize("kind", sorted(IMU_STUDENTS))
def test_onnx_export_dynamic_batch_matches_torch(kind):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    model = _randomise_norm_stats(ImuClassifier(build_imu_student(kind, {}), num_classes=6), seed=3).eval()
    buf = io.BytesIO()
    # As deploy/export.py: the TorchScript exporter, opset 17; here with a dynamic batch axis.
    torch.onnx.export(model, (_windows(4, batch=2),), buf, opset_version=17, dynamo=False, input_names=["imu"],
                      output_names=["logits"], dynamic_axes={"imu": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = _windows(10 + batch, batch=batch)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"imu": x.numpy()})[0]
        assert got.shape == (batch, 6)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
