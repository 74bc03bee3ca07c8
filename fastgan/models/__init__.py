"""Generators and discriminators: DCGAN for images, MLP for 2-D points, U-Net / ResNet / PatchGAN for translation.

Use :func:`build_models` to get the pair a :class:`~fastgan.TrainConfig`
asks for, and :func:`generator_from_arch` to rebuild a generator from the
class name and ``arch_config()`` stored in a checkpoint.
"""

from .build import POINT_Z_GAIN, build_models, discriminator_norm, generator_from_arch, set_kernel_impl
from .common import r1_in_input_units, score_real_and_fake
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .ensemble import MLPDiscriminatorEnsemble, MLPGeneratorEnsemble, build_point_ensemble
from .mlp import MLPDiscriminator, MLPGenerator
from .patchgan import PatchDiscriminator
from .resnet_generator import ResnetGenerator
from .unet import UNetGenerator

__all__ = [
    "DCGANGenerator", "DCGANDiscriminator", "MLPGenerator", "MLPDiscriminator",
    "build_models", "generator_from_arch", "discriminator_norm", "set_kernel_impl", "POINT_Z_GAIN",
    "MLPGeneratorEnsemble", "MLPDiscriminatorEnsemble", "build_point_ensemble",
    "score_real_and_fake", "r1_in_input_units",
    "UNetGenerator", "ResnetGenerator", "PatchDiscriminator",
]
