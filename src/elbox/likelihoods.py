"""Likelihoods p(x | z): map a decoder's output to a distribution over one data point.

Each likelihood is an ``nn.Module`` whose ``forward`` takes the decoder output ``[..., m X]``
(m = its ``outputs_per_dim``: 1 for most, 2 for a location and a scale per pixel, n + 1 for a
categorical over n + 1 levels) and returns a distribution with event shape ``[X]``, and whose
``check`` refuses data outside its support with a message that says what to do instead.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Categorical as _Categorical
from torch.distributions import Distribution, Independent, Normal

from .distributions import (
    COLUMN_KINDS,
    BetaBinomialMean,
    CategoricalLevels,
    CorrelatedNormal,
    DiscretizedLogisticLevels,
    GreyLevels,
    IndependentBernoulli,
    NegativeBinomialMean,
    StableContinuousBernoulli,
    TableDistribution,
)
from .errors import ElboxError

__all__ = [
    "COLUMN_KINDS",
    "GRID_LIKELIHOODS",
    "LIKELIHOODS",
    "TABLE",
    "UNBOUNDED",
    "Bernoulli",
    "BetaBinomialMean",
    "Binomial",
    "Categorical",
    "CategoricalLevels",
    "ContinuousBernoulli",
    "CorrelatedNormal",
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
