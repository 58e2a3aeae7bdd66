"""Latent-variable models meeting one contract (``LatentVariableModel``): the VAE and the conditional
VAE, the VIB classifier, the two-layer VAE; ``MODEL_KINDS``, the one table from the kind a
``VAEConfig`` names to its class, and ``build_model``, which builds from it."""

from .base import LatentVariableModel
from .config import MODELS, NETWORKS, VAEConfig, latent_floats
from .hierarchical import Chain, ChainPrior, HierarchicalVAE
from .vae import VAE
from .vib import VIB

__all__ = [
    "MODELS",
    "MODEL_KINDS",
    "NETWORKS",
    "VAE",
    "VIB",
    "Chain",
    "ChainPrior",
    "HierarchicalVAE",
    "LatentVariableModel",
    "VAEConfig",
    "build_model",
    "latent_floats",
]

# config.model -> the class built from the config: the keys are config.MODELS, the names VAEConfig accepts
MODEL_KINDS: dict[str, type[LatentVariableModel]] = {
    "vae": VAE,
    "cvae": VAE,  # the VAE given a class label
    "vib": VIB,
    "hvae": HierarchicalVAE,
}


def build_model(config: VAEConfig) -> LatentVariableModel:
    """The model ``config.model`` names (``MODEL_KINDS``), built from a resolved config.

    >>> build_model(VAEConfig(data_dim=4, hidden=(8,), likelihood="bernoulli", model="hvae")).sizes
    (2, 1)
    """
    return MODEL_KINDS[config.model](config)
