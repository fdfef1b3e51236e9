"""Differentiable Siamese Augmentation."""
import pytest
import torch

from hddgeo.data import DEFAULT_DSA_STRATEGY, DSA_OPS, DSAParams, dsa, dsa_op, parse_strategy


def _batch(n=6, c=3, h=16, w=16, dtype=torch.float32, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_reference_parameters():
    p = DSAParams()
    geometric = (p.prob_flip, p.ratio_scale, p.ratio_rotate, p.ratio_crop_pad, p.ratio_cutout)
    assert geometric == (0.5, 1.2, 15.0, 0.125, 0.5)
    assert (p.brightness, p.saturation, p.contrast) == (1.0, 2.0, 0.5)
    assert parse_strategy(DEFAULT_DSA_STRATEGY) == DSA_OPS
    assert parse_strategy("none") == () and parse_strategy("") == ()
    with pytest.raises(ValueError, match="valid operations"):
        parse_strategy("color_jitter")


@pytest.mark.parametrize("op", DSA_OPS)
def test_siamese_same_seed_same_transform_on_any_batch(op):
    real = _batch(n=32)
    for seed in range(6):
        whole = dsa(real, seed, strategy=op)
        part = dsa(real[5:9], seed, strategy=op)  # a different (smaller) batch, same seed
        torch.testing.assert_close(part, whole[5:9], rtol=1e-5, atol=1e-5)


def test_default_strategy_siamese_and_deterministic():
    real, syn = _batch(n=40), _batch(n=10, seed=1)
    both = torch.cat([real, syn])
    for seed in range(20):
        out_real, out_syn = dsa(real, seed), dsa(syn, seed)
        torch.testing.assert_close(torch.cat([out_real, out_syn]), dsa(both, seed), rtol=1e-5, atol=1e-5)
        assert torch.equal(out_real, dsa(real, seed))


def test_different_seeds_differ():
    x = _batch()
    outputs = [dsa(x, seed) for seed in range(8)]
    distinct = {tuple(o.flatten()[:64].tolist()) for o in outputs}
    assert len(distinct) >= 6
    for op in DSA_OPS:
        per_op = [dsa(x, s, strategy=op) for s in range(6)]
        assert any(not torch.allclose(per_op[0], o) for o in per_op[1:]), op


def test_global_rng_untouched():
    x = _batch()
    state = torch.get_rng_state()
    for seed in range(12):
        dsa(x, seed)
        dsa(x, seed, siamese=False)
    assert torch.equal(state, torch.get_rng_state())


def test_flip_is_exact():
    x = _batch(h=7, w=9)
    assert torch.equal(dsa(x, 3, strategy="flip", params=DSAParams(prob_flip=1.0)), x.flip(3))
    assert torch.equal(dsa(x, 3, strategy="flip", params=DSAParams(prob_flip=0.0)), x)
    seen = {torch.equal(dsa(x, s, strategy="flip"), x.flip(3)) for s in range(12)}
    assert seen == {True, False}  # prob 0.5 does both


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 32, 32), (2, 3, 12, 20), (1, 5, 128, 128)])
def test_shapes_dtypes_any_size_and_channels(shape):
    x = torch.rand(*shape)
    for op in DSA_OPS:
        y = dsa(x, 1, strategy=op)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


def test_crop_and_cutout_magnitudes():
    x = torch.ones(1, 1, 32, 32)
    for seed in range(10):
        crop = dsa(x, seed, strategy="crop")
        zero_rows = int((crop.sum(dim=3) == 0).sum())
        zero_cols = int((crop.sum(dim=2) == 0).sum())
        assert zero_rows <= 4 and zero_cols <= 4  # shift by at most 0.125 * 32 pixels
        cut = dsa(x, seed, strategy="cutout")
        holes = int((cut == 0).sum())
        assert 0 < holes <= 16 * 16  # a (clipped) 16x16 square
        assert torch.all((cut == 0) | (cut == 1))


def test_identity_angles_and_scales_are_identity():
    x = _batch(h=10, w=14, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    same = DSAParams(ratio_scale=1.0, ratio_rotate=0.0)
    torch.testing.assert_close(dsa_op(x, "scale", gen, same), x)
    torch.testing.assert_close(dsa_op(x, "rotate", gen, same), x)


def test_rotation_is_a_true_rotation_on_non_square_images():
    # A quarter turn of a centred horizontal bar on a 21x41 canvas must give a vertical bar of
    # the same length (a plain normalised-coordinate matrix would squash it to a third).
    x = torch.zeros(1, 1, 21, 41, dtype=torch.float64)
    x[0, 0, 10, 15:26] = 1.0
    # choose the range so that the first uniform draw of seed 0 lands exactly on +-90 degrees
    u = float(torch.rand(1, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    params = DSAParams(ratio_rotate=90.0 / abs(2 * u - 1))
    out = dsa_op(x, "rotate", torch.Generator().manual_seed(0), params)[0, 0]
    expected = torch.zeros(21, 41, dtype=torch.float64)
    expected[5:16, 20] = 1.0
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("op", DSA_OPS)
@pytest.mark.parametrize("siamese", [True, False])
def test_gradcheck_each_op(op, siamese):
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def fn(inp):
        return dsa_op(inp, op, torch.Generator().manual_seed(4), siamese=siamese)

    assert torch.autograd.gradcheck(fn, (x,))


def test_gradient_reaches_synthetic_images():
    syn = torch.randn(4, 3, 8, 8, requires_grad=True)
    loss = sum(dsa(syn, seed).square().mean() for seed in range(12))
    loss.backward()
    assert torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0


def test_per_image_mode_varies_within_batch():
    x = _batch(n=1).expand(16, 3, 16, 16).contiguous()
    for op in ("color", "crop", "scale", "rotate"):
        out = dsa(x, 0, strategy=op, siamese=False)
        assert any(not torch.allclose(out[0], out[i]) for i in range(1, 16)), op
        same = dsa(x, 0, strategy=op)
        assert all(torch.allclose(same[0], same[i]) for i in range(1, 16))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="N, C, H, W"):
        dsa(torch.zeros(3, 8, 8), 0)
    with pytest.raises(ValueError, match="floating"):
        dsa(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), 0)
    with pytest.raises(ValueError):
        dsa_op(torch.zeros(1, 1, 8, 8), "blur", torch.Generator())


@pytest.mark.parametrize("siamese", [True, False])
def test_blocks_in_one_call_per_operation_are_each_blocks_own_call(siamese):
    """dsa_apply_blocks (an accelerator's DSA of all classes at once, grouped by the operation each class drew)
    against one dsa_apply per class with the same draws: the same images and the same input gradients, for
    blocks of several sizes and every operation."""
    from hddgeo.data.augment import DEFAULT_DSA_STRATEGY, dsa_apply, dsa_apply_blocks, dsa_draw, upload

    g = torch.Generator().manual_seed(7)
    sizes = [3, 1, 4, 2, 3, 5, 2, 1, 4, 3, 2, 2]
    x = torch.randn(sum(sizes), 3, 10, 9, generator=g, dtype=torch.float64, requires_grad=True)
    draws = [dsa_draw(100 + i, DEFAULT_DSA_STRATEGY, (s, 3, 10, 9), siamese=siamese) for i, s in enumerate(sizes)]
    assert len({d[0] for d in draws}) >= 4  # several operations, several classes sharing one
    params = upload(draws, x.device)
    cot = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref = torch.cat([dsa_apply(b, d, q) for b, d, q in zip(x.split(sizes), draws, params)])
    got = dsa_apply_blocks(x, sizes, draws, params)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    (g_ref,) = torch.autograd.grad((ref * cot).sum(), x)
    (g_got,) = torch.autograd.grad((got * cot).sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="one draw per block"):
        dsa_apply_blocks(x, sizes[:-1], draws, params)
