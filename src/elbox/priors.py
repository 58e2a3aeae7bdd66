"""Priors p(z) over the latent variables."""

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["StandardNormal"]


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``dim`` latent dimensions: batch shape ``[]``, event ``[dim]``.

    The location and scale are buffers, so the prior follows the model across devices
    and dtypes and holds no parameters.

    >>> StandardNormal(2)().sample((3,)).shape
    torch.Size([3, 2])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)
