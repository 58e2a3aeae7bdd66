"""The deterministic objective: the ELBO over one fixed set of base draws, climbed by L-BFGS.

Fix M base draws eps_1..eps_M once; q_phi's reparameterized draws u_m = T_phi(eps_m) then
make the ELBO estimate a deterministic, smooth function of phi (a sample-average
approximation, SAA; Giordano, Ingram & Broderick 2023, "DADVI"):

    L_M(phi) = (1/M) sum_m [log p(u_m, x) - log q_phi(u_m)],   u_m = T_phi(eps_m)        # [M] -> scalar

L-BFGS with a strong-Wolfe line search (``elbox.lbfgs``) climbs it in tens to hundreds
of iterations where Adam on the noisy objective takes thousands of steps, and the same seed
gives bitwise the same fit. The gradient is the exact gradient of L_M (reparameterization,
score term included): sticking-the-landing would not be the gradient of any function, and a
line search needs one.

The price is the SAA's bias: phi fits the M draws, not q. A rich q overfits a few draws (a
full-rank Gaussian fitted to 32 draws of the non-centered eight schools gave tau an sd of
3.7 times the posterior's; the verdict refuses such a fit, see tests/test_bayes_fitting.py).
Two guards: M is large (``DRAWS``), and the draws are renewed every ``chunk`` iterations
(with a new L-BFGS history), so no set is fitted for long. Each renewal gives a check of the
objective on fresh draws: L_M of the new set at the current phi is an unbiased ELBO, and the
rise over the last chunk is measured on those fresh draws at both ends (paired: the same base
draws through the old and the new phi, so its standard error is small).

The stopping rule (``Stopping``): the fit has converged when that fresh-draw rise, plus two
standard errors, is below ``tol`` nats (more iterations would not raise the ELBO measurably;
a negative rise is the iterates moving between the sets' optima), or when every gradient
entry is below ``grad_tol``. ``fit``'s ``steps`` caps the iterations.

Nothing downstream reads the fitting draws: their stream's seed (``draw_seed``) is derived
from the fit's seed by a SeedSequence, far from the small integers the diagnostics draw with.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ElboxError
from ..families import FLOWS, check_family_name
from ..lbfgs import minimize
from .affine import draw, place
from .model import Model

__all__ = ["DRAWS", "Result", "Stopping", "draw_seed", "draws_for", "fit_fixed", "fitting_draws"]

# Fixed draws per set, by family kind. Measured on the non-centered eight schools (full-rank, one set,
# fresh-draw ELBO and q's sd ratios against the reference): 32 draws put tau's sd at 3.7 times the
# posterior's, 256 at up to 1.44 times; 2,048 (with new sets every ``chunk`` iterations) give 0.88-1.09,
# the family's own error (Adam's full-rank fit: 0.85-1.12). A flow's network bends around any finite
# set of draws; 2,048 per set and 25 iterations per set gave a trusted realnvp:8 fit there.
DRAWS = {"gaussian": 2048, "flow": 2048}
# ... but a set costs M x N likelihood terms: on posteriordb's diamonds (N = 5,000) 2,048 draws make every
# evaluation a [2048, 5000] array, and one L-BFGS fit took minutes. Many observations also make the
# posterior nearly Gaussian, where fewer draws suffice: M is capped at BUDGET / N, and never below MIN_DRAWS.
BUDGET, MIN_DRAWS = 2**20, 256
SAA_TAG = 0x5AA  # mixed into the fit's seed for the fitting draws' stream


@dataclass(frozen=True)
class Stopping:
    """When L-BFGS stops (this module's rule): the fresh-draw rise over the last ``chunk`` iterations
    plus two standard errors below ``tol`` nats, or every gradient entry below ``grad_tol``;
    ``history``: L-BFGS's memory."""

    tol: float = 0.01
    grad_tol: float = 1e-6
    chunk: int = 10
    history: int = 20

    def __post_init__(self) -> None:
        if not (self.tol >= 0 and self.grad_tol >= 0 and self.chunk >= 1 and self.history >= 1):
            raise ElboxError(f"Stopping needs tol >= 0, grad_tol >= 0, chunk >= 1 and history >= 1; got {self}")


@dataclass
class Result:
    """What ``fit_fixed`` did: L_M at the start of every chunk of iterations and at the end ``[T]``,
    the iterations, whether the rule stopped it (and why), and how many points log p was evaluated
    at (M per evaluation of the objective, line-search trials included)."""

    trace: np.ndarray
    iterations: int
    converged: bool
    evaluations: int
    reason: str


def draws_for(family: str, n: int | None = None) -> int:
    """M, the fixed draws per set for ``family`` (``DRAWS``), capped at ``BUDGET`` / N for N observations."""
    m = DRAWS["flow" if check_family_name(family)[0] in FLOWS else "gaussian"]
    return m if n is None else max(MIN_DRAWS, min(m, BUDGET // n))


def draw_seed(seed: int) -> int:
    """The seed of the fitting draws: a 63-bit number derived from ``seed``, far from the small
    integers the diagnostics draw with (``diagnose``: ``seed * 1000 + r``)."""
    return int(np.random.SeedSequence([seed, SAA_TAG]).generate_state(2, np.uint32).astype(np.uint64) @ [1, 2**31])


def _fixed(q: Any, m: int, seed: int, base: list[Tensor], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """q's m draws from the fixed base draws of ``seed`` and their log q.

    A q that moves given base draws (``from_base``: the Gaussians, sinh-arcsinh) takes standard normals
    ``[m, d]`` from a generator seeded with ``seed``, made at the set's first evaluation and kept in ``base``
    (one set's cache): an L-BFGS iteration then pays no random numbers (a sixth of a full-rank fit when they
    were drawn again at every evaluation). Any other q draws under the global generator seeded with ``seed``
    (restored after)."""
    if hasattr(q, "from_base"):
        if not base:
            generator = torch.Generator().manual_seed(seed)
            base.append(torch.randn(m, *q.event_shape, generator=generator, dtype=dtype))
        return q.from_base(base[0])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return draw(q, m)


def fitting_draws(family: nn.Module, shift: Tensor, scale: Tensor, m: int, seed: int, chunk: int = 0) -> Tensor:
    """The m points ``[m, d]`` of set ``chunk`` of a fit with ``seed``, at q's current parameters (for tests)."""
    with torch.no_grad():
        return _fixed(place(family(), shift, scale), m, draw_seed(seed) + chunk, [], shift.dtype)[0]


def fit_fixed(
    model: Model, data: dict, family: nn.Module, shift: Tensor, scale: Tensor, *, draws: int, max_iter: int,
    seed: int, stopping: Stopping | None = None,
) -> Result:  # fmt: skip
    """Maximise L_M over ``family``'s parameters (q placed by u = shift + scale v) with L-BFGS
    (``elbox.lbfgs``), a new set of M draws (and a new L-BFGS history) every ``stopping.chunk`` iterations."""
    stopping = stopping or Stopping()
    params = [p for p in family.parameters() if p.requires_grad]
    calls, values, iterations, last = [0], [], 0, []
    converged, reason = False, "the iteration cap (steps) was reached"
    for rounds in range(max_iter):
        closure = _Closure(model, data, family, params, shift, scale, draws, draw_seed(seed) + rounds, calls)
        with torch.no_grad():
            log_w = closure.log_weights()
            values.append(float(log_w.mean()))  # fresh draws: an unbiased ELBO at the current q
            if rounds:  # the rise over the last chunk, both ends on these fresh draws: paired, so little noise
                rise, se = _paired_rise(closure, params, last, log_w)
                if rise + 2 * se < stopping.tol:
                    converged = True
                    reason = f"the ELBO on fresh draws rose by {rise:+.4f} ± {se:.4f} (+ 2 se < {stopping.tol})"
                    break
            last = [p.detach().clone() for p in params]
        if iterations >= max_iter:
            break
        cap = min(stopping.chunk, max_iter - iterations)
        found = minimize(closure, _flat(params), max_iter=cap, history=stopping.history,
                         tolerance_grad=stopping.grad_tol, tolerance_change=1e-12)  # fmt: skip
        _assign(params, found.x)
        iterations += found.iterations
        if found.at_once:  # every gradient entry below grad_tol at the start of the chunk
            converged, reason = True, f"every gradient entry is below {stopping.grad_tol}"
            break
    return Result(np.asarray(values), iterations, converged, calls[0] * draws, reason)


def _flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def _assign(params: list[Tensor], x: Tensor) -> None:
    offset = 0
    for p in params:
        p.copy_(x[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def _paired_rise(closure: "_Closure", params: list[Tensor], last: list[Tensor], log_w: Tensor) -> tuple[float, float]:
    """Mean and standard error of log w(phi_now) - log w(phi_last) over the same fresh base draws."""
    now = [p.detach().clone() for p in params]
    for p, v in zip(params, last, strict=True):
        p.copy_(v)
    before = closure.log_weights()
    for p, v in zip(params, now, strict=True):
        p.copy_(v)
    diff = log_w - before
    return float(diff.mean()), float(diff.std()) / math.sqrt(diff.numel())


class _Closure:
    """x ``[P]`` (q's parameters, flat) -> (-L_M, its gradient ``[P]``) on the fixed draws of ``stream``."""

    def __init__(self, model: Model, data: dict, family: nn.Module, params: list[Tensor], shift: Tensor,
                 scale: Tensor, draws: int, stream: int, calls: list[int]) -> None:  # fmt: skip
        self.model, self.data, self.family, self.params = model, data, family, params
        self.shift, self.scale = shift, scale
        self.draws, self.stream, self.calls, self.worst = draws, stream, calls, -math.inf
        self.base: list[Tensor] = []  # the set's base draws, once made (``_fixed``)

    def log_weights(self) -> Tensor:
        self.calls[0] += 1
        q = place(self.family(), self.shift, self.scale)
        u, log_q = _fixed(q, self.draws, self.stream, self.base, self.shift.dtype)
        return self.model.log_density(u, self.data) - log_q

    def __call__(self, x: Tensor) -> tuple[float, Tensor]:
        _assign(self.params, x)
        loss = -self.log_weights().mean()
        if not torch.isfinite(loss):  # log p under- or overflows at a draw: a high value makes the line search back off
            if not math.isfinite(self.worst):
                raise ElboxError("the deterministic objective is not finite at q's start (log p(u, x) is -inf or NaN "
                                 "at some of its draws): check the log density at the supports' edges, or use "
                                 "optimizer='adam'")  # fmt: skip
            return self.worst + 1e3, torch.zeros_like(x)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        self.worst = max(self.worst, loss.item())
        return loss.item(), torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, self.params, strict=True)])  # fmt: skip
