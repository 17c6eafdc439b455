"""Layers of vqkeras: quantizers, the convolutional building blocks and the
LDM/taming autoencoder's encoder, decoder and blocks."""

from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer
from vqkeras.layers.conv_decoder import ConvDecoder
from vqkeras.layers.conv_encoder import ConvEncoder
from vqkeras.layers.diagonal_gaussian import DiagonalGaussian
from vqkeras.layers.diffusion_unet import DiffusionUNet, TimestepResnetBlock
from vqkeras.layers.ema_vector_quantizer import EMAVectorQuantizer
from vqkeras.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from vqkeras.layers.gated_pixelcnn_block import GatedPixelCNNBlock
from vqkeras.layers.gaussian_sampler import GaussianSampler
from vqkeras.layers.gumbel_quantizer import GumbelQuantizer
from vqkeras.layers.ldm_blocks import AttentionBlock, Downsample, ResnetBlock, Upsample
from vqkeras.layers.ldm_networks import (
    LDMDecoder,
    LDMDownLevel,
    LDMEncoder,
    LDMUpLevel,
    attention_levels_for,
)
from vqkeras.layers.lookup_free_quantizer import LookupFreeQuantizer
from vqkeras.layers.masked_conv2d import MaskedConv2D
from vqkeras.layers.patch_discriminator import PatchDiscriminator
from vqkeras.layers.perceptual_loss import PerceptualLoss
from vqkeras.layers.quantizer import Quantizer
from vqkeras.layers.residual_block import ResidualBlock
from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer
from vqkeras.layers.sub_pixel_upsampling import SubPixelUpsampling
from vqkeras.layers.transformer_block import TransformerBlock
from vqkeras.layers.vector_quantizer import VectorQuantizer

__all__ = [
    "AttentionBlock",
    "BaseVectorQuantizer",
    "ConvDecoder",
    "ConvEncoder",
    "DiagonalGaussian",
    "DiffusionUNet",
    "Downsample",
    "EMAVectorQuantizer",
    "FiniteScalarQuantizer",
    "GatedPixelCNNBlock",
    "GaussianSampler",
    "GumbelQuantizer",
    "LDMDecoder",
    "LDMDownLevel",
    "LDMEncoder",
    "LDMUpLevel",
    "LookupFreeQuantizer",
    "MaskedConv2D",
    "PatchDiscriminator",
    "PerceptualLoss",
    "Quantizer",
    "ResidualBlock",
    "ResidualVectorQuantizer",
    "ResnetBlock",
    "SubPixelUpsampling",
    "TimestepResnetBlock",
    "TransformerBlock",
    "Upsample",
    "VectorQuantizer",
    "attention_levels_for",
]
