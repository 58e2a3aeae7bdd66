"""Importance weights: their effective sample size, the Monte Carlo error of log p(x), PSIS.

The functions of log-weights (DESIGN.md) that say how far an importance-sampling estimate
can be believed, written once for VAEs (``elbox.evaluation``: K particles per data point) and
Bayesian models (``elbox.bayes``: S draws of the parameters). ``log_w`` has the particles
first, ``[K, ...]``; every function reduces over that dimension and keeps the rest.
"""

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["KHAT_THRESHOLD", "arviz", "effective_sample_size", "log_px_standard_error", "psis", "psis_khat"]

KHAT_THRESHOLD = 0.7  # Yao et al. (2018), Vehtari et al. (2024): above it, do not trust the weights (nor q)


def arviz() -> Any:
    """ArviZ, imported on first use (it takes a second or two) without its import-time FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def effective_sample_size(log_w: Tensor) -> Tensor:
    """Importance ESS 1 / sum_k w~_k^2 of the normalised weights w~ (Kish 1965): ``[K, ...] -> [...]``.

    Between 1 (one particle holds all the weight) and K (equal weights).

    >>> effective_sample_size(torch.tensor([[0.0, 0.0], [0.0, -100.0]]))
    tensor([2., 1.])
    """
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def log_px_standard_error(log_w: Tensor) -> Tensor:
    """Monte Carlo standard error of the estimate log (1/K) sum_k w_k of log p(x): ``[K, ...] -> [...]``.

    The delta method: the sample variance of w over the square of its mean is
    (K / (K - 1)) (K / ESS - 1), so SE(log p^) ~ SE(p^) / p^ = sqrt((K / ESS - 1) / (K - 1)).
    It is itself estimated from the weights, so it is too small exactly when the weights are
    heavy-tailed: read it with PSIS k-hat. NaN for K = 1.

    >>> log_px_standard_error(torch.zeros(100, 1))  # equal weights: the estimate is exact
    tensor([0.])
    """
    k = log_w.shape[0]
    if k < 2:
        return torch.full(log_w.shape[1:], math.nan, dtype=log_w.dtype, device=log_w.device)
    return ((k / effective_sample_size(log_w) - 1).clamp(min=0) / (k - 1)).sqrt()


def psis(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Pareto-smoothed importance sampling of each column: ``[K, ...] -> ([K, ...], [...])`` (float64, CPU).

    PSIS (Vehtari, Simpson, Gelman, Yao & Gabry 2024) fits a generalised Pareto distribution to
    the largest min(K / 5, 3 sqrt(K)) weights and replaces them by its quantiles. Returns the
    smoothed, normalised log-weights (``exp`` sums to 1 over K) and the fitted shape k-hat,
    which says how heavy the tail is: below 0.7 the importance-sampling estimate is reliable;
    above, its variance is (nearly) infinite and the estimate can be far off whatever its
    standard error says (Yao, Vehtari, Simpson & Gelman 2018 use it to diagnose VI). Computed
    as ArviZ's ``psislw`` computes it (``_psis_row``, the same numbers: importing ArviZ took 1.5 s of
    a 4 s ``elbox fit``). k-hat is NaN where all weights are equal (a perfect proposal: no tail to
    fit) or K < 10, and inf where fewer than 5 weights exceed the tail's cut-off (a few weights
    dominate).

    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> light, heavy = torch.randn(5000, 1), 3 * torch.distributions.Cauchy(0.0, 1.0).sample((5000, 1)).abs().log()
    >>> psis(light)[1].item() < 0.7 < psis(heavy)[1].item()
    True
    >>> round(float(psis(light)[0].exp().sum()), 6)
    1.0
    """
    k, rest = log_w.shape[0], log_w.shape[1:]
    flat = log_w.detach().reshape(k, -1).T.double().cpu().numpy()  # [B, K]: ArviZ takes the draws last
    if k < 10:  # too few draws for a tail: normalised, not smoothed
        normalised = log_w.detach().double().cpu() - torch.logsumexp(log_w.detach().double().cpu(), 0)
        return normalised, torch.full(rest, math.nan, dtype=torch.float64)
    cut = -math.ceil(min(k / 5.0, 3 * k**0.5)) - 1  # the tail: the largest min(K / 5, 3 sqrt(K)) weights
    with np.errstate(all="ignore"):
        rows = [_psis_row(row.copy(), cut) for row in flat]
    smoothed, khat = np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])
    smoothed = torch.as_tensor(smoothed).T.reshape(log_w.shape)
    khat = torch.as_tensor(np.asarray(khat, dtype=np.float64)).reshape(rest)
    return smoothed, torch.where(torch.as_tensor(np.ptp(flat, axis=1) == 0).reshape(rest), math.nan, khat)


def _psis_row(x: np.ndarray, cut: int) -> tuple[np.ndarray, float]:
    """PSIS of one row of log-weights ``[K]`` (ArviZ 0.x ``_psislw``, Apache-2.0, step for step): the
    tail above the ``cut``-th largest is fitted by a generalised Pareto (``_gpd_fit``), replaced by its
    quantiles at (i - 1/2) / M, capped at the largest raw weight; then normalised. One difference: a fit with
    sigma <= 0 leaves the tail as it is, where ArviZ writes NaN."""
    x -= x.max()  # the largest weight is 1: no overflow in exp
    order = np.argsort(x)
    cutoff = max(x[order[cut]], np.log(np.finfo(float).tiny))
    (tail,) = np.where(x > cutoff)
    if len(tail) <= 4:  # too few tail draws to fit
        k = math.inf
    else:
        tail_order = np.argsort(x[tail])
        k, sigma = _gpd_fit(np.exp(x[tail]) - np.exp(cutoff), tail_order)
        if np.isfinite(k) and sigma > 0:  # a failed fit: no smoothing
            p = np.arange(0.5, len(tail)) / len(tail)
            q = -np.log1p(-p) if abs(k) < np.finfo(float).eps else np.expm1(-k * np.log1p(-p)) / k
            x[tail[tail_order]] = np.log(sigma * q + np.exp(cutoff))
            x[x > 0] = 0
    return x - np.logaddexp.reduce(x), float(k)


def _gpd_fit(tail: np.ndarray, order: np.ndarray) -> tuple[float, float]:
    """Shape k and scale sigma of a generalised Pareto fitted to ``tail[order]`` (ascending): Zhang &
    Stephens (2009)'s empirical Bayes estimate with a weakly informative prior on k (Vehtari et al. 2024)."""
    y = tail[order]
    n = len(y)
    m = 30 + int(n**0.5)
    b = 1 - np.sqrt(m / (np.arange(1, m + 1, dtype=float) - 0.5))
    b /= 3 * y[int(n / 4 + 0.5) - 1]
    b += 1 / y[-1]
    k = np.log1p(-b[:, None] * y).mean(axis=1)
    profile = n * (np.log(-(b / k)) - k - 1)
    weights = 1 / np.exp(profile - profile[:, None]).sum(axis=1)
    keep = weights >= 10 * np.finfo(float).eps  # negligible weights out
    weights, b = weights[keep], b[keep]
    b_post = np.sum(b * weights / weights.sum())
    k_post = np.log1p(-b_post * y).mean()
    sigma = -k_post / b_post
    return (n * k_post + 10 * 0.5) / (n + 10), sigma


def psis_khat(log_w: Tensor) -> Tensor:
    """The PSIS k-hat alone (``psis``): ``[K, ...] -> [...]`` (float64)."""
    return psis(log_w)[1]
