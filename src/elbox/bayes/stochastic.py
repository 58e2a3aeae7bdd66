"""The stochastic fit: Adam steps on fresh draws, until a running-window test says the ELBO has stopped rising.

Each step draws K particles u_k ~ q, evaluates log p(theta(u_k), x) + log |det J| (on a minibatch,
the likelihood scaled by N / batch size), and ascends the objective (``bounds``: ELBO, IWAE,
Rényi) of the log-weights

    log w_k = log p(x | theta(u_k)) + log p(u_k) - log q(u_k)                 # [K, 1]

It is what minibatches, a chosen objective, mixtures and flows use (``fitting._optimizer``); the
Gaussian families' default is the deterministic fit of ``saa``. ``Convergence`` is its stopping
rule; on minibatches the iterates of the last learning rate are averaged (``IterateAverage``).
"""

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from tqdm.auto import tqdm

from ..bounds import ELBO, Bound, Objective, Particles
from ..errors import ElboxError
from ..families import check_family_name, draw_particles
from ..optim import Adam
from .affine import place
from .model import Model

__all__ = ["Convergence", "IterateAverage", "ModelParticles", "Stepper", "UnconstrainedPrior", "default_objective",
           "run_adam"]  # fmt: skip

MAX_FAILURES = 10  # steps in a row with a non-finite objective before a fit gives up


@dataclass(frozen=True)
class Convergence:
    """When to stop: a running-window test on the noisy objective trace, with learning-rate decay.

    Every ``window`` steps the mean objective of the last ``window`` steps is compared with
    that of the ``window`` steps before: the rise r = m_new - m_old and its standard error
    se = sqrt(s_old^2 / w + s_new^2 / w) (steps are independent draws). The trace has
    *stalled* when r < max(``tol``, 2 se): the rise is either negligible or cannot be told
    from the noise. A single relative change (PyMC's rule) compares two noisy numbers and,
    on a noisy ELBO, fires at random or never; the window test averages the noise away and
    fires once the trend is flat at the noise's own resolution. At each stall the learning
    rate is multiplied by ``factor`` (smaller steps: the iterates settle closer to the
    optimum) until ``decays`` decays are spent; a stall at the last rate ends the fit. The
    ``steps`` given to ``fit`` cap it all. ``warmup``: over the first so many steps the learning
    rate rises linearly to its value (for a fit resumed with a fresh Adam, whose first
    bias-corrected steps move every weight by the full rate).
    """

    window: int = 200
    tol: float = 0.01
    decays: int = 2
    factor: float = 0.2
    warmup: int = 0

    def __post_init__(self) -> None:
        if (self.window < 2 or self.tol < 0 or self.decays < 0 or not 0 < self.factor <= 1 or self.warmup < 0
                or self.warmup >= 2 * self.window):  # fmt: skip
            raise ElboxError("Convergence needs window >= 2, tol >= 0, decays >= 0, 0 < factor <= 1 and "
                             f"0 <= warmup < 2 windows; got {self}")  # fmt: skip

    def stalled(self, trace: np.ndarray) -> bool:
        """Whether the last two windows of ``trace`` show no rise beyond max(tol, 2 se)."""
        w = self.window
        if len(trace) < 2 * w:
            return False
        old, new = trace[-2 * w : -w], trace[-w:]
        rise = new.mean() - old.mean()
        se = math.sqrt((old.var(ddof=1) + new.var(ddof=1)) / w)
        return bool(rise < max(self.tol, 2 * se))


class UnconstrainedPrior(Distribution):
    """p(u) = p(theta(u)) |det d theta / d u|: the model's prior carried to R^d."""

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute
    support = constraints.real_vector

    def __init__(self, model: Model) -> None:
        self.model = model
        super().__init__(torch.Size(), torch.Size([model.dim]), validate_args=False)

    def log_prob(self, u: Tensor) -> Tensor:
        flat = u.reshape(-1, u.shape[-1])
        params, ladj = self.model.constrain(flat)
        return (self.model.prior(params) + ladj).reshape(u.shape[:-1])


@dataclass(eq=False)
class ModelParticles(Particles):
    """Particles whose log p(u) was computed in the same pass through the transforms as the likelihood."""

    log_prior_value: Tensor | None = None

    @property
    def log_prior(self) -> Tensor:  # type: ignore[override]
        return self.log_prior_value


def default_objective(family: str) -> Objective:
    """The ELBO with sticking-the-landing gradients (Roeder et al. 2017: zero variance at the exact
    posterior) where log q at a drawn point costs one pass: the Gaussians, mixtures and the
    coupling and masked flows (``realnvp``, ``maf``; ``realnvp`` carries grad log q along the draw instead,
    ``StoppedAtDraws``). An ``iaf`` or ``nsf`` would run backward in D passes for it: they get the plain
    reparameterization gradient with their fused log q."""
    return ELBO(estimator="reparam" if check_family_name(family)[0] in ("iaf", "nsf") else "stl")


class Stepper:
    """One step's objective for a family placed by (shift, scale) on a model's unconstrained space."""

    def __init__(
        self, model: Model, family: torch.nn.Module, shift: Tensor, scale: Tensor, objective: Objective
    ) -> None:
        self.model, self.family, self.shift, self.scale, self.objective = model, family, shift, scale, objective
        self.prior = UnconstrainedPrior(model)

    def q(self) -> Distribution:
        return place(self.family(), self.shift, self.scale)

    def __call__(self, k: int, data: dict, n_scale: float) -> Bound:
        q, objective = self.q(), self.objective
        u, q_stopped, log_q = draw_particles(q, k, objective.reparameterize, objective.stop_q)
        z, log_q = u[:, None], None if log_q is None else log_q[:, None]
        params, ladj = self.model.constrain(u)
        log_prior, log_lik = self.model.log_parts(params, data, scale=n_scale)
        particles = ModelParticles(
            z, log_lik[:, None], q, self.prior, q_stopped, log_q, log_prior_value=(log_prior + ladj)[:, None]
        )
        return objective(particles)


def run_adam(
    stepper: Stepper, optimizer: Adam, data: dict, n: int | None, k: int, steps: int,
    batch_size: int | None, convergence: Convergence, progress: bool | None,
) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Adam steps until the convergence rule fires at the last learning rate, or ``steps`` run out."""
    trace, phase_start, decays, failures = np.empty(steps), 0, 0, 0
    average = IterateAverage(optimizer) if batch_size is not None and batch_size < (n or 0) else None
    bar = tqdm(total=steps, disable=not (sys.stderr.isatty() if progress is None else progress), unit="step")
    step, rates = 0, [group["lr"] for group in optimizer.param_groups]
    for step in range(steps):
        batch, n_scale = minibatch(stepper.model, data, n, batch_size)
        bound = stepper(k, batch, n_scale)
        loss = bound.loss
        if not torch.isfinite(loss):  # a draw far in a tail where the density over- or underflows: skip it
            failures += 1
            if failures < MAX_FAILURES:
                trace[step] = trace[step - 1] if step else math.nan
                continue
            bar.close()
            raise ElboxError(
                f"the objective was not finite at {MAX_FAILURES} steps in a row, up to step {step} (draws where the "
                "model's log density is -inf or NaN, or a too large learning rate): check the log density at the "
                "supports' edges, or lower lr"
            )
        failures = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step < convergence.warmup:  # before the first window test can decay the rate (warmup < 2 windows)
            for group, rate in zip(optimizer.param_groups, rates, strict=True):
                group["lr"] = rate * (step + 1) / convergence.warmup
        optimizer.step()
        if average is not None and decays == convergence.decays:
            average.add()
        trace[step] = bound.value.item()
        bar.update()
        if (step + 1 - phase_start) % convergence.window == 0:
            bar.set_postfix(elbo=f"{trace[step + 1 - convergence.window : step + 1].mean():.3f}", refresh=False)
            if convergence.stalled(trace[phase_start : step + 1]):
                if decays == convergence.decays:
                    bar.close()
                    if average is not None:
                        average.apply()
                    return trace[: step + 1].copy(), True
                decays, phase_start = decays + 1, step + 1
                for group in optimizer.param_groups:
                    group["lr"] *= convergence.factor
    bar.close()
    if average is not None:
        average.apply()
    return trace[: step + 1].copy(), False


class IterateAverage:
    """The mean of q's parameters over the steps at the last learning rate (Polyak & Juditsky 1992), for
    minibatched fits: there the iterates keep jittering with the minibatch noise around the optimum (measured,
    N = 10^5 rows by 500: means 0.25 sd off, sds 14%), and their average is the optimum up to that noise / sqrt
    of the steps averaged."""

    def __init__(self, optimizer: Adam) -> None:
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.mean: list[Tensor] | None = None
        self.count = 0

    def add(self) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [p.detach().clone() for p in self.params]
            return
        for m, p in zip(self.mean, self.params, strict=True):
            m.add_(p.detach() - m, alpha=1 / self.count)

    @torch.no_grad()
    def apply(self) -> None:
        if self.mean is None:  # the steps ran out before the last learning rate: nothing averaged
            return
        for m, p in zip(self.mean, self.params, strict=True):
            p.copy_(m)


def minibatch(model: Model, data: dict, n: int | None, batch_size: int | None) -> tuple[dict, float]:
    if batch_size is None or batch_size == n:
        return data, 1.0
    # rows drawn with replacement: the scaled sum is as unbiased, a step costs O(B) rather than a permutation of
    # all N rows (1.3 s at N = 10^7), and the draw takes as many random numbers whatever N is, so that processes
    # holding shards of different sizes keep their generators (and particles) in step (``shard``)
    index = torch.randint(n, (batch_size,))
    return data | {key: data[key][index] for key in model.observed}, n / batch_size
