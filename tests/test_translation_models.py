"""The translation networks: shapes at each resolution, dropout from given noise, plain twins, fused-op switch."""

import pytest
import torch

from fastgan.benchmark_translation import PlainUNet, copy_weights, plain_patch_discriminator, plain_resnet_generator
from fastgan.kernels import InstanceNormAct
from fastgan.models import PatchDiscriminator, ResnetGenerator, UNetGenerator, set_kernel_impl
from fastgan.models.patchgan import min_patch_input, patch_output_size


@pytest.mark.parametrize("size", [16, 32, 64, 256])
def test_unet_shapes_at_each_resolution(size):
    G = UNetGenerator(1, 3, size, width=2)
    assert G.depth == size.bit_length() - 1 and G.size_multiple == size
    x = torch.rand(2, 1, size, size) * 2 - 1
    noise = [torch.rand(s) for s in G.noise_shapes(2, size, size)]
    assert len(noise) == min(3, G.depth - 2)
    y = G(x, noise)
    assert y.shape == (2, 3, size, size) and y.abs().max() <= 1
    G.eval()
    assert G(torch.zeros(1, 1, 2 * size, 3 * size)).shape == (1, 3, 2 * size, 3 * size)   # any multiple


@pytest.mark.parametrize("size,n_blocks", [(16, 1), (36, 2), (64, 0)])
def test_resnet_generator_and_patchgan_shapes(size, n_blocks):
    G = ResnetGenerator(3, 1, width=2, n_blocks=n_blocks)
    assert G(torch.zeros(2, 3, size, size + 4)).shape == (2, 1, size, size + 4)
    for n_layers in (1, 2, 3):
        if size < min_patch_input(n_layers):
            continue
        D = PatchDiscriminator(4, width=2, n_layers=n_layers)
        h = patch_output_size(size, n_layers)
        assert D(torch.zeros(3, 4, size, size)).shape == (3, 1, h, h)
    assert patch_output_size(256, 3) == 30   # the 70x70 PatchGAN's map at 256 px


def test_reference_sizes_of_the_papers_networks():
    # unet_256 / resnet_9blocks / basic D with ngf = ndf = 64, without the biases an instance norm cancels
    with torch.device("meta"):   # sizes only: nothing allocated
        assert sum(p.numel() for p in UNetGenerator(3, 3, 256, 64).parameters()) == 54_404_675
        assert sum(p.numel() for p in ResnetGenerator(3, 3, 64, 9).parameters()) == 11_372_931
        assert sum(p.numel() for p in PatchDiscriminator(6, 64, 3).parameters()) == 2_766_913


def test_dropout_masks_come_from_the_given_noise():
    torch.manual_seed(0)
    G = UNetGenerator(1, 1, 16, width=4, dropout=0.5)
    x = torch.rand(2, 1, 16, 16)
    shapes = G.noise_shapes(2, 16, 16)
    ones = [torch.ones(s) for s in shapes]                 # noise >= p everywhere: keep all, scaled by 2
    G.train()
    kept = G(x, ones)
    G.eval()
    plain = G(x)                                           # eval mode: no dropout at all
    G.dropout = 0.0 + 1e-12                                # same masks, scale 1 / (1 - p) ~= 1
    G.train()
    torch.testing.assert_close(G(x, ones), plain, rtol=1e-5, atol=1e-6)
    G.dropout = 0.5
    assert not torch.allclose(kept, plain)
    noise = [torch.rand(s, generator=torch.Generator().manual_seed(3)) for s in shapes]
    torch.testing.assert_close(G(x, noise), G(x, [n.clone() for n in noise]))   # the same noise, the same output
    zeros = [torch.zeros(s) for s in shapes]               # noise < p everywhere: those levels drop out entirely
    assert not torch.allclose(G(x, zeros), kept)


def test_plain_twins_compute_the_same_function():
    torch.manual_seed(0)
    G = UNetGenerator(1, 3, 32, width=4).eval()
    P = PlainUNet(1, 3, G.depth, 4).eval()
    copy_weights(G, P)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(P(x), G(x), rtol=1e-5, atol=1e-6)
    R, PR = ResnetGenerator(3, 3, 4, 2), plain_resnet_generator(3, 3, 4, 2)
    copy_weights(R, PR)
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    torch.testing.assert_close(PR(x), R(x), rtol=1e-5, atol=1e-6)
    D, PD = PatchDiscriminator(4, 4, 2), plain_patch_discriminator(4, 4, 2)
    copy_weights(D, PD)
    x = torch.rand(2, 4, 16, 16)
    torch.testing.assert_close(PD(x), D(x), rtol=1e-5, atol=1e-6)


def test_kernel_switch_reaches_every_instance_norm():
    G = ResnetGenerator(3, 3, 2, 1)
    set_kernel_impl(G, "ref")
    norms = [m for m in G.modules() if isinstance(m, InstanceNormAct)]
    assert norms and all(m.impl == "ref" for m in norms)


def test_arch_config_rebuilds_the_same_network():
    for net in (UNetGenerator(3, 1, 32, 4, dropout=0.2), ResnetGenerator(1, 3, 4, 2), PatchDiscriminator(2, 4, 2)):
        twin = type(net)(**net.arch_config())
        assert [p.shape for p in twin.parameters()] == [p.shape for p in net.parameters()]


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="power of two"):
        UNetGenerator(3, 3, 48)
    with pytest.raises(ValueError, match="dropout"):
        UNetGenerator(3, 3, 32, dropout=1.0)
    with pytest.raises(ValueError, match="n_blocks"):
        ResnetGenerator(3, 3, 8, -1)
