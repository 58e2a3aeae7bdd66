"""Variational families q: diagonal, full-rank and low-rank Gaussians, global or amortized.

A family turns a vector of raw parameters into a distribution. The raw parameters come from
an encoder (amortized, q(z | x): ``family(x)`` has batch shape ``[B]``) or are free parameters
of the family itself (global, one q(z) over all of a Bayesian model's parameters:
``family()`` has batch shape ``[]``). Event shape ``[D]`` either way.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
)

from .networks import mlp

__all__ = [
    "FAMILIES",
    "DiagonalGaussian",
    "DiagonalNormal",
    "Family",
    "FullRankGaussian",
    "LowRankGaussian",
    "check_family_name",
    "make_family",
    "stop_gradient",
]


class DiagonalNormal(Independent):
    """N(loc, diag(scale^2)) over the last dimension: ``Independent(Normal(loc, scale), 1)``.

    A named type so that closed-form KL divergences can be registered for it
    (``priors`` registers the one to the standard normal). Batch shape ``loc.shape[:-1]``,
    event shape ``loc.shape[-1:]``.
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: Independent | None = None) -> "DiagonalNormal":
        shape = torch.Size(batch_shape) + self.event_shape
        return type(self)(self.base_dist.loc.expand(shape), self.base_dist.scale.expand(shape))


def stop_gradient(q: Distribution) -> Distribution:
    """``q`` with its parameters cut from the graph: ``log_prob`` then passes gradients to the
    point only (the STL and DReG estimators)."""
    if isinstance(q, DiagonalNormal):
        return DiagonalNormal(q.base_dist.loc.detach(), q.base_dist.scale.detach())
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach(), validate_args=False)
    if isinstance(q, LowRankMultivariateNormal):
        return LowRankMultivariateNormal(
            q.loc.detach(), q.cov_factor.detach(), q.cov_diag.detach(), validate_args=False
        )
    raise NotImplementedError(f"stop_gradient does not know {type(q).__name__}; add it to families.stop_gradient")


def _positive(raw: Tensor, floor: float) -> Tensor:
    """softplus(raw) + floor: grows linearly where exp would overflow; the floor keeps log q finite."""
    return F.softplus(raw) + floor


def _inverse_positive(value: float, floor: float) -> float:
    """The raw value that ``_positive`` maps to ``value``."""
    v = value - floor
    return v + math.log(-math.expm1(-v))


class Family(nn.Module):
    """A distribution family over R^D, amortized by ``encoder`` or global (free parameters).

    Subclasses say how many raw parameters they need (``num_params``), how to read a
    distribution off them (``distribution``) and where global parameters start
    (``initial``: a standard normal, so a global q starts at a common VI prior).

    Args:
        dim: D.
        encoder: a module mapping x ``[B, X]`` to ``[B, num_params]``; ``None`` for a global q.
        min_scale: the smallest standard deviation along any axis.
    """

    def __init__(self, dim: int, encoder: nn.Module | None = None, *, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.dim, self.encoder, self.min_scale = dim, encoder, min_scale
        self.raw = None if encoder is not None else nn.Parameter(self.initial())

    def num_params(self) -> int:
        raise NotImplementedError

    def initial(self) -> Tensor:
        raise NotImplementedError

    def distribution(self, raw: Tensor) -> Distribution:
        raise NotImplementedError

    def forward(self, x: Tensor | None = None) -> Distribution:
        if self.encoder is None:
            if x is not None:
                raise ValueError("a global family takes no input; give it an encoder to amortize it")
            return self.distribution(self.raw)
        return self.distribution(self.encoder(x))


class DiagonalGaussian(Family):
    """Mean-field Gaussian q = N(mu, diag(sigma^2)): 2D raw parameters (mu, then sigma's).

    sigma = softplus(.) + ``min_scale``. Draws use the reparameterization z = mu + sigma * eps,
    eps ~ N(0, I) (Kingma & Welling, 2014), so gradients flow through ``rsample``.

    >>> q = DiagonalGaussian(3, nn.Linear(4, 6))(torch.zeros(5, 4))
    >>> q.batch_shape, q.event_shape, q.rsample((7,)).shape
    (torch.Size([5]), torch.Size([3]), torch.Size([7, 5, 3]))
    >>> DiagonalGaussian(3)().batch_shape
    torch.Size([])
    """

    def num_params(self) -> int:
        return 2 * self.dim

    def initial(self) -> Tensor:
        return torch.cat([torch.zeros(self.dim), torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale = raw.chunk(2, dim=-1)
        return DiagonalNormal(loc, _positive(raw_scale, self.min_scale))


class FullRankGaussian(Family):
    """q = N(mu, L L^T) with L lower triangular, positive diagonal: D + D(D+1)/2 raw parameters.

    Can represent any Gaussian posterior, correlations included, at O(D^2) parameters and
    O(D^3) per density evaluation.

    >>> FullRankGaussian(3)().covariance_matrix
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]], grad_fn=<...>)
    """

    def num_params(self) -> int:
        return self.dim + self.dim * (self.dim + 1) // 2

    def initial(self) -> Tensor:
        raw = torch.zeros(self.num_params())
        rows, cols = torch.tril_indices(self.dim, self.dim)
        raw[self.dim :][rows == cols] = _inverse_positive(1.0, self.min_scale)
        return raw

    def distribution(self, raw: Tensor) -> Distribution:
        loc, entries = raw[..., : self.dim], raw[..., self.dim :]
        rows, cols = torch.tril_indices(self.dim, self.dim, device=raw.device)
        diagonal = rows == cols
        entries = torch.where(diagonal, _positive(entries, self.min_scale), entries)
        tril = raw.new_zeros(*raw.shape[:-1], self.dim, self.dim)
        tril[..., rows, cols] = entries
        return MultivariateNormal(loc, scale_tril=tril, validate_args=False)


class LowRankGaussian(Family):
    """q = N(mu, W W^T + diag(d^2)) with W of rank R: D (R + 2) raw parameters.

    Between the diagonal (R = 0) and the full-rank family: R directions of correlation at
    O(D R) cost. The default rank is about sqrt(D).

    >>> LowRankGaussian(4, rank=2)().rsample((3,)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, rank: int | None = None, min_scale: float = 1e-4
    ) -> None:
        self.rank = rank if rank is not None else max(1, round(math.sqrt(dim)))
        if not 1 <= self.rank <= dim:
            raise ValueError(f"the rank must be between 1 and the dimension {dim}, got {self.rank}")
        super().__init__(dim, encoder, min_scale=min_scale)

    def num_params(self) -> int:
        return self.dim * (self.rank + 2)

    def initial(self) -> Tensor:
        loc, factor = torch.zeros(self.dim), 0.01 * torch.randn(self.dim * self.rank)
        return torch.cat([loc, factor, torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        d, r = self.dim, self.rank
        loc, factor, raw_diag = raw[..., :d], raw[..., d : d + d * r], raw[..., d + d * r :]
        factor = factor.reshape(*raw.shape[:-1], d, r)
        diag = _positive(raw_diag, self.min_scale).pow(2)
        return LowRankMultivariateNormal(loc, factor, diag, validate_args=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}"


FAMILIES = ("diagonal", "fullrank", "lowrank")


def check_family_name(name: str) -> tuple[str, str]:
    """Split ``lowrank:R`` into ``("lowrank", "R")``; refuse names that are no family."""
    kind, _, option = name.partition(":")
    if kind not in FAMILIES or (option and (kind != "lowrank" or not option.isdigit())):
        raise ValueError(f"unknown family {name!r}: choose diagonal, fullrank, lowrank or lowrank:R")
    return kind, option


def make_family(name: str, dim: int, encoder_sizes: list[int] | None = None, *, activation: str = "tanh",
                min_scale: float = 1e-4) -> Family:  # fmt: skip
    """A family by name: ``diagonal``, ``fullrank`` or ``lowrank`` / ``lowrank:R``.

    With ``encoder_sizes`` ``[X, *hidden]`` it is amortized by an MLP whose output layer has
    the family's number of raw parameters; without, it is global.
    """
    kind, option = check_family_name(name)
    build = {
        "diagonal": lambda enc: DiagonalGaussian(dim, enc, min_scale=min_scale),
        "fullrank": lambda enc: FullRankGaussian(dim, enc, min_scale=min_scale),
        "lowrank": lambda enc: LowRankGaussian(dim, enc, rank=int(option) if option else None, min_scale=min_scale),
    }[kind]
    if encoder_sizes is None:
        return build(None)
    size = build(nn.Identity()).num_params()  # a placeholder encoder: nothing is initialised
    return build(mlp([*encoder_sizes, size], activation))
