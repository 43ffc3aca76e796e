"""Loss terms of SPEC §4-§5 on hand-computed cases; inputs never modified; zero weights skipped."""
import math

import pytest
import torch
import torch.nn.functional as F

from losses import (CDSPLoss, DistanceEntropyLoss, LoRMLoss, PartialCELoss, PseudoCELoss,
                    distance_entropy, lorm_loss, partial_ce, pseudo_ce)


def _lse(v):
    return math.log(sum(math.exp(a) for a in v))


# 1 image, 3 classes, 2x2 pixels; pixel (i, j) has logits L[(i, j)]
L = {(0, 0): [2.0, 0.0, -1.0], (0, 1): [0.0, 0.0, 0.0], (1, 0): [1.0, 3.0, 0.5], (1, 1): [-2.0, 1.0, 4.0]}


def _logits():
    x = torch.zeros(1, 3, 2, 2)
    for (i, j), v in L.items():
        x[0, :, i, j] = torch.tensor(v)
    return x


def _nll(pix, c):
    return _lse(L[pix]) - L[pix][c]


def _ent(pix):
    lse = _lse(L[pix])
    p = [math.exp(a - lse) for a in L[pix]]
    return -sum(q * math.log(q) for q in p)


def test_partial_ce_hand_case_with_ignore():
    scribble = torch.tensor([[[0, 255], [1, 255]]])
    want = (_nll((0, 0), 0) + _nll((1, 0), 1)) / 2
    assert partial_ce(_logits(), scribble).item() == pytest.approx(want, rel=1e-6)
    # uint8 labels (as read from PNG) give the same value
    assert partial_ce(_logits(), scribble.to(torch.uint8)).item() == pytest.approx(want, rel=1e-6)
    assert PartialCELoss(0.5)(_logits(), scribble).item() == pytest.approx(want / 2, rel=1e-6)


def test_partial_ce_all_ignore_is_zero_with_zero_grad():
    x = _logits().requires_grad_()
    loss = partial_ce(x, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_pseudo_ce_label_smoothing_matches_formula():
    pseudo = torch.tensor([[[2, 0], [255, 1]]])
    eps, C = 0.1, 3
    want = 0.0
    for pix, c in (((0, 0), 2), ((0, 1), 0), ((1, 1), 1)):
        smooth = sum(_nll(pix, k) for k in range(C)) / C
        want += (1 - eps) * _nll(pix, c) + eps * smooth
    want /= 3
    assert pseudo_ce(_logits(), pseudo, label_smoothing=eps).item() == pytest.approx(want, rel=1e-6)
    assert PseudoCELoss(2.0, eps)(_logits(), pseudo).item() == pytest.approx(2 * want, rel=1e-6)


def test_pseudo_ce_keeps_ignore_pixels_ignored():
    # The authors' defect turned 255 into background before this term: it must not matter
    # what the network predicts at an ignored pixel.
    pseudo = torch.tensor([[[2, 0], [255, 1]]])
    x = _logits()
    y = x.clone()
    y[0, :, 1, 0] = torch.tensor([9.0, -9.0, 0.0])
    assert pseudo_ce(x, pseudo).item() == pytest.approx(pseudo_ce(y, pseudo).item(), abs=0)
    as_background = torch.tensor([[[2, 0], [0, 1]]])
    assert pseudo_ce(x, pseudo).item() != pytest.approx(pseudo_ce(x, as_background).item())


def test_distance_entropy_zero_map_is_zero_not_nan():
    x = _logits().requires_grad_()
    loss = distance_entropy(x, torch.zeros(1, 2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_distance_entropy_full_map_is_mean_entropy():
    want = sum(_ent(p) for p in L) / 4
    assert distance_entropy(_logits(), torch.full((1, 2, 2), 255.0)).item() == pytest.approx(want, rel=1e-6)


def test_distance_entropy_weighting_by_hand():
    d = torch.tensor([[[0.0, 51.0], [255.0, 102.0]]])  # weights 0, 0.2, 1, 0.4
    num = 0.2 * _ent((0, 1)) + 1.0 * _ent((1, 0)) + 0.4 * _ent((1, 1))
    want = num / 3  # three pixels with a non-zero weighted entropy
    assert distance_entropy(_logits(), d).item() == pytest.approx(want, rel=1e-6)
    # (B, 1, H, W) and uint8 maps are read the same way
    assert distance_entropy(_logits(), d[:, None].to(torch.uint8)).item() == pytest.approx(want, rel=1e-6)
    assert DistanceEntropyLoss(3.0)(_logits(), d).item() == pytest.approx(3 * want, rel=1e-6)
    # uniform logits: entropy log(C) everywhere
    u = torch.zeros(1, 3, 2, 2)
    assert distance_entropy(u, d).item() == pytest.approx(1.6 * math.log(3) / 3, rel=1e-6)


def test_distance_entropy_is_finite_for_saturated_logits():
    x = torch.tensor([[[[1e4]], [[-1e4]], [[0.0]]]]).requires_grad_()
    loss = distance_entropy(x, torch.full((1, 1, 1), 255.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_lorm_loss_hand_case():
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    rect = torch.tensor([[[[1.0, 0.0], [0.0, 4.0]]]])
    assert lorm_loss(feat, rect).item() == pytest.approx((4 + 9) / 2)
    assert LoRMLoss(0.5)(feat, rect).item() == pytest.approx(6.5 / 2)
    assert lorm_loss(feat, feat.clone()).item() == 0.0


def _example(B=2, C=4, h=3, w=3, H=11, W=13, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "out": torch.randn(B, C, h, w, generator=g, requires_grad=True),
        "feat": torch.rand(B, D, h, w, generator=g, requires_grad=True),
    }
    outputs["feat_rect"] = outputs["feat"] * 0.5  # depends on feat, like LoRM's output
    scribble = torch.full((B, H, W), 255, dtype=torch.long)
    scribble[:, 2:4, 3:9] = torch.randint(0, C, (B, 2, 6), generator=g)
    pseudo = torch.randint(0, C, (B, H, W), generator=g)
    pseudo[:, -2:] = 255
    batch = {
        "image": torch.randn(B, 3, H, W, generator=g),
        "scribble": scribble,
        "pseudo": pseudo,
        "dist_s": torch.randint(0, 256, (B, H, W), generator=g).float(),
        "dist_c": torch.randint(0, 256, (B, H, W), generator=g).float(),
    }
    return outputs, batch


def _clone(d):
    return {k: v.detach().clone() for k, v in d.items()}


def _assert_same(a, b):
    for k in b:
        assert torch.equal(a[k].detach(), b[k]), f"input '{k}' was modified"


def test_no_loss_modifies_its_inputs():
    outputs, batch = _example()
    o0, b0 = _clone(outputs), _clone(batch)
    size = batch["scribble"].shape[-2:]
    logits = F.interpolate(outputs["out"], size, mode="bilinear", align_corners=True)
    l0 = logits.detach().clone()
    vals = [partial_ce(logits, batch["scribble"]), pseudo_ce(logits, batch["pseudo"]),
            distance_entropy(logits, batch["dist_s"]), distance_entropy(logits, batch["dist_c"]),
            lorm_loss(outputs["feat"], outputs["feat_rect"])]
    total, _ = CDSPLoss()(outputs, batch)
    (sum(vals) + total).backward()
    assert torch.equal(logits.detach(), l0)
    _assert_same(outputs, o0)
    _assert_same(batch, b0)


def test_total_is_weighted_sum_on_upsampled_logits():
    outputs, batch = _example()
    w = dict(l_seg=0.7, l_pseudo=1.3, l_ds=0.4, l_dc=2.0, l_lorm=0.25)
    total, terms = CDSPLoss(**w, label_smooth=0.2)(outputs, batch)
    logits = F.interpolate(outputs["out"], batch["scribble"].shape[-2:], mode="bilinear", align_corners=True)
    want = {
        "pce": w["l_seg"] * partial_ce(logits, batch["scribble"]),
        "pseudo": w["l_pseudo"] * pseudo_ce(logits, batch["pseudo"], label_smoothing=0.2),
        "del_s": w["l_ds"] * distance_entropy(logits, batch["dist_s"]),
        "del_c": w["l_dc"] * distance_entropy(logits, batch["dist_c"]),
        "lorm": w["l_lorm"] * lorm_loss(outputs["feat"], outputs["feat_rect"]),
    }
    assert set(terms) == set(want) | {"total"}
    for k, v in want.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-6), k
    assert total.item() == pytest.approx(sum(v.item() for v in want.values()), rel=1e-6)
    assert terms["total"] is total


def test_gradients_flow_to_logits_and_features():
    outputs, batch = _example()
    total, _ = CDSPLoss()(outputs, batch)
    total.backward()
    for k in ("out", "feat"):
        g = outputs[k].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, k


def test_zero_weight_terms_are_not_computed_nor_read():
    outputs, batch = _example()
    del batch["dist_c"]
    loss = CDSPLoss(l_dc=0)
    total, terms = loss(outputs, batch)
    assert "del_c" not in terms and torch.isfinite(total)
    assert loss.required_fields() == ("image", "scribble", "pseudo", "dist_s")

    # no LoRM: the model output need not carry features
    loss = CDSPLoss(l_lorm=0, l_pseudo=0, l_ds=0, l_dc=0)
    _, terms = loss({"out": outputs["out"]}, {"scribble": batch["scribble"]})
    assert set(terms) == {"pce", "total"}
    assert loss.required_fields() == ("image", "scribble")

    # LoRM alone reads no label (the model takes the pseudo-label: DeepLab.training_inputs), no logits
    loss = CDSPLoss(l_seg=0, l_pseudo=0, l_ds=0, l_dc=0)
    assert loss.required_fields() == ("image",)
    _, terms = loss({"feat": outputs["feat"], "feat_rect": outputs["feat_rect"]}, {})
    assert set(terms) == {"lorm", "total"}

    assert CDSPLoss(l_seg=0, l_lorm=0, l_ds=0, l_dc=0).required_fields() == ("image", "pseudo")


def test_missing_inputs_are_named():
    outputs, batch = _example()
    del batch["dist_s"]
    with pytest.raises(KeyError, match="dist_s"):
        CDSPLoss()(outputs, batch)
    outputs, batch = _example()
    with pytest.raises(KeyError, match="feat_rect"):
        CDSPLoss()({"out": outputs["out"], "feat": outputs["feat"]}, batch)
    with pytest.raises(ValueError, match="0"):
        CDSPLoss(0, 0, 0, 0, 0)
