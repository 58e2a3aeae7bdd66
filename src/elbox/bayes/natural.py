"""Natural-gradient steps for a mean-field Gaussian: variational online Newton on a noisy, minibatched ELBO.

q(v) = N(m, diag(1 / lambda)) in the standardised coordinates of ``affine`` (u = shift + S v). With K
draws v_k = m + lambda^-1/2 eps_k and g_k = grad_v log p(u(v_k), x) (a minibatch's likelihood scaled
by N / B), the ELBO's gradient in m and, by Stein's identity E[grad f . eps] = lambda^-1/2 E[diag hess f],
the expected curvature are

    g = mean_k g_k                                   # [d]
    h = -mean_k (g_k - g) eps_k lambda^1/2 K/(K-1)   # [d], an estimate of E_q[-diag hess log p]

and a step of size rho is the Bayesian learning rule (Khan & Rue 2023) for the Gaussian, in its
improved form that keeps lambda positive whatever h is (Lin, Schmidt & Khan 2020), the mean's move
clipped at ``TRUST`` of q's sds:

    lambda <- lambda + rho (h - lambda) + rho^2 (h - lambda)^2 / (2 lambda)
    m      <- m + rho g / lambda

With lambda at the expected curvature and exact expectations, rho = 1 is Newton's step with the
diagonal of the Hessian, and the mean-field optimum is the rule's fixed point (lambda_i = E_q[-d^2 log
p / du_i^2], E_q[grad log p] = 0); the rho^2 term only keeps lambda positive (at most halved a step). Adam moves each
coordinate by about its learning rate in posterior sds whatever the curvature, and its noisy trace
needs thousands of steps to settle; measured on ``bench/bayes_scale.py`` at N = 10^4 (d = 1,022, the
start at a joint mode with sigma 6.7 where q has 0.78), these steps reached Adam's ELBO in 1,800 steps
where Adam took 9,400. What stays slow is a ridge that no diagonal step follows: at N = 10^6 the
sigma-intercepts ridge of the non-centered model (condition number 2,800 in these coordinates).

``run_natural`` runs them under ``stochastic.Convergence`` (rho for the learning rate: multiplied by
its ``factor`` at each stall) and averages the iterates (m, lambda) of the last rho (Polyak & Juditsky
1992). ``reanchor`` is called at the end of every window with q's mean and sds over u and may return
a new (model, data): a control variate re-anchored there (``large``); the ELBO's expectation does not
depend on the anchor, so the window test reads one trace across anchors.
"""

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ElboxError
from .model import Model
from .stochastic import MAX_FAILURES, Convergence, minibatch

__all__ = ["RHO", "NaturalResult", "natural_step", "run_natural"]

RHO = 0.3  # the first step size: 1 is Newton's step; 0.1 keeps the draws' noise in m at sqrt(rho / 2K) sds

# A trust region on the mean: far from the optimum (the start at a joint mode) Newton's step can be many sds, and
# a control variate anchored at the start grows noisy with the distance (second order in it); measured at N = 10^6
# without it, q's mean went 5,000 sds from the anchor in 200 steps before it came back
TRUST = 1.0

Reanchor = Callable[[Tensor, Tensor], tuple[Model, dict] | None]


def natural_step(m: Tensor, lam: Tensor, g: Tensor, h: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """One step of the rule above: the new mean ``[d]`` and precision ``[d]`` (positive whenever ``lam`` is), the
    mean's move clipped at ``TRUST`` sds of q in each coordinate."""
    diff = h - lam
    lam = lam + rho * diff + 0.5 * rho**2 * diff**2 / lam
    bound = TRUST * lam.rsqrt()
    return m + torch.maximum(torch.minimum(rho * g / lam, bound), -bound), lam


@dataclass
class NaturalResult:
    """What ``run_natural`` did: the mean and precision of q over v ``[d]``, the ELBO trace ``[T]``, whether the
    rule stopped it, and the anchors used (the first included)."""

    m: Tensor
    lam: Tensor
    trace: np.ndarray
    converged: bool
    anchors: int


def _gradients(model: Model, data: dict, n_scale: float, shift: Tensor, scale: Tensor, m: Tensor, lam: Tensor,
               k: int) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """log p at K draws of q ``[K]``, the mean gradient g ``[d]`` and the curvature estimate h ``[d]`` over v."""
    sd = lam.rsqrt()
    eps = torch.randn(k, m.shape[0], dtype=m.dtype)  # [K, d]
    v = (m + sd * eps).requires_grad_()
    f = model.log_density(shift + scale * v, data, scale=n_scale)  # [K]
    grads = torch.autograd.grad(f.sum(), v)[0]  # [K, d]: rows are independent draws
    g = grads.mean(0)
    h = -((grads - g) * eps).mean(0) / sd * (k / (k - 1))  # Stein: E[grad . eps] = sd E[diag hess]
    return f.detach(), g, h


def _average(mean: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor], count: int) -> tuple[Tensor, Tensor]:
    return mean[0] + (new[0] - mean[0]) / count, mean[1] + (new[1] - mean[1]) / count


def run_natural(
    model: Model, data: dict, n: int | None, shift: Tensor, scale: Tensor, *, k: int, steps: int,
    batch_size: int | None, convergence: Convergence, rho: float = RHO, progress: bool | None = None,
    reanchor: Reanchor | None = None,
) -> NaturalResult:  # fmt: skip
    """Natural-gradient steps from q = N(0, I) over v (the start's Laplace scales) until ``convergence`` stops
    them at the last rho, or ``steps`` run out."""
    if k < 2:
        raise ElboxError(f"the natural-gradient fit estimates curvature from the spread of its draws: particles "
                         f"must be at least 2, got {k}")  # fmt: skip
    d = shift.shape[0]
    m, lam = torch.zeros(d, dtype=shift.dtype), torch.ones(d, dtype=shift.dtype)
    # the entropy of q over u, but for sum log sd: d/2 log(2 pi e) + sum log S_i
    constant = 0.5 * d * (1 + math.log(2 * math.pi)) + float(scale.abs().log().sum())
    trace, phase_start, decays, failures, anchors = np.empty(steps), 0, 0, 0, 1
    mean_sum, count = None, 0
    bar = tqdm(total=steps, disable=not (sys.stderr.isatty() if progress is None else progress), unit="step")
    step, converged = 0, False
    for step in range(steps):
        batch, n_scale = minibatch(model, data, n, batch_size)
        f, g, h = _gradients(model, batch, n_scale, shift, scale, m, lam, k)
        if not (torch.isfinite(f).all() and torch.isfinite(g).all() and torch.isfinite(h).all()):
            failures += 1  # a draw far in a tail where the density over- or underflows: skip the step
            if failures >= MAX_FAILURES:
                bar.close()
                raise ElboxError(f"log p(u, x) or its gradient was not finite at {MAX_FAILURES} steps in a row, up "
                                 f"to step {step}: check the log density at the supports' edges")  # fmt: skip
            trace[step] = trace[step - 1] if step else math.nan
            continue
        failures = 0
        trace[step] = float(f.mean()) - 0.5 * float(lam.log().sum()) + constant
        m, lam = natural_step(m, lam, g, h, rho)
        if decays == convergence.decays:  # the running mean of (m, lambda) at the last rho
            count += 1
            mean_sum = (m, lam) if mean_sum is None else _average(mean_sum, (m, lam), count)
        bar.update()
        if (step + 1 - phase_start) % convergence.window:
            continue
        if reanchor is not None:
            moved = reanchor(shift + scale * m, scale.abs() * lam.rsqrt())
            if moved is not None:
                (model, data), anchors = moved, anchors + 1
        if convergence.stalled(trace[phase_start : step + 1]):
            if decays == convergence.decays:
                converged = True
                break
            decays, phase_start, rho = decays + 1, step + 1, rho * convergence.factor
    bar.close()
    if mean_sum is not None:
        m, lam = mean_sum
    return NaturalResult(m, lam, trace[: step + 1].copy(), converged, anchors)
