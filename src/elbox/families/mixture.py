"""Mixture families: equal-weight mixtures of diagonal Gaussians with systematic, pathwise draws."""

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from ..catalogue import Option
from .base import _SCALAR, Family, _inverse_positive, _positive
from .gaussian import DiagonalNormal

__all__ = ["Mixture", "MixtureNormal"]


class MixtureNormal(MixtureSameFamily):
    """An equal-weight mixture of M diagonal Gaussians, q(z) = (1/M) sum_m N(z; mu_m, diag s_m^2),
    with reparameterized draws.

    A draw picks its component by systematic sampling: draw k of a batch element takes
    component (r + k) mod M, with one uniform offset r per element, then z = mu_m + s_m * eps.
    Each draw is therefore marginally a draw from q, so the mean of log w is an unbiased ELBO
    and the mean of w an unbiased p(x): every bound keeps its meaning. K draws spread evenly
    over the components, which lowers the variance. With equal weights the choice of
    component needs no gradient, so every gradient is pathwise; learned weights would need a
    score-function or implicit gradient for the discrete choice (Jankowiak & Obermeyer 2018).

    Shapes: ``loc``, ``scale`` ``[*B, M, D]``; draws ``[*S, *B, D]``.
    """

    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        weights = Categorical(logits=loc.new_zeros(loc.shape[:-1]), validate_args=False)
        super().__init__(weights, DiagonalNormal(loc, scale), validate_args=False)

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        components = self.component_distribution.base_dist
        loc, scale = components.loc, components.scale  # [*B, M, D]
        m, n = loc.shape[-2], math.prod(sample_shape)
        offset = torch.randint(m, self.batch_shape, device=loc.device)  # [*B]
        index = (offset + torch.arange(n, device=loc.device).reshape(n, *[1] * offset.ndim)) % m  # [n, *B]
        index = index[..., None, None].expand(n, *loc.shape[:-2], 1, loc.shape[-1])
        pick = lambda t: torch.take_along_dim(t.expand(n, *t.shape), index, dim=-2).squeeze(-2)  # noqa: E731
        z = pick(loc) + pick(scale) * torch.randn(n, *self.batch_shape, *self.event_shape, dtype=loc.dtype,
                                                  device=loc.device)  # fmt: skip
        return z.reshape(self._extended_shape(sample_shape))

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def stopped(self) -> "MixtureNormal":
        components = self.component_distribution.base_dist
        return MixtureNormal(components.loc.detach(), components.scale.detach())


class Mixture(Family):
    """An equal-weight mixture of K diagonal Gaussians (``MixtureNormal``): 2 K D raw parameters.

    For multi-modal posteriors. A global mixture starts with its means spread by N(0, 1/4).

    >>> q = Mixture(2, components=3)()
    >>> q.rsample((5,)).shape, q.log_prob(torch.zeros(2)).shape
    (torch.Size([5, 2]), torch.Size([]))
    """

    option = Option("K", "components", "K components")

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, components: int = 4, min_scale: float = 1e-4
    ) -> None:
        if components < 1:
            raise ValueError(f"a mixture needs at least one component, got {components}")
        self.components = components
        super().__init__(dim, encoder, min_scale=min_scale)

    def num_params(self) -> int:
        return 2 * self.components * self.dim

    def initial(self) -> Tensor:
        loc = 0.5 * torch.randn(self.components * self.dim)
        return torch.cat([loc, torch.full_like(loc, _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale = raw.unflatten(-1, (2, self.components, self.dim)).unbind(-3)
        return MixtureNormal(loc, _positive(raw_scale, self.min_scale))

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """Every component at loc with the marginal variances."""
        sd = covariance.diagonal().sqrt()
        return torch.cat([loc.repeat(self.components), self._raw_scale(sd).repeat(self.components)])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}"
