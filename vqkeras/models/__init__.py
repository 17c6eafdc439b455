"""Models of vqkeras: keras.Model subclasses that train with compile + fit."""

from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.models.loss_terms_model import LossTermsModel
from vqkeras.models.vqvae import VQVAE

__all__ = ["AutoencoderModel", "LossTermsModel", "VQVAE"]
