"""Models (SPEC §3): output shapes and strides of every head and depth, the OS-8 backbone's
strides/dilations, the authors' R50 DeepLabV2+LoRM state-dict keys, pretrained loading from a local
file (torchvision layout), LoRM only in training, and the factory's errors."""
import pytest
import torch
import torchvision

from models import LAYERS, MODEL_TYPES, build_model, foreground_mask
from utils.checkpoint import strip_prefix as strip_module_prefix

# The authors' released R50 DeepLabV2 + LoRM checkpoint layout (SPEC §3): key, shape (- = scalar).
# Any rename or reshape of a module breaks loading their `last_checkpoint.pth` with strict=True.
R50_DEEPLABV2_LORM_KEYS = """
conv1.weight 64x3x7x7
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked -
layer1.0.conv1.weight 64x64x1x1
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked -
layer1.0.conv2.weight 64x64x3x3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked -
layer1.0.conv3.weight 256x64x1x1
layer1.0.bn3.weight 256
layer1.0.bn3.bias 256
layer1.0.bn3.running_mean 256
layer1.0.bn3.running_var 256
layer1.0.bn3.num_batches_tracked -
layer1.0.downsample.0.weight 256x64x1x1
layer1.0.downsample.1.weight 256
layer1.0.downsample.1.bias 256
layer1.0.downsample.1.running_mean 256
layer1.0.downsample.1.running_var 256
layer1.0.downsample.1.num_batches_tracked -
layer1.1.conv1.weight 64x256x1x1
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked -
layer1.1.conv2.weight 64x64x3x3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked -
layer1.1.conv3.weight 256x64x1x1
layer1.1.bn3.weight 256
layer1.1.bn3.bias 256
layer1.1.bn3.running_mean 256
layer1.1.bn3.running_var 256
layer1.1.bn3.num_batches_tracked -
layer1.2.conv1.weight 64x256x1x1
layer1.2.bn1.weight 64
layer1.2.bn1.bias 64
layer1.2.bn1.running_mean 64
layer1.2.bn1.running_var 64
layer1.2.bn1.num_batches_tracked -
layer1.2.conv2.weight 64x64x3x3
layer1.2.bn2.weight 64
layer1.2.bn2.bias 64
layer1.2.bn2.running_mean 64
layer1.2.bn2.running_var 64
layer1.2.bn2.num_batches_tracked -
layer1.2.conv3.weight 256x64x1x1
layer1.2.bn3.weight 256
layer1.2.bn3.bias 256
layer1.2.bn3.running_mean 256
layer1.2.bn3.running_var 256
layer1.2.bn3.num_batches_tracked -
layer2.0.conv1.weight 128x256x1x1
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.bn1.running_mean 128
layer2.0.bn1.running_var 128
layer2.0.bn1.num_batches_tracked -
layer2.0.conv2.weight 128x128x3x3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked -
layer2.0.conv3.weight 512x128x1x1
layer2.0.bn3.weight 512
layer2.0.bn3.bias 512
layer2.0.bn3.running_mean 512
layer2.0.bn3.running_var 512
layer2.0.bn3.num_batches_tracked -
layer2.0.downsample.0.weight 512x256x1x1
layer2.0.downsample.1.weight 512
layer2.0.downsample.1.bias 512
layer2.0.downsample.1.running_mean 512
layer2.0.downsample.1.running_var 512
layer2.0.downsample.1.num_batches_tracked -
layer2.1.conv1.weight 128x512x1x1
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked -
layer2.1.conv2.weight 128x128x3x3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked -
layer2.1.conv3.weight 512x128x1x1
layer2.1.bn3.weight 512
layer2.1.bn3.bias 512
layer2.1.bn3.running_mean 512
layer2.1.bn3.running_var 512
layer2.1.bn3.num_batches_tracked -
layer2.2.conv1.weight 128x512x1x1
layer2.2.bn1.weight 128
layer2.2.bn1.bias 128
layer2.2.bn1.running_mean 128
layer2.2.bn1.running_var 128
layer2.2.bn1.num_batches_tracked -
layer2.2.conv2.weight 128x128x3x3
layer2.2.bn2.weight 128
layer2.2.bn2.bias 128
layer2.2.bn2.running_mean 128
layer2.2.bn2.running_var 128
layer2.2.bn2.num_batches_tracked -
layer2.2.conv3.weight 512x128x1x1
layer2.2.bn3.weight 512
layer2.2.bn3.bias 512
layer2.2.bn3.running_mean 512
layer2.2.bn3.running_var 512
layer2.2.bn3.num_batches_tracked -
layer2.3.conv1.weight 128x512x1x1
layer2.3.bn1.weight 128
layer2.3.bn1.bias 128
layer2.3.bn1.running_mean 128
layer2.3.bn1.running_var 128
layer2.3.bn1.num_batches_tracked -
layer2.3.conv2.weight 128x128x3x3
layer2.3.bn2.weight 128
layer2.3.bn2.bias 128
layer2.3.bn2.running_mean 128
layer2.3.bn2.running_var 128
layer2.3.bn2.num_batches_tracked -
layer2.3.conv3.weight 512x128x1x1
layer2.3.bn3.weight 512
layer2.3.bn3.bias 512
layer2.3.bn3.running_mean 512
layer2.3.bn3.running_var 512
layer2.3.bn3.num_batches_tracked -
layer3.0.conv1.weight 256x512x1x1
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.bn1.running_mean 256
layer3.0.bn1.running_var 256
layer3.0.bn1.num_batches_tracked -
layer3.0.conv2.weight 256x256x3x3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked -
layer3.0.conv3.weight 1024x256x1x1
layer3.0.bn3.weight 1024
layer3.0.bn3.bias 1024
layer3.0.bn3.running_mean 1024
layer3.0.bn3.running_var 1024
layer3.0.bn3.num_batches_tracked -
layer3.0.downsample.0.weight 1024x512x1x1
layer3.0.downsample.1.weight 1024
layer3.0.downsample.1.bias 1024
layer3.0.downsample.1.running_mean 1024
layer3.0.downsample.1.running_var 1024
layer3.0.downsample.1.num_batches_tracked -
layer3.1.conv1.weight 256x1024x1x1
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked -
layer3.1.conv2.weight 256x256x3x3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked -
layer3.1.conv3.weight 1024x256x1x1
layer3.1.bn3.weight 1024
layer3.1.bn3.bias 1024
layer3.1.bn3.running_mean 1024
layer3.1.bn3.running_var 1024
layer3.1.bn3.num_batches_tracked -
layer3.2.conv1.weight 256x1024x1x1
layer3.2.bn1.weight 256
layer3.2.bn1.bias 256
layer3.2.bn1.running_mean 256
layer3.2.bn1.running_var 256
layer3.2.bn1.num_batches_tracked -
layer3.2.conv2.weight 256x256x3x3
layer3.2.bn2.weight 256
layer3.2.bn2.bias 256
layer3.2.bn2.running_mean 256
layer3.2.bn2.running_var 256
layer3.2.bn2.num_batches_tracked -
layer3.2.conv3.weight 1024x256x1x1
layer3.2.bn3.weight 1024
layer3.2.bn3.bias 1024
layer3.2.bn3.running_mean 1024
layer3.2.bn3.running_var 1024
layer3.2.bn3.num_batches_tracked -
layer3.3.conv1.weight 256x1024x1x1
layer3.3.bn1.weight 256
layer3.3.bn1.bias 256
layer3.3.bn1.running_mean 256
layer3.3.bn1.running_var 256
layer3.3.bn1.num_batches_tracked -
layer3.3.conv2.weight 256x256x3x3
layer3.3.bn2.weight 256
layer3.3.bn2.bias 256
layer3.3.bn2.running_mean 256
layer3.3.bn2.running_var 256
layer3.3.bn2.num_batches_tracked -
layer3.3.conv3.weight 1024x256x1x1
layer3.3.bn3.weight 1024
layer3.3.bn3.bias 1024
layer3.3.bn3.running_mean 1024
layer3.3.bn3.running_var 1024
layer3.3.bn3.num_batches_tracked -
layer3.4.conv1.weight 256x1024x1x1
layer3.4.bn1.weight 256
layer3.4.bn1.bias 256
layer3.4.bn1.running_mean 256
layer3.4.bn1.running_var 256
layer3.4.bn1.num_batches_tracked -
layer3.4.conv2.weight 256x256x3x3
layer3.4.bn2.weight 256
layer3.4.bn2.bias 256
layer3.4.bn2.running_mean 256
layer3.4.bn2.running_var 256
layer3.4.bn2.num_batches_tracked -
layer3.4.conv3.weight 1024x256x1x1
layer3.4.bn3.weight 1024
layer3.4.bn3.bias 1024
layer3.4.bn3.running_mean 1024
layer3.4.bn3.running_var 1024
layer3.4.bn3.num_batches_tracked -
layer3.5.conv1.weight 256x1024x1x1
layer3.5.bn1.weight 256
layer3.5.bn1.bias 256
layer3.5.bn1.running_mean 256
layer3.5.bn1.running_var 256
layer3.5.bn1.num_batches_tracked -
layer3.5.conv2.weight 256x256x3x3
layer3.5.bn2.weight 256
layer3.5.bn2.bias 256
layer3.5.bn2.running_mean 256
layer3.5.bn2.running_var 256
layer3.5.bn2.num_batches_tracked -
layer3.5.conv3.weight 1024x256x1x1
layer3.5.bn3.weight 1024
layer3.5.bn3.bias 1024
layer3.5.bn3.running_mean 1024
layer3.5.bn3.running_var 1024
layer3.5.bn3.num_batches_tracked -
layer4.0.conv1.weight 512x1024x1x1
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.bn1.running_mean 512
layer4.0.bn1.running_var 512
layer4.0.bn1.num_batches_tracked -
layer4.0.conv2.weight 512x512x3x3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked -
layer4.0.conv3.weight 2048x512x1x1
layer4.0.bn3.weight 2048
layer4.0.bn3.bias 2048
layer4.0.bn3.running_mean 2048
layer4.0.bn3.running_var 2048
layer4.0.bn3.num_batches_tracked -
layer4.0.downsample.0.weight 2048x1024x1x1
layer4.0.downsample.1.weight 2048
layer4.0.downsample.1.bias 2048
layer4.0.downsample.1.running_mean 2048
layer4.0.downsample.1.running_var 2048
layer4.0.downsample.1.num_batches_tracked -
layer4.1.conv1.weight 512x2048x1x1
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked -
layer4.1.conv2.weight 512x512x3x3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked -
layer4.1.conv3.weight 2048x512x1x1
layer4.1.bn3.weight 2048
layer4.1.bn3.bias 2048
layer4.1.bn3.running_mean 2048
layer4.1.bn3.running_var 2048
layer4.1.bn3.num_batches_tracked -
layer4.2.conv1.weight 512x2048x1x1
layer4.2.bn1.weight 512
layer4.2.bn1.bias 512
layer4.2.bn1.running_mean 512
layer4.2.bn1.running_var 512
layer4.2.bn1.num_batches_tracked -
layer4.2.conv2.weight 512x512x3x3
layer4.2.bn2.weight 512
layer4.2.bn2.bias 512
layer4.2.bn2.running_mean 512
layer4.2.bn2.running_var 512
layer4.2.bn2.num_batches_tracked -
layer4.2.conv3.weight 2048x512x1x1
layer4.2.bn3.weight 2048
layer4.2.bn3.bias 2048
layer4.2.bn3.running_mean 2048
layer4.2.bn3.running_var 2048
layer4.2.bn3.num_batches_tracked -
layer_pred0.aspp1.atrous_conv.weight 21x2048x1x1
layer_pred0.aspp1.bn.weight 21
layer_pred0.aspp1.bn.bias 21
layer_pred0.aspp1.bn.running_mean 21
layer_pred0.aspp1.bn.running_var 21
layer_pred0.aspp1.bn.num_batches_tracked -
layer_pred0.aspp2.atrous_conv.weight 21x2048x3x3
layer_pred0.aspp2.bn.weight 21
layer_pred0.aspp2.bn.bias 21
layer_pred0.aspp2.bn.running_mean 21
layer_pred0.aspp2.bn.running_var 21
layer_pred0.aspp2.bn.num_batches_tracked -
layer_pred0.aspp3.atrous_conv.weight 21x2048x3x3
layer_pred0.aspp3.bn.weight 21
layer_pred0.aspp3.bn.bias 21
layer_pred0.aspp3.bn.running_mean 21
layer_pred0.aspp3.bn.running_var 21
layer_pred0.aspp3.bn.num_batches_tracked -
layer_pred0.aspp4.atrous_conv.weight 21x2048x3x3
layer_pred0.aspp4.bn.weight 21
layer_pred0.aspp4.bn.bias 21
layer_pred0.aspp4.bn.running_mean 21
layer_pred0.aspp4.bn.running_var 21
layer_pred0.aspp4.bn.num_batches_tracked -
layer_pred0.global_avg_pool.1.weight 21x2048x1x1
layer_pred0.global_avg_pool.2.weight 21
layer_pred0.global_avg_pool.2.bias 21
layer_pred0.global_avg_pool.2.running_mean 21
layer_pred0.global_avg_pool.2.running_var 21
layer_pred0.global_avg_pool.2.num_batches_tracked -
layer_pred0.conv1.weight 21x105x1x1
layer_pred0.bn1.weight 21
layer_pred0.bn1.bias 21
layer_pred0.bn1.running_mean 21
layer_pred0.bn1.running_var 21
layer_pred0.bn1.num_batches_tracked -
layer_camatt.gamma 1
layer_camatt.query_conv.weight 2048x2048x1x1
layer_camatt.query_conv.bias 2048
layer_camatt.key_conv.weight 2048x2048x1x1
layer_camatt.key_conv.bias 2048
"""


def _shape(s):
    return () if s == "-" else tuple(int(d) for d in s.split("x"))


EXPECTED_R50 = dict((k, _shape(s)) for k, s in
                    (line.split() for line in R50_DEEPLABV2_LORM_KEYS.strip().splitlines()))


def _feature_side(n, stride):
    """DeepLab convention: a side of stride*k + 1 pixels gives k + 1 outputs (465 -> 59 at 8)."""
    return (n - 1) // stride + 1


@pytest.fixture(scope="module")
def r50_v2():
    torch.manual_seed(0)
    return build_model("deeplabv2", 50, num_classes=21, lorm=True)


def test_r50_deeplabv2_lorm_state_dict_is_the_authors(r50_v2):
    got = {k: tuple(v.shape) for k, v in r50_v2.state_dict().items()}
    assert len(EXPECTED_R50) == 359
    assert sorted(set(got) - set(EXPECTED_R50)) == []
    assert sorted(set(EXPECTED_R50) - set(got)) == []
    assert {k: s for k, s in got.items() if s != EXPECTED_R50[k]} == {}
    # and the backbone part is exactly torchvision's resnet50 without fc
    tv = {k: tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()
          if not k.startswith("fc.")}
    assert {k: s for k, s in got.items() if k.split(".")[0] in
            ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")} == tv


def test_ddp_checkpoint_loads_strict_after_stripping_module_prefix(tmp_path):
    torch.manual_seed(1)
    src = build_model("deeplabv2", 18, lorm=True)
    path = tmp_path / "last_checkpoint.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    dst = build_model("deeplabv2", 18, lorm=True)
    state = strip_module_prefix(torch.load(path)["state_dict"])
    dst.load_state_dict(state, strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert list(strip_module_prefix({"a.b": torch.zeros(1), "module.c": torch.zeros(1)})) == \
        ["a.b", "c"]


def test_backbone_strides_and_dilations_r50(r50_v2):
    m = r50_v2
    assert m.maxpool.ceil_mode and m.conv1.stride == (2, 2) and m.maxpool.stride == 2
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(m, name)
        for i, blk in enumerate(layer):
            # Caffe-style: a bottleneck's stride is on its first 1x1 conv, never on the 3x3
            want_stride = 2 if (name == "layer2" and i == 0) else 1
            assert blk.conv1.stride == (want_stride,) * 2, (name, i)
            assert blk.conv2.stride == (1, 1) and blk.conv3.stride == (1, 1)
            d = (4, 8, 16)[i] if name == "layer4" else {"layer1": 1, "layer2": 1, "layer3": 2}[name]
            assert blk.conv2.dilation == (d, d) and blk.conv2.padding == (d, d), (name, i)
        assert layer[0].downsample[0].stride == ((2, 2) if name == "layer2" else (1, 1))
    assert len(m.layer4) == 3 and m.channels == 2048 and m.low_level_channels == 256


def test_backbone_strides_and_dilations_r18():
    m = build_model("deeplabv2", 18, lorm=False)
    assert m.maxpool.ceil_mode
    assert [blk.conv1.stride[0] for blk in m.layer2] == [2, 1]
    assert [blk.conv1.stride[0] for layer in (m.layer3, m.layer4) for blk in layer] == [1] * 4
    # both 3x3 convs of a basic block carry the block's dilation; layer4 has two blocks: 4, 8
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in m.layer3] == [(2, 2), (2, 2)]
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in m.layer4] == [(4, 4), (8, 8)]
    assert [b.conv2.padding[0] for b in m.layer4] == [4, 8]
    assert m.channels == 512 and m.low_level_channels == 64


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("layers", [18, 34])
def test_output_shapes_train_and_eval(model_type, layers):
    torch.manual_seed(0)
    model = build_model(model_type, layers, num_classes=5, lorm=True)
    stride = {"deeplabv2": 8, "deeplabv3p": 4}[model_type]
    assert model.output_stride == stride
    H, W = 65, 49
    image = torch.randn(2, 3, H, W)
    fh, fw = _feature_side(H, 8), _feature_side(W, 8)
    fg = torch.zeros(2, fh, fw, dtype=torch.bool)
    fg[0, :4] = True
    model.train()
    out = model(image, fg)
    assert set(out) == {"out", "feat", "feat_rect"}
    assert out["out"].shape == (2, 5, _feature_side(H, stride), _feature_side(W, stride))
    assert out["feat"].shape == out["feat_rect"].shape == (2, model.channels, fh, fw)
    assert out["feat_rect"][1].abs().sum() == 0 and out["feat_rect"][0, :, :4].abs().sum() > 0
    out["out"].sum().backward()  # the head is differentiable end to end
    assert model.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(image)  # inference: no mask, LoRM skipped
    assert set(out) == {"out"}
    assert out["out"].shape == (2, 5, _feature_side(H, stride), _feature_side(W, stride))


@pytest.mark.parametrize("model_type,layers", [("deeplabv3p", 50), ("deeplabv2", 101)])
def test_output_shapes_deep_backbones(model_type, layers):
    model = build_model(model_type, layers, lorm=True).eval()
    with torch.no_grad():
        low, feat = model.features(torch.randn(1, 3, 33, 33))
        out = model(torch.randn(1, 3, 33, 33))
    assert low.shape == (1, 256, 9, 9) and feat.shape == (1, 2048, 5, 5)
    assert out["out"].shape == (1, 21, 33 // model.output_stride + 1, 33 // model.output_stride + 1)


def test_fg_mask_at_image_size_equals_mask_at_feature_size():
    torch.manual_seed(0)
    model = build_model("deeplabv2", 18, lorm=True).eval()
    image = torch.randn(2, 3, 65, 65)
    pseudo = torch.randint(0, 21, (2, 65, 65))
    pseudo[:, :20] = 255
    with torch.no_grad():
        a = model(image, foreground_mask(pseudo, (9, 9)))
        b = model(image, foreground_mask(pseudo, (65, 65)))
    assert torch.equal(a["feat_rect"], b["feat_rect"])


def test_no_lorm_when_disabled():
    model = build_model("deeplabv3p", 18, lorm=False)
    assert not any(k.startswith("layer_camatt") for k in model.state_dict())
    assert model.training_inputs == ()
    out = model(torch.randn(2, 3, 33, 33), torch.ones(2, 5, 5, dtype=torch.bool))
    assert set(out) == {"out"}


def test_model_owns_lorm_from_pseudo_label_to_inference():
    torch.manual_seed(0)
    model = build_model("deeplabv2", 18, lorm=True).eval()
    assert model.training_inputs == ("pseudo",)
    image = torch.randn(2, 3, 65, 65)
    pseudo = torch.randint(0, 21, (2, 65, 65))
    pseudo[:, :20] = 255
    with torch.no_grad():
        from_label = model(image, pseudo)
        from_mask = model(image, foreground_mask(pseudo, (9, 9)))
        plain = model(image)["out"]
        model.drop_lorm()
        dropped = model(image, pseudo)
    assert torch.equal(from_label["feat_rect"], from_mask["feat_rect"])
    assert torch.equal(from_label["out"], plain) and torch.equal(dropped["out"], plain)
    assert set(dropped) == {"out"} and model.training_inputs == ()
    assert not any(k.startswith("layer_camatt") for k in model.state_dict())


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="deeplabv2, deeplabv3p.*'deeplabv3'"):
        build_model("deeplabv3", 18)
    with pytest.raises(ValueError, match="18, 34, 50, 101.*152"):
        build_model("deeplabv2", 152)
    with pytest.raises(ValueError, match="18, 34, 50, 101"):
        build_model("deeplabv2", "50")
    assert LAYERS == (18, 34, 50, 101)


# ---------------------------------------------------------------- pretrained backbone loading
def _backbone_equal(model, tv_state):
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in tv_state.items() if not k.startswith("fc."))


@pytest.mark.parametrize("wrap", [False, True])
def test_pretrained_from_local_torchvision_file(tmp_path, wrap):
    torch.manual_seed(3)
    tv = torchvision.models.resnet18()
    for m in tv.modules():  # non-trivial BN statistics, so buffers are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    state = tv.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state} if wrap else state, path)
    torch.manual_seed(4)
    model = build_model("deeplabv2", 18, pretrained=str(path))
    assert _backbone_equal(model, state)
    assert not _backbone_equal(build_model("deeplabv2", 18, pretrained="none"), state)


def test_pretrained_wrong_depth_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError) as e:
        build_model("deeplabv2", 18, pretrained=path)
    msg = str(e.value)
    assert str(path) in msg and "ResNet-18" in msg and "looks like ResNet-34" in msg
    assert "unexpected keys" in msg and "layer1.2.conv1.weight" in msg


def test_pretrained_missing_keys_shape_mismatch_and_foreign_files(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError,
                       match=r"resnet18\.pth.*ResNet-34.*looks like ResNet-18.*missing"):
        build_model("deeplabv2", 34, pretrained=path)
    state["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches: conv1\.weight \(file \(64, 4, 7, 7\), "
                                         r"model \(64, 3, 7, 7\)\)"):
        build_model("deeplabv2", 18, pretrained=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth.*cannot read"):
        build_model("deeplabv2", 18, pretrained=junk)
    with pytest.raises(FileNotFoundError, match="nowhere.pth.*not found"):
        build_model("deeplabv2", 18, pretrained=tmp_path / "nowhere.pth")


def test_pretrained_imagenet_asks_torchvision_for_imagenet1k_v1(monkeypatch):
    state = torchvision.models.resnet18().state_dict()
    asked = []

    def fake_get_state_dict(self, *args, **kwargs):  # no network in tests
        asked.append(self)
        return state

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict",
                        fake_get_state_dict)
    model = build_model("deeplabv3p", 18, pretrained="imagenet")
    assert asked == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    assert _backbone_equal(model, state)
