"""Layers of vqkeras: quantizers and the convolutional building blocks."""

from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer
from vqkeras.layers.conv_decoder import ConvDecoder
from vqkeras.layers.conv_encoder import ConvEncoder
from vqkeras.layers.diagonal_gaussian import DiagonalGaussian
from vqkeras.layers.ema_vector_quantizer import EMAVectorQuantizer
from vqkeras.layers.gaussian_sampler import GaussianSampler
from vqkeras.layers.residual_block import ResidualBlock
from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer
from vqkeras.layers.sub_pixel_upsampling import SubPixelUpsampling
from vqkeras.layers.vector_quantizer import VectorQuantizer

__all__ = [
    "BaseVectorQuantizer",
    "ConvDecoder",
    "ConvEncoder",
    "DiagonalGaussian",
    "EMAVectorQuantizer",
    "GaussianSampler",
    "ResidualBlock",
    "ResidualVectorQuantizer",
    "SubPixelUpsampling",
    "VectorQuantizer",
]
