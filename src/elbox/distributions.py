"""The distributions that elbox's likelihoods return: torch ``Distribution`` classes in the
parametrisations the decoders give (logits, log means, a mean and a dispersion), with the
numerically stable ``log_prob`` each needs, and the table's product of column distributions.

``likelihoods`` holds the ``nn.Module`` heads that build these from a decoder's output, their
support checks and the catalogue; this module holds only the math of each distribution.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Binomial as _Binomial
from torch.distributions import Categorical as _Categorical
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli
from torch.distributions import Distribution, Independent, constraints

__all__ = [
    "COLUMN_KINDS",
    "BetaBinomialMean",
    "CategoricalLevels",
    "CorrelatedNormal",
    "DiscretizedLogisticLevels",
    "GreyLevels",
    "IndependentBernoulli",
    "NegativeBinomialMean",
    "StableContinuousBernoulli",
    "TableDistribution",
]


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


# the column kind (data.tables.KINDS) each column likelihood models
COLUMN_KINDS = {"gaussian": "continuous", "bernoulli": "binary", "categorical": "categorical", "poisson": "count",
                "negative-binomial": "count", "zinb": "count", "beta-binomial": "count"}  # fmt: skip


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
        return self._log_probs(value, mask)[0]

    def _log_probs(self, value: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The independent columns' log p ``[..., C]`` (0 where missing, and at a correlated block's columns), and
        the block's joint log p of its observed entries ``[...]`` (None without a block)."""
        observed, value = self._observed(value, mask)

        def one(kind: str, idx: list[int], dist: Distribution) -> Tensor:
            v = value[..., idx]
            if isinstance(dist, CorrelatedNormal):
                return torch.zeros_like(v)
            return dist.log_prob(v.squeeze(-1).long()).unsqueeze(-1) if kind == "categorical" else dist.log_prob(v)

        block = self._block()
        joint = None if block is None else block[1].log_prob_observed(value[..., block[0]], observed[..., block[0]])
        return torch.where(observed, self._per_column(one), 0.0), joint

    def _observed(self, value: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        observed = ~torch.isnan(value) if mask is None else mask.bool()
        value = torch.where(observed, value, 0.0)  # 0 lies in every column's support
        value = value.expand(*self.batch_shape, self.columns) if value.dim() < len(self.batch_shape) + 1 else value
        return observed, value

    def _block(self) -> tuple[list[int], "CorrelatedNormal"] | None:
        """The correlated continuous columns and their distribution, if the table has them."""
        return next(((idx, d) for _, idx, d in self.parts if isinstance(d, CorrelatedNormal)), None)

    def log_prob(self, value: Tensor, mask: Tensor | None = None) -> Tensor:
        per_column, joint = self._log_probs(value, mask)
        return per_column.sum(-1) if joint is None else per_column.sum(-1) + joint

    def log_prob_kinds(self, value: Tensor) -> dict[str, Tensor]:
        """log p(x | z) summed over the columns of each kind (``COLUMN_KINDS``: continuous, binary,
        categorical, count), ``[...]`` each: the kinds the table has, which add up to ``log_prob``."""
        per_column, joint = self._log_probs(value)
        kinds: dict[str, list[int]] = {}
        for kind, idx, _ in self.parts:
            kinds.setdefault(COLUMN_KINDS[kind], []).extend(idx)
        sums = {kind: per_column[..., idx].sum(-1) for kind, idx in kinds.items()}
        if joint is not None:
            sums["continuous"] = sums["continuous"] + joint
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
