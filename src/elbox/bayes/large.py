"""Fits on large data: the start from a subsample's mode and Hessian, then minibatches with a control variate.

``fit_at_scale`` is ``bayes.fit`` for data too large for the full-data start: it starts at
``find_start_at_scale``, fits on minibatches of the rows with ``control``'s per-row terms
anchored at that mode, and returns a posterior over the plain model (its verdict uses the
rows themselves; ``subsample`` when they are many). ``shard`` composes with it: pass a
``ShardedModel`` and this process's rows. The diagonal family (the default) takes the
natural-gradient steps of ``natural`` in one schedule, the control variate re-anchored at q's
mean whenever it has moved away; other families, objectives and ``optimizer="adam"`` take Adam,
refitted from q with the variate re-anchored (``REANCHOR``). Measured on ``bench/bayes_scale.py``:
1,800 steps at N = 10^4 where Adam's restarts took 9,400; at N = 10^6, 5,400 steps where Adam's
five restarts stopped at the cap (13,000 steps) some 900 nats of ELBO lower.

The start:

``laplace.find_start`` climbs on all N rows and takes d backward passes over them for the
Hessian: at N = 10^6 and d = 1,022 (a thousand group intercepts) that is minutes. Here, with
m rows J drawn at random and the likelihood scaled by N/m,

    f_J(u) = -log p(u) - (N/m) sum_{j in J} log p(x_j | theta(u)),     u_J = argmin f_J,  H = hess f_J(u_J)

(L-BFGS on m rows, then at most 100 L-BFGS iterations on all N rows from there, gradient passes
only; the Hessian on the m rows at that point), then damped Newton steps u <- u - t H^-1 grad f(u)
with the gradient of all N rows until the Newton decrement sqrt(g H^-1 g), the distance to the
full-data mode in posterior sds, is below 0.01 (or 5 steps). Undamped Newton with the subsample's
Hessian diverged on the benchmark at N = 10^6 (1,000 groups: 20 rows each in the subsample).
H is off by O(1/sqrt(rows per
parameter)); it only sets the fit's coordinates (``affine``), whose optimum does not depend on
them, and the Newton steps still converge to the full-data mode, only linearly. Under ``shard``
every process takes m rows of its own rows (N/m its shard's) and the sums are over processes.
"""

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..distributed import world
from ..families import DiagonalGaussian, FullRankGaussian, LowRankGaussian, make_family, start_at
from .control import with_control_variate
from .fitting import _check, _phase
from .laplace import Start, _lbfgs, plain
from .model import Model
from .natural import RHO, run_natural
from .posterior import THREADS, Posterior
from .posterior import threads as use_threads
from .shard import ShardedModel
from .stochastic import Convergence

__all__ = ["HESSIAN_ROWS", "REANCHOR", "REANCHOR_SDS", "find_start_at_scale", "fit_at_scale"]

HESSIAN_ROWS = 20_000  # rows for the subsample's mode and Hessian: seconds for d ~ 1,000
# the row evaluations the start's L-BFGS on all rows may spend. The fit after it re-anchors its control variate as q
# moves (one pass each), so the start need not be the full-data mode: at N = 10^7 (1,000 groups) 100 iterations were
# 114 of the 133 s, and 10 gave the same fit (2,000 steps, fixed effects 1.05 / 2.80 sd from the truth) in 69 s
FULL_ROWS = 10**8
REANCHOR, REANCHOR_SDS = 5, 1.0  # fit_at_scale: the most new anchors, and the distance from the last that calls one
# ``family="auto"`` on minibatches (``elbox fit --batch-size``, whose default family is auto): the one family fitted
# at scale. auto's escalation fits richer families by minibatched Adam, thousands of steps each, and the verdict that
# would send it on is one that at scale often cannot check (docs/large_data.md)
AUTO_AT_SCALE = ("auto on minibatches: the diagonal family by natural-gradient steps (the one family fitted at "
                 "scale); ask for another with family=... (fullrank, a flow: minibatched Adam)")


def find_start_at_scale(
    model: Model, data: dict, *, rows: int = HESSIAN_ROWS, seed: int = 0, dtype: torch.dtype = torch.float64,
    max_iter: int = 500, full_iter: int | None = None, newton_steps: int = 5,
) -> Start:  # fmt: skip
    """The mode of log p(u, x) on all rows and the Hessian there estimated from ``rows`` of them (or a plain start).

    ``full_iter``: the L-BFGS iterations on all rows after the subsample's mode; by default as many as
    ``FULL_ROWS`` row evaluations allow, between 10 and 100 (100 up to N = 10^6, 10 at 10^7)."""
    data, n = model.prepare(data, dtype)
    if n is None or rows >= n:
        from .laplace import find_start

        return find_start(model, data, dtype=dtype)
    full_iter = full_iter if full_iter is not None else min(100, max(10, FULL_ROWS // n))
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=generator)[:rows] if n < 20 * rows else torch.randint(n, (rows,),
                                                                                              generator=generator)
    sub = data | {key: data[key][index] for key in model.observed}

    def f_sub(u: Tensor) -> Tensor:
        return -model.log_density(u[None], sub, scale=n / rows)[0]

    def f_all(u: Tensor) -> Tensor:
        return -model.log_density(u[None], data)[0]

    try:
        u = _lbfgs(f_sub, torch.zeros(model.dim, dtype=dtype), max_iter)
        # then on all rows from there (gradient passes only): the subsample's mode can be far off in the
        # directions the subsample barely sees (a group's intercept from 20 of its 1,000 rows)
        u = _lbfgs(f_all, u, full_iter)
        # the subsample's curvature at the full-data mode: vmap over a collective (``shard``'s all-reduce in
        # the backward) is not supported, so column by column there
        h = torch.autograd.functional.hessian(f_sub, u, vectorize=world().size == 1)
        h = _positive((h + h.T) / 2)
        chol = torch.linalg.cholesky(h)
        decrement = math.inf
        for _ in range(newton_steps):  # damped: a step that does not lower -log p(u, x) on all rows is halved
            x = u.detach().requires_grad_()
            value = f_all(x)
            g = torch.autograd.grad(value, x)[0]
            step = torch.cholesky_solve(g[:, None], chol)[:, 0]
            decrement = math.sqrt(max(float(g @ step), 0.0))
            if decrement < 0.01:
                break
            t = 1.0
            with torch.no_grad():
                while t > 1 / 64 and not float(f_all(u - t * step)) < float(value):
                    t /= 2
            if t <= 1 / 64:
                break
            u = u - t * step
    except (RuntimeError, ValueError) as e:  # no mode on the subsample, a Hessian that is not positive definite
        return plain(model.dim, dtype, f"the subsampled search for a mode failed ({str(e).splitlines()[0][:80]})")
    return Start(u.detach(), h.detach(), "mode", f"mode on all {n} rows ({decrement:.3f} sds after Newton steps); "
                 f"Hessian from {rows} of them")  # fmt: skip


def _positive(h: Tensor) -> Tensor:
    """H with its eigenvalues replaced by their absolute values, floored at 1e-8 of the largest (Dauphin et al.
    2014): the subsample's Hessian at the full-data mode can be indefinite (its own gradient is not zero
    there, and enters the cross terms of a non-centered sigma * z_j), and it only has to give scales."""
    values, vectors = torch.linalg.eigh(h)
    values = values.abs().clamp_min(1e-8 * float(values.abs().max()))
    return (vectors * values) @ vectors.T


def fit_at_scale(
    model: Model, data: dict, *, batch_size: int, seed: int = 0, rows: int = HESSIAN_ROWS,
    dtype: torch.dtype = torch.float64, reanchor: int = REANCHOR, **options: Any,
) -> Posterior:  # fmt: skip
    """``bayes.fit(model, data, batch_size=..., **options)`` from ``find_start_at_scale``, with the control
    variate anchored at its mode (when it found one); the posterior's model and data are the plain ones.

    The diagonal family with the ELBO (the default) is fitted by ``_fit_natural``: natural-gradient steps in
    one schedule, re-anchored inside it (``reanchor`` does not cap those anchors: each costs one pass over the
    rows). Otherwise (Adam) a Gaussian q whose mean ends more than ``REANCHOR_SDS`` of its sds from the anchor
    (in some coordinate) is fitted again, at most ``reanchor`` times, from itself, with the control variate
    anchored at its mean: the variate's noise grows with the distance from its anchor (second order in
    theta - theta*), and with it the standard error of ``Convergence``'s window test, which then calls a fit
    still climbing a stall.
    Measured on ``bench/bayes_scale.py`` at N = 10^4 (10 rows per group): the joint mode has sigma = 6.7
    where the posterior has 0.79 +- 0.04 (the non-centered mode lets the 1,000 intercepts go unshrunk, and
    the fixed effects there are 1.12 times NUTS's, the incidental-parameter bias); anchored only there, the
    per-step ELBO's sd grew from 28 to 157 nats, the rule stopped at sigma = 1.97, 240 nats below the
    optimum, and the fixed effects stayed 1.11 times NUTS's (1.24 NUTS sds rms). The re-anchoring also stops
    as soon as a new anchor raises the ELBO (the mean of the last ``Convergence.window`` steps, unbiased
    whatever the anchor) by less than two standard errors: the distance in q's own sds alone would go on
    where a fit has settled. At N = 10^6 it did not settle: each of the five re-anchorings raised the ELBO
    by 60-80 nats (standard errors 3-5), so the single-anchor fit there (21 s) had stopped some 350 nats short."""
    from .fitting import fit

    auto = options.get("family") == "auto"
    if auto:  # at scale auto is the diagonal family by natural-gradient steps (AUTO_AT_SCALE says why)
        options = options | {"family": "diagonal"}
    data, n = model.prepare(data, dtype)
    with use_threads(options.get("threads", THREADS)):
        t0 = time.perf_counter()
        start = find_start_at_scale(model, data, rows=rows, seed=seed, dtype=dtype)
        start_seconds = time.perf_counter() - t0
    if start.method != "mode":
        return fit(model, data, batch_size=batch_size, init=start, seed=seed, dtype=dtype, **options)
    if _natural(options):
        posterior = _fit_natural(model, data, n, start, start_seconds, batch_size=batch_size, seed=seed, **options)
        posterior.choice = AUTO_AT_SCALE if auto else ""
        return posterior
    anchor, init, fits, level = start.shift, start, [], None
    window = (options.get("convergence") or Convergence()).window
    for round_ in range(reanchor + 1):
        quiet, quiet_data = _anchored(model, data, anchor)
        fits.append(fit(quiet, quiet_data, batch_size=batch_size, init=init, seed=seed + round_, dtype=dtype,
                        **options))  # fmt: skip
        last = _level(fits[-1].elbo_trace, window)
        if level is not None and last[0] - level[0] < 2 * math.hypot(last[1], level[1]):
            break  # the last new anchor raised the ELBO by less than its noise: the fits have settled
        level, moment = last, _moments(fits[-1])
        if moment is None or round_ == reanchor:
            break
        mean, cov = moment
        moved = float(((mean - anchor).abs() / cov.diagonal().sqrt()).max())
        if not moved > REANCHOR_SDS:
            break
        anchor = mean
        init = Start(mean, torch.cholesky_inverse(torch.linalg.cholesky(cov)), "mode",
                     f"q's mean and covariance after fit {round_ + 1} ({moved:.1f} of its sds from the anchor)")
    posterior = fits[-1]
    posterior.model, posterior.data, posterior.start = model, data, start
    posterior.elbo_trace = np.concatenate([f.elbo_trace for f in fits])
    posterior.seconds = sum(f.seconds for f in fits)
    posterior.phases = [phase for f in fits for phase in f.phases]
    posterior.options["control_variate"] = (f"anchored at the mode (bayes.control), then re-anchored at q's mean "
                                            f"{len(fits) - 1} times")  # fmt: skip
    return posterior


def _anchored(model: Model, data: dict, u: Tensor) -> tuple[Model, dict]:
    """``model`` with ``control``'s variate anchored at u (inside the shard wrapper, which sums over processes)."""
    base = model.base if isinstance(model, ShardedModel) else model
    quiet, quiet_data = with_control_variate(base, data, u)
    return (ShardedModel(quiet) if isinstance(model, ShardedModel) else quiet), quiet_data


def _natural(options: dict[str, Any]) -> bool:
    """Whether ``fit_at_scale`` takes natural-gradient steps: the diagonal family (its default), the ELBO, and
    no optimiser asked for (``optimizer="adam"`` keeps Adam with the re-anchoring restarts)."""
    family = options.get("family", "diagonal")
    return family == "diagonal" and options.get("objective") is None and options.get("optimizer") in (None, "natural")


def _fit_natural(
    model: Model, data: dict, n: int, start: Start, start_seconds: float, *, batch_size: int, seed: int,
    family: str = "diagonal", particles: int | None = None, steps: int = 20_000, lr: float | None = None,
    convergence: Convergence | None = None, progress: bool | None = None, threads: int | None = THREADS,
    **_: Any,
) -> Posterior:  # fmt: skip
    """The diagonal family by ``natural.run_natural`` from the start, one schedule, the control variate
    re-anchored at q's mean at the end of any window where the mean has moved more than ``REANCHOR_SDS`` of
    q's sds from the anchor (one pass over the rows each; the fit's steps go on with their step size). ``lr`` is
    the first step size rho (default ``natural.RHO``), ``particles`` the draws a step (16)."""
    _check(family, particles, steps, lr, batch_size, n)
    convergence, k, rho = convergence or Convergence(), particles or 16, lr or RHO
    anchor = [start.shift]

    def reanchor(mean: Tensor, sd: Tensor) -> tuple[Model, dict] | None:
        if not float(((mean - anchor[0]).abs() / sd).max()) > REANCHOR_SDS:
            return None
        anchor[0] = mean.detach()
        return _anchored(model, data, anchor[0])

    shift, scale = start.shift, start.scale(False)
    with torch.random.fork_rng(devices=[]), use_threads(threads):
        torch.default_generator.manual_seed(seed)
        t0 = time.perf_counter()
        quiet, quiet_data = _anchored(model, data, start.shift)
        result = run_natural(quiet, quiet_data, n, shift, scale, k=k, steps=steps, batch_size=batch_size,
                             convergence=convergence, rho=rho, progress=progress, reanchor=reanchor)  # fmt: skip
        seconds = time.perf_counter() - t0
    q_family = make_family(family, model.dim).to(shift.dtype)
    start_at(q_family, result.m, torch.diag(1 / result.lam))
    steps_run = len(result.trace)
    phases = [_phase("start: mode search (subsample)", start_seconds, start.evaluations),
              _phase("fit diagonal (natural)", seconds, steps_run * k,
                     f"{steps_run} natural-gradient steps of {k} draws, {result.anchors} anchors")]  # fmt: skip
    options = dict(optimizer="natural", particles=k, steps=steps, lr=rho, batch_size=batch_size,
                   convergence=repr(convergence), threads=threads,
                   control_variate=f"anchored at the mode (bayes.control), then re-anchored at q's mean "
                                   f"{result.anchors - 1} times")  # fmt: skip
    return Posterior(model=model, data=data, family_name=family, family=q_family, shift=shift, scale=scale,
                     start=start, elbo_trace=result.trace, converged=result.converged, seconds=seconds, seed=seed,
                     options=options, phases=phases)  # fmt: skip


def _level(trace: np.ndarray, window: int) -> tuple[float, float]:
    """The mean of the last ``window`` values of an ELBO trace and its standard error (steps are independent)."""
    tail = trace[-window:]
    return float(tail.mean()), float(tail.std(ddof=1) / math.sqrt(len(tail)))


def _moments(posterior: Posterior) -> tuple[Tensor, Tensor] | None:
    """q's mean ``[d]`` and covariance ``[d, d]`` over u for the Gaussian families, else ``None``."""
    q = posterior.q()
    if not isinstance(posterior.family, (DiagonalGaussian, LowRankGaussian, FullRankGaussian)):
        return None
    cov = q.covariance_matrix if hasattr(q, "covariance_matrix") else torch.diag(q.variance)
    return q.mean.detach(), cov.detach()
