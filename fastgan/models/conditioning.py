"""Conditioning the DCGAN networks on a per-sample vector (a text embedding, measured attributes, ...).

- In G, a small mapping network turns the vector ``v`` into ``w``; ``w``
  drives every batch norm through a learned per-sample scale and shift
  (conditional batch norm, as in BigGAN), initialised to zero so G starts as
  the unconditional network.
- In D, a projection term ``<psi(v), sum_hw h>`` is added to the logit
  (the projection discriminator of Miyato & Koyama 2018 with a learned
  embedding of the vector in place of a class embedding).

Normalisation and activations go through fastgan.kernels' BatchNormAct and
BiasAct, as in the unconditional networks; only the per-sample modulation
between them is plain elementwise PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from fastgan.kernels import BatchNormAct, BiasAct

MAPPING_DIM = 64   # width of G's mapping network (and of w)


def check_vectors(vectors: Optional[torch.Tensor], vector_dim: int, who: str) -> None:
    """Raise a clear error when a vector-conditioned network gets no vectors or vectors of the wrong size.

    Args:
        vectors: the second argument of forward.
        vector_dim: the network's vector size (0 = not vector-conditioned).
        who: class name for the message.
    """
    if vector_dim <= 0:
        return
    if vectors is None or vectors.ndim != 2 or vectors.shape[1] != vector_dim or not vectors.is_floating_point():
        got = "None" if vectors is None else f"{vectors.dtype} {tuple(vectors.shape)}"
        raise ValueError(f"{who} is conditioned on {vector_dim}-dim vectors; pass float (B, {vector_dim}), got {got}")


class VectorMapping(nn.Module):
    """Two fully connected layers with LeakyReLU: (B, vector_dim) -> (B, out_dim).

    Args:
        vector_dim: size of the conditioning vectors.
        out_dim: size of ``w``.
    """

    def __init__(self, vector_dim: int, out_dim: int = MAPPING_DIM):
        super().__init__()
        self.fc1 = nn.Linear(vector_dim, out_dim, bias=False)
        self.act1 = BiasAct(out_dim, act="lrelu", alpha=0.2)
        self.fc2 = nn.Linear(out_dim, out_dim, bias=False)
        self.act2 = BiasAct(out_dim, act="lrelu", alpha=0.2)

    def reset_parameters(self) -> None:
        """torch's default initialisation of the linear layers, zero biases (DCGAN's N(0, 0.02) would shrink w)."""
        for fc, act in ((self.fc1, self.act1), (self.fc2, self.act2)):
            fc.reset_parameters()
            nn.init.zeros_(act.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, vector_dim) -> (B, out_dim)."""
        return self.act2(self.fc2(self.act1(self.fc1(v))))


class ConditionalBatchNormAct(nn.Module):
    """Batch norm whose scale and shift are modulated per sample by ``w``, then an activation.

    ``act(BN(x) * (1 + gamma(w)) + beta(w))`` with ``gamma`` and ``beta`` one
    linear layer initialised to zero, so it starts as the plain ``BatchNormAct``.

    Args:
        num_features: channels C.
        w_dim: size of ``w``.
        act: activation after the modulation.
    """

    def __init__(self, num_features: int, w_dim: int, act: str = "relu"):
        super().__init__()
        self.norm = BatchNormAct(num_features, act="linear")
        self.modulation = nn.Linear(w_dim, 2 * num_features)
        self.act = BiasAct(None, act=act)

    def reset_modulation(self) -> None:
        """Zero the modulation (call after a network-wide initialisation)."""
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features and (B, w_dim) -> (B, C, H, W)."""
        gamma, beta = self.modulation(w).to(x.dtype).chunk(2, dim=1)          # (B, C) each
        h = self.norm(x) * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return self.act(h)


class VectorProjection(nn.Module):
    """D's embedding ``psi(v)`` of the vector for the projection term: (B, vector_dim) -> (B, channels).

    Args:
        vector_dim: size of the conditioning vectors.
        channels: channels of the features it is projected onto.
    """

    def __init__(self, vector_dim: int, channels: int):
        super().__init__()
        self.fc1 = nn.Linear(vector_dim, channels, bias=False)
        self.act = BiasAct(channels, act="lrelu", alpha=0.2)
        self.fc2 = nn.Linear(channels, channels, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, vector_dim) -> (B, channels)."""
        return self.fc2(self.act(self.fc1(v)))
