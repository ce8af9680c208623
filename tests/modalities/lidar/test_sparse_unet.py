"""SparseUNet (MinkUNet-34C on spconv): shape, alignment, batch independence, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from spconv.pytorch import ConvAlgo
from spconv.pytorch.conv import SparseConvolution

from modalities.lidar.sparse_unet import SparseUNet, spatial_shape_for

SMALL = dict(planes=(8, 8, 16, 16, 16, 16, 8, 8), layers=(1, 1, 1, 1, 1, 1, 1, 1))

# Regenerate: .venv/bin/python -c "from modalities.lidar.sparse_unet import SparseUNet;
#   print(sum(p.numel() for p in SparseUNet().parameters()))"
# Same weights as MinkowskiEngine's MinkUNet34C with a k=3 stem (27*Cin*Cout per 3x3x3 conv, k=2
# down/up convs, 1x1 shortcuts and head as Linear); a k=5 stem adds 98*32 = 3136.
# Not only a regression pin: the number also follows by hand from MinkUNet34C's layer list
# (an independent oracle): PLANES (32, 64, 128, 256, 256, 128, 96, 96), LAYERS (2, 3, 4, 6, 2,
# 2, 2, 2), INIT_DIM 32, 1 input channel; conv = k^3 * Cin * Cout (no bias), BN = 2 * C,
# BasicBlock = 2 x (3x3x3 conv + BN) plus (1x1 + BN) when Cin != Cout; decoder block inputs
# 256+128, 128+64, 96+32, 96+32; head 96 * 64 + 64. That sum is 37,849,184.
MINKUNET34C_PARAMS = 37_849_184


def random_voxels(n: int, extent: int, batch: int = 0, seed: int = 0) -> torch.Tensor:
    """(M, 4) int32 unique [batch, i, j, k] voxels, M <= n, in [0, extent)^3."""
    g = torch.Generator().manual_seed(seed)
    ijk = torch.unique(torch.randint(0, extent, (n, 3), generator=g), dim=0)
    return torch.cat([torch.full((len(ijk), 1), batch), ijk], dim=1).int()


def test_full_minkunet34c_shape_params_and_unit_norm():
    torch.manual_seed(0)
    model = SparseUNet().eval()
    assert sum(p.numel() for p in model.parameters()) == MINKUNET34C_PARAMS
    assert model.feature_dim == 96 and model.out_dim == 64
    coords = random_voxels(2100, 48)
    assert 1900 < len(coords) <= 2100
    feats = torch.rand(len(coords), 1)
    with torch.no_grad():
        backbone = model.backbone_features(feats, coords, batch_size=1)
        out = model.forward_head(backbone)
    assert backbone.shape == (len(coords), 96)
    assert out.shape == (len(coords), 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(coords)), rtol=0, atol=1e-5)
    assert all(m.algo == ConvAlgo.Native for m in model.modules() if isinstance(m, SparseConvolution))


def test_spatial_shape_rounds_up_to_16_and_rejects_negative():
    coords = torch.tensor([[0, 0, 15, 16], [1, 3, 0, 40]], dtype=torch.int32)
    assert spatial_shape_for(coords) == [16, 16, 48]
    with pytest.raises(ValueError, match="non-negative"):
        spatial_shape_for(torch.tensor([[0, -1, 0, 0]]))
    model = SparseUNet(**SMALL)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.rand(2, 1), coords, 2, spatial_shape=[16, 16, 40])


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = SparseUNet(**SMALL)
    coords = random_voxels(600, 20)
    out = model(torch.rand(len(coords), 1), coords, batch_size=1)
    (out[:, 0] * torch.randn(len(coords))).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_permuting_input_voxels_permutes_outputs():
    torch.manual_seed(0)
    model = SparseUNet(**SMALL).eval()
    coords = random_voxels(800, 24)
    feats = torch.rand(len(coords), 1)
    perm = torch.randperm(len(coords))
    with torch.no_grad():
        out = model(feats, coords, 1)
        out_perm = model(feats[perm], coords[perm], 1)
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-4, atol=1e-5)


def test_scans_in_a_batch_do_not_interact():
    torch.manual_seed(0)
    model = SparseUNet(**SMALL).eval()  # eval: BatchNorm uses running stats, not batch stats
    scan_a = random_voxels(500, 24, batch=0, seed=1)
    feats_a = torch.rand(len(scan_a), 1)
    outs = []
    for seed in (2, 3):
        scan_b = random_voxels(500 + 100 * seed, 24, batch=1, seed=seed)
        coords = torch.cat([scan_a, scan_b])
        feats = torch.cat([feats_a, torch.rand(len(scan_b), 1)])
        with torch.no_grad():
            outs.append(model(feats, coords, batch_size=2, spatial_shape=[32, 32, 32])[: len(scan_a)])
    with torch.no_grad():
        alone = model(feats_a, scan_a, batch_size=1, spatial_shape=[32, 32, 32])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0], alone, rtol=1e-4, atol=1e-5)


def test_loss_decreases_fitting_labels_from_coordinates():
    torch.manual_seed(0)
    model = SparseUNet(in_channels=3, out_dim=2, normalize=False, **SMALL)
    coords = random_voxels(1000, 20)
    ijk = coords[:, 1:].float()
    feats = ijk / 20.0 - 0.5
    labels = (ijk[:, 0] > ijk[:, 1]).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(feats, coords, 1), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_auto_algo_follows_input_device():
    model = SparseUNet(**SMALL).eval()
    model.set_algo(ConvAlgo.MaskImplicitGemm)
    model._algo_device_type = "cuda"  # as if it had last run on a GPU
    coords = random_voxels(100, 16)
    model(torch.rand(len(coords), 1), coords, 1)  # would fail on CPU with implicit GEMM
    assert all(m.algo == ConvAlgo.Native for m in model.modules() if isinstance(m, SparseConvolution))
    with pytest.raises(ValueError, match="algo"):
        SparseUNet(algo="winograd")


def test_rejects_mismatched_inputs():
    model = SparseUNet(**SMALL)
    with pytest.raises(ValueError, match="same M"):
        model(torch.rand(3, 1), torch.zeros(4, 4, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match="8 entries"):
        SparseUNet(planes=(8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_fp16_forward_backward_on_cuda():
    torch.manual_seed(0)
    model = SparseUNet().cuda()  # built for CPU, re-picks the implicit-GEMM algorithm on the first CUDA input
    coords = random_voxels(20000, 96).cuda()
    feats = torch.rand(len(coords), 1, device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(feats, coords, 1)
        loss = -(out[:-1] * out[1:]).sum(1).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert out.shape == (len(coords), 64) and torch.isfinite(out).all()
    torch.testing.assert_close(out.float().norm(dim=1), torch.ones(len(coords), device="cuda"), rtol=0, atol=1e-2)
    assert all(m.algo == ConvAlgo.MaskImplicitGemm for m in model.modules() if isinstance(m, SparseConvolution))


def test_spconv_is_imported_only_when_a_sparse_network_is_built():
    # Its import takes seconds (kernel tables); range-view and audio workers import this module without using it.
    import subprocess
    import sys

    code = ("import sys; import pipelines.slidr.train, modalities.lidar.students as s; "
            "assert 'spconv.pytorch' not in sys.modules, 'imported early'; "
            "s.build_lidar_student('sparse_unet', {'planes': [8] * 8, 'layers': [1] * 8}); "
            "assert 'spconv.pytorch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
