"""The one training loop (hddgeo.training.sgd_epochs)."""
import math

import torch

from hddgeo.training import sgd_epochs


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def _net():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_every_image_once_per_epoch_and_lr_drop():
    x, y = _toy()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    seen = {}

    def record(epoch, idx, logits, yb):
        seen.setdefault(epoch, []).extend(idx.tolist())
        assert not logits.requires_grad and torch.equal(yb, y[idx])

    sgd_epochs(net, x, y, opt, torch.Generator().manual_seed(1), epochs=4, batch_size=7, lr_drop_at=2, on_batch=record)
    assert sorted(seen) == [0, 1, 2, 3] and all(sorted(v) == list(range(40)) for v in seen.values())
    assert math.isclose(opt.param_groups[0]["lr"], 0.05)


def test_deterministic_and_learns():
    x, y = _toy()
    runs = []
    for _ in range(2):
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        first = sgd_epochs(net, x, y, opt, torch.Generator().manual_seed(2), epochs=1, batch_size=8)
        last = sgd_epochs(net, x, y, opt, torch.Generator().manual_seed(3), epochs=30, batch_size=8)
        runs.append((first, last, net.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][2], runs[1][2])
    assert runs[0][1] < 0.5 * runs[0][0]


def test_augment_gets_a_seed_per_batch_from_the_generator():
    x, y = _toy()
    seeds = []
    sgd_epochs(_net(), x, y, torch.optim.SGD(_net().parameters(), lr=0.1), torch.Generator().manual_seed(4), epochs=2,
               batch_size=20, augment=lambda xb, s: seeds.append(s) or xb)
    g = torch.Generator().manual_seed(4)
    expected = []
    for _ in range(2):
        torch.randperm(40, generator=g)
        expected += [int(torch.randint(0, 2**31 - 1, (), generator=g)) for _ in range(2)]
    assert seeds == expected
    assert math.isnan(sgd_epochs(_net(), x, y, torch.optim.SGD(_net().parameters(), lr=0.1),
                                 torch.Generator(), epochs=0, batch_size=8))
