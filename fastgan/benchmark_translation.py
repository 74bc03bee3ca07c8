"""pix2pix and CycleGAN trained the way the pytorch-CycleGAN-and-pix2pix repository trains them, in plain PyTorch.

The baseline ``fastgan bench --preset pix2pix256 | cyclegan256`` and
``bench/translation_cpu_step.py`` time fastgan against. The networks are
fastgan's (:mod:`fastgan.models.unet`, ``resnet_generator``, ``patchgan``)
layer for layer, written with ``nn.InstanceNorm2d``, ``nn.LeakyReLU``,
``nn.ReLU``, ``nn.Tanh`` and ``nn.Dropout``, parameters in the same order
(so weights copy across and the benchmark's network signature matches). The
training is the reference's, as its ``optimize_parameters`` reads:

- eager fp32, ``torch.optim.Adam(lr=2e-4, betas=(0.5, 0.999))`` with its
  default flags, ``zero_grad()`` before each backward;
- pix2pix: G forward; D unfrozen, D on the detached fake pair, D on the real
  pair (two calls), BCE-with-logits against label tensors, (fake + real) / 2,
  backward, step; D frozen, D on the fake pair, BCE + 100 * L1, backward, step;
- CycleGAN: the four generator passes, D frozen, the two identity passes, LSGAN
  (MSE against label tensors) + 10 * cycle + 5 * identity, backward, step; D
  unfrozen, each generated batch through a Python-list image pool (a Python
  coin per image), each D on real then fake (four calls), backward, step.

Its data are drawn as fastgan draws them (device-resident uint8, random
indices and flips), so the loops differ in how a step is computed, not in
what is loaded.
"""

from __future__ import annotations

import random
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .models.common import dcgan_init_
from .models.resnet_generator import N_DOWN
from .models.unet import unet_channels

LR, BETAS = 2e-4, (0.5, 0.999)   # the reference's defaults (fastgan's too)


# ---------------------------------------------------------------------------- networks
class PlainUNet(nn.Module):
    """fastgan's :class:`~fastgan.models.UNetGenerator` in plain ``torch.nn`` (same parameters, same order).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        depth: down-sampling levels.
        width: ngf.
        dropout: dropout probability of the decoder levels 1 .. ``dropout_blocks``.
        dropout_blocks: as in UNetGenerator.
        max_mult: channel cap multiple.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, width: int, dropout: float = 0.5,
                 dropout_blocks: int = 3, max_mult: int = 8):
        super().__init__()
        ch = [unet_channels(width, lvl, max_mult) for lvl in range(depth)]
        self.enc = nn.ModuleList([nn.Conv2d(in_channels, ch[0], 4, 2, 1, bias=False)])
        self.enc_norm = nn.ModuleList([nn.Identity()])
        for lvl in range(1, depth - 1):
            self.enc.append(nn.Conv2d(ch[lvl - 1], ch[lvl], 4, 2, 1, bias=False))
            self.enc_norm.append(nn.InstanceNorm2d(ch[lvl]))
        self.enc.append(nn.Conv2d(ch[depth - 2], ch[depth - 1], 4, 2, 1, bias=False))
        # the first and the innermost convolution's biases (no norm follows them), held where fastgan holds them
        self.enc_bias = nn.ParameterList([nn.Parameter(torch.zeros(ch[0])), nn.Parameter(torch.zeros(ch[-1]))])
        self.dec = nn.ModuleList([nn.ConvTranspose2d(ch[depth - 1], ch[depth - 2], 4, 2, 1, bias=False)])
        self.dec_norm = nn.ModuleList([nn.InstanceNorm2d(ch[depth - 2])])
        for lvl in range(depth - 2, 0, -1):
            self.dec.append(nn.ConvTranspose2d(2 * ch[lvl], ch[lvl - 1], 4, 2, 1, bias=False))
            self.dec_norm.append(nn.InstanceNorm2d(ch[lvl - 1]))
        self.to_img = nn.ConvTranspose2d(2 * ch[0], out_channels, 4, 2, 1, bias=True)
        self.drop = nn.Dropout(dropout)
        self.dropout_blocks = min(dropout_blocks, depth - 2) if dropout > 0 else 0
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = self.enc[0](x) + self.enc_bias[0].view(1, -1, 1, 1)
        for conv, norm in zip(self.enc[1:-1], self.enc_norm[1:]):
            h = F.leaky_relu(h, 0.2)        # the reference's in-place LeakyReLU: the skip carries it too
            skips.append(h)
            h = norm(conv(h))
        h = F.leaky_relu(h, 0.2)
        skips.append(h)
        h = F.relu(self.enc[-1](h) + self.enc_bias[1].view(1, -1, 1, 1))   # the innermost block's up-path ReLU
        for k, (conv, norm) in enumerate(zip(self.dec, self.dec_norm)):
            h = norm(conv(h))
            if 1 <= k <= self.dropout_blocks:
                h = self.drop(h)
            h = F.relu(torch.cat([skips.pop(), h], 1))   # the next block's ReLU runs on the concatenation
        return torch.tanh(self.to_img(h))


class PlainResnetBlock(nn.Module):
    """x + conv/IN/ReLU/conv/IN with reflection padding, in plain torch.nn.

    Args:
        c: channels.
    """

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.InstanceNorm2d(c),
                                  nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False),
                                  nn.InstanceNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def plain_resnet_generator(in_channels: int, out_channels: int, width: int, n_blocks: int) -> nn.Module:
    """fastgan's :class:`~fastgan.models.ResnetGenerator` as one ``nn.Sequential`` (same parameters, same order).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        width: ngf.
        n_blocks: residual blocks.
    """
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=False),
                               nn.InstanceNorm2d(width), nn.ReLU(True)]
    for i in range(N_DOWN):
        c = width * 2 ** i
        layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
    layers += [PlainResnetBlock(width * 2 ** N_DOWN) for _ in range(n_blocks)]
    for i in range(N_DOWN):
        c = width * 2 ** (N_DOWN - i)
        layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=False), nn.InstanceNorm2d(c // 2),
                   nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7, bias=True), nn.Tanh()]
    net = nn.Sequential(*layers)
    dcgan_init_(net)
    return net


def plain_patch_discriminator(in_channels: int, width: int, n_layers: int) -> nn.Module:
    """fastgan's :class:`~fastgan.models.PatchDiscriminator` as one ``nn.Sequential`` (same parameters, order).

    Args:
        in_channels: input channels.
        width: ndf.
        n_layers: strided layers.
    """
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, True)]
    c = width
    for n in range(1, n_layers + 1):
        c_out = width * min(2 ** n, 8)
        layers += [nn.Conv2d(c, c_out, 4, 2 if n < n_layers else 1, 1, bias=False), nn.InstanceNorm2d(c_out),
                   nn.LeakyReLU(0.2, True)]
        c = c_out
    layers.append(nn.Conv2d(c, 1, 4, 1, 1, bias=True))
    net = nn.Sequential(*layers)
    dcgan_init_(net)
    return net


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in order from a fastgan network to its plain twin (shapes checked).

    Args:
        src: the network to copy from.
        dst: the network to copy into (same parameter sizes in the same order).
    """
    ps, pd = list(src.parameters()), list(dst.parameters())
    if [p.numel() for p in ps] != [p.numel() for p in pd]:
        raise ValueError("the two networks have different parameters")
    with torch.no_grad():
        for a, b in zip(ps, pd):
            b.copy_(a.reshape(b.shape))


# ---------------------------------------------------------------------------- the reference's steps
class ReferenceImagePool:
    """The reference's image pool: a Python list, a Python coin per image.

    Args:
        size: images kept (0: pass-through).
    """

    def __init__(self, size: int):
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch mixing ``images`` and stored ones (the reference's rule).

        Args:
            images: (B, C, H, W) generated images.
        """
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


def _set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad = flag


class _GANLoss:
    """The reference's GANLoss: BCE-with-logits or MSE against a label tensor expanded to the prediction."""

    def __init__(self, mode: str, device: torch.device):
        self.loss = nn.BCEWithLogitsLoss() if mode == "vanilla" else nn.MSELoss()
        self.real = torch.tensor(1.0, device=device)
        self.fake = torch.tensor(0.0, device=device)

    def __call__(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        return self.loss(pred, (self.real if real else self.fake).expand_as(pred))


class ReferencePix2Pix:
    """pix2pix's training step as the reference runs it (see the module docstring).

    Args:
        G: the generator (plain U-Net).
        D: the discriminator (plain PatchGAN on input + output).
        sample: ``sample() -> (a, b)`` float batches on the device.
        lambda_l1: L1 weight.
    """

    def __init__(self, G: nn.Module, D: nn.Module, sample, lambda_l1: float = 100.0):
        self.G, self.D, self.sample, self.lambda_l1 = G, D, sample, lambda_l1
        device = next(G.parameters()).device
        self.opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS)
        self.gan, self.l1 = _GANLoss("vanilla", device), nn.L1Loss()

    def step(self) -> None:
        """One iteration."""
        real_a, real_b = self.sample()
        fake_b = self.G(real_a)
        _set_requires_grad([self.D], True)
        self.opt_d.zero_grad()
        loss_d_fake = self.gan(self.D(torch.cat((real_a, fake_b), 1).detach()), False)
        loss_d_real = self.gan(self.D(torch.cat((real_a, real_b), 1)), True)
        ((loss_d_fake + loss_d_real) * 0.5).backward()
        self.opt_d.step()
        _set_requires_grad([self.D], False)
        self.opt_g.zero_grad()
        loss_g = self.gan(self.D(torch.cat((real_a, fake_b), 1)), True) + self.l1(fake_b, real_b) * self.lambda_l1
        loss_g.backward()
        self.opt_g.step()


class ReferenceCycleGAN:
    """CycleGAN's training step as the reference runs it (see the module docstring).

    Args:
        G_AB: generator A -> B (plain ResNet).
        G_BA: generator B -> A.
        D_A: discriminator of domain A.
        D_B: discriminator of domain B.
        sample: ``sample() -> (a, b)`` float batches on the device.
        pool_size: images per history pool.
        lambda_cycle: cycle weight.
        lambda_identity: identity weight as a fraction of lambda_cycle.
    """

    def __init__(self, G_AB, G_BA, D_A, D_B, sample, pool_size: int = 50, lambda_cycle: float = 10.0,
                 lambda_identity: float = 0.5):
        self.G_AB, self.G_BA, self.D_A, self.D_B, self.sample = G_AB, G_BA, D_A, D_B, sample
        self.lam, self.lam_idt = lambda_cycle, lambda_identity
        device = next(G_AB.parameters()).device
        self.opt_g = torch.optim.Adam([*G_AB.parameters(), *G_BA.parameters()], lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam([*D_A.parameters(), *D_B.parameters()], lr=LR, betas=BETAS)
        self.gan, self.l1 = _GANLoss("lsgan", device), nn.L1Loss()
        self.pool_a, self.pool_b = ReferenceImagePool(pool_size), ReferenceImagePool(pool_size)

    def _d_loss(self, D, real, fake) -> torch.Tensor:
        return (self.gan(D(real), True) + self.gan(D(fake.detach()), False)) * 0.5

    def step(self) -> None:
        """One iteration."""
        a, b = self.sample()
        fake_b = self.G_AB(a)
        rec_a = self.G_BA(fake_b)
        fake_a = self.G_BA(b)
        rec_b = self.G_AB(fake_a)
        _set_requires_grad([self.D_A, self.D_B], False)
        self.opt_g.zero_grad()
        idt_b = self.G_AB(b)
        idt_a = self.G_BA(a)
        loss_g = (self.gan(self.D_B(fake_b), True) + self.gan(self.D_A(fake_a), True)
                  + self.l1(rec_a, a) * self.lam + self.l1(rec_b, b) * self.lam
                  + self.l1(idt_b, b) * self.lam * self.lam_idt + self.l1(idt_a, a) * self.lam * self.lam_idt)
        loss_g.backward()
        self.opt_g.step()
        _set_requires_grad([self.D_A, self.D_B], True)
        self.opt_d.zero_grad()
        self._d_loss(self.D_B, b, self.pool_b.query(fake_b)).backward()
        self._d_loss(self.D_A, a, self.pool_a.query(fake_a)).backward()
        self.opt_d.step()


def reference_from_task(task, seed: int = 0, generator: Optional[torch.Generator] = None):
    """The reference loop over a fastgan translation task's networks (weights copied) and data.

    Args:
        task: a :class:`~fastgan.tasks.Pix2Pix` or :class:`~fastgan.tasks.CycleGAN` (not yet trained).
        seed: seed of the reference's own random draws (Python's pool coins).
        generator: the generator its batches are drawn with (default: a new one seeded with ``seed``).

    Returns:
        ``(reference, networks)``: the :class:`ReferencePix2Pix` / :class:`ReferenceCycleGAN` and its
        networks in the task's ``networks()`` order.
    """
    cfg, data, dev = task.cfg, task.data, task.device
    gen = generator or torch.Generator(device=dev).manual_seed(seed)
    random.seed(seed)

    def sample():
        return data.sample(cfg.batch_size, gen)

    if cfg.task == "pix2pix":
        G = PlainUNet(data.channels_a, data.channels_b, task.G.depth, cfg.g_width, cfg.dropout,
                      task.G.dropout_blocks).to(dev)
        D = plain_patch_discriminator(data.channels_a + data.channels_b, cfg.d_width, cfg.d_layers).to(dev)
        nets = [G, D]
        ref = ReferencePix2Pix(G, D, sample, cfg.lambda_l1)
    else:
        gab = plain_resnet_generator(data.channels_a, data.channels_b, cfg.g_width, cfg.g_blocks).to(dev)
        gba = plain_resnet_generator(data.channels_b, data.channels_a, cfg.g_width, cfg.g_blocks).to(dev)
        da = plain_patch_discriminator(data.channels_a, cfg.d_width, cfg.d_layers).to(dev)
        db = plain_patch_discriminator(data.channels_b, cfg.d_width, cfg.d_layers).to(dev)
        nets = [gab, gba, da, db]
        ref = ReferenceCycleGAN(gab, gba, da, db, sample, cfg.pool_size, cfg.lambda_cycle, cfg.lambda_identity)
    for src, dst in zip(task.networks().values(), nets):
        copy_weights(src, dst)
    return ref, nets


# ---------------------------------------------------------------------------- fastgan bench presets
def synthetic_translation_data(ctx):
    """Paired (pix2pix) or unpaired (CycleGAN) data from the benchmark's synthetic images, on the device.

    Args:
        ctx: the benchmark context of a translation preset (``ctx.data``: uint8 (N, C, S, S)).
    """
    from .translation_data import Domains, TranslationData

    a = ctx.data
    b = a.roll(1, 0)   # any images: the step's work does not depend on their content
    names = [str(i) for i in range(len(a))]
    empty = Domains(a[:0].cpu(), b[:0].cpu(), [], [])
    return TranslationData(Domains(a, b, names, names), empty, paired=ctx.preset.task == "pix2pix",
                           name="synthetic", device=ctx.device)


def translation_config(ctx, **fields):
    """The TranslationConfig of a translation preset (fastgan's recipes), with ``fields`` on top.

    Args:
        ctx: the benchmark context.
        fields: config fields (mode, amp, channels_last, kernels).
    """
    from .tasks.translation import TranslationConfig

    p = ctx.preset
    return TranslationConfig(task=p.task, out=ctx.workdir, batch_size=ctx.batch_size, resolution=p.img_size,
                             g_width=p.width, d_width=p.width, g_blocks=p.depth, device=str(ctx.device),
                             progress=False, seed=0, **fields)


def split_networks(task) -> tuple[nn.Module, nn.Module]:
    """(generators, discriminators) of a translation task, each as one module (the benchmark's network signature).

    Args:
        task: a Pix2Pix or CycleGAN task.
    """
    nets = task.networks()
    return (nn.ModuleList([n for k, n in nets.items() if k.startswith("G")]),
            nn.ModuleList([n for k, n in nets.items() if k.startswith("D")]))


def reference_recipe(ctx):
    """``fastgan bench``'s plain recipe for a translation preset: the reference repository's loop, eager fp32.

    The networks start from the weights fastgan's eager recipe starts from.

    Args:
        ctx: the benchmark context.
    """
    from .benchmark_context import Built
    from .engine import EngineOptions
    from .train import Trainer

    cfg = translation_config(ctx, mode="eager", kernels="ref")
    trainer = Trainer(cfg, data=synthetic_translation_data(ctx), resume=False,
                      engine_options=EngineOptions(cudnn_benchmark=ctx.cudnn_benchmark))
    ref, nets = reference_from_task(trainer.task)
    gens = nn.ModuleList(nets[:1] if cfg.task == "pix2pix" else nets[:2])
    discs = nn.ModuleList(nets[1:] if cfg.task == "pix2pix" else nets[2:])

    def run(n: int) -> None:
        for _ in range(n):
            ref.step()

    return Built(run, ref.step, (gens, discs), {"loop": "pytorch-CycleGAN-and-pix2pix optimize_parameters",
                                                "optimizer": "Adam (torch default)"}, flops_key="reference")


__all__ = ["PlainUNet", "plain_resnet_generator", "plain_patch_discriminator", "copy_weights",
           "ReferencePix2Pix", "ReferenceCycleGAN", "ReferenceImagePool", "reference_from_task",
           "synthetic_translation_data", "translation_config", "split_networks", "reference_recipe"]
