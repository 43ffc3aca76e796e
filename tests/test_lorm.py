"""LoRM module (SPEC §4): foreground-rows computation == the explicit full-matrix formula (loss
and every gradient, float64, variable foreground counts incl. none and all), the explicit formula
== a per-element hand computation, and foreground_mask (255 -> background, nearest resize, input
untouched)."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.lorm import LoRM, foreground_mask, lorm_reference


def _loss(x, x_rect):
    """L_LoRM of SPEC §4 step 5, written out here in float64 (the oracle for both paths)."""
    sq = (x - x_rect) ** 2
    return sq.sum() / torch.count_nonzero(sq)


def _module(channels, seed=0):
    torch.manual_seed(seed)
    m = LoRM(channels).double()
    with torch.no_grad():  # non-trivial biases and gamma so their gradients are exercised
        m.query_conv.bias.normal_(0, 0.5)
        m.key_conv.bias.normal_(0, 0.5)
        m.gamma.fill_(0.7)
    return m


def _loss_and_grads(module, rectify, x0, fg):
    module.zero_grad(set_to_none=True)
    x = x0.clone().requires_grad_(True)
    loss = _loss(x, rectify(x, fg))
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p))
             for n, p in module.named_parameters()}
    return loss.detach(), x.grad, grads


@pytest.mark.parametrize("fused", [False, True])
def test_foreground_rows_equal_explicit_formula(fused):
    B, C, h, w = 4, 12, 5, 7
    m = _module(C)
    m.fused = fused
    x0 = torch.randn(B, C, h, w, dtype=torch.float64)
    fg = torch.rand(B, h, w) < 0.5
    fg[1] = False           # an image without foreground
    fg[2] = True            # an image that is all foreground
    fg[3] = False
    fg[3, 2, 3] = True      # a single foreground position
    loss_a, gx_a, g_a = _loss_and_grads(m, m.forward, x0, fg)
    loss_b, gx_b, g_b = _loss_and_grads(m, m.forward_reference, x0, fg)
    assert torch.allclose(loss_a, loss_b, rtol=1e-12, atol=0)
    assert torch.allclose(gx_a, gx_b, rtol=1e-10, atol=1e-14)
    assert set(g_a) == {"gamma", "query_conv.weight", "query_conv.bias", "key_conv.weight",
                        "key_conv.bias"}
    for name in g_a:
        assert g_b[name].abs().max() > 0, name  # the comparison is not between zeros
        assert torch.allclose(g_a[name], g_b[name], rtol=1e-10, atol=1e-14), name


def test_no_foreground_anywhere_gives_zero_and_keeps_gamma_in_graph():
    m = _module(6)
    x0 = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    fg = torch.zeros(2, 3, 4, dtype=torch.bool)
    loss_a, gx_a, g_a = _loss_and_grads(m, m.forward, x0, fg)
    loss_b, gx_b, g_b = _loss_and_grads(m, m.forward_reference, x0, fg)
    assert torch.allclose(loss_a, (x0 ** 2).mean()) and torch.allclose(loss_a, loss_b)
    assert torch.allclose(gx_a, gx_b)
    assert m.gamma.grad is not None and m.gamma.grad.abs().max() == 0


def test_explicit_formula_matches_hand_computation():
    """x'_i = gamma * m_i * sum_j softmax_j(cos(q_i, k_j)) x_j, element by element."""
    C, h, w = 3, 2, 3
    m = _module(C, seed=5)
    x = torch.randn(1, C, h, w, dtype=torch.float64)
    fg = torch.tensor([[[True, False, True], [False, True, True]]])
    q = m.query_conv(x)[0].flatten(1).T.detach()  # (N, C)
    k = m.key_conv(x)[0].flatten(1).T.detach()
    v = x[0].flatten(1).T
    N = h * w
    want = torch.zeros(N, C, dtype=torch.float64)
    for i in range(N):
        if not fg.flatten()[i]:
            continue
        e = [math.exp(F.cosine_similarity(q[i], k[j], dim=0).item()) for j in range(N)]
        want[i] = 0.7 * sum(e[j] / sum(e) * v[j] for j in range(N))
    got = lorm_reference(x, fg, m.query_conv, m.key_conv, m.gamma).detach()
    assert torch.allclose(got[0].flatten(1).T, want, rtol=1e-12, atol=1e-14)
    assert torch.allclose(m(x, fg).detach(), got, rtol=1e-12, atol=1e-14)


def test_background_positions_are_exactly_zero_float32():
    torch.manual_seed(0)
    m = LoRM(16)
    x = torch.randn(2, 16, 6, 6)
    fg = torch.rand(2, 6, 6) < 0.4
    out = m(x, fg)
    assert out.shape == x.shape
    assert (out.permute(0, 2, 3, 1)[~fg] == 0).all()
    assert (out.permute(0, 2, 3, 1)[fg].abs().sum(1) > 0).all()
    assert torch.allclose(out, m.forward_reference(x, fg), rtol=1e-4, atol=1e-6)


def test_parameters_and_init():
    m = LoRM(32)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"gamma": (1,), "query_conv.weight": (32, 32, 1, 1), "query_conv.bias": (32,),
                      "key_conv.weight": (32, 32, 1, 1), "key_conv.bias": (32,)}
    assert m.gamma.item() == 1.0
    bound = math.sqrt(6 / (32 + 32))  # Xavier-uniform bound
    for conv in (m.query_conv, m.key_conv):
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
        assert conv.bias.abs().max() == 0


def test_mask_shape_mismatch_is_an_error():
    m = LoRM(4)
    with pytest.raises(ValueError, match=r"fg_mask must be \(1, 3, 3\)"):
        m(torch.randn(1, 4, 3, 3), torch.ones(1, 4, 4, dtype=torch.bool))


def test_foreground_mask_values_resize_and_input_untouched():
    pseudo = torch.tensor([[[0, 0, 255, 255],
                            [0, 0, 255, 255],
                            [3, 3, 15, 15],
                            [3, 3, 15, 15]],
                           [[7, 255, 20, 0],
                            [7, 255, 20, 0],
                            [7, 255, 20, 0],
                            [7, 255, 20, 0]]])
    before = pseudo.clone()
    full = foreground_mask(pseudo, (4, 4))
    assert full.dtype == torch.bool
    assert torch.equal(full, (pseudo > 0) & (pseudo != 255))
    half = foreground_mask(pseudo, (2, 2))  # align_corners: samples rows/columns 0 and 3
    assert torch.equal(half, torch.tensor([[[False, False], [True, True]],
                                           [[True, False], [True, False]]]))
    # upsampling: a feature position is foreground when any input pixel it mixes is
    up = foreground_mask(pseudo[:1], 7)  # position i samples input 0.5 * i
    assert up[0, :, 0].tolist() == [False] * 3 + [True] * 4       # column 0: rows 2, 3 are class 3
    assert up[0, 0].tolist() == [False] * 7                       # row 0: background and 255
    assert torch.equal(pseudo, before)  # the authors rewrote 255 -> 0 in place; we must not


def authors_mask(pseudo: torch.Tensor, size) -> torch.Tensor:
    """The authors' code: 255 -> 0 (on a copy), bilinear align_corners=True of the label values, > 0."""
    p = pseudo.clone()
    p[p == 255] = 0
    return F.interpolate(p[:, None].float(), size=size, mode="bilinear", align_corners=True)[:, 0] > 0


def test_foreground_mask_samples_receptive_field_centres_at_8k_plus_1():
    pseudo = torch.zeros(1, 465, 465, dtype=torch.long)
    pseudo[0, 64, 64] = 5  # input pixel (8*8, 8*8): exactly feature (8, 8)
    m = foreground_mask(pseudo, (59, 59))
    assert m.shape == (1, 59, 59) and m.sum() == 1 and m[0, 8, 8]
    pseudo[0, 64, 64] = 0
    pseudo[0, 60, 60] = 5  # between grid points 56 and 64: no feature samples it
    assert not foreground_mask(pseudo, (59, 59)).any()
    pseudo[0, 60, 60] = 0
    pseudo[0, 63, 63] = 5  # a nearest resize samples floor(8 * 465 / 59) = 63 for feature 8; we do not
    assert not foreground_mask(pseudo, (59, 59)).any()
    assert F.interpolate(pseudo[:, None].float(), size=(59, 59), mode="nearest")[0, 0, 8, 8]


def test_foreground_mask_equals_authors_resize_on_random_labels():
    g = torch.Generator().manual_seed(3)
    for (H, W), size in [((100, 130), (13, 17)), ((64, 64), (9, 9)), ((97, 50), (30, 7)), ((33, 41), (40, 50))]:
        pseudo = torch.randint(0, 21, (3, H, W), generator=g)
        pseudo[torch.rand(3, H, W, generator=g) < 0.3] = 255
        pseudo[torch.rand(3, H, W, generator=g) < 0.4] = 0
        before = pseudo.clone()
        assert torch.equal(foreground_mask(pseudo, size), authors_mask(pseudo, size))
        assert torch.equal(pseudo, before)


def test_explicit_option_computes_the_full_matrix_with_the_same_values(monkeypatch):
    """build_model(lorm_explicit=True) (the benchmarks' baseline) runs lorm_reference's
    (B, hw, hw) matrix inside the model and gives what the foreground-rows path gives."""
    from models import build_model
    from models.lorm import foreground_mask

    torch.manual_seed(0)
    rows = build_model("deeplabv2", 18, 5, lorm=True).double().eval()
    explicit = build_model("deeplabv2", 18, 5, lorm=True, lorm_explicit=True).double().eval()
    explicit.load_state_dict(rows.state_dict())
    image = torch.randn(2, 3, 33, 33, dtype=torch.float64)
    pseudo = torch.randint(0, 5, (2, 33, 33))
    pseudo[1] = 0  # one image without foreground
    a, b = rows(image, pseudo), explicit(image, pseudo)
    assert b["feat_rect"].abs().max() > 0
    assert torch.allclose(a["feat_rect"], b["feat_rect"], rtol=1e-10, atol=1e-12)
    calls = []  # the explicit model really goes through the explicit formula, the other not
    monkeypatch.setattr("models.lorm.lorm_reference", lambda *a, **k: calls.append(1) or lorm_reference(*a, **k))
    explicit(image, pseudo)
    rows(image, pseudo)
    assert calls == [1]
    fg = foreground_mask(pseudo, a["feat"].shape[-2:])
    assert torch.equal(b["feat_rect"].abs().sum(1) > 0, fg)  # zero exactly at the background
