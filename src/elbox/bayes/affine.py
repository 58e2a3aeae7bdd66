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
| full-rank, sinh-arcsinh, flows | the Cholesky factor of H^-1 | the same family (an affine map of a flow is a flow) |

A diagonal S keeps a diagonal q diagonal (mean-field over the model's own coordinates); the
optimum within the family is the same whatever m and S are: only the path to it changes.
"""

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, LowRankMultivariateNormal, MultivariateNormal, constraints

from ..families import DiagonalNormal, FlowNormal, FullRankNormal, LowRankNormal, MixtureNormal, SinhArcsinhNormal

__all__ = ["PLACES", "AffineFlowNormal", "draw", "place", "register_place"]

_SCALAR = torch.Size()  # the default sample shape: one draw

Placer = Callable[[Distribution, Tensor, Tensor], Distribution]
PLACES: dict[type, Placer] = {}  # a distribution type -> how to move it by u = shift + S v (``place``)


def register_place(cls: type) -> Callable[[Placer], Placer]:
    """Decorator: ``place`` moves a q of type ``cls`` (or a subclass) with the decorated function
    ``(q, shift, scale) -> q over u``, as torch's ``register_kl``. ``scale`` is a vector ``[D]``
    (a diagonal S) or a lower-triangular matrix ``[D, D]``; a function that keeps its form only
    under a diagonal S says so with ``_diagonal_only``. Fitting a new family is one such line."""

    def register(placer: Placer) -> Placer:
        PLACES[cls] = placer
        return placer

    return register


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

    @property
    def scores(self) -> bool:
        return self.base.scores

    def rsample_with_score(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor, Tensor]:
        """Draws, log q and grad_u log q(u) = L^-T grad_v log q_v(v) (detached), as ``FlowNormal``'s."""
        v, log_q, score = self.base.rsample_with_score(sample_shape)
        score = torch.linalg.solve_triangular(self.tril.detach(), score, upper=False, left=False)  # score L^-1
        return self.shift + v @ self.tril.T, log_q - self.log_det, score

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, u: Tensor) -> Tensor:
        v = torch.linalg.solve_triangular(self.tril, (u - self.shift).unsqueeze(-1), upper=False).squeeze(-1)
        return self.base.log_prob(v) - self.log_det

    def stopped(self) -> "AffineFlowNormal":
        return AffineFlowNormal(self.base.stopped(), self.shift, self.tril)


def place(q: Distribution, shift: Tensor, scale: Tensor) -> Distribution:
    """q over v moved to u = shift + S v, S = ``scale``: a vector (diagonal S, ``[D]``) or a
    lower-triangular matrix ``[D, D]``. Gaussians stay Gaussians of the same type. Dispatches on
    q's type (its nearest registered base class) through ``PLACES`` (``register_place``)."""
    for cls in type(q).__mro__:
        if cls in PLACES:
            return PLACES[cls](q, shift, scale)
    raise NotImplementedError(f"place does not know {type(q).__name__}: register it with affine.register_place")


def _diagonal_only(q: Distribution, scale: Tensor) -> None:
    if scale.ndim == 2:
        raise ValueError(f"{type(q).__name__} keeps its form only under a diagonal scale")


def _apply(scale: Tensor, v: Tensor) -> Tensor:
    return v @ scale.T if scale.ndim == 2 else scale * v


@register_place(FlowNormal)
def _place_flow(q: FlowNormal, shift: Tensor, scale: Tensor) -> AffineFlowNormal:
    return AffineFlowNormal(q, shift, scale if scale.ndim == 2 else torch.diag(scale))


@register_place(MultivariateNormal)
def _place_full_rank(q: MultivariateNormal, shift: Tensor, scale: Tensor) -> FullRankNormal:
    tril = scale @ q.scale_tril if scale.ndim == 2 else scale[:, None] * q.scale_tril
    return FullRankNormal(shift + _apply(scale, q.loc), scale_tril=tril, validate_args=False)


@register_place(SinhArcsinhNormal)
def _place_sinh_arcsinh(q: SinhArcsinhNormal, shift: Tensor, scale: Tensor) -> SinhArcsinhNormal:
    tril = scale @ q.scale_tril if scale.ndim == 2 else scale[:, None] * q.scale_tril
    return SinhArcsinhNormal(shift + _apply(scale, q.loc), tril, q.skew, q.tail)


@register_place(DiagonalNormal)
def _place_diagonal(q: DiagonalNormal, shift: Tensor, scale: Tensor) -> DiagonalNormal:
    _diagonal_only(q, scale)
    return DiagonalNormal(shift + scale * q.base_dist.loc, scale * q.base_dist.scale)


@register_place(LowRankMultivariateNormal)
def _place_low_rank(q: LowRankMultivariateNormal, shift: Tensor, scale: Tensor) -> LowRankNormal:
    _diagonal_only(q, scale)
    return LowRankNormal(shift + scale * q.loc, scale[:, None] * q.cov_factor, scale.pow(2) * q.cov_diag,
                         validate_args=False)  # fmt: skip


@register_place(MixtureNormal)
def _place_mixture(q: MixtureNormal, shift: Tensor, scale: Tensor) -> MixtureNormal:
    _diagonal_only(q, scale)
    components = q.component_distribution.base_dist
    return MixtureNormal(shift + scale * components.loc, scale * components.scale)


def draw(q: Distribution, n: int) -> tuple[Tensor, Tensor]:
    """n draws ``[n, D]`` and their log q ``[n]``, fused where the family allows it."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((n,))
    u = q.rsample((n,))
    return u, q.log_prob(u)
