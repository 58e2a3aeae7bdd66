"""Variational families q(z | x): amortized distributions computed by an encoder."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["DiagonalGaussian", "DiagonalNormal"]


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

    def detach(self) -> "DiagonalNormal":
        """The same distribution with its parameters cut from the graph: ``log_prob`` then
        passes gradients to the point only (the STL and DReG estimators)."""
        return DiagonalNormal(self.base_dist.loc.detach(), self.base_dist.scale.detach())


class DiagonalGaussian(nn.Module):
    """Mean-field Gaussian q(z | x) = N(mu(x), diag(sigma(x)^2)), amortized by an encoder.

    The encoder maps x ``[B, X]`` to ``[B, 2D]``: the first half is mu, the second passes
    through sigma = softplus(.) + ``min_scale``. The softplus grows linearly where exp would
    overflow, and the floor keeps log q finite when an encoder drives a scale to zero.
    Draws use the reparameterization z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling,
    2014), so gradients flow through ``rsample``.

    Args:
        encoder: a module mapping ``[B, X]`` to ``[B, 2D]``.
        min_scale: the smallest standard deviation q may take.

    >>> q = DiagonalGaussian(nn.Linear(4, 6))(torch.zeros(5, 4))
    >>> q.batch_shape, q.event_shape, q.rsample((7,)).shape
    (torch.Size([5]), torch.Size([3]), torch.Size([7, 5, 3]))
    """

    def __init__(self, encoder: nn.Module, *, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.encoder = encoder
        self.min_scale = min_scale

    def forward(self, x: Tensor) -> Distribution:
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        return DiagonalNormal(loc, scale)
