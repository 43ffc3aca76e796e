"""Sliding-window, multi-scale inference (SPEC §7) with a tiny stride-8 stand-in network; labels
in bounded memory (multi_scale_label) equal the full-size procedure's; BatchNorm folding
(prepare_for_inference) folds the conv -> BN pairs modules declare, no others."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils.inference as inference
from utils.inference import (mean_label, multi_scale_label, multi_scale_predict, predict_scale, prepare_for_inference,
                             scaled_size, sliding_window_windows, upsample_logits)

CROP, STRIDE = 32, math.ceil(32 * 2 / 3)  # 22


class TinyNet(nn.Module):
    """Stride-8 'segmenter': average pool then a 3x3 conv (zero padding makes it position-aware)."""

    def __init__(self, num_classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.pool = nn.AvgPool2d(8, 8, ceil_mode=True)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return {"out": self.conv(self.pool(x)) * 4}


def _net():
    return TinyNet().eval()


def _image(h, w, seed=1):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n, starts", [
    (20, [0]),             # smaller than the crop: one window, the image is padded
    (32, [0]),             # exactly the crop
    (54, [0, 22]),         # crop + stride: exact multiple
    (76, [0, 22, 44]),     # crop + 2 strides
    (60, [0, 22, 28]),     # last window pulled back to the border
])
def test_window_starts_per_axis(n, starts):
    wins = sliding_window_windows(n, 20, CROP, STRIDE)  # the short axis gets one window
    assert wins == [(y, 0) for y in starts]
    assert sliding_window_windows(20, n, CROP, STRIDE) == [(0, x) for x in starts]


@pytest.mark.parametrize("h, w", [(20, 25), (32, 32), (54, 76), (60, 33), (97, 41)])
def test_windows_cover_every_pixel(h, w):
    hp, wp = max(h, CROP), max(w, CROP)  # what predict_scale pads to
    wins = sliding_window_windows(hp, wp, CROP, STRIDE)
    count = torch.zeros(hp, wp)
    for y, x in wins:
        assert 0 <= y <= hp - CROP and 0 <= x <= wp - CROP
        count[y:y + CROP, x:x + CROP] += 1
    assert count.min() >= 1
    ny = math.ceil((hp - CROP) / STRIDE) + 1
    nx = math.ceil((wp - CROP) / STRIDE) + 1
    assert len(wins) == len(set(wins)) == ny * nx


def test_window_counts_by_hand():
    # 60 px, crop 32, stride 22: windows at 0, 22 and 28 (pulled back to the border)
    count = torch.zeros(60)
    for y, _ in sliding_window_windows(60, 32, CROP, STRIDE):
        count[y:y + CROP] += 1
    want = torch.tensor([1] * 22 + [2] * 6 + [3] * 4 + [2] * 22 + [1] * 6, dtype=torch.float)
    assert torch.equal(count, want)


def _reference_predict(model, image, crop=CROP, stride_rate=2 / 3):
    """The authors' scale_process, one window at a time (pad centred, flush last window)."""
    _, _, h, w = image.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    img = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    nh, nw = img.shape[-2:]
    stride = math.ceil(crop * stride_rate)
    pred, cnt = None, torch.zeros(nh, nw)
    for ih in range(math.ceil((nh - crop) / stride) + 1 if nh > crop else 1):
        for iw in range(math.ceil((nw - crop) / stride) + 1 if nw > crop else 1):
            eh, ew = min(ih * stride + crop, nh), min(iw * stride + crop, nw)
            sh, sw = eh - crop, ew - crop
            with torch.no_grad():
                out = model(img[..., sh:eh, sw:ew])["out"]
            p = F.interpolate(out, (crop, crop), mode="bilinear", align_corners=True).softmax(1)[0]
            pred = torch.zeros(p.shape[0], nh, nw) if pred is None else pred
            pred[:, sh:eh, sw:ew] += p
            cnt[sh:eh, sw:ew] += 1
    pred /= cnt
    return pred[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w][None]


@pytest.mark.parametrize("h, w", [(20, 25), (54, 76), (60, 33)])
def test_predict_scale_matches_one_window_at_a_time_reference(h, w):
    model, img = _net(), _image(h, w)
    got = predict_scale(model, img, crop=CROP)
    assert got.shape == (1, 5, h, w)
    torch.testing.assert_close(got, _reference_predict(model, img), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(1), torch.ones(1, h, w))


def test_batched_and_single_window_inference_agree():
    model, img = _net(), _image(60, 119)  # 3 x 5 = 15 windows
    one = predict_scale(model, img, crop=CROP, crop_batch=1)
    assert model.batch_sizes == [1] * 15
    model.batch_sizes.clear()
    four = predict_scale(model, img, crop=CROP, crop_batch=4)
    assert model.batch_sizes == [4, 4, 4, 3]
    torch.testing.assert_close(four, one, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(predict_scale(model, img, crop=CROP, crop_batch=64), one,
                               atol=1e-6, rtol=1e-5)


def test_multi_scale_shape_and_normalisation():
    img = _image(37, 50)
    probs = multi_scale_predict(_net(), img, scales=(0.5, 1.0, 1.5), base_size=48, crop=CROP)
    assert probs.shape == (1, 5, 37, 50)
    assert probs.min() >= 0
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 37, 50))


def test_single_scale_at_native_size_is_predict_scale():
    model, img = _net(), _image(37, 50)
    got = multi_scale_predict(model, img, scales=(1.0,), base_size=50, crop=CROP)
    torch.testing.assert_close(got, predict_scale(model, img, crop=CROP))


def test_multi_scale_averages_scales_and_flips():
    model, img = _net(), _image(30, 44)
    got = multi_scale_predict(model, img, scales=(1.0, 2.0), base_size=44, crop=CROP, flip=True)
    parts = []
    for size in ((30, 44), (60, 88)):
        x = F.interpolate(img, size, mode="bilinear", align_corners=False) if size != (30, 44) else img
        for f in (False, True):
            p = predict_scale(model, x.flip(-1) if f else x, crop=CROP)
            p = p.flip(-1) if f else p
            parts.append(F.interpolate(p, (30, 44), mode="bilinear", align_corners=False))
    torch.testing.assert_close(got, sum(parts) / 4)


def test_scaled_size_keeps_aspect_and_rounds_half_up():
    assert scaled_size(375, 500, 256) == (192, 256)
    assert scaled_size(500, 333, 384) == (384, 256)   # 255.74 -> 256
    assert scaled_size(1, 2, 5) == (3, 5)             # 2.5 -> 3 (Python's round would give 2)
    assert scaled_size(40, 40, 20) == (20, 20)


def test_amp_runs_and_stays_close():
    model, img = _net(), _image(40, 40)
    full = predict_scale(model, img, crop=CROP)
    half = predict_scale(model, img, crop=CROP, amp=True)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=3e-2, rtol=0)


def test_upsample_logits_uses_align_corners_true():
    x = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(upsample_logits(x, (9, 13)),
                               F.interpolate(x, (9, 13), mode="bilinear", align_corners=True))
    assert upsample_logits(x, (3, 4)) is x


def test_bad_input_is_refused():
    model = TinyNet()  # still in training mode
    with pytest.raises(ValueError, match="eval"):
        predict_scale(model, _image(10, 10), crop=CROP)
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        multi_scale_predict(_net(), torch.randn(2, 3, 10, 10), crop=CROP)


# ----------------------------------------------------------------------------- labels in bounded memory
def _procedure_before_bounded_labels(model, image, scales, base_size, crop, flip=False):
    """multi_scale_predict(...).argmax as it was written before multi_scale_label existed (a copy:
    the reference the labels must equal)."""
    h, w = image.shape[-2:]
    total, n = None, 0
    for s in scales:
        size = scaled_size(h, w, int(base_size * s + 0.5))
        scaled = F.interpolate(image, size, mode="bilinear", align_corners=False) if size != (h, w) else image
        for mirrored in ((False, True) if flip else (False,)):
            p = predict_scale(model, scaled.flip(-1) if mirrored else scaled, crop=crop)
            p = p.flip(-1) if mirrored else p
            if tuple(p.shape[-2:]) != (h, w):
                p = F.interpolate(p, (h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            n += 1
    return (total / n).argmax(1)[0]


# (classes, maps' sizes, output size): up and down in both dimensions, one dimension kept, odd
# ratios, VOC's (a 512 long side from 500x375 and back), one-pixel maps, 3 classes (torch's
# kernel rounds 3-channel maps differently from 1-channel ones)
RESIZES = [(4, [(37, 50), (19, 25)], (75, 100)), (21, [(384, 512), (192, 256)], (375, 500)),
           (5, [(64, 80), (32, 40), (96, 120)], (64, 80)), (4, [(30, 44)], (30, 97)), (4, [(30, 44)], (71, 44)),
           (6, [(9, 7), (13, 11)], (50, 41)), (4, [(1, 1), (3, 2)], (17, 9)), (4, [(120, 90)], (33, 29)),
           (3, [(37, 50), (19, 25)], (75, 100))]


def _works(size):
    """Bounds (bytes) for one band, bands of a few rows, and (small outputs) one row at a time."""
    return (1 << 30, 5000, 1) if size[0] * size[1] < 20_000 else (1 << 30, 10_000_000)


def _maps(classes, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = []
    for h, w in sizes:  # views with their padding cut off, as predict_scale returns them
        padded = torch.softmax(torch.randn(1, classes, h + 6, w + 5, generator=g) * 3, 1)
        maps.append(padded[..., 2:2 + h, 3:3 + w])
    return maps


@pytest.mark.parametrize("classes, sizes, size", RESIZES)
def test_bands_average_the_resized_maps_as_the_full_size_sum(classes, sizes, size):
    maps = _maps(classes, sizes)
    want = inference._mean_resized(maps, size)
    for work in _works(size):
        bands = list(inference._band_means(maps, *size, work))
        assert [r for _, r, _ in bands][-1] == size[0] and all(b[1] == n[0] for b, n in zip(bands, bands[1:]))
        got = torch.cat([m for _, _, m in bands], dim=2)
        torch.testing.assert_close(got, want, atol=2e-7, rtol=0)  # the last bit at most


@pytest.mark.parametrize("classes, sizes, size", RESIZES)
def test_labels_in_bands_are_the_full_size_labels(classes, sizes, size):
    maps = _maps(classes, sizes, seed=1)
    for p in maps:
        p[:, 2] = p[:, 1]  # exact ties: both ways pick the lower class
    want = inference._mean_resized(maps, size).argmax(1)[0]
    assert (want == 1).any() and not (want == 2).any()
    for work in _works(size):  # direct, bands
        got = mean_label(iter(maps), size, work)
        assert got.dtype == torch.uint8
        assert torch.equal(got.long(), want), work


@pytest.mark.parametrize("h, w, scales, base, flip", [(37, 50, (0.5, 1.0, 1.5), 48, False),
                                                        (64, 80, (0.5, 1.0), 80, True),
                                                        (45, 31, (0.75, 1.25, 2.0), 40, True)])
def test_multi_scale_label_is_the_procedure_before_it(h, w, scales, base, flip):
    model, img = _net(), _image(h, w)
    want = _procedure_before_bounded_labels(model, img, scales, base, CROP, flip)
    assert torch.equal(multi_scale_predict(model, img, scales, base, CROP, flip=flip).argmax(1)[0], want)
    for work in (inference.LABEL_WORK_BYTES, 2000, 1):  # direct (the default), bands
        got = multi_scale_label(model, img, scales, base, CROP, flip=flip, work_bytes=work)
        assert torch.equal(got.long(), want), work


def test_bands_never_hold_a_full_size_map(monkeypatch):
    """Beyond the network's scaled images, every resized array and every band of the average
    stays within the bound: no C x H x W array (5 x 300 x 400 floats: 2.4 MB) of the image."""
    made = []
    resize, bands = inference._resize, inference._band_means

    def recording_resize(x, size):
        out = resize(x, size)
        made.append(("resize", tuple(x.shape), out.numel() * out.element_size()))
        return out

    def recording_bands(*a):
        for r0, r1, mean in bands(*a):
            made.append(("band", (r0, r1), mean.numel() * mean.element_size()))
            yield r0, r1, mean
    monkeypatch.setattr(inference, "_resize", recording_resize)
    monkeypatch.setattr(inference, "_band_means", recording_bands)
    work = 100_000  # bytes
    label = multi_scale_label(_net(), _image(300, 400), scales=(0.1, 0.15), base_size=400, crop=CROP,
                              work_bytes=work)
    assert label.shape == (300, 400)
    images = [m for m in made if m[0] == "resize" and m[1][1] == 3]  # the image to 30x40 and 45x60
    assert [m[2] for m in images] == [3 * 30 * 40 * 4, 3 * 45 * 60 * 4]
    rest = [m for m in made if m not in images]
    assert sum(m[0] == "band" for m in rest) > 10  # many bands
    assert max(m[2] for m in rest) <= work / 4  # a band holds a few such arrays


# ----------------------------------------------------------------------------- BatchNorm folding
def _randomise_bn(model):
    """BN statistics and affine parameters away from the identity, so folding them matters."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5),
                                  (m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


class NotSequential(nn.Module):
    """conv1/bn1, atrous_conv/bn and a Sequential(conv, BN) with the names the backbone and the
    heads use, none of them a conv feeding its BN: bn1 and bn normalise the input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.atrous_conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.seq = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        return {"out": self.conv1(x) + self.bn1(x) + self.atrous_conv(self.bn(x)) + self.seq(x)}


class Declared(nn.Module):
    """A module that declares its one real conv -> BN pair and holds an undeclared one."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv, self.norm = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.other = NotSequential()

    def conv_bn_pairs(self):
        yield "conv", "norm"

    def forward(self, x):
        return {"out": self.other(self.norm(self.conv(x)))["out"]}


def test_folding_leaves_undeclared_pairs_alone_whatever_their_names():
    model = _randomise_bn(NotSequential())
    x = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x)["out"]
        got = prepare_for_inference(model)(x)["out"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3  # nothing folded
    torch.testing.assert_close(got, want)


def test_folding_folds_exactly_the_declared_pairs_and_is_idempotent():
    model = _randomise_bn(Declared())
    x = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x)["out"]
        prepare_for_inference(model)
        assert isinstance(model.norm, nn.Identity) and model.conv.bias is not None
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3  # `other`'s stay
        torch.testing.assert_close(model(x)["out"], want, rtol=1e-5, atol=1e-5)
        prepare_for_inference(model)  # a second call finds the pair folded and leaves it
        torch.testing.assert_close(model(x)["out"], want, rtol=1e-5, atol=1e-5)


def test_a_wrong_declaration_is_an_error():
    class Wrong(Declared):
        def conv_bn_pairs(self):
            yield "conv", "other"  # not a BatchNorm

    with pytest.raises(TypeError, match=r"\(conv, other\).*not a Conv2d and a BatchNorm"):
        prepare_for_inference(Wrong())


def test_bottleneck_backbone_folds_every_bn():
    from models.resnet import DilatedResNet

    net = _randomise_bn(DilatedResNet(50))
    x = _image(40, 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions on a busy machine
    try:
        with torch.no_grad():
            want = net(x)
            prepare_for_inference(net)
            got = net(x)
    finally:
        torch.set_num_threads(threads)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
