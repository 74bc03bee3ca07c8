"""Fused GAN kernels: Triton fast paths with plain-PyTorch reference twins.

Every op has three layers: ``<op>_ref`` (plain PyTorch, the oracle, the CPU and
export path), ``@triton.jit`` kernels with host launchers, and the public op
whose ``impl`` argument picks one ("auto": Triton on CUDA tensors when Triton is
importable, otherwise the reference). ``use_impl`` / ``set_default_impl`` force
one implementation process-wide, e.g. ``with use_impl("ref"):`` around export or
a gradient penalty that needs gradients of gradients.

Public API::

    bias_act(x, b=None, act="linear", alpha=0.2, gain=None, clamp=None, dim=1, impl="auto")
    batch_norm_act(x, weight, bias, running_mean, running_var, training, momentum=0.1,
                   eps=1e-5, act="relu", alpha=0.2, impl="auto")
    gan_loss(logits, real, kind, impl="auto")
    instance_norm_act(x, weight=None, bias=None, eps=1e-5, act="relu", alpha=0.2, impl="auto")
    BiasAct, BatchNormAct, InstanceNormAct (nn.Module wrappers), use_impl, set_default_impl,
    record_launches (list the kernel launches of a model run on fake tensors)

Inside: ``dispatch`` (Triton import, implementation switch, launch path), ``ops``
(custom-op glue), ``tiles`` (tile sizes, TUNING, shared Triton helpers),
``activations`` (references and kernel twins), then one file per op, each reading
public op -> custom op(s) -> kernels (the two norms' kernels in ``batch_norm_kernels``
and ``instance_norm_kernels``).
"""

from .activations import ACTS
from .batch_norm_act import BatchNormAct, batch_norm_act, batch_norm_act_ref
from .bias_act import BiasAct, bias_act, bias_act_ref
from .dispatch import HAS_TRITON, TRITON_INTERPRETED, get_default_impl, record_launches, set_default_impl, use_impl
from .gan_loss import LOSS_KINDS, gan_loss, gan_loss_ref
from .instance_norm_act import InstanceNormAct, instance_norm_act, instance_norm_act_ref

__all__ = [
    "ACTS", "HAS_TRITON", "TRITON_INTERPRETED", "LOSS_KINDS",
    "bias_act", "bias_act_ref", "BiasAct",
    "batch_norm_act", "batch_norm_act_ref", "BatchNormAct",
    "gan_loss", "gan_loss_ref",
    "instance_norm_act", "instance_norm_act_ref", "InstanceNormAct",
    "use_impl", "set_default_impl", "get_default_impl", "record_launches",
]
