"""A family fitted in standardised coordinates v and placed on the parameters by u = m + S v.

Adam's steps have a size in the units of the parameters it moves (about the learning rate,
whatever the gradient's scale), so a posterior with standard deviations of 1e-3 (posteriordb's
``sblrc-blr``) or 1e2 is fitted far too coarsely or far too slowly by the same learning rate.
Fitting q in coordinates where the posterior is about N(0, I) removes the problem: m is the
mode of log p(u, x) and S comes from the Hessian H there, so the family's own standard-normal
start is the Laplace approximation, and a learning rate of 0.01-0.05 is a step in posterior
standard deviations. The map is affine, so each family keeps its meaning:

| family | S | q over u |
| --- | --- | --- |
| diagonal, low-rank, mixture | diag(H_ii^-1/2): the mean-field Laplace scales | the same family |
| full-rank, flows | the Cholesky factor of H^-1 | the same family (an affine map of a flow is a flow) |

A diagonal S keeps a diagonal q diagonal (mean-field over the model's own coordinates); the
optimum within the family is the same whatever m and S are: only the path to it changes.
"""

import torch
from torch import Tensor
from torch.distributions import Distribution, LowRankMultivariateNormal, MultivariateNormal, constraints

from ..families import DiagonalNormal, FlowNormal, MixtureNormal, stop_gradient

__all__ = ["AffineFlowNormal", "draw", "place", "stopped"]

_SCALAR = torch.Size()  # the default sample shape: one draw


class AffineFlowNormal(Distribution):
    """A flow q_v placed by u = shift + L v (L lower-triangular with a positive diagonal):
    log q(u) = log q_v(L^-1 (u - shift)) - sum_i log L_ii. Draws ``[*S, D]``, log q ``[*S]``."""

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute; the parameters live in the flow
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: FlowNormal, shift: Tensor, tril: Tensor) -> None:
        self.base, self.shift, self.tril = base, shift, tril
        self.log_det = tril.diagonal().log().sum()
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        v, log_q = self.base.rsample_and_log_prob(sample_shape)
        return self.shift + v @ self.tril.T, log_q - self.log_det

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, u: Tensor) -> Tensor:
        v = torch.linalg.solve_triangular(self.tril, (u - self.shift).unsqueeze(-1), upper=False).squeeze(-1)
        return self.base.log_prob(v) - self.log_det

    def stopped(self) -> "AffineFlowNormal":
        return AffineFlowNormal(self.base.stopped(), self.shift, self.tril)


def place(q: Distribution, shift: Tensor, scale: Tensor) -> Distribution:
    """q over v moved to u = shift + S v, S = ``scale``: a vector (diagonal S, ``[D]``) or a
    lower-triangular matrix ``[D, D]``. Gaussians stay Gaussians of the same type."""
    full = scale.ndim == 2
    if isinstance(q, FlowNormal):
        return AffineFlowNormal(q, shift, scale if full else torch.diag(scale))
    if isinstance(q, MultivariateNormal):
        tril = scale @ q.scale_tril if full else scale[:, None] * q.scale_tril
        return MultivariateNormal(shift + _apply(scale, q.loc), scale_tril=tril, validate_args=False)
    if full:
        raise ValueError(f"{type(q).__name__} keeps its form only under a diagonal scale")
    if isinstance(q, DiagonalNormal):
        return DiagonalNormal(shift + scale * q.base_dist.loc, scale * q.base_dist.scale)
    if isinstance(q, LowRankMultivariateNormal):
        return LowRankMultivariateNormal(
            shift + scale * q.loc, scale[:, None] * q.cov_factor, scale.pow(2) * q.cov_diag, validate_args=False
        )
    if isinstance(q, MixtureNormal):
        components = q.component_distribution.base_dist
        return MixtureNormal(shift + scale * components.loc, scale * components.scale)
    raise NotImplementedError(f"place does not know {type(q).__name__}")


def _apply(scale: Tensor, v: Tensor) -> Tensor:
    return v @ scale.T if scale.ndim == 2 else scale * v


def stopped(q: Distribution) -> Distribution:
    """q with its parameters cut from the graph (``families.stop_gradient``, and the placed flow)."""
    return q.stopped() if isinstance(q, AffineFlowNormal) else stop_gradient(q)


def draw(q: Distribution, n: int) -> tuple[Tensor, Tensor]:
    """n draws ``[n, D]`` and their log q ``[n]``, fused where the family allows it."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((n,))
    u = q.rsample((n,))
    return u, q.log_prob(u)
