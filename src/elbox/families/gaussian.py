"""Gaussian families: diagonal (mean-field), low-rank plus diagonal, and full-rank covariance."""

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from ..catalogue import Option
from .base import _SCALAR, Family, _inverse_positive, _positive, _standard_normal_log_prob

__all__ = [
    "DiagonalGaussian",
    "DiagonalNormal",
    "FullRankGaussian",
    "FullRankNormal",
    "LowRankGaussian",
    "LowRankNormal",
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

    def stopped(self) -> "DiagonalNormal":
        """The same q with loc and scale cut from the graph."""
        return DiagonalNormal(self.base_dist.loc.detach(), self.base_dist.scale.detach())

    def from_base(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z = loc + scale eps and log q(z) = log N(eps; 0, I) - sum_i log scale_i for base draws ``[*S, *B, D]``."""
        loc, scale = self.base_dist.loc, self.base_dist.scale
        return loc + scale * eps, _standard_normal_log_prob(eps) - scale.log().sum(-1)


class FullRankNormal(MultivariateNormal):
    """torch's ``MultivariateNormal`` built from ``scale_tril``, that can cut itself from the graph.

    Built as torch builds it, but for the batch shape: torch's ``__init__`` computes it with
    ``torch.broadcast_shapes``, whose first call imports sympy (0.5-0.7 s, a quarter of a whole
    ``elbox fit``); NumPy's ``broadcast_shapes`` gives the same shape.
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, validate_args: bool | None = False) -> None:
        if loc.dim() < 1 or scale_tril.dim() < 2:
            raise ValueError("loc must be at least one-dimensional and scale_tril at least two-dimensional")
        batch_shape = torch.Size(np.broadcast_shapes(tuple(scale_tril.shape[:-2]), tuple(loc.shape[:-1])))
        self.scale_tril = scale_tril.expand((*batch_shape, -1, -1))
        self.loc = loc.expand((*batch_shape, -1))
        Distribution.__init__(self, batch_shape, self.loc.shape[-1:], validate_args=validate_args)
        self._unbroadcasted_scale_tril = scale_tril

    def expand(self, batch_shape: torch.Size, _instance: MultivariateNormal | None = None) -> "FullRankNormal":
        shape = torch.Size(batch_shape)
        return FullRankNormal(self.loc.expand((*shape, -1)), self.scale_tril.expand((*shape, -1, -1)))

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        """``rsample``'s draws ``[*S, *B, D]`` (the same random numbers) and their log q ``[*S, *B]``."""
        eps = torch.empty(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device).normal_()
        return self.from_base(eps)

    def from_base(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z = loc + L eps and log q(z) = log N(eps; 0, I) - sum_i log L_ii for base draws eps ``[*S, *B, D]``,
        where ``log_prob(z)`` would solve L x = z - loc again."""
        z = self.loc + (self._unbroadcasted_scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        half_log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return z, _standard_normal_log_prob(eps) - half_log_det

    def stopped(self) -> "FullRankNormal":
        return FullRankNormal(self.loc.detach(), scale_tril=self.scale_tril.detach(), validate_args=False)


class LowRankNormal(LowRankMultivariateNormal):
    """torch's ``LowRankMultivariateNormal`` that can cut itself from the graph."""

    def stopped(self) -> "LowRankNormal":
        return LowRankNormal(self.loc.detach(), self.cov_factor.detach(), self.cov_diag.detach(), validate_args=False)


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

    def distribution(self, raw: Tensor) -> DiagonalNormal:
        loc, raw_scale = raw.chunk(2, dim=-1)
        return DiagonalNormal(loc, _positive(raw_scale, self.min_scale))

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """The marginal variances."""
        return torch.cat([loc, self._raw_scale(covariance.diagonal().sqrt())])


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

    def distribution(self, raw: Tensor) -> FullRankNormal:
        loc, entries = raw[..., : self.dim], raw[..., self.dim :]
        rows, cols = torch.tril_indices(self.dim, self.dim, device=raw.device)
        diagonal = rows == cols
        entries = torch.where(diagonal, _positive(entries, self.min_scale), entries)
        tril = raw.new_zeros(*raw.shape[:-1], self.dim, self.dim)
        tril[..., rows, cols] = entries
        return FullRankNormal(loc, scale_tril=tril, validate_args=False)

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """The Cholesky factor of the covariance: exact."""
        tril = torch.linalg.cholesky(covariance)
        rows, cols = torch.tril_indices(self.dim, self.dim)
        entries = tril[rows, cols]
        return torch.cat([loc, torch.where(rows == cols, self._raw_scale(entries), entries)])


class LowRankGaussian(Family):
    """q = N(mu, W W^T + diag(d^2)) with W of rank R: D (R + 2) raw parameters.

    Between the diagonal (R = 0) and the full-rank family: R directions of correlation at
    O(D R) cost. The default rank is about sqrt(D).

    >>> LowRankGaussian(4, rank=2)().rsample((3,)).shape
    torch.Size([3, 4])
    """

    option = Option("R", "rank", "rank R")

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

    def distribution(self, raw: Tensor) -> LowRankNormal:
        d, r = self.dim, self.rank
        loc, factor, raw_diag = raw[..., :d], raw[..., d : d + d * r], raw[..., d + d * r :]
        factor = factor.reshape(*raw.shape[:-1], d, r)
        diag = _positive(raw_diag, self.min_scale).pow(2)
        return LowRankNormal(loc, factor, diag, validate_args=False)

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """W W^T + diag(d^2) by iterated principal factors: W from the top R eigenpairs of
        covariance - diag(d^2), then d^2 = the marginal variances that W leaves, from the
        isotropic start of probabilistic PCA (Tipping & Bishop 1999); exact when the covariance
        has that form."""
        factor, diag = _principal_factors(covariance, self.rank)
        return torch.cat([loc, factor.reshape(-1), self._raw_scale(diag)])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}"


def _principal_factors(covariance: Tensor, rank: int, iterations: int = 50) -> tuple[Tensor, Tensor]:
    """W ``[D, R]`` and d ``[D]`` with W W^T + diag(d^2) ~ covariance, its diagonal kept (see ``raw_start``)."""
    values = torch.linalg.eigvalsh(covariance)  # ascending
    noise = values[:-rank].mean().expand(covariance.shape[0]) if rank < covariance.shape[0] else values.new_zeros(1)
    for _ in range(iterations):
        values, vectors = torch.linalg.eigh(covariance - torch.diag(noise.expand(covariance.shape[0])))
        factor = vectors[:, -rank:] * values[-rank:].clamp(min=0).sqrt()
        noise = (covariance.diagonal() - factor.pow(2).sum(-1)).clamp(min=0)
    return factor, noise.sqrt()
