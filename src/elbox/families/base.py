"""What every variational family shares: the ``Family`` module, positive-parameter maps, and the
functions of q that do not depend on its kind (``center``, ``line_between``, ``stop_gradient``)."""

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..catalogue import Option

__all__ = [
    "Family",
    "StoppedAtDraws",
    "center",
    "draw_particles",
    "draw_stopped",
    "line_between",
    "start_at",
    "stop_gradient",
]

_SCALAR = torch.Size()  # the default sample shape: one draw


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    """log N(eps; 0, I) summed over the last dimension: ``[..., D] -> [...]``."""
    return -0.5 * (eps.pow(2).sum(-1) + eps.shape[-1] * math.log(2 * math.pi))


def _positive(raw: Tensor, floor: float) -> Tensor:
    """softplus(raw) + floor: grows linearly where exp would overflow; the floor keeps log q finite."""
    return F.softplus(raw) + floor


def _inverse_positive(value: float, floor: float) -> float:
    """The raw value that ``_positive`` maps to ``value``."""
    v = value - floor
    return v + math.log(-math.expm1(-v))


def _inverse_positive_tensor(value: Tensor, floor: float) -> Tensor:
    """``_inverse_positive`` elementwise on a tensor."""
    v = value - floor
    return v + torch.log(-torch.expm1(-v))


class Family(nn.Module):
    """A distribution family over R^D, amortized by ``encoder`` or global (free parameters).

    Subclasses say how many raw parameters they need (``num_params``), how to read a
    distribution off them (``distribution``) and where global parameters start
    (``initial``: a standard normal, so a global q starts at a common VI prior). For the name
    table of ``elbox.families`` a subclass declares the number its names may carry
    (``option``, e.g. ``lowrank:R``) and which of ``make_family``'s keywords it takes
    (``settings``); ``start_at`` is there where the family can start at a given Gaussian.

    Args:
        dim: D.
        encoder: a module mapping x ``[B, X]`` to ``[B, num_params]``; ``None`` for a global q.
        min_scale: the smallest standard deviation along any axis.
    """

    option: ClassVar[Option | None] = None  # the number after the colon of its names, if any
    settings: ClassVar[tuple[str, ...]] = ()  # make_family's keywords beyond min_scale that it takes

    def __init__(self, dim: int, encoder: nn.Module | None = None, *, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.dim, self.encoder, self.min_scale = dim, encoder, min_scale
        self.raw = None if encoder is not None else nn.Parameter(self.initial())

    @classmethod
    def keywords(cls, name: str, number: int | None) -> dict[str, Any]:
        """The constructor keywords that the table name ``name[:number]`` says."""
        value = number if number is not None or cls.option is None else cls.option.default
        return {} if value is None else {cls.option.keyword: value}

    @property
    def width(self) -> int:
        """The length of a draw, what a decoder takes: D, except for coded discrete latents."""
        return self.dim

    def num_params(self) -> int:
        raise NotImplementedError

    def initial(self) -> Tensor:
        raise NotImplementedError

    def distribution(self, raw: Tensor) -> Distribution:
        raise NotImplementedError

    def forward(self, x: Tensor | None = None) -> Distribution:
        if self.encoder is None:
            if x is not None:
                raise ValueError("a global family takes no input; give it an encoder to amortize it")
            return self.distribution(self.raw)
        return self.distribution(self.encoder(x))

    def start_at(self, loc: Tensor, covariance: Tensor) -> None:
        """Set a global family's raw parameters so that q starts at N(loc, covariance), or at the
        family's nearest form of it (a Laplace approximation, say). ``loc`` ``[D]``, ``covariance``
        ``[D, D]``; scales below ``min_scale`` are raised to it. Each family says its form in
        ``raw_start``."""
        if self.encoder is not None:
            raise ValueError("start_at sets a global family; an amortized family's parameters come from its encoder")
        raw = self.raw_start(loc.to(self.raw), covariance.to(self.raw))
        with torch.no_grad():
            self.raw.copy_(raw)

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """The raw parameters ``[num_params]`` of q nearest N(loc, covariance) (``start_at``)."""
        raise NotImplementedError(f"start_at does not know {type(self).__name__}")

    def _raw_scale(self, sd: Tensor) -> Tensor:
        """Raw values of the standard deviations ``sd``, raised to just above ``min_scale``."""
        return _inverse_positive_tensor(sd.clamp(min=self.min_scale * (1 + 1e-6)), self.min_scale)


def start_at(family: Family, loc: Tensor, covariance: Tensor) -> None:
    """``family.start_at(loc, covariance)``: q starts at N(loc, covariance) or its nearest form.

    >>> from elbox.families import LowRankGaussian
    >>> q = LowRankGaussian(3, rank=1)
    >>> start_at(q, torch.zeros(3), torch.tensor([[2.0, 1.9, 0.0], [1.9, 2.0, 0.0], [0.0, 0.0, 1.0]]))
    >>> torch.allclose(q().covariance_matrix, torch.tensor([[2.0, 1.9, 0.0], [1.9, 2.0, 0.0], [0.0, 0.0, 1.0]]))
    True
    """
    family.start_at(loc, covariance)


def stop_gradient(q: Distribution) -> Distribution:
    """``q`` with its parameters cut from the graph (``q.stopped()``): ``log_prob`` then passes
    gradients to the point only (the STL and DReG estimators)."""
    if not hasattr(q, "stopped"):
        raise NotImplementedError(f"{type(q).__name__} has no stopped(): give it one that detaches its parameters")
    return q.stopped()


class StoppedAtDraws(Distribution):
    """q with its parameters stopped, at its own draws z only: log q(z) with gradient grad_z log q(z) to z and
    none to q's parameters, what the sticking-the-landing and DReG estimators need of log q, from a value
    ``[*S, *B]`` and a score ``[*S, *B, D]`` computed along the draw (``FlowNormal.rsample_with_score``):

        log q(z) := value + score . (z - stop(z)),

    the same number as ``stop_gradient(q).log_prob(z)`` and the same gradient, without a flow's inverse pass
    and its backward (a third of a realnvp:4 step). The draws may come back reshaped (a view of them, as
    ``z[:, None]``); any other point is refused."""

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute
    support = constraints.real_vector

    def __init__(self, z: Tensor, value: Tensor, score: Tensor) -> None:
        self.z, self.value, self.score = z, value, score
        super().__init__(value.shape, z.shape[-1:], validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        if z is not self.z and z._base is not self.z:
            raise ValueError("StoppedAtDraws knows log q at its own draws only")
        linear = (z * self.score.reshape(z.shape)).sum(-1)
        return self.value.reshape(z.shape[:-1]) + (linear - linear.detach())


def draw_stopped(q: Distribution, k: int) -> tuple[Tensor, Distribution]:
    """K reparameterized draws ``[K, *B, D]`` and q stopped for them (STL, DReG): ``StoppedAtDraws`` where q
    carries its score along the draw (``q.scores``: the realnvp flows), else ``stop_gradient(q)``."""
    if getattr(q, "scores", False):
        z, value, score = q.rsample_with_score((k,))
        return z, StoppedAtDraws(z, value.detach(), score)
    return q.rsample((k,)), stop_gradient(q)


def draw_particles(
    q: Distribution, k: int, reparameterize: bool, stop_q: bool
) -> tuple[Tensor, Distribution | None, Tensor | None]:
    """K draws from q ``[K, *B, D]`` for the gradient estimator's switches (``bounds.Objective``), with q
    stopped (STL, DReG: ``draw_stopped``) and log q ``[K, *B]`` along the draw where a flow computes it in one
    pass: (z, q stopped or None, log q or None). What the VAEs and the Bayesian stepper draw with."""
    if stop_q:
        return (*draw_stopped(q, k), None)
    if reparameterize and hasattr(q, "rsample_and_log_prob"):
        z, log_q = q.rsample_and_log_prob((k,))  # a flow: log q along the draw, in its fast direction
        return z, None, log_q
    return (q.rsample((k,)) if reparameterize else q.sample((k,))), None, None


def center(q: Distribution) -> Tensor:
    """A central point of q, ``[*B, D]``: its mean when known in closed form, else the image of
    the base's center (a flow's, or ``hierarchical.Chain``'s). What reconstructions and
    interpolations decode."""
    return q.center() if hasattr(q, "center") else q.mean  # a flow, or a chain of layers (hierarchical)


def line_between(q: Distribution, steps: int) -> Tensor:
    """``steps`` evenly spaced points on the straight line between the centers of q of batch
    shape ``[2]`` (two inputs' posteriors): ``[steps, D]``, from the first center to the second."""
    z_a, z_b = center(q)
    t = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
    return (1 - t) * z_a + t * z_b
