"""Variational bounds on log p(x) as pure functions of log-weights, and the objectives built on them.

Every bound is a function of the log-weights of K particles z_k ~ q(z | x) for B inputs,

    log_w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b)        # [K, B]

so VAEs and Bayesian models share them. An objective (``ELBO``, ``IWAE``, ``RenyiBound``,
``CUBO``) turns ``Particles`` into a ``Bound``: the value to report and the surrogate to
differentiate. Gradient estimators differ only in how the particles are drawn and how log q
is evaluated (DESIGN.md), which the objective tells the model through two switches:

| estimator | draws | log q evaluated with | surrogate |
| --- | --- | --- | --- |
| ``reparam`` | rsample | live parameters | the bound |
| ``stl`` (Roeder et al. 2017) | rsample | parameters stopped | the bound |
| ``dreg`` (Tucker et al. 2018) | rsample | parameters stopped | sum_k w~_k log w_k, z's gradient scaled by w~_k |
| ``score`` | sample | live parameters | the bound + (bound - baseline) sum_k log q(z_k) |

This module knows tensors and ``torch.distributions``; it imports no model.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence

__all__ = [
    "COLLAPSE_MI",
    "CUBO",
    "ELBO",
    "ESTIMATORS",
    "IWAE",
    "OBJECTIVES",
    "SETTINGS",
    "Bound",
    "Objective",
    "Particles",
    "RenyiBound",
    "cubo",
    "elbo",
    "iwae",
    "iwae_curve",
    "kl",
    "log_mean_exp",
    "log_weights",
    "make_objective",
    "renyi",
]

COLLAPSE_MI = 0.05  # nats of I(x; z) (at most the mean KL): below it the code says next to nothing about x

ESTIMATORS = ("reparam", "stl", "dreg", "score")


@dataclass(eq=False)
class Particles:
    """K draws from q for a batch of B inputs, with the densities a bound needs.

    Attributes:
        z: the draws, ``[K, B, D]``.
        log_lik: log p(x | z), ``[K, B]``.
        q: the variational distribution, batch shape ``[B]``, event shape ``[D]``.
        prior: p(z), batch shape ``[]`` or ``[B]``, event shape ``[D]``.
        q_stopped: q with its parameters detached, when log q must pass gradients to z
            only (``stl``, ``dreg``); ``None`` evaluates log q with ``q`` itself.
        log_q_drawn: log q(z) ``[K, B]`` computed together with the draws, where that is
            cheaper than ``q.log_prob(z)`` (a flow's fused sample-and-log-prob); it carries the
            same gradients as the live ``q.log_prob(z)``, so it is only given when there is
            no ``q_stopped``.

    ``log_prior`` and ``log_q`` (``[K, B]``) are computed on first use, so a closed-form
    ELBO never pays for them.
    """

    z: Tensor
    log_lik: Tensor
    q: Distribution
    prior: Distribution
    q_stopped: Distribution | None = None
    log_q_drawn: Tensor | None = None

    def __post_init__(self) -> None:
        if self.q_stopped is not None and self.log_q_drawn is not None:
            raise ValueError("log_q_drawn carries q's live gradients; it cannot stand for a stopped q")

    @cached_property
    def log_prior(self) -> Tensor:
        return self.prior.log_prob(self.z)

    @cached_property
    def log_q(self) -> Tensor:
        if self.log_q_drawn is not None:
            return self.log_q_drawn
        return (self.q if self.q_stopped is None else self.q_stopped).log_prob(self.z)

    @property
    def log_w(self) -> Tensor:
        return self.log_lik + self.log_prior - self.log_q


class Bound(NamedTuple):
    """A bound per data point, in nats, with the surrogate that is differentiated.

    ``value`` is the true bound, the number to report, whatever weighting or estimator
    trains it; ``surrogate`` carries the estimator's gradient. ``reconstruction`` is
    E_q log p(x | z) and ``kl`` is KL(q || p) (closed form or Monte Carlo), the distortion
    and the rate of the fit. All fields are ``[B]``.
    """

    value: Tensor
    surrogate: Tensor
    reconstruction: Tensor
    kl: Tensor

    @property
    def loss(self) -> Tensor:
        """The scalar to minimise: minus the batch mean of the surrogate."""
        return -self.surrogate.mean()


def log_weights(p: Particles) -> Tensor:
    """log w = log p(x | z) + log p(z) - log q(z | x), shape ``[K, B]``."""
    return p.log_w


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log (1/K) sum_k exp(x_k) along ``dim``, computed stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def elbo(log_w: Tensor) -> Tensor:
    """ELBO estimate (1/K) sum_k log w_k: ``[K, B] -> [B]``."""
    return log_w.mean(0)


def iwae(log_w: Tensor) -> Tensor:
    """IWAE_K bound log (1/K) sum_k w_k (Burda, Grosse & Salakhutdinov, 2016): ``[K, B] -> [B]``.

    It is at least the ELBO and increases with K toward log p(x).

    >>> log_w = torch.tensor([[0.0], [2.0]])
    >>> round(iwae(log_w).item(), 4), elbo(log_w).item()
    (1.4338, 1.0)
    """
    return log_mean_exp(log_w, 0)


def iwae_curve(log_w: Tensor, ks: Iterable[int]) -> dict[int, Tensor]:
    """IWAE_k for each k of ``ks``, from one set of K particles: ``[K, B] -> {k: [B]}``.

    IWAE_k is averaged over the K // k disjoint groups of k particles (the last K mod k are
    left out): an unbiased estimate of the expected bound E[IWAE_k] (the figure papers report),
    with less variance than one group. IWAE_1 is the ELBO as the mean log-weight; IWAE_K is
    the log p(x) estimate.

    >>> log_w = torch.tensor([[0.0], [2.0], [0.0], [2.0]])
    >>> {k: round(v.item(), 4) for k, v in iwae_curve(log_w, (1, 2, 4)).items()}
    {1: 1.0, 2: 1.4338, 4: 1.4338}
    """
    k_all, rest = log_w.shape[0], log_w.shape[1:]
    curve = {}
    for k in ks:
        if not 1 <= k <= k_all:
            raise ValueError(f"IWAE_k needs 1 <= k <= K = {k_all}, got k = {k}")
        groups = k_all // k
        curve[k] = log_mean_exp(log_w[: groups * k].reshape(groups, k, *rest), 1).mean(0)
    return curve


def renyi(log_w: Tensor, alpha: float) -> Tensor:
    """Rényi bound (1 / (1 - a)) log (1/K) sum_k w_k^(1 - a) (Li & Turner, 2016): ``[K, B] -> [B]``.

    alpha = 0 is IWAE; alpha -> 1 is the ELBO (returned exactly at 1); for alpha < 0 the
    limit K -> infinity is an upper bound on log p(x).

    >>> log_w = torch.tensor([[0.0], [2.0]])
    >>> renyi(log_w, 0.0).item() == iwae(log_w).item(), renyi(log_w, 1.0).item()
    (True, 1.0)
    """
    if alpha == 1:
        return elbo(log_w)
    return log_mean_exp((1 - alpha) * log_w, 0) / (1 - alpha)


def cubo(log_w: Tensor, n: float = 2.0) -> Tensor:
    """CUBO_n = (1/n) log (1/K) sum_k w_k^n (Dieng et al., 2017): ``[K, B] -> [B]``.

    In the limit of many particles an upper bound on log p(x) for n >= 1 (Jensen:
    E[w^n]^(1/n) >= E[w] = p(x)); with few particles its estimate is biased low. It is the
    Rényi bound at alpha = 1 - n.
    """
    return log_mean_exp(n * log_w, 0) / n


def kl(q: Distribution, prior: Distribution, z: Tensor | None = None) -> Tensor:
    """KL(q || p) per data point, ``[B]``: closed form when torch.distributions has one.

    Otherwise the Monte Carlo estimate (1/K) sum_k [log q(z_k) - log p(z_k)] from the
    draws ``z`` (``[K, B, D]``), which must then be given.
    """
    try:
        return kl_divergence(q, prior)
    except NotImplementedError:
        if z is None:
            raise ValueError(
                f"no closed-form KL between {type(q).__name__} and {type(prior).__name__}; "
                "pass the draws z for a Monte Carlo estimate"
            ) from None
        return (q.log_prob(z) - prior.log_prob(z)).mean(0)


def _check_factorized(p: Particles) -> None:
    if not (isinstance(p.q, Independent) and isinstance(p.prior, Independent)):
        raise ValueError("free bits need a q and a prior that factorize over dimensions (Independent)")


def _log_ratio_per_dimension(p: Particles) -> Tensor:
    """log q(z_d | x) - log p(z_d) for each particle and latent dimension, ``[K, B, D]``."""
    _check_factorized(p)
    q = p.q if p.q_stopped is None else p.q_stopped
    return q.base_dist.log_prob(p.z) - p.prior.base_dist.log_prob(p.z)


class Objective:
    """What the objectives share: the estimator switch, the KL weight and the surrogate.

    An objective is a callable ``Particles -> Bound``. ``reparameterize`` and ``stop_q`` tell
    the model how to draw the particles for the chosen estimator; ``beta`` weights the
    prior-to-posterior part of every log-weight, log p(x | z) + beta (log p(z) - log q(z | x))
    (the beta-VAE of Higgins et al. 2017, and KL annealing when a schedule sets it per step).
    ``free_bits`` (lambda, Kingma et al. 2016) stops the gradient of each latent dimension's
    share of log q - log p while that dimension's KL, averaged over the batch, is below lambda
    nats, so the surrogate no longer pushes it toward the prior. The reported ``value`` is
    always the bound itself, at beta = 1 and without free bits.
    """

    dreg_ok = False
    lower: ClassVar[bool] = True  # a lower bound on log p(x), which training maximises
    settings: ClassVar[tuple[str, ...]] = ("estimator", "beta", "free_bits")  # the keywords make_objective passes

    def __init__(self, *, estimator: str = "reparam", beta: float = 1.0, free_bits: float = 0.0) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if estimator == "dreg" and not self.dreg_ok:
            raise ValueError(f"the dreg estimator is defined for ELBO and IWAE, not {type(self).__name__}")
        if free_bits < 0:
            raise ValueError(f"free_bits must be at least 0, got {free_bits}")
        self.estimator, self.beta, self.free_bits = estimator, beta, free_bits
        self.baseline: float | None = None  # running average of the bound, for the score estimator

    @property
    def reparameterize(self) -> bool:
        return self.estimator != "score"

    @property
    def stop_q(self) -> bool:
        return self.estimator in ("stl", "dreg")

    def bound(self, log_w: Tensor) -> Tensor:
        """The bound as a function of log-weights: ``[K, B] -> [B]``."""
        raise NotImplementedError

    def __call__(self, p: Particles) -> Bound:
        log_w = p.log_w
        value = self.bound(log_w)
        weighted = log_w if self.beta == 1 and not self.free_bits else p.log_lik - self.beta * self._log_ratio(p)
        return Bound(value, self._surrogate(p, weighted), p.log_lik.mean(0), (p.log_q - p.log_prior).mean(0))

    def _log_ratio(self, p: Particles) -> Tensor:
        """log q - log p per particle, ``[K, B]``, with free bits applied."""
        if not self.free_bits:
            return p.log_q - p.log_prior
        per_dim = _log_ratio_per_dimension(p)  # [K, B, D]
        active = per_dim.detach().mean((0, 1)) >= self.free_bits  # batch-average KL per dimension, [D]
        return torch.where(active, per_dim, per_dim.detach()).sum(-1)

    def _surrogate(self, p: Particles, weighted: Tensor) -> Tensor:
        """The estimator's surrogate for the (weighted) log-weights ``[K, B]``: ``[B]``."""
        if self.estimator == "dreg":
            w = torch.softmax(weighted.detach(), 0)  # normalised importance weights, [K, B]
            if p.z.requires_grad:  # the encoder's gradient gets a second factor w~_k
                p.z.register_hook(lambda g: g * w.unsqueeze(-1))
            return (w * weighted).sum(0)
        surrogate = self.bound(weighted)
        if self.estimator == "score":
            surrogate = surrogate + self._score_term(surrogate.detach(), p.log_q)
        return surrogate

    def _score_term(self, value: Tensor, log_q: Tensor) -> Tensor:
        """(f - b) sum_k log q(z_k), with b a running average of f taken before this batch."""
        mean = value.mean().item()
        baseline = mean if self.baseline is None else self.baseline
        self.baseline = 0.9 * baseline + 0.1 * mean
        return (value - baseline) * log_q.sum(0)

    def _options(self) -> str:
        return f"estimator={self.estimator!r}, beta={self.beta}, free_bits={self.free_bits}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._options()})"


class ELBO(Objective):
    """The evidence lower bound E_q[log p(x | z)] - KL(q(z | x) || p(z)) <= log p(x).

    With ``analytic_kl`` and the ``reparam`` estimator, the KL is in closed form where
    torch.distributions registers one (lower variance; Kingma & Welling 2014, eq. 10);
    otherwise (no closed form, or another estimator) it is estimated from the same draws as
    the reconstruction, which makes the
    value exactly the mean of the log-weights. The two differ at the exact posterior: there
    every log-weight equals log p(x), so the Monte Carlo form is exact with one particle,
    while the closed form is exact only in expectation (its reconstruction term still
    varies with z).

    Args:
        analytic_kl: use the closed-form KL when available (``reparam`` only: STL, DReG and
            the score-function estimator need log q at the draws).
        estimator: ``reparam``, ``stl``, ``dreg`` (equal to ``stl`` with one particle) or ``score``.
        beta: the KL weight of the surrogate.
        free_bits: lambda of Kingma et al. (2016): each latent dimension's KL, averaged over
            the batch, counts as at least lambda nats, so the surrogate stops pushing
            dimensions below lambda toward the prior. 0 turns it off. With the closed-form KL
            the per-dimension KLs are closed-form too.

    >>> from torch.distributions import Independent, Normal
    >>> q = Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
    >>> p = Particles(q.rsample((1,)), torch.zeros(1, 3), q, q)
    >>> ELBO()(p).value
    tensor([0., 0., 0.])
    """

    dreg_ok = True
    settings = (*Objective.settings, "analytic_kl")

    def __init__(
        self, *, analytic_kl: bool = True, estimator: str = "reparam", beta: float = 1.0, free_bits: float = 0.0
    ) -> None:
        super().__init__(estimator=estimator, beta=beta, free_bits=free_bits)
        self.analytic_kl = analytic_kl

    def bound(self, log_w: Tensor) -> Tensor:
        return elbo(log_w)

    def __call__(self, p: Particles) -> Bound:
        if not (self.analytic_kl and self.estimator == "reparam"):
            return super().__call__(p)
        try:
            divergence = kl_divergence(p.q, p.prior)
        except NotImplementedError:  # no closed form (flows, mixtures): the mean of the log-weights
            return super().__call__(p)
        reconstruction = p.log_lik.mean(0)
        value = reconstruction - divergence
        if self.free_bits:
            surrogate = reconstruction - self.beta * self._free_bits_kl(p)
        elif self.beta == 1:
            surrogate = value
        else:
            surrogate = reconstruction - self.beta * divergence
        return Bound(value, surrogate, reconstruction, divergence)

    def _free_bits_kl(self, p: Particles) -> Tensor:
        """sum_d max(lambda, E_batch KL_d) per data point, closed form: dimensions under lambda give a constant."""
        _check_factorized(p)
        per_dim = kl_divergence(p.q.base_dist, p.prior.base_dist)  # [B, D]
        active = per_dim.mean(0) >= self.free_bits  # [D]
        return (per_dim * active).sum(-1) + self.free_bits * (~active).sum()

    def _options(self) -> str:
        return f"analytic_kl={self.analytic_kl}, {super()._options()}"


class IWAE(Objective):
    """The importance-weighted bound log (1/K) sum_k w_k (Burda et al., 2016), K = the particles given.

    With ``dreg`` the encoder's gradient is the doubly reparameterized one of Tucker et al.
    (2018), sum_k w~_k^2 d log w_k / d z_k dz_k / d phi, whose signal-to-noise ratio does not
    decay with K as the plain reparameterized gradient's does (Rainforth et al., 2018).
    """

    dreg_ok = True

    def bound(self, log_w: Tensor) -> Tensor:
        return iwae(log_w)


class RenyiBound(Objective):
    """The Rényi bound of order alpha (Li & Turner, 2016): alpha = 0 is IWAE, alpha -> 1 the ELBO."""

    settings = (*Objective.settings, "alpha")

    def __init__(
        self, alpha: float = 0.5, *, estimator: str = "reparam", beta: float = 1.0, free_bits: float = 0.0
    ) -> None:
        super().__init__(estimator=estimator, beta=beta, free_bits=free_bits)
        self.alpha = alpha

    def bound(self, log_w: Tensor) -> Tensor:
        return renyi(log_w, self.alpha)

    def _options(self) -> str:
        return f"alpha={self.alpha}, {super()._options()}"


class CUBO(Objective):
    """The chi upper bound CUBO_n (Dieng et al., 2017): with ``ELBO`` or ``IWAE``, an interval around log p(x)."""

    lower = False
    settings = ("estimator", "n")

    def __init__(self, n: float = 2.0, *, estimator: str = "reparam") -> None:
        super().__init__(estimator=estimator)
        if n < 1:
            raise ValueError(f"CUBO_n is an upper bound for n >= 1, got {n}")
        self.n = n

    def bound(self, log_w: Tensor) -> Tensor:
        return cubo(log_w, self.n)

    def _options(self) -> str:
        return f"n={self.n}, {super()._options()}"


OBJECTIVES: dict[str, type[Objective]] = {"elbo": ELBO, "iwae": IWAE, "renyi": RenyiBound, "cubo": CUBO}
SETTINGS = tuple(dict.fromkeys(key for cls in OBJECTIVES.values() for key in cls.settings))  # every keyword


def make_objective(name: str, **settings: Any) -> Objective:
    """The objective ``name`` of ``OBJECTIVES``, given the ``settings`` its class takes (its
    ``settings``; the others are left out, so a caller may pass all of ``SETTINGS``).

    >>> make_objective("renyi", alpha=0.5, estimator="stl", analytic_kl=False)
    RenyiBound(alpha=0.5, estimator='stl', beta=1.0, free_bits=0.0)
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    return cls(**{key: value for key, value in settings.items() if key in cls.settings})
