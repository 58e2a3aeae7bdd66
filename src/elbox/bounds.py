"""Variational bounds on log p(x) as pure functions of log-weights, and the ELBO objective.

Every bound is a function of the log-weights of K particles z_k ~ q(z | x) for B inputs,

    log_w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b)        # [K, B]

so VAEs and Bayesian models share them. This module knows tensors and
``torch.distributions``; it imports no model.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

__all__ = ["ELBO", "Bound", "Particles", "elbo", "iwae", "kl", "log_mean_exp", "log_weights"]


class Particles(NamedTuple):
    """K reparameterized draws from q for a batch of B inputs, with what a bound needs.

    Attributes:
        z: the draws, ``[K, B, D]``.
        log_lik: log p(x | z), ``[K, B]``.
        q: the variational distribution, batch shape ``[B]``, event shape ``[D]``.
        prior: p(z), batch shape ``[]`` or ``[B]``, event shape ``[D]``.
    """

    z: Tensor
    log_lik: Tensor
    q: Distribution
    prior: Distribution


class Bound(NamedTuple):
    """A bound per data point, in nats, with the surrogate that is differentiated.

    ``value`` is the number to report; ``surrogate`` has the gradient of the estimator and
    may differ from ``value`` (score-function or doubly reparameterized estimators keep
    ``value + (surrogate - surrogate.detach())``). All fields are ``[B]``.
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
    return p.log_lik + p.prior.log_prob(p.z) - p.q.log_prob(p.z)


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


class ELBO:
    """The evidence lower bound E_q[log p(x | z)] - KL(q(z | x) || p(z)) <= log p(x).

    With ``analytic_kl`` the KL is in closed form where torch.distributions registers one
    (lower variance; Kingma & Welling 2014, eq. 10) and a Monte Carlo estimate otherwise;
    without it, the KL is always estimated from the same draws as the reconstruction,
    which makes the value exactly the mean of the log-weights. The two differ at the exact
    posterior: there every log-weight equals log p(x), so the Monte Carlo form is exact with
    one particle, while the closed form is exact only in expectation (its reconstruction
    term still varies with z).

    Args:
        analytic_kl: use the closed-form KL when available.

    >>> from torch.distributions import Independent, Normal
    >>> q = Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
    >>> p = Particles(q.rsample((1,)), torch.zeros(1, 3), q, q)
    >>> ELBO()(p).value
    tensor([0., 0., 0.])
    """

    def __init__(self, *, analytic_kl: bool = True) -> None:
        self.analytic_kl = analytic_kl

    def __call__(self, p: Particles) -> Bound:
        reconstruction = p.log_lik.mean(0)
        divergence = kl(p.q, p.prior, p.z) if self.analytic_kl else (p.q.log_prob(p.z) - p.prior.log_prob(p.z)).mean(0)
        value = reconstruction - divergence
        return Bound(value, value, reconstruction, divergence)

    def __repr__(self) -> str:
        return f"ELBO(analytic_kl={self.analytic_kl})"
