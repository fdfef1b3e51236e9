import pytest
import torch

from hddgeo.evaluate import evaluate_synset, train_and_test

SMALL = dict(model="convnet", epochs=30, batch_size=256, progress=False)


def halves(n, seed):
    """Two classes of 1x8x8 images: bright top half (0) or bright bottom half (1), plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2 * n, 1, 8, 8, generator=g)
    y = torch.arange(2 * n) % 2
    x[y == 0, :, :4] += 1.0
    x[y == 1, :, 4:] += 1.0
    return x, y


@pytest.fixture(scope="module")
def data():
    return halves(5, seed=1) + halves(100, seed=2)


def flip(x, seed):
    return x.flip(-1) if seed % 2 else x


@pytest.mark.parametrize("seed", [0, 1])
def test_learns_separable_problem(data, seed):
    result = train_and_test(*data, augment=flip, seed=seed, **SMALL)
    assert result["acc"] > 0.9
    assert result["train_loss"] < 0.65  # below ln 2, the loss of a blind guess


def test_random_labels_do_not_generalise(data):
    x, y, tx, ty = data
    # Labels that ignore the picture: half of them flipped.
    shuffled = y ^ torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert (shuffled == y).float().mean() == 0.5
    result = train_and_test(x, shuffled, tx, ty, **SMALL)
    assert result["acc"] < 0.8


def test_deterministic_and_rng_untouched(data):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train_and_test(*data, augment=flip, seed=3, **SMALL)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_and_test(*data, augment=flip, seed=3, **SMALL)
    assert a == b


def test_evaluate_synset_summary(data):
    kw = dict(SMALL, epochs=5)
    out = evaluate_synset(*data, num_classes=2, num_nets=2, seed=4, **kw)
    accs = [train_and_test(*data, num_classes=2, seed=s, **kw)["acc"] for s in (4, 5)]
    assert out["accs"] == accs
    assert out["mean"] == pytest.approx(sum(accs) / 2)
    assert out["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2)  # population std
    assert out["model"] == "convnet"


def test_bad_inputs(data):
    x, y, tx, ty = data
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_synset(x, y[:-1], tx, ty, num_classes=2, progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate_synset(x[:0], y[:0], tx, ty, num_classes=2, progress=False)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        evaluate_synset(x, y + 1, tx, ty, num_classes=2, progress=False)
    with pytest.raises(ValueError, match="test_labels must lie"):
        evaluate_synset(x, y, tx, ty - 1, num_classes=2, progress=False)
    with pytest.raises(ValueError, match="share"):
        evaluate_synset(x, y, tx[:, :, :4], ty, num_classes=2, progress=False)
    with pytest.raises(ValueError, match="valid names"):
        train_and_test(x, y, tx, ty, model="lenet", epochs=1)


def test_per_image_correctness_adds_up_to_the_accuracy():
    """train_and_test(per_image=True): the same network and accuracy, and which test images it got right."""
    import torch

    from hddgeo.evaluate import train_and_test

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.arange(3).repeat(4)
    tx, ty = torch.randn(30, 1, 8, 8, generator=g), torch.arange(3).repeat(10)
    plain = train_and_test(x, y, tx, ty, epochs=3, batch_size=5, seed=4)
    res = train_and_test(x, y, tx, ty, epochs=3, batch_size=5, seed=4, per_image=True)
    assert res["acc"] == plain["acc"] and res["train_loss"] == plain["train_loss"]
    assert res["correct"].dtype == torch.bool and res["correct"].shape == (30,)
    assert int(res["correct"].sum()) == round(res["acc"] * 30)
