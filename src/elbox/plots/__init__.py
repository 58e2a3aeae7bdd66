"""Figures of a run: training curves, prior samples, reconstructions, the latent manifold, interpolations,
latent traversals and embeddings (``model``), and the figures of an evaluation (``evaluation``: KL per
dimension, bound tightness, the gap decomposition, rate and distortion); ``base`` holds what they
share (the Agg canvas, image grids, ``save``).
"""

from .base import save, spread, tile
from .evaluation import bound_tightness, gaps, kl_per_dimension, rate_distortion, write_evaluation_figures
from .model import (
    class_samples,
    curves,
    embedding,
    interpolation,
    manifold,
    reconstructions,
    samples,
    traversals,
    write_figures,
)

__all__ = [
    "bound_tightness",
    "class_samples",
    "curves",
    "embedding",
    "gaps",
    "interpolation",
    "kl_per_dimension",
    "manifold",
    "rate_distortion",
    "reconstructions",
    "samples",
    "save",
    "spread",
    "tile",
    "traversals",
    "write_evaluation_figures",
    "write_figures",
]
