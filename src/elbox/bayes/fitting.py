"""Fitting one global q to a Bayesian model: the cheapest trusted answer first, then deterministic
quasi-Newton fits, stochastic steps where they pay.

Two optimisers, in the standardised coordinates of ``affine`` from the start of ``laplace``:

- ``lbfgs`` (the default for the Gaussian families): L-BFGS on the ELBO over fixed draws
  (``saa``): tens of iterations, reproducible, a stopping rule on fresh draws.
- ``adam`` (minibatches, a chosen ``objective``, mixtures, and the flows by default): each
  step draws K particles u_k ~ q, evaluates log p(theta(u_k), x) + log |det J| (on a minibatch,
  the likelihood scaled by N / batch size), and ascends the objective (``bounds``: ELBO,
  IWAE, Rényi) of the log-weights

      log w_k = log p(x | theta(u_k)) + log p(u_k) - log q(u_k)                 # [K, 1]

  Flows stay with Adam by default because it is cheaper there: on the non-centered eight
  schools a realnvp:8 fit needs about 26,000 flow evaluations with Adam (1,600 steps of 16)
  and 650,000 with L-BFGS (its fixed sets must be large, 2,048 draws, or the network fits them).

``family="auto"`` escalates with evidence (``_escalate``): the Laplace approximation
N(mode, H^-1) goes through the verdict first (zero VI iterations; Pathfinder's idea, Zhang,
Carpenter, Gelman & Vehtari 2022); mean-field is skipped when the Laplace Gaussian says it
cannot pass the sd check (``laplace.mean_field_sd_ratio``); the full-rank fit starts at the
Laplace approximation; the sinh-arcsinh family (L-BFGS: skew and tails per coordinate) and the
flow (``AUTO_FLOW``) are placed by the full-rank fit's mean and Cholesky factor. The flow first
runs a short schedule (``WARM_LR``, ``WARM_WINDOW``, ``WARM_PARTICLES``: about 200 steps from that
start) and, when the verdict does not trust it, one more with twice the draws per step, its fresh Adam's learning
rate warmed up (``CONTINUE``). Without a mode the
full-rank fit is placed by the mean-field one, and the low-rank family is tried only above ``LOWRANK_ABOVE``
dimensions.
A verdict on a fit that auto may still pass over stops at the first set of draws after which it cannot be
"trust" (``_early``, ``diagnostics.diagnose``'s ``refuse_early``); the verdict auto shows is always the full one.
Every phase's seconds and log-density evaluations are kept in ``Posterior.phases``.
"""

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..bounds import Objective
from ..errors import ElboxError
from ..families import FLOWS, check_family_name, make_family, start_at
from ..optim import Adam
from .diagnostics import KHAT_LIMIT, KHAT_MAX, SD_TOL, agreement
from .laplace import Start, find_start, mean_field_sd_ratio, plain
from .model import Model
from .posterior import THREADS, Posterior
from .posterior import threads as use_threads
from .saa import Stopping, draws_for, fit_fixed
from .stochastic import Convergence, Stepper, default_objective, run_adam

__all__ = ["AUTO", "AUTO_FLOW", "FLOW", "LAPLACE", "OPTIMIZERS", "Convergence", "fit"]

FLOW = "realnvp:8"  # what ``family="flow"`` means: couplings sample and evaluate log q in one pass each way
LAPLACE = "laplace"  # N(mode, H^-1): the full-rank family at its start, no VI step
AUTO_FLOW = "realnvp:4"  # auto's flow: placed by the full-rank fit, half realnvp:8's cost per step, as accurate there
AUTO = (LAPLACE, "diagonal", "fullrank", "sinharcsinh", AUTO_FLOW)  # the escalation of ``family="auto"`` (_escalate)
AUTO_PLAIN = ("diagonal", "lowrank", "fullrank", "sinharcsinh", AUTO_FLOW)  # ... without a mode (no Hessian)
WARM = ("sinharcsinh", AUTO_FLOW)  # the families of auto placed by the full-rank fit (they start at it)
# Adam's first schedule for auto's flow when placed by the full-rank fit and not set by the caller: it starts near
# the optimum, so larger steps, a 25-step convergence window, and 64 draws a step (a step costs about what one of 16
# costs: Python and autograd overhead, not arithmetic, at this size). Measured on the non-centered eight schools:
# ~200 steps (0.8-0.9 s) where 1,600 of 16 took 20 s. When the verdict does not trust that fit, one more short schedule
# continues from it with twice the draws per step (``CONTINUE_PARTICLES``), not the default schedule: on the centered
# eight schools (a funnel) 1,800 steps of the default schedule took k-hat from 0.81 to 0.77 in 11.5 s, still refused.
WARM_LR, WARM_WINDOW, WARM_PARTICLES, CONTINUE_PARTICLES = 0.01, 25, 64, 128
# The continuation's fresh Adam warms its learning rate up over CONTINUE_WARMUP steps: its first bias-corrected steps
# would move every weight by the full rate, and on the centered eight schools they threw the first schedule's flow
# off (the ELBO fell from -31.5 to between -32.1 and -40.1 in the first window). Measured over 40 seeds (docs/
# benchmarks.md, ninth pass): continued flows within the targets 39 of 40 against 24, trusted and missing 1 against 2.
CONTINUE_WARMUP = 25
CONTINUE = {"particles": CONTINUE_PARTICLES, "convergence": Convergence(window=WARM_WINDOW, warmup=CONTINUE_WARMUP)}
# auto's low-rank family is a cheaper full-rank one; at LOWRANK_ABOVE dimensions or fewer the full-rank fit costs
# about as much (its d (d + 1) / 2 scale entries are few), and auto goes straight to it
LOWRANK_ABOVE = 100
OPTIMIZERS = ("lbfgs", "adam")
# what auto adds to its choice where the density has no mode (the start's reason): a funnel's neck, whose mass
# importance sampling from q cannot correct where q does not draw. Measured (docs/benchmarks.md, ninth pass): on
# the centered eight schools 1 of 14 trusted fits over 40 seeds had tau's mean 0.106 sd off (the target is 0.1).
_FUNNEL = ("The density has no mode, as in a funnel (a scale near 0 pulling other parameters with it), and a "
           "non-centered parameterization (theta = mu + tau * z, z ~ N(0, 1)) usually removes it")  # fmt: skip
NO_MODE_REFUSED = f". {_FUNNEL}"
NO_MODE_TRUSTED = (f". Caution: {_FUNNEL[0].lower()}{_FUNNEL[1:]}; there, mass that q never draws is invisible to "
                   "the verdict (on the centered eight schools, 1 of 14 trusted fits over 40 seeds was 0.11 sd off)")
LR, FLOW_LR = 0.02, 0.005  # Adam's default learning rates, in posterior sds per step


def _check(family: str, particles: int | None, steps: int, lr: float | None, batch_size: int | None,
           n: int | None) -> None:  # fmt: skip
    if family not in ("auto", "flow", LAPLACE):
        try:
            check_family_name(family)
        except ValueError as e:
            raise ElboxError(f"{e}, or auto (escalate until the verdict trusts the fit), flow ({FLOW}) or laplace "
                             "(N(mode, H^-1), no VI)") from None  # fmt: skip
    if (particles is not None and particles < 1) or steps < 1 or (lr is not None and not lr > 0):
        raise ElboxError(f"particles and steps must be at least 1 and lr positive; got {particles}, {steps}, {lr}")
    if batch_size is not None:
        if n is None:
            raise ElboxError("data subsampling (batch_size) needs the model to name its observed arrays: "
                             "Model(..., observed=('y', 'x')), each with one row per observation")  # fmt: skip
        if not 1 <= batch_size <= n:
            raise ElboxError(f"batch_size must be between 1 and the number of observations N = {n}, got {batch_size}")


def _optimizer(asked: str | None, family: str, objective: Objective | None, batch_size: int | None) -> str:
    """The optimiser of one family's fit: ``asked``, or L-BFGS on fixed draws for the Gaussians and
    Adam where fixed draws do not fit (a minibatch, a chosen objective, a mixture) or cost more (a flow)."""
    kind = check_family_name(family)[0]
    if asked is not None and asked not in OPTIMIZERS:
        raise ElboxError(f"optimizer must be one of {OPTIMIZERS} (or None: chosen per family), got {asked!r}")
    reasons = (("minibatches (batch_size)", batch_size is not None), ("a chosen objective", objective is not None),
               ("a mixture's discrete component draws", kind == "mixture"))  # fmt: skip
    blocked = next((why for why, yes in reasons if yes), "")
    if asked == "lbfgs" and blocked:
        raise ElboxError(f"optimizer='lbfgs' needs one fixed set of draws and an exact gradient, which {blocked} "
                         "cannot give: use optimizer='adam' (the default there)")  # fmt: skip
    if asked is not None:
        return asked
    return "adam" if blocked or kind in FLOWS else "lbfgs"


def fit(
    model: Model, data: dict[str, Any] | None = None, *, family: str = "diagonal", objective: Objective | None = None,
    particles: int | None = None, steps: int = 20_000, lr: float | None = None, batch_size: int | None = None,
    init: str | Start = "mode", convergence: Convergence | None = None, seed: int = 0, progress: bool | None = None,
    dtype: torch.dtype = torch.float64, threads: int | None = THREADS, optimizer: str | None = None,
    stopping: Stopping | None = None,
) -> Posterior:  # fmt: skip
    """Fit q in ``family`` to the posterior of ``model`` given ``data``; a ``Posterior``.

    Args:
        family: ``diagonal``, ``lowrank[:R]``, ``fullrank``, ``sinharcsinh``, a flow (``iaf``, ``nsf``,
            ``realnvp``, ``maf`` with ``:L`` steps; ``flow`` is ``realnvp:8``), ``mixture[:K]``, ``laplace``
            (N(mode, H^-1), no VI), or ``auto``: the Laplace approximation, then mean-field
            (unless the Laplace Gaussian rules it out), full-rank, sinh-arcsinh and ``AUTO_FLOW``, each
            warm-started from the last, until the verdict of ``diagnostics`` trusts one (the posterior
            says which and why, and ``phases`` what each step cost).
        objective: a bound of ``elbox.bounds`` for Adam (default: the ELBO, STL gradients for Gaussians).
        particles: draws per step for Adam (default 16); for L-BFGS the fixed draws per set
            (default ``saa.draws_for``: 2,048, fewer for models with many observations).
        steps: the most Adam steps or L-BFGS iterations; the stopping rules usually end the fit earlier.
        lr: Adam's learning rate, in posterior standard deviations (see ``affine``); default 0.02,
            and 0.005 for flows, whose network weights move every coordinate at once.
        batch_size: draw this many observations per step (the model's ``observed`` arrays) and
            scale their log-likelihood by N / batch size, N read from the data (Adam only).
        init: ``mode`` (mode and Hessian, falling back to a plain start), ``plain`` (u = 0,
            scale 1) or a ``laplace.Start``.
        seed: seeds every draw; the caller's random state is left as it was.
        progress: a progress bar for Adam (default: when stderr is a terminal).
        dtype: of q and the data; float64 by default (posteriors with correlations of -0.99999 need it).
        threads: torch's intra-op threads during the fit and its diagnostics (restored after);
            1 by default, see ``posterior.threads``; ``None`` leaves torch's setting.
        optimizer: ``lbfgs`` (fixed draws, ``saa``) or ``adam`` (``Convergence``); ``None``: L-BFGS for
            the Gaussian families, Adam for flows, mixtures, minibatches and a chosen ``objective``.
        stopping: L-BFGS's stopping rule (``saa.Stopping``).
    """
    warm = (dict(lr=WARM_LR, convergence=Convergence(window=WARM_WINDOW), particles=WARM_PARTICLES)
            if lr is None and convergence is None and particles is None else {})  # fmt: skip
    convergence = convergence or Convergence()
    prepared, n = model.prepare(data, dtype)
    _check(family, particles, steps, lr, batch_size, n)
    if family not in ("auto", LAPLACE):
        _optimizer(optimizer, FLOW if family == "flow" else family, objective, batch_size)  # refuse bad pairs early
    options = dict(objective=objective, particles=particles, steps=steps, lr=lr, batch_size=batch_size,
                   convergence=convergence, seed=seed, progress=progress, dtype=dtype, threads=threads,
                   optimizer=optimizer, stopping=stopping)  # fmt: skip
    with torch.random.fork_rng(devices=[]), use_threads(threads):
        torch.default_generator.manual_seed(seed)
        t0 = time.perf_counter()
        start = init if isinstance(init, Start) else _start(model, prepared, init, dtype)
        phases = [_phase(f"start: {start.method}" + (" search" if start.method == "mode" else ""),
                         time.perf_counter() - t0, start.evaluations)]  # fmt: skip
        if family == "auto":
            return _escalate(model, prepared, n, start, phases, options, warm)
        if family == LAPLACE:
            return _laplace(model, prepared, start, phases, seed, threads)
        return _fit_one(model, prepared, n, FLOW if family == "flow" else family, start, phases=phases, **options)


def _phase(name: str, seconds: float, evaluations: int, note: str = "") -> dict[str, Any]:
    """One row of ``Posterior.phases``: what ran, its wall seconds and its log-density evaluations
    (points at which log p(u, x) was computed, gradients included)."""
    return {"phase": name, "seconds": seconds, "evaluations": int(evaluations), "note": note}


def _start(model: Model, data: dict, init: str, dtype: torch.dtype) -> Start:
    if init == "mode":
        return find_start(model, data, dtype=dtype)
    if init == "plain":
        return plain(model.dim, dtype, "asked for (init='plain')")
    raise ElboxError(f"init must be 'mode', 'plain' or a laplace.Start, got {init!r}")


def _laplace(model: Model, data: dict, start: Start, phases: list, seed: int, threads: int | None) -> Posterior:
    """N(mode, H^-1) over u as a Posterior: the full-rank family at its start, placed by the Laplace Cholesky."""
    if start.hessian is None:
        raise ElboxError(f"the Laplace approximation needs a mode, and there is none: {start.reason}. "
                         "Choose a VI family (fullrank, flow) or family='auto'")  # fmt: skip
    q_family = make_family("fullrank", model.dim).to(start.shift.dtype)
    return Posterior(model=model, data=data, family_name=LAPLACE, family=q_family, shift=start.shift,
                     scale=start.scale(True), start=start, elbo_trace=np.empty(0), converged=True, seconds=0.0,
                     seed=seed, options=dict(optimizer=None, threads=threads), phases=phases)  # fmt: skip


def _fit_one(
    model: Model, data: dict, n: int | None, family: str, start: Start, *, objective: Objective | None,
    particles: int | None, steps: int, lr: float | None, batch_size: int | None, convergence: Convergence, seed: int,
    progress: bool | None, dtype: torch.dtype, threads: int | None, optimizer: str | None,
    stopping: Stopping | None, phases: list | None = None, placement: tuple[Tensor, Tensor] | None = None,
    resume: torch.nn.Module | None = None,
) -> Posterior:  # fmt: skip
    """One family's fit, placed by the start (or by ``placement``, (shift, scale): a warm start), from the
    family's initial parameters or from those of ``resume`` (a fitted family module, trained further in place)."""
    t0 = time.perf_counter()
    q_family = resume if resume is not None else make_family(family, model.dim).to(dtype)
    kind = check_family_name(family)[0]
    full = kind in ("fullrank", "sinharcsinh", *FLOWS)
    if kind == "lowrank" and start.hessian is not None and resume is None:  # correlations start at the Laplace ones
        start_at(q_family, torch.zeros_like(start.shift), start.whitened_covariance())
    shift, scale = placement if placement is not None else (start.shift, start.scale(full))
    how = _optimizer(optimizer, family, objective, batch_size)
    if how == "lbfgs":
        k = particles or draws_for(family, n)
        stopping = stopping or Stopping()
        result = fit_fixed(model, data, q_family, shift, scale, draws=k, max_iter=steps, seed=seed, stopping=stopping)
        trace, converged, evaluations, note = result.trace, result.converged, result.evaluations, result.reason
        options = dict(optimizer=how, particles=k, steps=steps, iterations=result.iterations, stopping=repr(stopping),
                       stopped=result.reason, threads=threads)  # fmt: skip
    else:
        k = particles or 16
        stepper = Stepper(model, q_family, shift, scale, objective or default_objective(family))
        lr = lr or (FLOW_LR if kind in FLOWS else LR)
        adam = Adam(q_family.parameters(), lr=lr)  # torch's fused kernel, without torch.optim's import of dynamo
        trace, converged = run_adam(stepper, adam, data, n, k, steps, batch_size, convergence, progress)
        evaluations, note = len(trace) * k, f"{len(trace)} steps of {k} draws"
        options = dict(optimizer=how, objective=repr(stepper.objective), particles=k, steps=steps, lr=lr,
                       batch_size=batch_size, convergence=repr(convergence), threads=threads)  # fmt: skip
    seconds = time.perf_counter() - t0
    if how == "lbfgs":
        note = f"{result.iterations} L-BFGS iterations on sets of {k} fixed draws; {note}"
    phases = [*(phases if phases is not None else []), _phase(f"fit {family} ({how})", seconds, evaluations, note)]
    return Posterior(
        model=model, data=data, family_name=family, family=q_family, shift=shift, scale=scale,
        start=start, elbo_trace=trace, converged=converged, seconds=seconds, seed=seed, options=options,
        phases=phases,
    )  # fmt: skip


def _judge(posterior: Posterior, attempts: list[dict[str, Any]], note: str = "", early: float | None = None) -> Any:
    """The verdict on ``posterior`` (its phase is recorded by ``Posterior.diagnostics``), kept in ``attempts``;
    ``early``: stop once it cannot be "trust" (``diagnostics.diagnose``'s ``refuse_early``)."""
    d = posterior.diagnostics(refuse_early=early)
    stopped = [d.stopped] if d.stopped else []  # why fewer sets: said with the reasons
    attempts.append({"family": posterior.family_name, "verdict": d.verdict, "reasons": d.reasons + stopped,
                     "khat": d.khat, "defensive_khat": d.defensive_khat, "seconds": posterior.seconds}
                    | ({"note": note} if note else {}))  # fmt: skip
    return d


def _early(family: str, final: bool) -> float | None:
    """How early ``_escalate`` may refuse ``family``'s fit (``diagnose``'s ``refuse_early``): never for a verdict
    the caller sees or ``agreement`` reads as the flow's (``final``: the flow's last schedule); at k-hat 1 for the
    full-rank fit, whose verdict ``agreement`` reads (it accepts k-hats below 1); else at ``KHAT_MAX``. A verdict
    that is only asked whether it trusts (the flow's first schedule, before its continuation) may stop early."""
    if final:
        return None
    return KHAT_LIMIT if family == "fullrank" else KHAT_MAX


def _escalate(
    model: Model, data: dict, n: int | None, start: Start, phases: list, options: dict[str, Any],
    warm: dict[str, Any] | None = None,
) -> Posterior:  # fmt: skip
    """The cheapest trusted answer first (the module docstring): Laplace, then the VI families, each
    warm-started from the last, skipping those the evidence rules out; after the flow, the agreement
    of the flow with the full-rank fit (``diagnostics.agreement``). ``warm``: Adam's options for a flow
    placed by the full-rank fit (``WARM_LR``, ``WARM_WINDOW``; empty when the caller set lr or convergence)."""
    attempts: list[dict[str, Any]] = []
    seed, threads = options["seed"], options["threads"]
    if start.hessian is not None:
        posterior = _laplace(model, data, start, phases, seed, threads)
        if _judge(posterior, attempts, early=_early(LAPLACE, False)).trusted:
            posterior.attempts, posterior.choice = attempts, "chose laplace: N(mode, H^-1) passes the verdict"
            return posterior
    order = AUTO[1:] if start.hessian is not None else AUTO_PLAIN
    gaussian, diagonal, last, skipped = None, None, None, []
    for family in order:
        why_not = _ruled_out(family, start)
        if why_not:
            skipped.append(f"skipped {family}: {why_not}")
            attempts.append({"family": family, "verdict": "skipped", "reasons": [why_not], "khat": [], "seconds": 0.0})
            continue
        # each family's fit is the one ``fit(..., family=family)`` makes, but for its start
        torch.default_generator.manual_seed(seed)
        placement, these, note = None, options, ""
        if family in WARM and gaussian is not None:  # placed by the full-rank fit
            q = gaussian.q()
            placement, note = (q.loc.detach(), q.scale_tril.detach()), "placed by the full-rank fit"
            these = options | (warm or {}) if family == AUTO_FLOW else options
        elif family == "fullrank" and start.hessian is None and diagonal is not None:  # no mode: from mean-field
            q = diagonal.q()
            placement, note = (q.mean.detach(), torch.diag(q.stddev.detach())), "placed by the mean-field fit"
        posterior = _fit_one(model, data, n, family, start, phases=phases, placement=placement, **these)
        posterior.phases = phases = posterior.phases  # one list through the escalation: verdicts append to it
        continues = these is not options  # a refused fit gets one more short schedule
        d = _judge(posterior, attempts, note, _early(family, family == order[-1] and not continues))
        if continues and not d.trusted:  # one more short schedule from there, twice the draws a step
            torch.default_generator.manual_seed(seed + 1)
            posterior = _fit_one(model, data, n, family, start, phases=phases, placement=placement,
                                 resume=posterior.family, **these | CONTINUE)  # fmt: skip
            d = _judge(posterior, attempts, f"continued from the first fit with {CONTINUE_PARTICLES} draws a step",
                       _early(family, family == order[-1]))  # fmt: skip
        if d.trusted:
            why = f"chose {family}: the first family of {' -> '.join(order)} whose verdict is 'trust'"
            break
        if family == AUTO_FLOW and gaussian is not None:
            agree, how = agreement(gaussian.diagnostics(refuse_early=KHAT_LIMIT), d)  # its verdict, as judged
            attempts[-1]["agreement"] = how
            if agree:
                d.verdict, d.reasons = "trust", [how]
                why = f"chose {family}: {how}"
                break
        gaussian = posterior if family == "fullrank" else gaussian
        diagonal = posterior if family == "diagonal" else diagonal
        last = posterior
    else:
        posterior = last
        why = (f"no family could be trusted ({' -> '.join(order)} all failed the verdict); "
               f"showing the richest, {posterior.family_name}: do not rely on it")  # fmt: skip
    if "no mode" in start.reason:  # the density rises without bound: a funnel's neck, which q may not cover
        why += NO_MODE_TRUSTED if posterior.diagnostics().trusted else NO_MODE_REFUSED  # judged in full
    posterior.attempts, posterior.choice = attempts, "; ".join([*skipped, why])
    return posterior


def _ruled_out(family: str, start: Start) -> str:
    """Why ``family`` need not be tried ("" when it may): the Laplace approximation says mean-field cannot pass
    the verdict, or the dimension is small enough that the low-rank family saves nothing over the full-rank one."""
    d = start.shift.shape[0]
    if family.startswith("lowrank") and d <= LOWRANK_ABOVE:
        return f"{d} dimensions: the full-rank family costs about as much (low-rank pays above {LOWRANK_ABOVE})"
    if family != "diagonal" or start.hessian is None:
        return ""
    ratio = mean_field_sd_ratio(start.hessian)
    worst = int(ratio.argmin())
    if ratio[worst] < 1 - SD_TOL:
        return (f"the Laplace Gaussian's best mean-field fit has sd {ratio[worst]:.3f} times the Laplace sd in "
                f"coordinate {worst} of u (the sd check needs within {SD_TOL:.1%})")
    return ""
