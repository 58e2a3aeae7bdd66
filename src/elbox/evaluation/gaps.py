"""The encoder's inference gap split into the approximation and the amortization gap (Cremer et al. 2018)."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..bounds import log_mean_exp
from ..errors import ElboxError
from ..importance import log_px_standard_error
from ..models import LatentVariableModel
from .config import EvaluationConfig
from .estimate import Estimate, floats
from .particles import (
    STREAM_GAP_DRAWS,
    STREAM_GAP_FIT,
    blocks,
    check_data,
    chunk_size,
    decoder_log_lik,
    evaluating,
    particles,
    reseed,
    stream_seeds,
)

__all__ = ["Gaps", "gap_problem", "gap_split", "inference_gaps"]


@dataclass(eq=False)
class Gaps:
    """The inference gap of the encoder split into its two causes (Cremer, Li & Duvenaud 2018).

    For each data point, with q_enc the encoder's q(z | x) and q* the member of the same family
    that maximises this point's ELBO (found by Adam from q_enc):

        log p(x) - L[q_enc] = (log p(x) - L[q*])  +  (L[q*] - L[q_enc])
                              approximation gap      amortization gap

    The approximation gap is the cost of the family (KL(q* || p(z | x))), the amortization gap
    the cost of one encoder for all x. Each is >= 0 up to Monte Carlo error and an incomplete
    optimisation (which makes the amortization gap smaller and the approximation gap larger).

    Attributes (per point, ``[G]``, nats):
        log_px: log p(x) by importance sampling from the equal mixture of q_enc and q*, half
            the particles from each (the balance heuristic; unbiased for p(x), and at most a
            factor 2 worse than the better of the two proposals).
        elbo_encoder, elbo_local: L[q_enc] and L[q*], each the mean log-weight of its half.
        log_px_se, elbo_encoder_se, elbo_local_se: the Monte Carlo standard error of each
            estimate, per point (``log_px_standard_error``; the sd of the log-weights / sqrt(n)).
        trace: ``[steps]``, the mean over points of each step's ELBO of the optimised q:
            its last stretch says whether the optimisation had converged.
        steps, lr, particles: of the optimisation; k: particles of the estimates.
    """

    log_px: Tensor
    elbo_encoder: Tensor
    elbo_local: Tensor
    log_px_se: Tensor
    elbo_encoder_se: Tensor
    elbo_local_se: Tensor
    trace: Tensor
    steps: int
    lr: float
    particles: int
    k: int

    @property
    def approximation(self) -> Tensor:
        return self.log_px - self.elbo_local

    @property
    def amortization(self) -> Tensor:
        return self.elbo_local - self.elbo_encoder

    @property
    def total(self) -> Tensor:
        return self.log_px - self.elbo_encoder

    @property
    def last_gain(self) -> float:
        """How much the mean ELBO of q rose over the last 10% of the steps (from the 10% before)."""
        n = max(1, self.steps // 10)
        if self.steps < 2 * n:
            return math.nan
        return (self.trace[-n:].mean() - self.trace[-2 * n : -n].mean()).item()

    def to_dict(self) -> dict[str, Any]:
        every = max(1, self.steps // 100)
        return {
            "points": int(self.log_px.shape[0]),
            "approximation": Estimate.of(self.approximation).to_dict(),
            "amortization": Estimate.of(self.amortization).to_dict(),
            "total": Estimate.of(self.total).to_dict(),
            "log_px": Estimate.of(self.log_px).to_dict(),
            "elbo_encoder": Estimate.of(self.elbo_encoder).to_dict(),
            "elbo_local": Estimate.of(self.elbo_local).to_dict(),
            "steps": self.steps,
            "lr": self.lr,
            "particles": self.particles,
            "k": self.k,
            "last_gain": self.last_gain,
            "mc_se_median": {
                "log_px": self.log_px_se.median().item(),
                "elbo_encoder": self.elbo_encoder_se.median().item(),
                "elbo_local": self.elbo_local_se.median().item(),
            },
            "trace_every": every,
            "trace": floats(self.trace[::every]),
        }


def gap_problem(model: LatentVariableModel) -> str | None:
    """Why the gap split cannot run on this model, or None: it needs one amortized, reparameterized family."""
    family = model.amortized_family()  # None for the hvae: two encoders, no one family
    if family is None or getattr(family, "encoder", None) is None or not hasattr(family, "distribution"):
        return (
            "the gap decomposition optimises q's raw parameters per data point, which needs an amortized family "
            f"(an encoder and a distribution of its output); {type(family or model).__name__} is not one."
        )
    if getattr(family, "categories", None) is not None:  # families.Discrete: hard draws in evaluation
        return ("the gap decomposition optimises q per data point with reparameterized gradients, which discrete "
                "latents do not have.")  # fmt: skip
    return None


def _amortized_family(model: LatentVariableModel) -> Any:
    if (problem := gap_problem(model)) is not None:
        raise ElboxError(f"{problem} Use gap_points=0 (--gap-points 0) to skip it.")
    return model.amortized_family()


def _fit_locally(
    model: LatentVariableModel, family: Any, x: Tensor, raw: Tensor, config: EvaluationConfig
) -> tuple[Tensor, Tensor]:
    """q's raw parameters ``[B, P]`` optimised per point by Adam on the ELBO, starting from ``raw``.

    The points' parameters are separate, so one Adam on the sum of their ELBOs is B separate
    optimisations at once. The learning rate decays linearly to 0 over the steps, so that
    the noisy steps settle on the optimum instead of jittering around it. Gradients are
    "sticking the landing" (Roeder et al. 2017: log q evaluated with its parameters stopped),
    which vanish at the exact posterior; for a flow, whose density at a given point is slow,
    the plain reparameterized gradient along the draw.
    """
    prior, log_lik = model.prior(), partial(decoder_log_lik, model)
    raw = raw.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=config.gap_lr)
    trace = raw.new_empty(config.gap_steps)
    with torch.enable_grad():
        for step in range(config.gap_steps):
            for group in optimizer.param_groups:
                group["lr"] = config.gap_lr * (1 - step / config.gap_steps)
            q = family.distribution(raw)
            if not q.has_rsample:
                raise ElboxError(f"the gap decomposition needs reparameterized draws; {type(q).__name__} has none.")
            stopped = family.distribution(raw.detach())  # for log q where the draw does not give it (STL)
            (p,) = particles(q, prior, x, config.gap_particles, log_lik, q_stopped=stopped)  # all at once
            elbo = p.log_w.mean(0)  # [B]
            (raw.grad,) = torch.autograd.grad(-elbo.sum(), raw)
            optimizer.step()
            trace[step] = elbo.detach().mean()
    return raw.detach(), trace


def _mixture_half(
    model: LatentVariableModel,
    x: Tensor,
    drawn: Distribution,
    other: Distribution,
    n: int,
    chunk: int,
    seeds: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """n draws from ``drawn``: log-weights against ``drawn`` and against (drawn + other) / 2, ``[n, B]`` each."""
    own, mixed = [], []
    for p in particles(drawn, model.prior(), x, n, partial(decoder_log_lik, model), chunk=chunk, seeds=seeds):
        own.append(p.log_w)  # [c, B]
        log_joint = p.log_lik + p.log_prior  # [c, B]
        mixed.append(log_joint - torch.logaddexp(p.log_q, other.log_prob(p.z)) + math.log(2))
    return torch.cat(own), torch.cat(mixed)


def _mean_se(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """The ELBO estimate (mean log-weight) ``[B]`` and its Monte Carlo standard error ``[B]``."""
    return log_w.mean(0), log_w.std(0) / math.sqrt(log_w.shape[0])


@torch.inference_mode()
def _gap_estimates(
    model: LatentVariableModel,
    x: Tensor,
    q_enc: Distribution,
    q_local: Distribution,
    k: int,
    chunk: int,
    seeds: Sequence[int],
) -> tuple[Tensor, ...]:
    """log p(x), L[q_enc], L[q*] and their Monte Carlo standard errors, each ``[B]``."""
    half = max(2, k // 2)
    own_enc, mixed_enc = _mixture_half(model, x, q_enc, q_local, half, chunk, seeds[: blocks(half)])
    own_loc, mixed_loc = _mixture_half(model, x, q_local, q_enc, half, chunk, seeds[blocks(half) :])
    mixed = torch.cat([mixed_enc, mixed_loc])  # [2 half, B]: equal halves from each component
    (elbo_enc, se_enc), (elbo_loc, se_loc) = _mean_se(own_enc), _mean_se(own_loc)
    return log_mean_exp(mixed, 0), elbo_enc, elbo_loc, log_px_standard_error(mixed), se_enc, se_loc


def gap_split(model: LatentVariableModel, x: Tensor, config: EvaluationConfig) -> Gaps:
    """``inference_gaps`` for a model already in evaluation mode and checked data."""
    family = _amortized_family(model)
    chunk = chunk_size(model, config.k, min(config.batch_size, x.shape[0]), config)
    results, trace = [], 0.0
    for i, start in enumerate(range(0, x.shape[0], config.batch_size)):
        xb = x[start : start + config.batch_size]
        with torch.no_grad():
            raw = family.encoder(model.encoder_input(xb))  # a table's rows: its features and mask
        reseed(x.device, stream_seeds(config.seed, STREAM_GAP_FIT, i, 1)[0])
        local, batch_trace = _fit_locally(model, family, xb, raw, config)
        trace = trace + batch_trace * xb.shape[0] / x.shape[0]
        seeds = stream_seeds(config.seed, STREAM_GAP_DRAWS, i, 2 * blocks(max(2, config.k // 2)))
        results.append(_gap_estimates(model, xb, family.distribution(raw), family.distribution(local), config.k,
                                      chunk, seeds))  # fmt: skip
    estimates = [torch.cat(parts) for parts in zip(*results, strict=True)]
    return Gaps(*estimates, trace, config.gap_steps, config.gap_lr, config.gap_particles, config.k)


def inference_gaps(
    model: LatentVariableModel, x: Tensor, config: EvaluationConfig | None = None, **options: Any
) -> Gaps:
    """Split the encoder's inference gap on the rows of ``x`` ``[G, X]`` into approximation and amortization (``Gaps``).

    For each point, q's raw parameters (the encoder's output) are copied and optimised by
    Adam on that point's ELBO, inside the same family: ``gap_steps`` steps at ``gap_lr``,
    ``gap_particles`` particles per step. Then log p(x), L[q*] and L[q_enc] are estimated with
    ``k`` particles. Options are those of ``EvaluationConfig`` (keywords override ``config``).
    """
    config = replace(config or EvaluationConfig(), **options)
    x = check_data(model, x)
    with evaluating(model):
        return gap_split(model, x, config)
