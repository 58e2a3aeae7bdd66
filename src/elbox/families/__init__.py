"""Variational families q: Gaussians (diagonal, full-rank, low-rank), normalizing flows, mixtures and
discrete latents, global or amortized; ``FAMILIES`` maps their names to their classes.

A family turns a vector of raw parameters into a distribution. The raw parameters come from
an encoder (amortized, q(z | x): ``family(x)`` has batch shape ``[B]``) or are free parameters
of the family itself (global, one q(z) over all of a Bayesian model's parameters:
``family()`` has batch shape ``[]``). Event shape ``[D]`` either way.
"""

from .base import Family, StoppedAtDraws, center, draw_particles, draw_stopped, line_between, start_at, stop_gradient
from .base import _inverse_positive as _inverse_positive  # private, but tests and priors read it here
from .base import _positive as _positive
from .discrete import CategoricalDiscrete, Discrete, GumbelDiscrete, UniformDiscrete
from .flow import FLOWS, Flow, FlowNormal, FlowTransform
from .gaussian import DiagonalGaussian, DiagonalNormal, FullRankGaussian, FullRankNormal, LowRankGaussian, LowRankNormal
from .mixture import Mixture, MixtureNormal
from .sinharcsinh import SinhArcsinh, SinhArcsinhNormal
from .table import DISCRETE, FAMILIES, FAMILY_NAMES, check_family_name, family_names, make_family

__all__ = [
    "DISCRETE",
    "FAMILIES",
    "FAMILY_NAMES",
    "FLOWS",
    "CategoricalDiscrete",
    "DiagonalGaussian",
    "DiagonalNormal",
    "Discrete",
    "Family",
    "Flow",
    "FlowNormal",
    "FlowTransform",
    "FullRankGaussian",
    "FullRankNormal",
    "GumbelDiscrete",
    "LowRankGaussian",
    "LowRankNormal",
    "Mixture",
    "MixtureNormal",
    "SinhArcsinh",
    "SinhArcsinhNormal",
    "StoppedAtDraws",
    "UniformDiscrete",
    "center",
    "check_family_name",
    "draw_particles",
    "draw_stopped",
    "family_names",
    "line_between",
    "make_family",
    "start_at",
    "stop_gradient",
]
