"""The joint transform (SPEC §6): alignment through every op, padding per field, blur on the
image only, output types, seeding, the validation centre crop."""
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, TrainTransform, ValTransform,
                                 denormalize)

FIELDS = ("image", "scribble", "pseudo", "dist_s", "dist_c", "mask")
LABELS, MAPS = ("scribble", "pseudo", "mask"), ("dist_s", "dist_c")
# Values inside / outside the pattern, per field; none is a pad value of its field.
INSIDE = {"image": 230, "scribble": 7, "pseudo": 3, "mask": 12, "dist_s": 180, "dist_c": 90}
OUTSIDE = {"image": 20, "scribble": 1, "pseudo": 0, "mask": 5, "dist_s": 40, "dist_c": 200}


class FixedDraw:
    """Stands in for np.random.Generator: every op whose p > 0 fires, uniform() gives the top
    of its range (largest scale, +max_rotation), integers() the lowest crop offset."""

    def uniform(self, low, high):
        return high

    def random(self):
        return 0.0

    def integers(self, low, high, endpoint=False):
        return low


def pattern_sample(h=48, w=64):
    """Every field holds the same off-centre rectangle plus a cross bar (no symmetry)."""
    m = np.zeros((h, w), bool)
    m[8:20, 10:30] = True      # rectangle, upper left
    m[30:34, 5:50] = True      # horizontal bar, lower
    sample = {"id": "x", "orig_size": (h, w)}
    for f in FIELDS:
        a = np.where(m, INSIDE[f], OUTSIDE[f]).astype(np.uint8)
        sample[f] = np.repeat(a[..., None], 3, 2) if f == "image" else a
    return sample, m


def coordinate_sample(h=40, w=60):
    """Image channels 0/1 hold each pixel's x/y; labels/maps hold (x + y) mod 21 / x."""
    y, x = np.mgrid[:h, :w].astype(np.uint8)
    return {"id": "c", "image": np.stack([x, y, np.full_like(x, 99)], 2),
            "scribble": (x + y) % 21, "pseudo": (x * 3 + y) % 21, "mask": (y % 21),
            "dist_s": x.copy(), "dist_c": y.copy()}


def transform(**kw):
    base = dict(scale_range=(1, 1), p_rotate=0, p_blur=0, p_flip=0)
    return TrainTransform(**{**base, **kw})


def image_of(out):
    return denormalize(out["image"])


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


def assert_registered(out):
    """The pattern sits at the same place in every field: nearest fields exactly, image ~."""
    valid = out["scribble"].numpy() != 255
    ref = out["scribble"].numpy() == INSIDE["scribble"]
    assert ref.sum() > 50
    for f in LABELS + MAPS:
        a = out[f].numpy()
        assert np.array_equal(a == INSIDE[f], ref), f
        assert np.array_equal(a == (255 if f in LABELS else 0), ~valid), f
    img = image_of(out)[..., 0].astype(int)
    im_mask = (img > (INSIDE["image"] + OUTSIDE["image"]) / 2) & valid
    iou = (im_mask & ref).sum() / (im_mask | ref).sum()
    assert iou > 0.9
    assert np.abs(centroid(im_mask) - centroid(ref)).max() < 0.5


# ---------------------------------------------------------------- geometry, op by op
def test_identity_geometry_is_exact():
    s, _ = pattern_sample()
    out = transform(crop_size=64)(s, rng=FixedDraw())   # frame 48x64 at the bottom of 64x64
    assert np.array_equal(image_of(out)[16:], s["image"])
    for f in LABELS + MAPS:
        assert np.array_equal(out[f].numpy()[16:], s[f]), f


def test_flip_is_exact_mirror_in_every_field():
    s, _ = pattern_sample()
    out = transform(crop_size=64, p_flip=1)(s, rng=FixedDraw())
    assert np.array_equal(image_of(out)[16:], s["image"][:, ::-1])
    for f in LABELS + MAPS:
        assert np.array_equal(out[f].numpy()[16:], s[f][:, ::-1]), f
    assert_registered(out)


def test_scale_matches_cv2_resize():
    s, _ = pattern_sample(24, 32)
    out = transform(crop_size=64, scale_range=(1.5, 2.0))(s, rng=FixedDraw())  # factor 2.0
    for f in LABELS + MAPS:   # nearest x2 = every pixel repeated 2x2
        assert np.array_equal(out[f].numpy()[16:], s[f].repeat(2, 0).repeat(2, 1)), f
    expected = cv2.resize(s["image"].astype(np.float32), (64, 48), interpolation=cv2.INTER_LINEAR)
    got = out["image"].numpy().transpose(1, 2, 0)[16:] * np.float32(IMAGENET_STD) * 255 \
        + np.float32(IMAGENET_MEAN) * 255
    np.testing.assert_allclose(got, expected, atol=0.5)
    assert_registered(out)


def test_rotation_turns_the_pattern_about_the_centre():
    s, m = pattern_sample()
    out = transform(crop_size=64, p_rotate=1, max_rotation=10)(s, rng=FixedDraw())  # +10 deg
    assert_registered(out)
    got = out["scribble"].numpy()[16:] == INSIDE["scribble"]
    # cv2's positive angle turns counter-clockwise on screen (y down).
    c = np.array([(48 - 1) / 2, (64 - 1) / 2])
    dy, dx = centroid(m) - c
    t = np.deg2rad(10)
    expected = c + [dy * np.cos(t) - dx * np.sin(t), dx * np.cos(t) + dy * np.sin(t)]
    assert np.abs(centroid(got) - expected).max() < 0.5


def test_random_crop_is_a_window_of_the_input_in_every_field():
    s = coordinate_sample()
    t = transform(crop_size=24)
    windows = set()
    for seed in range(8):
        out = t(s, rng=np.random.default_rng(seed))
        img = image_of(out)
        x0, y0 = int(img[0, 0, 0]), int(img[0, 0, 1])
        windows.add((x0, y0))
        assert np.array_equal(img, s["image"][y0:y0 + 24, x0:x0 + 24])
        for f in LABELS + MAPS:
            assert np.array_equal(out[f].numpy(), s[f][y0:y0 + 24, x0:x0 + 24]), f
    assert len(windows) > 4


@pytest.mark.parametrize("seed", range(6))
def test_all_ops_together_keep_fields_registered(seed):
    s, _ = pattern_sample()
    t = TrainTransform(crop_size=40, scale_range=(0.7, 1.6), p_rotate=1, p_flip=0.5, p_blur=0)
    assert_registered(t(s, rng=np.random.default_rng(seed)))


def test_nearest_resampling_creates_no_new_label_values():
    s = coordinate_sample()
    t = TrainTransform(crop_size=50, scale_range=(0.6, 1.7), p_rotate=1, p_blur=1)
    for seed in range(5):
        out = t(s, rng=np.random.default_rng(seed))
        for f in LABELS:
            assert set(np.unique(out[f].numpy())) <= set(np.unique(s[f])) | {255}, f
        for f in MAPS:
            assert set(np.unique(out[f].numpy())) <= set(np.unique(s[f])) | {0}, f


# ---------------------------------------------------------------- padding per field
def assert_padding(out, pad):
    img = out["image"].numpy()
    assert pad.any()
    assert np.all(img[:, pad] == 0.0)      # the mean, exactly, in every channel
    for f in LABELS:
        assert np.all(out[f].numpy()[pad] == 255), f
    for f in MAPS:
        assert np.all(out[f].numpy()[pad] == 0), f


@pytest.mark.parametrize("p_blur", [0, 1])
def test_crop_padding_values(p_blur):
    s, _ = pattern_sample(20, 30)
    out = transform(crop_size=40, p_blur=p_blur)(s, rng=np.random.default_rng(3))
    pad = out["mask"].numpy() == 255
    assert (~pad).sum() == 20 * 30        # the whole frame kept, the rest padding
    assert_padding(out, pad)


def test_rotation_padding_values():
    s, _ = pattern_sample()
    out = transform(crop_size=64, p_rotate=1, max_rotation=10)(s, rng=FixedDraw())
    frame = np.zeros((64, 64), bool)
    frame[16:] = True
    corners = frame & (out["mask"].numpy() == 255)
    assert corners.sum() > 20                # uncovered corners inside the frame
    assert corners[16, 0] and corners[63, 63]
    assert_padding(out, ~frame | corners)    # image pad = label pad, pixel for pixel


def test_blur_touches_only_the_image():
    s = coordinate_sample(40, 60)   # the crop is the frame's left 40 columns
    plain = transform(crop_size=40, p_blur=0)(s, rng=FixedDraw())
    blurred = transform(crop_size=40, p_blur=1)(s, rng=FixedDraw())
    for f in LABELS + MAPS:
        assert torch.equal(plain[f], blurred[f]), f
    # Blurred as the whole frame is, then cropped: columns 40, 41 feed the crop's right edge.
    expected = cv2.GaussianBlur(s["image"].astype(np.float32), (5, 5), 0)[:, :40]
    got = blurred["image"].numpy().transpose(1, 2, 0) * np.float32(IMAGENET_STD) * 255 \
        + np.float32(IMAGENET_MEAN) * 255
    np.testing.assert_allclose(got, expected, atol=1e-3)   # blurred over the full frame
    assert not torch.equal(plain["image"], blurred["image"])


# ---------------------------------------------------------------- types, seeds, validation
def test_output_types_and_shapes():
    s, _ = pattern_sample()
    out = TrainTransform(crop_size=33)(s, rng=np.random.default_rng(0))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 33, 33)
    for f in LABELS:
        assert out[f].dtype == torch.int64 and out[f].shape == (33, 33)
    for f in MAPS:
        assert out[f].dtype == torch.float32 and out[f].shape == (33, 33)
        assert out[f].max() <= 255 and out[f].max() > 1   # raw values, not divided by 255
    assert out["id"] == "x" and out["orig_size"] == (48, 64)
    assert s["image"].dtype == np.uint8 and s["scribble"].shape == (48, 64)  # input untouched


def test_same_seed_same_augmentation():
    s = coordinate_sample()
    t = TrainTransform(crop_size=30)
    a = [t(s, rng=np.random.default_rng(7)) for _ in range(2)]
    for f in FIELDS:
        assert torch.equal(a[0][f], a[1][f]), f
    torch.manual_seed(11)
    b1 = TrainTransform(crop_size=30)(s)["image"]
    torch.manual_seed(11)
    t2 = TrainTransform(crop_size=30)
    b2, b3 = t2(s)["image"], t2(s)["image"]
    assert torch.equal(b1, b2)
    assert not torch.equal(b2, b3)          # the generator runs on


class _Repeat(Dataset):
    def __init__(self, sample, n):
        self.sample, self.n, self.t = sample, n, TrainTransform(crop_size=30)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.t(self.sample)


def test_workers_and_epochs_differ_and_a_global_seed_reproduces():
    s = coordinate_sample()
    ds = _Repeat(s, 4)

    def run():
        torch.manual_seed(1000)
        loader = DataLoader(ds, batch_size=2, num_workers=2)
        return [torch.cat([b["image"] for b in loader]) for _epoch in range(2)]

    first, again = run(), run()
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    e1, e2 = first
    assert not torch.equal(e1[0], e1[2])   # worker 0 vs worker 1, same sample
    assert not torch.equal(e1, e2)          # epoch 1 vs epoch 2


def test_val_transform_centre_crop_pads_small_images():
    s = coordinate_sample(20, 30)
    out = ValTransform(crop_size=40)(s)
    inside = np.zeros((40, 40), bool)
    inside[10:30, 5:35] = True
    assert np.array_equal(image_of(out)[10:30, 5:35], s["image"])
    for f in LABELS + MAPS:
        assert np.array_equal(out[f].numpy()[inside], s[f].ravel()), f
    assert_padding(out, ~inside)


def test_val_transform_centre_crop_and_no_crop():
    s = coordinate_sample(40, 60)
    out = ValTransform(crop_size=24)(s)
    assert np.array_equal(image_of(out), s["image"][8:32, 18:42])
    assert np.array_equal(out["scribble"].numpy(), s["scribble"][8:32, 18:42])
    full = ValTransform(crop_size=None)(s)
    assert full["image"].shape == (3, 40, 60) and full["mask"].dtype == torch.int64
    assert np.array_equal(image_of(full), s["image"])
    means = full["image"].numpy().reshape(3, -1)[:, :1].ravel()   # pixel (0,0): x=0, y=0, 99
    expected = (np.array([0, 0, 99]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(means, expected, rtol=1e-5)
