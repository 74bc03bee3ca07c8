"""Several independent point MLPs trained as one: a seed sweep in one process.

A 2-D GAN's MLPs are so small that on a CPU a training step costs about as
much in per-operation overhead as in arithmetic. :class:`MLPGeneratorEnsemble`
and :class:`MLPDiscriminatorEnsemble` stack the weights of ``E`` networks of
the same architecture and run them with batched matrix multiplies, so one
:class:`~fastgan.Trainer` step updates all ``E`` GANs for the overhead of one
(``bench/quality.py`` trains its seeds this way; ``--members 1`` trains them
one by one).

Rows are dealt to members in ``E`` contiguous blocks: with ``n = E * m`` rows,
member ``k`` gets rows ``k*m .. (k+1)*m - 1``. A Trainer with batch size
``E * B`` therefore gives every member its own ``B`` real and ``B`` fake
samples, and each member's updates are those of a standalone network:

* Its logits, losses and R1 gradients depend on its own rows and weights only.
* The Trainer's losses are means over all ``E * B`` rows, so the gradient
  reaching member ``k``'s weights is ``1 / E`` of its own loss's gradient;
  every weight passes through a gradient multiplier of ``E`` on the way in,
  which restores it exactly (first and second order, as R1 needs).
* Adam and the EMA work element by element, so stacked weights get the
  updates the separate ones would.

What members do not share with standalone runs is the random stream: the
Trainer draws every member's data and latents from its one generator.
:func:`build_point_ensemble` initialises member ``k`` exactly as a standalone
run with seed ``seeds[k]`` would, and :meth:`member` returns any member as an
ordinary :class:`~fastgan.models.MLPGenerator` / ``MLPDiscriminator``
(sampling, evaluation, export).

Supported: unconditional MLPs without packing, minibatch standard deviation
or spectral normalisation (the defaults for 2-D data).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan.kernels.activations import act_ref

from .build import build_models
from .mlp import MLPDiscriminator, MLPGenerator


class _GradTimes(torch.autograd.Function):
    """Identity forward; the incoming gradient is multiplied by ``k`` (differentiable, for R1)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, k: float) -> torch.Tensor:
        ctx.k = k
        return w.view_as(w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.k, None


class _MLPEnsemble(nn.Module):
    """Stacked weights of ``E`` same-architecture MLPs and their batched forward.

    Hidden weights are kept as (E, in, out) and the output weight as
    (E, out, in): the layouts whose batched gradients the CPU BLAS forms fastest
    (the output layer is 1 or 2 wide).
    """

    member_class: type = nn.Module

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        nets = list(nets)
        if not nets:
            raise ValueError(f"{type(self).__name__} needs at least one network")
        name = self.member_class.__name__
        for net in nets:
            if type(net) is not self.member_class:
                raise TypeError(f"{type(self).__name__} stacks {name}s, got {type(net).__name__}")
        arch = nets[0].arch_config()
        for k, net in enumerate(nets[1:], start=1):
            if net.arch_config() != arch:
                raise ValueError(f"{type(self).__name__}: member {k} is {net.arch_config()}, "
                                 f"member 0 is {arch}; every member needs the same architecture")
        unsupported = [key for key, plain in (("num_classes", 0), ("pack", 1), ("mbstd", False),
                                              ("spectral_norm", False)) if arch.get(key, plain) != plain]
        if unsupported:
            raise ValueError(f"{type(self).__name__} supports unconditional MLPs without packing, minibatch "
                             f"std or spectral norm; member 0 sets {', '.join(unsupported)}")
        self.members = len(nets)
        self.arch = dict(arch)
        self.act, self.alpha = nets[0].hidden[1].act, nets[0].hidden[1].alpha  # the members' BiasAct
        self.scale = float(arch["scale"])
        weights, biases = [], []
        for i in range(0, len(nets[0].hidden), 2):
            weights.append(nn.Parameter(torch.stack([n.hidden[i].weight.detach().t() for n in nets]).contiguous()))
            biases.append(nn.Parameter(torch.stack([n.hidden[i + 1].bias.detach() for n in nets])[:, None]
                                       .contiguous()))
        self.weights = nn.ParameterList(weights)          # (E, in, out) each
        self.biases = nn.ParameterList(biases)            # (E, 1, out) each
        self.out_weight = nn.Parameter(torch.stack([n.out.weight.detach() for n in nets]).contiguous())  # (E, o, in)
        self.out_bias = nn.Parameter(torch.stack([n.out.bias.detach() for n in nets])[:, None].contiguous())

    def extra_repr(self) -> str:
        return f"members={self.members}, arch={self.arch}"

    def _blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(n, d) rows -> (E, ceil(n / E), d) member blocks (zero-padded), and n."""
        if x.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects (rows, features) input, got shape {tuple(x.shape)}")
        n, E = x.shape[0], self.members
        m = -(-n // E)
        if m * E != n:  # sampling an arbitrary count: the last member gets fewer rows
            x = F.pad(x, (0, 0, 0, m * E - n))
        return x.reshape(E, m, x.shape[1]), n

    def _run(self, h: torch.Tensor) -> torch.Tensor:
        E = float(self.members)
        for w, b in zip(self.weights, self.biases):
            h = torch.baddbmm(_GradTimes.apply(b, E), h, _GradTimes.apply(w, E))
            # in place: the fresh product is needed by nothing else (docs/defaults.md)
            h = act_ref(h, self.act, self.alpha, inplace=True)
        w_out = _GradTimes.apply(self.out_weight, E).transpose(1, 2)
        return torch.baddbmm(_GradTimes.apply(self.out_bias, E), h, w_out)

    @torch.no_grad()
    def member(self, k: int) -> nn.Module:
        """Member ``k`` as a standalone network (a copy of its current weights, on this device)."""
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} out of range for an ensemble of {self.members}")
        with torch.random.fork_rng(devices=[]):  # building runs an init: leave the global RNG as it was
            net = self.member_class(**self.arch)
        net = net.to(device=self.out_weight.device, dtype=self.out_weight.dtype)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            net.hidden[2 * i].weight.copy_(w[k].t())
            net.hidden[2 * i + 1].bias.copy_(b[k, 0])
        net.out.weight.copy_(self.out_weight[k])
        net.out.bias.copy_(self.out_bias[k, 0])
        return net.train(self.training)


class MLPGeneratorEnsemble(_MLPEnsemble):
    """``E`` :class:`~fastgan.models.MLPGenerator` s (unconditional) run as one network.

    Args:
        generators: the members, all with the same ``arch_config()``; their
            current weights are copied in.
    """

    member_class = MLPGenerator

    def __init__(self, generators: Sequence[MLPGenerator]):
        super().__init__(generators)
        self.z_dim = int(self.arch["z_dim"])
        self.z_gain = float(self.arch["z_gain"])
        self.out_shape = (int(self.arch["out_dim"]),)
        self.value_range = None
        self.num_classes = 0

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate points: (n, z_dim) latents, dealt to members in contiguous blocks -> (n, out_dim)."""
        h, n = self._blocks(z.reshape(z.shape[0], -1))
        if self.z_gain != 1.0:
            h = h * self.z_gain
        x = self._run(h)
        x = x.reshape(-1, x.shape[-1])[:n]
        return x * self.scale if self.scale != 1.0 else x


class MLPDiscriminatorEnsemble(_MLPEnsemble):
    """``E`` :class:`~fastgan.models.MLPDiscriminator` s (unconditional, no pack, mbstd or spectral norm).

    Args:
        discriminators: the members, all with the same ``arch_config()``.
    """

    member_class = MLPDiscriminator
    # real and fake must reach D in separate calls: one call over cat([real, fake]) would deal
    # member 0 real rows of several members
    batch_independent = False

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Score points: (n, in_dim), dealt to members in contiguous blocks -> (n,) float logits."""
        h, n = self._blocks(x / self.scale if self.scale != 1.0 else x)
        return self._run(h).reshape(-1)[:n].float()


def build_point_ensemble(cfg, seeds: Sequence[int], point_scale: float = 1.0
                         ) -> tuple[MLPGeneratorEnsemble, MLPDiscriminatorEnsemble]:
    """The point G/D pair of a config for each seed, stacked into ensembles.

    Member ``k`` starts from exactly the weights a standalone run with
    ``seed=seeds[k]`` starts from (the Trainer seeds the global RNG with the
    run's seed, then calls :func:`~fastgan.models.build_models`). Train with
    ``batch_size = len(seeds) * B`` to give every member batches of ``B``.

    Args:
        cfg: a resolved config (``cfg.resolved(points=True)``), unconditional.
        seeds: one seed per member.
        point_scale: the data's coordinate scale (``GanData.scale``).

    Returns:
        (generator ensemble, discriminator ensemble), on the CPU.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("build_point_ensemble needs at least one seed")
    state = torch.get_rng_state()
    try:
        pairs = []
        for s in seeds:
            torch.manual_seed(s)
            pairs.append(build_models(cfg, channels=0, num_classes=0, points=True, point_scale=point_scale))
    finally:
        torch.set_rng_state(state)
    return MLPGeneratorEnsemble([g for g, _ in pairs]), MLPDiscriminatorEnsemble([d for _, d in pairs])
