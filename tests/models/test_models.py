import pytest
import torch

from hddgeo.models import MODEL_NAMES, ConvNet, build_model


@pytest.mark.parametrize("channels,size,dim", [(1, 8, 128), (1, 28, 2048), (3, 32, 2048)])
def test_convnet_embed_dims(channels, size, dim):
    net = ConvNet(channels, 10, image_size=(size, size))
    x = torch.randn(3, channels, size, size)
    assert net.feature_dim == dim
    assert net.embed(x).shape == (3, dim)
    assert net(x).shape == (3, 10)


def test_convnet_deeper_for_big_images():
    net = ConvNet(3, 5, image_size=(64, 64), depth=4)
    assert net.embed(torch.randn(2, 3, 64, 64)).shape == (2, 2048)
    with pytest.raises(ValueError, match="too deep"):
        ConvNet(1, 10, image_size=(8, 8), depth=4)


def test_convnet_instance_norm():
    norms = [m for m in ConvNet(3, 10).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(n.num_groups == n.num_channels == 128 for n in norms)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_cross_arch_shapes(name, channels, size):
    torch.manual_seed(0)
    net = build_model(name, channels, 10, (size, size))
    x = torch.randn(4, channels, size, size)
    emb = net.embed(x)
    assert emb.shape == (4, net.feature_dim)
    assert net(x).shape == (4, 10)
    # No layer collapses to a constant (e.g. instance norm on 1x1 maps): inputs stay apart.
    assert (emb[0] - emb[1]).abs().max() > 1e-4


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="convnet, alexnet, vgg11, resnet18"):
        build_model("lenet", 1, 10, 8)


def test_embed_in_chunks_equals_one_batch_and_refuses_an_empty_batch():
    from hddgeo.models import embed

    torch.manual_seed(0)
    net = build_model("convnet", 1, 10, (8, 8))
    x = torch.randn(23, 1, 8, 8)
    whole = net.embed(x).detach()
    assert torch.equal(embed(net, x, batch_size=5), whole)  # per-image layers: chunking changes nothing
    assert not embed(net, x).requires_grad
    with pytest.raises(ValueError, match="no images"):
        embed(net, x[:0])


@pytest.mark.parametrize("shape", [(3, 5, 8, 8), (2, 4, 7, 9), (1, 2, 2, 3)])
def test_avgpool2x2_is_avgpool2d_bit_for_bit_in_values_and_gradients(shape):
    from hddgeo.models._layers import AvgPool2x2

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g).relu().requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    ours, ref = AvgPool2x2()(x), torch.nn.AvgPool2d(2)(y)
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    cot = torch.randn(ref.shape, generator=g)
    (ours * cot).sum().backward()
    (ref * cot).sum().backward()
    assert torch.equal(x.grad, y.grad)
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert torch.equal(AvgPool2x2()(cl), ref.detach())
