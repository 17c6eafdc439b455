"""Models of vqkeras: keras.Model subclasses that train with compile + fit."""

from vqkeras.models.adversarial_klvae import AdversarialKLVAE
from vqkeras.models.autoencoder import Autoencoder
from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.models.code_prior import CodePrior
from vqkeras.models.klvae import KLVAE
from vqkeras.models.latent_diffusion import LatentDiffusion
from vqkeras.models.loss_terms_model import LossTermsModel
from vqkeras.models.maskgit_prior import MaskGITPrior
from vqkeras.models.pixelcnn_prior import PixelCNNPrior
from vqkeras.models.rqvae import RQVAE
from vqkeras.models.transformer_prior import TransformerPrior
from vqkeras.models.vae import VAE
from vqkeras.models.vqgan import VQGAN
from vqkeras.models.vqvae import VQVAE
from vqkeras.models.vqvae2 import VQVAE2

__all__ = [
    "AdversarialKLVAE",
    "Autoencoder",
    "AutoencoderModel",
    "CodePrior",
    "KLVAE",
    "LatentDiffusion",
    "LossTermsModel",
    "MaskGITPrior",
    "PixelCNNPrior",
    "RQVAE",
    "TransformerPrior",
    "VAE",
    "VQGAN",
    "VQVAE",
    "VQVAE2",
]
