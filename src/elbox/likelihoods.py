"""Likelihoods p(x | z): map a decoder's output to a distribution over one data point.

Each likelihood is an ``nn.Module`` whose ``forward`` takes the decoder output ``[..., m X]``
(m = its ``outputs_per_dim``: 1 for most, 2 for a location and a scale per pixel, n + 1 for a
categorical over n + 1 levels) and returns a distribution with event shape ``[X]``, and whose
``check`` refuses data outside its support with a message that says what to do instead.
"""

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Binomial as _Binomial
from torch.distributions import Categorical as _Categorical
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli
from torch.distributions import Distribution, Independent, Normal, constraints

from .errors import ElboxError

__all__ = [
    "COLUMN_KINDS",
    "GRID_LIKELIHOODS",
    "LIKELIHOODS",
    "TABLE",
    "UNBOUNDED",
    "Bernoulli",
    "Binomial",
    "Categorical",
    "CategoricalLevels",
    "ContinuousBernoulli",
    "DiscretizedLogistic",
    "DiscretizedLogisticLevels",
    "Gaussian",
    "GreyLevels",
    "IndependentBernoulli",
    "Likelihood",
    "NegativeBinomial",
    "NegativeBinomialMean",
    "PixelGaussian",
    "Poisson",
    "StableContinuousBernoulli",
    "Table",
    "TableDistribution",
    "ZeroInflatedNegativeBinomial",
    "make_likelihood",
]


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


class Likelihood(nn.Module):
    """What a likelihood of the table ``LIKELIHOODS`` declares: whether it is a pmf on the grid
    k / levels (``grid``: it needs ``levels``) and how ``make_likelihood``'s settings build it."""

    grid: ClassVar[bool] = False
    outputs_per_dim: int = 1  # decoder outputs per data dimension (a location and a scale: 2)

    @classmethod
    def from_settings(cls, *, levels: int | None, scale: float | None, dim: int | None) -> "Likelihood":
        """The likelihood that ``make_likelihood``'s settings give: ``levels`` for a grid pmf, else none."""
        return cls(levels) if cls.grid else cls()

    def widths(self, dim: int) -> tuple[int, int]:
        """What the encoder reads and what the decoder outputs, for data of ``dim`` dimensions: the data
        themselves, and ``outputs_per_dim`` values per dimension (a table says its own, ``Table``)."""
        return dim, dim * self.outputs_per_dim

    def features(self, x: Tensor) -> Tensor:
        """What the encoder reads of data ``x`` ``[..., dim]``: the data themselves (a table: ``Table``)."""
        return x


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


class Bernoulli(Likelihood):
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(logits_i)) for binary data x in {0, 1}^X."""

    outputs_per_dim = 1

    def forward(self, logits: Tensor) -> Distribution:
        return IndependentBernoulli(logits)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse anything but 0/1 values: a Bernoulli is no density for grey levels."""
        _check_finite(x, name)
        if (negative := x < 0).any():  # not grey levels: binarizing them is no fix
            raise ElboxError(
                f"the Bernoulli likelihood needs binary data (0 or 1), but the {name} data hold negative values "
                f"({_first_bad(negative, x)}). Give 0/1 data; for data on another scale, use --likelihood gaussian "
                "(or rescale them to [0, 1] and binarize them with --binarize static)."
            )
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


class Binomial(Likelihood):
    """p(x | z) = prod_i Binomial(n x_i; n, sigmoid(logits_i)) for grey levels x_i in {0, 1/n, ..., 1}.

    The natural likelihood of n + 1 grey levels (the embedded digits have 17): a proper pmf on
    exactly the data's support, so the ELBO is a bound on a log-probability in nats.

    Args:
        total_count: n, the number of grey levels minus one.
    """

    outputs_per_dim = 1

    grid = True  # a pmf on k / levels, built from levels

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


class Gaussian(Likelihood):
    """p(x | z) = N(x; decoder(z), s^2 I) with a fixed scale s, or one learned for all pixels.

    Args:
        scale: a fixed standard deviation, or ``None`` to learn it (starting at 1) with
            ``min_scale`` as floor, so the density cannot grow without bound on data a
            decoder reproduces exactly.
    """

    outputs_per_dim = 1

    @classmethod
    def from_settings(cls, *, levels: int | None, scale: float | None, dim: int | None) -> "Likelihood":
        return cls(scale)

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


# ------------------------------------------------------------------ likelihoods for grey levels and pixels
#
# A likelihood that needs m parameters per data dimension says so in ``outputs_per_dim``; the
# decoder then outputs ``[..., m * X]``, parameter-major: parameter j of dimension i is at
# j * X + i (``_split``), which is the channel order of a convolutional decoder's output
# flattened, so an MLP and a conv decoder feed the same likelihood.


def _split(out: Tensor, m: int) -> Tensor:
    """``[..., m * X] -> [..., m, X]``: the m parameters of every data dimension."""
    return out.unflatten(-1, (m, out.shape[-1] // m))


def _check_grid(x: Tensor, levels: int, name: str, what: str) -> None:
    """Refuse values that are not k / levels for a whole k in 0..levels."""
    _check_finite(x, name)
    k = x * levels
    bad = (x < 0) | (x > 1) | ((k - k.round()).abs() > 1e-4)
    if bad.any():
        raise ElboxError(
            f"the {what} likelihood over {levels + 1} grey levels needs values k/{levels} for whole k in "
            f"0..{levels}, but the {name} data hold others ({_first_bad(bad, x)}). Scale integer data "
            f"0..{levels} to [0, 1] (divide by {levels}), give the data's number of grey levels minus one "
            "with --levels, or use --likelihood continuous-bernoulli or gaussian for continuous data."
        )


def _log_tanh_half(a: Tensor) -> Tensor:
    """log tanh(a / 2) for a > 0, without overflow: log(1 - e^-a) - log(1 + e^-a)."""
    return torch.log(-torch.expm1(-a)) - F.softplus(-a)


class StableContinuousBernoulli(_ContinuousBernoulli):
    """torch's ``ContinuousBernoulli`` with its normaliser, mean and inverse cdf written in the logits.

    With eta = logit(lambda), the normalising constant C (Loaiza-Ganem & Cunningham 2019, eq. 7)
    and the mean are

        C(eta) = eta / tanh(eta / 2),      E[x] = 1 / (1 - e^-eta) - 1 / eta,

    evaluated by Taylor series for |eta| < 0.1 (C ~ 2 e^(eta^2/12 - 7 eta^4/1440), E[x] ~ 1/2 +
    eta/12 - eta^3/720). torch computes them from lambda = sigmoid(eta), which in float32 is
    exactly 1 from eta ~ 17 on: log C becomes infinite there, while a decoder fitting pixels
    that are exactly 1 drives its logits that far. Batch shape that of ``logits``, event ``[]``.
    """

    _TAYLOR = 0.1

    def __init__(self, logits: Tensor) -> None:
        super().__init__(logits=logits, validate_args=False)

    def _cont_bern_log_norm(self) -> Tensor:
        eta = self.logits
        a = eta.abs().clamp(min=self._TAYLOR)  # the far branch, kept finite where it is not used
        exact = a.log() - _log_tanh_half(a)
        x2 = eta.pow(2)
        taylor = math.log(2.0) + x2 / 12 - 7 * x2.pow(2) / 1440
        return torch.where(eta.abs() < self._TAYLOR, taylor, exact)

    @property
    def mean(self) -> Tensor:
        eta = self.logits
        safe = torch.where(eta.abs() < self._TAYLOR, self._TAYLOR, eta)
        exact = -1 / torch.expm1(-safe) - 1 / safe
        taylor = 0.5 + eta / 12 - eta.pow(3) / 720
        return torch.where(eta.abs() < self._TAYLOR, taylor, exact)

    def icdf(self, value: Tensor) -> Tensor:
        """x with e^(eta x) = 1 - u + u e^eta, solved on the side where e^eta cannot overflow."""
        eta = self.logits
        safe = torch.where(eta.abs() < 1e-3, 1e-3, eta)
        positive = 1 + torch.log(value + (1 - value) * torch.exp(-safe.clamp(min=0))) / safe
        negative = torch.log1p(value * torch.expm1(safe.clamp(max=0))) / safe
        taylor = value + eta * value * (1 - value) / 2
        return torch.where(eta.abs() < 1e-3, taylor, torch.where(eta > 0, positive, negative)).clamp(0, 1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        u = torch.rand(self._extended_shape(sample_shape), dtype=self.logits.dtype, device=self.logits.device)
        return self.icdf(u)


class ContinuousBernoulli(Likelihood):
    """p(x | z) = prod_i CB(x_i; sigmoid(logits_i)) for grey values x_i in [0, 1].

    The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) is the Bernoulli's
    "log-likelihood" made a density on [0, 1]: CB(x; lambda) = C(lambda) lambda^x (1 -
    lambda)^(1 - x). The Bernoulli's cross-entropy on grey values lacks log C(lambda) >= log 2
    per pixel, so it is no log-likelihood of anything; this one is. Note that its mean is not
    lambda (``StableContinuousBernoulli.mean``). Decoder output ``[..., X]`` (logits).
    """

    outputs_per_dim = 1

    def forward(self, logits: Tensor) -> Distribution:
        return Independent(StableContinuousBernoulli(logits), 1, validate_args=False)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse values outside [0, 1]."""
        _check_finite(x, name)
        bad = (x < 0) | (x > 1)
        if bad.any():
            raise ElboxError(
                f"the continuous Bernoulli likelihood is a density on [0, 1], but the {name} data hold "
                f"values outside it ({_first_bad(bad, x)}). Rescale the data to [0, 1], or use "
                "--likelihood gaussian for unbounded data."
            )


class PixelGaussian(Likelihood):
    """p(x | z) = prod_i N(x_i; mu_i(z), sigma_i(z)^2): a scale per pixel, predicted with its mean.

    The decoder outputs ``[..., 2 X]``: the means, then raw scales, sigma = softplus(raw) +
    ``min_scale``. The floor bounds the density (a pixel the decoder reproduces exactly would
    otherwise let sigma -> 0 and log p -> infinity); a pixel that is constant in the data (the
    borders of digits) sits at it, so compare such models by their ELBO with care.

    Args:
        min_scale: the smallest standard deviation.
    """

    outputs_per_dim = 2

    def __init__(self, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.min_scale = min_scale

    def forward(self, out: Tensor) -> Distribution:
        loc, raw_scale = _split(out, 2).unbind(-2)
        return Independent(Normal(loc, F.softplus(raw_scale) + self.min_scale, validate_args=False), 1)

    def check(self, x: Tensor, name: str = "training") -> None:
        """A Gaussian has all of R as support: only non-finite values are refused."""
        _check_finite(x, name)

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale:g}"


class DiscretizedLogisticLevels(Distribution):
    """A logistic(loc, scale) rounded to the grid {0, 1/n, ..., 1}; the edge levels take the tails.

    The likelihood of PixelCNN++ (Salimans et al. 2017) and of IAF's CIFAR model (Kingma et
    al. 2016), on data in [0, 1] with n + 1 levels (n = 255: 256 bins of width 1/255):

        P(k / n) = F((k + 1/2) / n) - F((k - 1/2) / n),  F(t) = sigmoid((t - loc) / scale),

    with F(-1/(2n)) read as 0 and F(1 + 1/(2n)) as 1. The difference is taken in log space,
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) - softplus(b) + log(1 - e^(b - a)), which
    stays exact where both are near 0 or 1 (PixelCNN++ switches to the density there).
    Batch shape that of ``loc``, event ``[]``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}  # noqa: RUF012 (torch's)
    support = constraints.unit_interval

    def __init__(self, loc: Tensor, scale: Tensor, levels: int) -> None:
        self.loc, self.scale, self.levels = loc, scale, levels
        super().__init__(loc.shape, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        n, half = self.levels, 0.5 / self.levels
        upper = (value + half - self.loc) / self.scale
        lower = (value - half - self.loc) / self.scale
        inside = F.logsigmoid(upper) - F.softplus(lower) + torch.log(-torch.expm1(-1 / (n * self.scale)))
        k = (value * n).round()
        return torch.where(k <= 0, F.logsigmoid(upper), torch.where(k >= n, F.logsigmoid(-lower), inside))

    @property
    def mean(self) -> Tensor:
        # E[k] = sum_{j=1..n} P(k >= j) = sum_j (1 - F((j - 1/2) / n)); a loop keeps memory at [...]
        n, total = self.levels, torch.zeros_like(self.loc)
        for j in range(1, n + 1):
            total = total + torch.sigmoid((self.loc - (j - 0.5) / n) / self.scale)
        return total / n

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            u = torch.rand(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(1e-6, 1 - 1e-6)
            t = self.loc + self.scale * torch.logit(u)
            return (t * self.levels).round().clamp(0, self.levels) / self.levels


class DiscretizedLogistic(Likelihood):
    """p(x | z) = prod_i DiscretizedLogistic(x_i; mu_i(z), s_i(z)) over n + 1 grey levels of [0, 1].

    The decoder outputs ``[..., 2 X]``: the locations (in data units), then raw scales, s =
    softplus(raw) + 1e-4 / n. A pmf: the log-likelihood is at most 0, in nats per image.

    Args:
        levels: n, the number of grey levels minus one (255 for 8-bit images).
    """

    outputs_per_dim = 2

    grid = True  # a pmf on k / levels, built from levels

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels}")
        self.levels = levels

    def forward(self, out: Tensor) -> Distribution:
        loc, raw_scale = _split(out, 2).unbind(-2)
        scale = F.softplus(raw_scale) + 1e-4 / self.levels
        return Independent(DiscretizedLogisticLevels(loc, scale, self.levels), 1, validate_args=False)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse values that are not k / n for a whole k in 0..n."""
        _check_grid(x, self.levels, name, "discretized logistic")

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class CategoricalLevels(Distribution):
    """x = k / n with k ~ Categorical(softmax(logits)): any pmf on the grid {0, 1/n, ..., 1}.

    ``logits`` ``[..., n + 1]``; batch shape ``logits.shape[:-1]``, event ``[]``.
    """

    arg_constraints = {"logits": constraints.real_vector}  # noqa: RUF012 (torch's convention)
    support = constraints.unit_interval

    def __init__(self, logits: Tensor) -> None:
        self.logits, self.levels = logits, logits.shape[-1] - 1
        super().__init__(logits.shape[:-1], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        k = (value * self.levels).round().long()
        shape = torch.broadcast_shapes(k.shape, self.batch_shape)
        logits = self.logits.expand(*shape, self.levels + 1)
        picked = logits.gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1)
        return picked - logits.logsumexp(-1)

    @property
    def mean(self) -> Tensor:
        grid = torch.linspace(0, 1, self.levels + 1, dtype=self.logits.dtype, device=self.logits.device)
        return self.logits.softmax(-1) @ grid

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        k = _Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
        return k.to(self.logits.dtype) / self.levels


class Categorical(Likelihood):
    """p(x | z) = prod_i Categorical(n x_i; softmax(logits_i)) over n + 1 grey levels of [0, 1].

    The most flexible pmf per pixel (van den Oord et al. 2016 use it with n = 255), at n + 1
    decoder outputs per pixel: ``[..., (n + 1) X]``, level-major (``_split``).

    Args:
        levels: n, the number of grey levels minus one (255 for 8-bit images).
    """

    grid = True  # a pmf on k / levels, built from levels

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels}")
        self.levels = levels
        self.outputs_per_dim = levels + 1

    def forward(self, out: Tensor) -> Distribution:
        logits = _split(out, self.levels + 1).transpose(-1, -2)  # [..., X, n + 1]
        return Independent(CategoricalLevels(logits), 1, validate_args=False)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse values that are not k / n for a whole k in 0..n."""
        _check_grid(x, self.levels, name, "categorical")

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


# ------------------------------------------------------------------ counts, and tables of mixed columns


class NegativeBinomialMean(Distribution):
    """The negative binomial by its mean mu and inverse dispersion theta (scvi-tools' NB), with an
    optional zero-inflation: a pmf on the counts 0, 1, 2, ...

        NB(x; mu, theta) = Gamma(x + theta) / (Gamma(theta) x!) (theta / (theta + mu))^theta
                           (mu / (theta + mu))^x,        mean mu, variance mu + mu^2 / theta,

    the Gamma(theta, theta / mu)-mixture of Poissons. With ``zero_logits`` (pi = sigmoid) it is
    the zero-inflated NB of scVI (Lopez et al. 2018): P(0) = pi + (1 - pi) NB(0), P(x > 0) =
    (1 - pi) NB(x). Batch shape that of ``log_mean``, event ``[]``.
    """

    arg_constraints = {"log_mean": constraints.real, "theta": constraints.positive}  # noqa: RUF012 (torch's)
    support = constraints.nonnegative_integer

    def __init__(self, log_mean: Tensor, theta: Tensor, zero_logits: Tensor | None = None) -> None:
        self.log_mean, self.zero_logits = log_mean, zero_logits
        self.theta = theta.expand_as(log_mean)
        super().__init__(log_mean.shape, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        theta = self.theta
        log_theta_mu = torch.logaddexp(theta.log(), self.log_mean)  # log(theta + mu)
        nb = (
            torch.lgamma(value + theta) - torch.lgamma(theta) - torch.lgamma(value + 1)
            + theta * (theta.log() - log_theta_mu) + value * (self.log_mean - log_theta_mu)
        )  # fmt: skip
        if self.zero_logits is None:
            return nb
        pi = self.zero_logits
        zero = torch.logaddexp(F.logsigmoid(pi), F.logsigmoid(-pi) + theta * (theta.log() - log_theta_mu))
        return torch.where(value == 0, zero, F.logsigmoid(-pi) + nb)

    @property
    def mean(self) -> Tensor:
        mu = self.log_mean.exp()
        return mu if self.zero_logits is None else torch.sigmoid(-self.zero_logits) * mu

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            theta, mu = self.theta.expand(shape), self.log_mean.exp().expand(shape)
            rate = torch.distributions.Gamma(theta, theta / mu.clamp(min=1e-30)).sample()
            x = torch.poisson(rate)
            if self.zero_logits is not None:
                x = torch.where(torch.rand(shape, device=x.device) < torch.sigmoid(self.zero_logits), 0.0, x)
            return x


class BetaBinomialMean(Distribution):
    """The beta-binomial by its number of trials n, mean probability p = sigmoid(logit) and concentration
    theta: a pmf on 0..n, the Beta(p theta, (1 - p) theta)-mixture of Binomial(n, .),

        BB(x; n, a, b) = C(n, x) B(x + a, n - x + b) / B(a, b),   a = p theta, b = (1 - p) theta,
        mean n p, variance n p (1 - p) (n + theta) / (1 + theta);

    the binomial as theta -> infinity. Bounded counts with over-dispersion (a score out of n,
    pixels on in a block): what the negative binomial is to the Poisson. Batch shape that of ``logits``.
    """

    arg_constraints = {"logits": constraints.real, "theta": constraints.positive}  # noqa: RUF012 (torch's)

    def __init__(self, total: Tensor, logits: Tensor, theta: Tensor) -> None:
        self.total, self.logits = total.expand_as(logits), logits
        self.theta = theta.expand_as(logits)
        super().__init__(logits.shape, validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.total)

    def log_prob(self, value: Tensor) -> Tensor:
        n, theta = self.total, self.theta
        a, b = torch.sigmoid(self.logits) * theta, torch.sigmoid(-self.logits) * theta
        return (torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
                + torch.lgamma(value + a) + torch.lgamma(n - value + b) - torch.lgamma(n + theta)
                + torch.lgamma(theta) - torch.lgamma(a) - torch.lgamma(b))  # fmt: skip

    @property
    def mean(self) -> Tensor:
        return self.total * torch.sigmoid(self.logits)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            a = (torch.sigmoid(self.logits) * self.theta).expand(shape)
            b = (torch.sigmoid(-self.logits) * self.theta).expand(shape)
            p = torch.distributions.Beta(a, b).sample()
            return torch.distributions.Binomial(self.total.expand(shape), p).sample()


def _check_counts(x: Tensor, name: str, what: str) -> None:
    bad = ~torch.isnan(x) & ((x < 0) | (x != x.round()) | torch.isinf(x))
    if bad.any():
        raise ElboxError(f"the {what} likelihood is a pmf on the counts 0, 1, 2, ..., but the {name} data hold "
                         f"other values ({_first_bad(bad, x)}). Use it for whole numbers >= 0 only, or choose "
                         "--likelihood gaussian.")  # fmt: skip


class Poisson(Likelihood):
    """p(x | z) = prod_i Poisson(x_i; exp(eta_i)) for counts x_i in {0, 1, 2, ...}; decoder output ``[..., X]``."""

    outputs_per_dim = 1

    def forward(self, log_rate: Tensor) -> Distribution:
        return Independent(torch.distributions.Poisson(log_rate.exp(), validate_args=False), 1, validate_args=False)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse anything but whole numbers >= 0."""
        _check_finite(x, name)
        _check_counts(x, name, "Poisson")


class NegativeBinomial(Likelihood):
    """p(x | z) = prod_i NB(x_i; mu_i(z), theta_i) for counts: the mean from the decoder (``[..., X]``, log
    mu), one learned inverse dispersion theta per dimension (scvi-tools' "gene" dispersion). With
    ``zero_inflated`` the decoder also gives the zero-inflation logits (``[..., 2 X]``): the ZINB.

    Args:
        dim: X, the data dimensions (one theta each); None: one theta shared by all.
        zero_inflated: the ZINB (``NegativeBinomialMean``).
    """

    zero_inflated_default: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, *, levels: int | None, scale: float | None, dim: int | None) -> "Likelihood":
        return cls(dim)

    def __init__(self, dim: int | None = None, *, zero_inflated: bool | None = None) -> None:
        super().__init__()
        zero_inflated = self.zero_inflated_default if zero_inflated is None else zero_inflated
        self.zero_inflated = zero_inflated
        self.outputs_per_dim = 2 if zero_inflated else 1
        self.raw_theta = nn.Parameter(torch.full((dim or 1,), 0.5413))  # softplus(0.5413) + 1e-4 ~ 1

    @property
    def theta(self) -> Tensor:
        return F.softplus(self.raw_theta) + 1e-4

    def forward(self, out: Tensor) -> Distribution:
        if self.zero_inflated:
            log_mean, zero_logits = _split(out, 2).unbind(-2)
            return Independent(NegativeBinomialMean(log_mean, self.theta, zero_logits), 1, validate_args=False)
        return Independent(NegativeBinomialMean(out, self.theta), 1, validate_args=False)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse anything but whole numbers >= 0."""
        _check_finite(x, name)
        _check_counts(x, name, "zero-inflated negative binomial" if self.zero_inflated else "negative binomial")


_TABLE_KINDS = ("gaussian", "bernoulli", "categorical", "poisson", "negative-binomial", "zinb", "beta-binomial")
_DISPERSED = ("negative-binomial", "zinb", "beta-binomial")  # a learned inverse dispersion (concentration) each
_NUMBERED = ("categorical", "beta-binomial")  # the kinds written with a number: categorical:K levels, beta-binomial:N
# the column kind (data.tables.KINDS) each column likelihood models
COLUMN_KINDS = {"gaussian": "continuous", "bernoulli": "binary", "categorical": "categorical", "poisson": "count",
                "negative-binomial": "count", "zinb": "count", "beta-binomial": "count"}  # fmt: skip


def _column_spec(spec: str) -> tuple[str, int, int]:
    """A column's likelihood, its number of decoder outputs and its number (levels K or trials N, else 0):
    ``categorical:K`` -> (categorical, K, K), ``beta-binomial:N`` -> (beta-binomial, 1, N), ``zinb`` -> (zinb, 2, 0)."""
    kind, _, k = spec.partition(":")
    if (kind not in _TABLE_KINDS or (kind in _NUMBERED) != bool(k) or (k and not k.isdigit())
            or (kind == "categorical" and k == "1") or (kind == "beta-binomial" and k == "0")):  # fmt: skip
        raise ElboxError(f"unknown column likelihood {spec!r}: one of gaussian, bernoulli, categorical:K (K >= 2), "
                         "poisson, negative-binomial, zinb, beta-binomial:N (N >= 1 trials).")  # fmt: skip
    number = int(k) if k else 0
    return kind, number if kind == "categorical" else 2 if kind == "zinb" else 1, number


class CorrelatedNormal(Distribution):
    """x ~ N(loc, W W^T + diag(scale^2)) over a row's G continuous columns ``[..., G]``: the mean from z (``loc``),
    the noise about it shared by every row, correlated across the columns through the factor W ``[G, R]``.

    Independent noise given z cannot say that a missing column is a near-linear function of observed ones
    beyond what z carries (a tumour's area of its radius); W can, and the imputation then regresses on the
    observed residuals. With the observed entries o of a row (mask m; W's rows and the scales of the missing
    entries drop out), D = diag(scale^2) and the R x R capacitance C = I + W_o^T D_o^-1 W_o, the Woodbury
    identity and the matrix determinant lemma give, at O(G R^2) a row:

        r = (x - loc) o m,   a = W_o^T D_o^-1 r                                   # [..., G], [..., R]
        log p(x_o) = -1/2 (r^T D_o^-1 r - a^T C^-1 a + log det C + sum_o log scale^2 + |o| log 2 pi)
        E[x_m | x_o] = loc_m + W_m C^-1 a

    and a draw of x_m given x_o by Matheron's rule: x* ~ N(loc, W W^T + D), then the same correction with
    x* for loc (``sample_given``). The mask is per row, C ``[B, R, R]`` is shared by the particles.
    """

    arg_constraints = {}  # noqa: RUF012 (torch's convention)

    def __init__(self, loc: Tensor, scale: Tensor, factor: Tensor) -> None:
        self.loc, self.scale, self.factor = loc, scale, factor  # [..., G], [G], [G, R]
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _solve(self, value: Tensor, observed: Tensor, loc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """r D^-1 r ``[...]``, a ``[..., R]``, C^-1 a ``[..., R]`` and log det C (broadcast to a's batch)."""
        m = observed.to(loc.dtype)
        precision = m / self.scale**2  # [..., G]: D_o^-1, 0 where missing
        w = self.factor * m.unsqueeze(-1)  # [..., G, R]: W_o
        eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        cap = eye + w.transpose(-1, -2) @ (w * precision.unsqueeze(-1))  # C = I + W_o^T D_o^-1 W_o
        chol = torch.linalg.cholesky(cap)  # [..., R, R] over the rows' masks
        r = torch.where(observed, value - loc, 0.0)
        a = ((r * precision).unsqueeze(-2) @ w).squeeze(-2)  # [..., R]
        solved = torch.cholesky_solve(a.unsqueeze(-1), chol).squeeze(-1)
        return (r * r * precision).sum(-1), a, solved, 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def log_prob_observed(self, value: Tensor, observed: Tensor) -> Tensor:
        """log p(x_o) of the observed entries of ``value`` ``[..., G]`` (``observed`` True), marginal over the rest."""
        quad, a, solved, logdet = self._solve(value, observed, self.loc)
        count = observed.to(self.loc.dtype)
        log_var = (2 * self.scale.log() * count).sum(-1) + count.sum(-1) * math.log(2 * math.pi)
        return -0.5 * (quad - (a * solved).sum(-1) + logdet + log_var)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.log_prob_observed(value, ~torch.isnan(value))

    def mean_given(self, value: Tensor, observed: Tensor) -> Tensor:
        """E[x | x_o] ``[..., G]``: loc + W C^-1 a (the observed entries' own values are the caller's to keep)."""
        _, _, solved, _ = self._solve(value, observed, self.loc)
        return self.loc + solved @ self.factor.T

    @property
    def mean(self) -> Tensor:
        return self.loc

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            shared = torch.randn(*shape[:-1], self.factor.shape[-1], dtype=self.loc.dtype, device=self.loc.device)
            loc = self.loc.expand(shape)
            return loc + shared @ self.factor.T + self.scale * torch.randn_like(loc)

    def sample_given(self, value: Tensor, observed: Tensor) -> Tensor:
        """x ~ p(x | x_o), by Matheron's rule: a joint draw x*, corrected by W C^-1 a(x - x*) (``[..., G]``)."""
        with torch.no_grad():
            joint = self.sample()
            _, _, solved, _ = self._solve(value, observed, joint)
            return joint + solved @ self.factor.T


class TableDistribution(Distribution):
    """p(x | z) over a row of mixed columns, ``[..., C]``: the product of one distribution per column.

    log p(x | z) = sum over the observed columns j of log p_j(x_j | z): a missing value (NaN, or
    ``mask`` False) contributes nothing, which is the likelihood of the observed entries that
    MIWAE (Mattei & Frellsen 2019) trains and imputes with. ``mean`` is per column the mean,
    except for a categorical column, where it is the most probable code (a mean code is no
    category). Batch shape ``out.shape[:-1]``, event shape ``[C]``.
    """

    arg_constraints = {}  # noqa: RUF012 (torch's convention)

    def __init__(self, parts: list[tuple[str, list[int], Distribution]], columns: int, batch_shape: torch.Size) -> None:
        self.parts, self.columns = parts, columns  # (kind, column indices, distribution over them)
        super().__init__(batch_shape, torch.Size([columns]), validate_args=False)

    def log_prob_columns(self, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """log p_j(x_j | z) per column, 0 where missing: ``[..., C]``. ``mask`` (True: observed) defaults to
        the non-NaN entries; the value under a False is never read. Columns whose noise is correlated
        (``CorrelatedNormal``) have no log p each: asking for them is refused (``log_prob``, ``log_prob_kinds``)."""
        if self._block() is not None:
            raise ValueError("correlated continuous columns have a joint log p, not one per column: "
                             "use log_prob or log_prob_kinds")  # fmt: skip
        return self._columns(value, mask)

    def _columns(self, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """``log_prob_columns`` with a correlated block's columns at 0."""
        observed, value = self._observed(value, mask)

        def one(kind: str, idx: list[int], dist: Distribution) -> Tensor:
            v = value[..., idx]
            if isinstance(dist, CorrelatedNormal):
                return torch.zeros_like(v)
            return dist.log_prob(v.squeeze(-1).long()).unsqueeze(-1) if kind == "categorical" else dist.log_prob(v)

        return torch.where(observed, self._per_column(one), 0.0)

    def _observed(self, value: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        observed = ~torch.isnan(value) if mask is None else mask.bool()
        value = torch.where(observed, value, 0.0)  # 0 lies in every column's support
        value = value.expand(*self.batch_shape, self.columns) if value.dim() < len(self.batch_shape) + 1 else value
        return observed, value

    def _block(self) -> tuple[list[int], "CorrelatedNormal"] | None:
        """The correlated continuous columns and their distribution, if the table has them."""
        return next(((idx, d) for _, idx, d in self.parts if isinstance(d, CorrelatedNormal)), None)

    def _block_log_prob(self, value: Tensor, mask: Tensor | None = None) -> Tensor | None:
        block = self._block()
        if block is None:
            return None
        observed, value = self._observed(value, mask)
        idx, dist = block
        return dist.log_prob_observed(value[..., idx], observed[..., idx])

    def log_prob(self, value: Tensor, mask: Tensor | None = None) -> Tensor:
        total, block = self._columns(value, mask).sum(-1), self._block_log_prob(value, mask)
        return total if block is None else total + block

    def log_prob_kinds(self, value: Tensor) -> dict[str, Tensor]:
        """log p(x | z) summed over the columns of each kind (``COLUMN_KINDS``: continuous, binary,
        categorical, count), ``[...]`` each: the kinds the table has, which add up to ``log_prob``."""
        per_column, block = self._columns(value), self._block_log_prob(value)
        kinds: dict[str, list[int]] = {}
        for kind, idx, _ in self.parts:
            kinds.setdefault(COLUMN_KINDS[kind], []).extend(idx)
        sums = {kind: per_column[..., idx].sum(-1) for kind, idx in kinds.items()}
        if block is not None:
            sums["continuous"] = sums["continuous"] + block
        return sums

    def mean_given(self, value: Tensor) -> Tensor:
        """``mean``, but for correlated columns E[x | x_o, z] given the observed entries of ``value`` ``[..., C]``
        (NaN: missing): what imputation averages. Independent columns' means do not depend on x_o."""
        observed, filled = self._observed(value, None)
        return self._per_column(lambda kind, idx, d: d.mean_given(filled[..., idx], observed[..., idx])
                                if isinstance(d, CorrelatedNormal) else self._mean_of(kind, d))  # fmt: skip

    def sample_given(self, value: Tensor) -> Tensor:
        """``sample``, but correlated columns drawn from p(x | x_o, z) (``CorrelatedNormal.sample_given``)."""
        observed, filled = self._observed(value, None)
        with torch.no_grad():
            return self._per_column(lambda kind, idx, d: d.sample_given(filled[..., idx], observed[..., idx])
                                    if isinstance(d, CorrelatedNormal)
                                    else self._draw(kind, d, torch.Size()))  # fmt: skip

    def _per_column(self, pick: Callable[[str, list[int], Distribution], Tensor]) -> Tensor:
        """``pick(kind, columns, distribution)`` of every part, put back in column order: ``[..., C]``."""
        outs = [pick(kind, idx, dist) for kind, idx, dist in self.parts]
        order = [j for _, idx, _ in self.parts for j in idx]
        return torch.cat(outs, -1)[..., torch.argsort(torch.tensor(order, device=outs[0].device))]

    @staticmethod
    def _mean_of(kind: str, d: Distribution) -> Tensor:
        return d.logits.argmax(-1, keepdim=True).float() if kind == "categorical" else d.mean

    @staticmethod
    def _draw(kind: str, d: Distribution, sample_shape: torch.Size) -> Tensor:
        return d.sample(sample_shape).unsqueeze(-1).float() if kind == "categorical" else d.sample(sample_shape).float()

    @property
    def mean(self) -> Tensor:
        return self._per_column(lambda kind, _, d: self._mean_of(kind, d))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self._per_column(lambda kind, _, d: self._draw(kind, d, sample_shape))


class Table(Likelihood):
    """p(x | z) for a table: one likelihood per column, ``columns`` its specs in column order.

    ``gaussian`` (a learned scale per column, on standardised values), ``bernoulli`` (0/1 codes),
    ``categorical:K`` (codes 0..K-1, softmax over K logits), ``poisson``, ``negative-binomial``
    and ``zinb`` (counts; a learned inverse dispersion per column, on a log scale), ``beta-binomial:N`` (counts of
    at most N, ``BetaBinomialMean``: a logit from the decoder, a learned concentration per column;
    a score out of N, pixels on in a block, which no unbounded count likelihood fits near the bound).
    The decoder outputs ``outputs`` values, column by column (K for a categorical, 2 for a zinb,
    else 1). Missing values are NaN and drop out of log p (``TableDistribution``). The encoder reads
    ``features(x)`` (``input_width`` wide): each column as a number (one-hot for a categorical,
    log1p for an unbounded count, x / N for a bounded one), 0 where missing, then the mask of observed entries.

    >>> lik = Table(("gaussian", "bernoulli", "categorical:3", "poisson"))
    >>> x = torch.tensor([[0.5, 1.0, 2.0, 4.0], [float("nan"), 0.0, 0.0, 1.0]])
    >>> p = lik(torch.zeros(2, lik.outputs))
    >>> p.log_prob(x).shape, lik.features(x).shape
    (torch.Size([2]), torch.Size([2, 10]))
    """

    def __init__(self, columns: tuple[str, ...] | list[str], noise_rank: int = 0) -> None:
        super().__init__()
        specs = [_column_spec(s) for s in columns]
        self.columns, self.noise_rank = tuple(columns), noise_rank
        self.kinds = [kind for kind, _, _ in specs]
        self.sizes = [size for _, size, _ in specs]
        self.first = [sum(self.sizes[:j]) for j in range(len(self.sizes))]  # each column's first decoder output
        self.dispersed = [j for j, kind in enumerate(self.kinds) if kind in _DISPERSED]  # the columns of log_theta
        self.trials = [number if kind == "beta-binomial" else 0 for kind, _, number in specs]
        self.outputs = sum(self.sizes)
        self.input_width = sum(k if kind == "categorical" else 1 for kind, k, _ in specs) + len(specs)
        self.raw_scale = nn.Parameter(torch.full((self.kinds.count("gaussian"),), 0.5413))
        # theta on a log scale: Adam moves a parameter by about lr a step, so on the log scale theta moves by a
        # fraction of itself (from 6.6 toward 27, wine's proline); softplus-parametrised it moved ~lr in absolute
        # terms and stayed at its start for the few hundred steps a small table trains.
        self.log_theta = nn.Parameter(torch.zeros(len(self.dispersed)))  # theta = 1
        if noise_rank:  # the continuous columns' shared noise factor W (CorrelatedNormal); at W = 0 its gradient is 0
            gaussians = self.kinds.count("gaussian")
            if noise_rank < 0 or not gaussians:
                raise ElboxError(f"a noise rank of {noise_rank} correlates a table's continuous columns, and this "
                                 f"table has {gaussians}: leave --noise-rank at 0.")  # fmt: skip
            self.noise_factor = nn.Parameter(0.01 * torch.randn(gaussians, noise_rank))

    @property
    def theta(self) -> Tensor:
        """The dispersed columns' inverse dispersion (concentration) ``[len(dispersed)]``: exp(log_theta)."""
        return self.log_theta.exp()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        # runs saved before theta moved to the log scale hold raw_theta, theta = softplus(raw) + 1e-4
        old = state_dict.pop(prefix + "raw_theta", None)
        if old is not None and prefix + "log_theta" not in state_dict:
            state_dict[prefix + "log_theta"] = (F.softplus(old) + 1e-4).log()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def widths(self, dim: int) -> tuple[int, int]:
        """``input_width`` (each column as a number or one-hot, then the mask) and ``outputs`` (its columns' sizes)."""
        return self.input_width, self.outputs

    def _groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for j, kind in enumerate(self.kinds):
            groups.setdefault(kind, []).append(j)
        return groups

    def forward(self, out: Tensor) -> TableDistribution:
        g, parts, first = self._groups(), [], self.first
        pick = lambda idx: out[..., [first[j] for j in idx]]  # noqa: E731  one output per column
        theta = self.theta
        if "gaussian" in g:
            loc, scale = pick(g["gaussian"]), F.softplus(self.raw_scale) + 1e-3
            noise = CorrelatedNormal(loc, scale, self.noise_factor) if self.noise_rank else Normal(loc, scale,
                                                                                                  validate_args=False)
            parts.append(("gaussian", g["gaussian"], noise))
        if "bernoulli" in g:
            parts.append(("bernoulli", g["bernoulli"], _Bernoulli(logits=pick(g["bernoulli"]), validate_args=False)))
        if "poisson" in g:
            parts.append(("poisson", g["poisson"], torch.distributions.Poisson(pick(g["poisson"]).exp(),
                                                                               validate_args=False)))  # fmt: skip
        if "beta-binomial" in g:
            j = g["beta-binomial"]
            n, t = out.new_tensor([self.trials[i] for i in j]), theta[[self.dispersed.index(i) for i in j]]
            parts.append(("beta-binomial", j, BetaBinomialMean(n, pick(j), t)))
        for kind in ("negative-binomial", "zinb"):
            if kind in g:
                t = theta[[self.dispersed.index(j) for j in g[kind]]]
                zero = out[..., [first[j] + 1 for j in g[kind]]] if kind == "zinb" else None
                parts.append((kind, g[kind], NegativeBinomialMean(pick(g[kind]), t, zero)))
        for j in g.get("categorical", []):
            logits = out[..., first[j] : first[j] + self.sizes[j]]
            parts.append(("categorical", [j], _Categorical(logits=logits, validate_args=False)))
        return TableDistribution(parts, len(self.kinds), out.shape[:-1])

    @torch.no_grad()
    def start_at(self, x: Tensor, bias: Tensor) -> None:
        """Start each count column at its training marginal: the decoder's output ``bias`` ``[outputs]`` (the
        last layer's, written in place) at log mean (a beta-binomial's at logit m / N), and a negative or beta
        binomial's theta by the moments.

        A column with mean m and variance v > m is NB(m, theta) for theta = m^2 / (v - m); one no more
        dispersed than a Poisson starts at theta = 1000 (the Poisson, nearly). The marginal's theta is a
        lower bound of the decoder's (given z, part of the variance is explained), so theta starts at 1 at
        least: from a marginal theta of 0.2 (a simulated NB table, true theta 2) 60 epochs ended at
        0.2-1.5. The default start, mean
        1 and theta 1 (variance m + m^2), is far from counts in the hundreds: with the few hundred steps
        a small table trains, theta never leaves it, and the samples come out 10 times too dispersed.
        ``x`` ``[N, C]`` are the training rows, NaN where missing.
        """
        for j, kind in enumerate(self.kinds):
            if kind not in ("poisson", *_DISPERSED):
                continue
            v = x[:, j][~torch.isnan(x[:, j])].double()
            if v.numel() < 2:
                continue
            mean, var = v.mean().clamp(min=1e-3), v.var()
            if kind == "beta-binomial":  # logit of p = m / N; var = N p (1 - p) (N + theta) / (1 + theta)
                n = self.trials[j]
                p = (mean / n).clamp(1e-3, 1 - 1e-3)
                bias[self.first[j]] = (p / (1 - p)).log()
                r = var / (n * p * (1 - p))  # the variance over the binomial's: 1 (theta infinite) up to N (theta 0)
                theta = ((n - r) / (r - 1)).clamp(1.0, 1e3) if r > 1 else torch.tensor(1e3)
            else:
                bias[self.first[j]] = mean.log()
                theta = (mean**2 / (var - mean)).clamp(1.0, 1e3) if var > mean else torch.tensor(1e3)
            if j in self.dispersed:
                self.log_theta[self.dispersed.index(j)] = theta.log()

    def features(self, x: Tensor) -> Tensor:
        """What the encoder reads of rows ``[..., C]``: ``[..., input_width]``, zero where missing, then the mask."""
        observed = ~torch.isnan(x)
        filled = torch.where(observed, x, 0.0)
        parts = []
        for j, kind in enumerate(self.kinds):
            v = filled[..., j : j + 1]
            if kind == "categorical":
                parts.append(F.one_hot(v.squeeze(-1).long(), self.sizes[j]).to(x.dtype) * observed[..., j : j + 1])
            elif kind == "beta-binomial":
                parts.append(v / self.trials[j])
            else:
                parts.append(torch.log1p(v) if kind in ("poisson", "negative-binomial", "zinb") else v)
        return torch.cat([*parts, observed.to(x.dtype)], -1)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse infinities and values outside each column's support; NaN (missing) is allowed."""
        if torch.isinf(x).any():
            raise ElboxError(f"the {name} data hold infinite values ({_first_bad(torch.isinf(x), x)}); leave a "
                             "value empty (missing) instead.")  # fmt: skip
        for j, kind in enumerate(self.kinds):
            v = x[:, j][~torch.isnan(x[:, j])]
            if kind == "gaussian":
                continue
            bad = (v < 0) | (v != v.round())
            if kind == "bernoulli":
                bad |= v > 1
            elif kind == "categorical":
                bad |= v >= self.sizes[j]
            elif kind == "beta-binomial":
                bad |= v > self.trials[j]
            if bad.any():
                raise ElboxError(f"column {j} of the {name} data ({self.columns[j]}) holds {v[bad][0].item():g}, "
                                 "outside its support; load tables with elbox.data.load_table, which codes "
                                 "them.")  # fmt: skip

    def extra_repr(self) -> str:
        return f"columns={list(self.columns)}" + (f", noise_rank={self.noise_rank}" if self.noise_rank else "")


class ZeroInflatedNegativeBinomial(NegativeBinomial):
    """The zero-inflated negative binomial (scVI's ZINB): ``NegativeBinomial(zero_inflated=True)``."""

    zero_inflated_default: ClassVar[bool] = True


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "binomial": Binomial,
    "gaussian": Gaussian,
    "continuous-bernoulli": ContinuousBernoulli,
    "gaussian-pixel": PixelGaussian,
    "logistic": DiscretizedLogistic,
    "categorical": Categorical,
    "poisson": Poisson,
    "negative-binomial": NegativeBinomial,
    "zinb": ZeroInflatedNegativeBinomial,
}
GRID_LIKELIHOODS = tuple(name for name, cls in LIKELIHOODS.items() if cls.grid)  # pmfs on k / levels: need levels
# likelihoods of data outside [0, 1]: VampPrior inputs left free
UNBOUNDED = ("gaussian", "gaussian-pixel", "poisson", "negative-binomial", "zinb")
TABLE = "table"  # one likelihood per column of a table (``Table``), chosen from the data's schema, not by name


def make_likelihood(
    name: str,
    *,
    levels: int | None = None,
    scale: float | None = None,
    dim: int | None = None,
    columns: tuple[str, ...] | None = None,
    noise_rank: int = 0,
) -> Likelihood:
    """Build a likelihood by name (``LIKELIHOODS``): ``bernoulli``, ``binomial``, ``logistic`` or
    ``categorical`` (these three with ``levels``), ``gaussian`` (one scale: fixed, or learned),
    ``gaussian-pixel`` (a scale per pixel from the decoder) or ``continuous-bernoulli``; for counts
    ``poisson``, ``negative-binomial`` and ``zinb`` (these two with ``dim``, X, for a dispersion per
    dimension, else one shared); ``table`` (with ``columns``, one likelihood spec per column: ``Table``;
    ``noise_rank`` R > 0 correlates its continuous columns' noise, ``CorrelatedNormal``).

    Each says what the encoder reads and the decoder outputs (``Likelihood.widths``, ``Likelihood.features``).
    """
    if name == TABLE:
        if not columns:
            raise ElboxError("the table likelihood needs the columns' likelihoods (columns), from a table's schema.")
        return Table(columns, noise_rank)
    if noise_rank:
        raise ElboxError(f"--noise-rank {noise_rank} correlates the noise of a table's continuous columns; "
                         f"the {name} likelihood has no columns. Load a table (.csv, .parquet) or leave it "
                         "at 0.")  # fmt: skip
    if name not in LIKELIHOODS:
        raise ElboxError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}.")
    cls = LIKELIHOODS[name]
    if cls.grid and levels is None:
        raise ElboxError(f"the {name} likelihood needs the number of grey levels minus one (--levels).")
    return cls.from_settings(levels=levels, scale=scale, dim=dim)
