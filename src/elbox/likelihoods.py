"""Likelihoods p(x | z): map a decoder's output to a distribution over one data point.

Each likelihood is an ``nn.Module`` whose ``forward`` takes the decoder output ``[..., X]``
and returns a distribution with event shape ``[X]``, and whose ``check`` refuses data
outside its support with a message that says what to do instead.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Binomial as _Binomial
from torch.distributions import Distribution, Independent, Normal, constraints

from .errors import ElboxError

__all__ = ["LIKELIHOODS", "Bernoulli", "Binomial", "Gaussian", "GreyLevels", "IndependentBernoulli", "make_likelihood"]


def _first_bad(bad: Tensor, x: Tensor) -> str:
    row, col = (int(i) for i in bad.nonzero()[0])
    return f"{int(bad.sum())} values, the first {x[row, col].item():.6g} at row {row}, column {col}"


def _check_finite(x: Tensor, name: str) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ElboxError(
            f"the {name} data hold non-finite values (NaN or infinity): {_first_bad(bad, x)}. "
            "Remove or impute them before training."
        )


class IndependentBernoulli(Independent):
    """Bernoulli(sigmoid(logits)) independently over the last dimension: event shape ``[X]``.

    Exactly ``Independent(Bernoulli(logits=logits), 1)`` with a fused ``log_prob``: one
    binary-cross-entropy kernel summed over the event, the sign applied to the ``[..]`` sum
    rather than to every pixel. Measured on the 784-pixel benchmark VAE, the per-pixel
    negation and its backward cost about 6% of a training step (docs/benchmarks.md).
    """

    def __init__(self, logits: Tensor) -> None:
        super().__init__(_Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: Independent | None = None) -> "IndependentBernoulli":
        return type(self)(self.base_dist.logits.expand(torch.Size(batch_shape) + self.event_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.base_dist.logits
        if value.shape != logits.shape:
            # x [B, X] against logits [K, B, X] is the common case; torch.broadcast_shapes
            # alone would cost 1% of a training step
            if value.dim() < logits.dim() and value.shape == logits.shape[logits.dim() - value.dim() :]:
                value = value.expand(logits.shape)
            else:
                logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class Bernoulli(nn.Module):
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(logits_i)) for binary data x in {0, 1}^X."""

    def forward(self, logits: Tensor) -> Distribution:
        return IndependentBernoulli(logits)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse anything but 0/1 values: a Bernoulli is no density for grey levels."""
        _check_finite(x, name)
        bad = (x != 0) & (x != 1)
        if bad.any():
            raise ElboxError(
                f"the Bernoulli likelihood needs binary data, but the {name} data hold grey "
                f"values ({_first_bad(bad, x)}); its log-likelihood would not be a probability. "
                "Binarize them (--binarize static or --binarize dynamic), or choose a likelihood "
                "for grey levels (--likelihood binomial or --likelihood gaussian)."
            )


class GreyLevels(Distribution):
    """x = k / n with k ~ Binomial(n, sigmoid(logits)): a pmf on the grids {0, 1/n, ..., 1}.

    The data keep their [0, 1] scale while ``log_prob`` is that of the count k, so the
    log-likelihood is a log-probability (no Jacobian: the map k -> k / n is a relabelling).
    Batch shape is that of ``logits``, event shape ``[]``.
    """

    arg_constraints = {"logits": constraints.real}  # noqa: RUF012 (torch's convention)
    support = constraints.unit_interval

    def __init__(self, total_count: int, logits: Tensor) -> None:
        self.total_count = total_count
        self.logits = logits
        super().__init__(logits.shape, validate_args=False)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        counts = _Binomial(self.total_count, logits=self.logits).sample(sample_shape)
        return counts / self.total_count

    def log_prob(self, value: Tensor) -> Tensor:
        n, k = self.total_count, value * self.total_count
        # log C(n, k) + k log p + (n - k) log(1 - p), with log p = -softplus(-logits)
        log_binom = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        return log_binom + k * self.logits - n * F.softplus(self.logits)


class Binomial(nn.Module):
    """p(x | z) = prod_i Binomial(n x_i; n, sigmoid(logits_i)) for grey levels x_i in {0, 1/n, ..., 1}.

    The natural likelihood of n + 1 grey levels (the embedded digits have 17): a proper pmf on
    exactly the data's support, so the ELBO is a bound on a log-probability in nats.

    Args:
        total_count: n, the number of grey levels minus one.
    """

    def __init__(self, total_count: int) -> None:
        super().__init__()
        if total_count < 1:
            raise ValueError(f"total_count must be a positive integer, got {total_count}")
        self.total_count = total_count

    def forward(self, logits: Tensor) -> Distribution:
        return Independent(GreyLevels(self.total_count, logits), 1)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse values that are not k / n for an integer k in 0..n."""
        _check_finite(x, name)
        k = x * self.total_count
        bad = (x < 0) | (x > 1) | ((k - k.round()).abs() > 1e-4)
        if bad.any():
            raise ElboxError(
                f"the binomial likelihood with {self.total_count} trials needs values k/"
                f"{self.total_count} for whole k in 0..{self.total_count}, but the {name} data "
                f"hold others ({_first_bad(bad, x)}). Use --likelihood gaussian for continuous "
                "data, or --levels to give the data's number of grey levels minus one."
            )

    def extra_repr(self) -> str:
        return f"total_count={self.total_count}"


class Gaussian(nn.Module):
    """p(x | z) = N(x; decoder(z), s^2 I) with a fixed scale s, or one learned for all pixels.

    Args:
        scale: a fixed standard deviation, or ``None`` to learn it (starting at 1) with
            ``min_scale`` as floor, so the density cannot grow without bound on data a
            decoder reproduces exactly.
    """

    def __init__(self, scale: float | None = None, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        if scale is not None and not scale > 0:
            raise ValueError(f"the Gaussian scale must be positive, got {scale}")
        self.min_scale = min_scale
        if scale is None:
            self.raw_scale = nn.Parameter(torch.tensor(0.5413))  # softplus(0.5413) + floor ~ 1
        else:
            self.raw_scale = None
            self.register_buffer("fixed_scale", torch.tensor(float(scale)))

    @property
    def scale(self) -> Tensor:
        return self.fixed_scale if self.raw_scale is None else F.softplus(self.raw_scale) + self.min_scale

    def forward(self, loc: Tensor) -> Distribution:
        return Independent(Normal(loc, self.scale, validate_args=False), 1)

    def check(self, x: Tensor, name: str = "training") -> None:
        """A Gaussian has all of R as support: only non-finite values are refused."""
        _check_finite(x, name)

    def extra_repr(self) -> str:
        return "scale=learned" if self.raw_scale is not None else f"scale={self.fixed_scale.item():g}"


LIKELIHOODS = ("bernoulli", "binomial", "gaussian")


def make_likelihood(name: str, *, levels: int | None = None, scale: float | None = None) -> nn.Module:
    """Build a likelihood by name: ``bernoulli``, ``binomial`` (with ``levels``) or ``gaussian``."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "binomial":
        if levels is None:
            raise ElboxError("the binomial likelihood needs the number of grey levels (--levels).")
        return Binomial(levels)
    if name == "gaussian":
        return Gaussian(scale)
    raise ElboxError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}.")
