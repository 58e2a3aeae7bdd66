"""The result of a fit: q over the model's parameters, with draws, a summary, ArviZ export and diagnostics."""

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .affine import draw, place
from .laplace import Start
from .model import Model, flatten

__all__ = ["Posterior", "Summary", "threads"]

CHUNK = 1000  # draws per evaluation of the log density: bounds memory on large data sets
THREADS = 1  # intra-op threads while fitting and diagnosing (see ``threads``)


@contextmanager
def threads(n: int | None = THREADS) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block, restoring the count after (``None``: leave it).

    A Bayesian model's tensors are small ([K, N] at most): a second thread rarely has work, and
    on a busy machine threads that wait on each other make every step several times slower
    (measured: 5x on 2 shared cores).
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Summary:
    """Mean, sd and quantiles of each scalar coordinate of the parameters and transformed quantities."""

    names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    quantiles: dict[float, np.ndarray]

    def __str__(self) -> str:
        qs = list(self.quantiles)
        width = max(8, *map(len, self.names))
        head = f"{'':<{width}} {'mean':>10} {'sd':>10}" + "".join(f" {f'{100 * q:g}%':>10}" for q in qs)
        rows = [
            f"{n:<{width}} {m:>10.4g} {s:>10.4g}" + "".join(f" {self.quantiles[q][i]:>10.4g}" for q in qs)
            for i, (n, m, s) in enumerate(zip(self.names, self.mean, self.sd, strict=True))
        ]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            n: {"mean": float(self.mean[i]), "sd": float(self.sd[i])}
            | {f"q{100 * q:g}": float(v[i]) for q, v in self.quantiles.items()}
            for i, n in enumerate(self.names)
        }


@dataclass(eq=False)
class Posterior:
    """A fitted q over the unconstrained parameters u, and what was learned about it.

    Attributes:
        model, data: what was fitted (data as tensors).
        family_name, family: the family and its module (the raw parameters of q over v).
        shift, scale: u = shift + scale v (see ``affine``).
        start: where the fit started (``laplace.Start``).
        elbo_trace: the objective's value at every step (noisy: one set of K draws each).
        converged: whether the convergence rule stopped the fit (else it ran out of steps).
        seconds: wall time of the fit, start search excluded.
        attempts, choice: for ``family="auto"``, each family tried with its verdict, and why
            this one was kept.
        phases: what the time went to: one dict per phase (the start, each fit, each verdict) with
            its ``seconds`` and ``evaluations`` (points where log p(u, x) was computed).
    """

    model: Model
    data: dict[str, Any]
    family_name: str
    family: nn.Module
    shift: Tensor
    scale: Tensor
    start: Start
    elbo_trace: np.ndarray
    converged: bool
    seconds: float
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    choice: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)
    _diagnostics: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"Posterior(model={self.model.name!r}, family={self.family_name!r}, steps={len(self.elbo_trace)}, "
                f"converged={self.converged}, elbo={self.elbo:.3f})")  # fmt: skip

    @property
    def elbo(self) -> float:
        """The mean of the objective over the last 10% of the steps (at least the last one); NaN with
        no steps (the Laplace approximation: ``diagnostics().elbo`` has it)."""
        if len(self.elbo_trace) == 0:
            return math.nan
        tail = self.elbo_trace[-max(1, len(self.elbo_trace) // 10) :]
        return float(tail.mean())

    def q(self) -> Distribution:
        """q over u, detached from the fit's graph."""
        with torch.no_grad():
            return place(self.family(), self.shift, self.scale)

    def draw(self, n: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """n draws u ``[n, d]`` from q and log q(u) ``[n]``; ``seed`` None uses torch's global RNG."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None), torch.no_grad():
            if seed is not None:
                # the CPU's generator alone (fits run on the CPU): torch.manual_seed also seeds CUDA, XPU and MTIA
                # lazily, formatting a stack trace for each (0.8 ms a call, 8% of an eight-schools fit)
                torch.default_generator.manual_seed(seed)
            return draw(self.q(), n)

    def sample(self, n: int = 1000, seed: int | None = None) -> dict[str, Tensor]:
        """n draws of every parameter and transformed quantity, constrained: ``{name: [n, *shape]}``."""
        u, _ = self.draw(n, seed)
        with torch.no_grad():
            return self.model.quantities(self.model.constrain(u)[0])

    def columns(self, n: int = 10_000, seed: int | None = None) -> dict[str, np.ndarray]:
        """n draws per scalar quantity, ``{"theta[0]": [n], ...}`` (constrained; the names of ``summary``)."""
        x = self.sample(n, seed)
        return dict(zip(self.model.names(x), flatten(x).T, strict=True))

    def weighted(self, n: int, seed: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """n draws u ``[n, d]`` from q, log p(theta(u), x) + log |det J| on all the data ``[n]``, log q(u) ``[n]``."""
        u, log_q = self.draw(n, seed)
        with torch.no_grad():
            log_p = torch.cat([self.model.log_density(c, self.data) for c in u.split(CHUNK)])
        return u, log_p, log_q

    def log_weights(self, n: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """n draws u ``[n, d]`` and their log-weights log p(theta(u), x) + log |det J| - log q(u) ``[n]``,
        on all the data."""
        u, log_p, log_q = self.weighted(n, seed)
        return u, log_p - log_q

    def summary(self, n: int = 4000, quantiles: tuple[float, ...] = (0.05, 0.5, 0.95), seed: int = 0) -> Summary:
        """Mean, sd and quantiles of n draws from q, in the constrained space."""
        quantities = self.sample(n, seed)
        x = flatten(quantities)
        return Summary(
            self.model.names(quantities), x.mean(0), x.std(0, ddof=1),
            {q: np.quantile(x, q, axis=0) for q in quantiles},
        )  # fmt: skip

    def to_arviz(self, n: int = 4000, seed: int = 0) -> Any:
        """n draws from q as an ``arviz.InferenceData``: one chain in ``posterior``; ``lp`` (log p(u, x)
        with log |det J|) and ``log_weight`` (log p - log q) in ``sample_stats``; the fit in ``attrs``."""
        from ..importance import arviz

        u, log_w = self.log_weights(n, seed)
        with torch.no_grad():
            quantities = self.model.quantities(self.model.constrain(u)[0])
            lp = torch.cat([self.model.log_density(c, self.data) for c in u.split(CHUNK)])
        posterior = {k: v.double().cpu().numpy()[None] for k, v in quantities.items()}
        stats = {"lp": lp.double().numpy()[None], "log_weight": log_w.double().numpy()[None]}
        attrs = {"inference_library": "elbox", "family": self.family_name, "elbo": self.elbo,
                 "steps": len(self.elbo_trace), "converged": int(self.converged)}  # fmt: skip
        return arviz().from_dict(posterior=posterior, sample_stats=stats, attrs=attrs)

    def diagnostics(self, draws: int = 5000, replicates: int = 4, seed: int = 0,
                    refuse_early: float | None = None) -> Any:  # fmt: skip
        """PSIS diagnostics and the trust verdict (``diagnostics.diagnose``), computed once per arguments.

        ``refuse_early``: stop drawing sets once the verdict cannot be "trust" (``diagnose``; ``family="auto"``
        does it for the fits it may pass over). A verdict that ran every set is kept as the full one."""
        from .diagnostics import diagnose
        from .subsample import affordable, diagnose_at_scale

        key = (draws, replicates, seed)
        early = (*key, refuse_early)
        if key in self._diagnostics or early in self._diagnostics:
            return self._diagnostics.get(key) or self._diagnostics[early]
        t0 = time.perf_counter()
        with threads(self.options.get("threads", THREADS)):
            if affordable(self, draws, replicates):
                d = diagnose(self, draws=draws, replicates=replicates, seed=seed, refuse_early=refuse_early)
            else:  # large data: the subsampled verdict (``subsample``), with fewer draws
                d = diagnose_at_scale(self, replicates=replicates, seed=seed)
        self._diagnostics[early if d.stopped else key] = d
        defensive = ", the defensive check made" if d.defensive_khat else ""
        note = f"{d.replicates} x {draws} fresh draws: {d.verdict}{defensive}"
        if d.stopped:
            note += f" (stopped after {d.replicates} of {replicates} sets: the verdict could no longer be 'trust')"
        self.phases.append({"phase": f"verdict on {self.family_name}", "seconds": time.perf_counter() - t0,
                            "evaluations": d.evaluations or draws * replicates, "note": note})  # fmt: skip
        return d

    def to_dict(self) -> dict[str, Any]:
        """What the fit was and did, JSON-ready."""
        return {
            "model": self.model.name, "family": self.family_name, "steps": len(self.elbo_trace),
            "converged": self.converged, "elbo": self.elbo, "seconds": self.seconds, "seed": self.seed,
            "start": self.start.to_dict(), "options": self.options, "attempts": self.attempts, "choice": self.choice,
            "phases": self.phases,
        }  # fmt: skip
