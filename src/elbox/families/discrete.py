"""Discrete latent families: Bernoulli and categorical latents drawn by Gumbel-max and relaxed by
Gumbel-softmax, and the uniform prior over their codes."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints, register_kl

from ..catalogue import Option
from .base import _SCALAR, Family

__all__ = ["CategoricalDiscrete", "Discrete", "GumbelDiscrete", "UniformDiscrete"]


def _uniform_noise(shape: torch.Size, like: Tensor) -> Tensor:
    """U(0, 1) draws kept off 0 and 1, so Gumbel and logistic noise stay finite."""
    tiny = torch.finfo(like.dtype).tiny
    return torch.rand(shape, dtype=like.dtype, device=like.device).clamp(tiny, 1 - torch.finfo(like.dtype).eps)


class GumbelDiscrete(Distribution):
    """D independent discrete latents, drawn by the Gumbel-max trick and relaxed by Gumbel-softmax.

    ``categories=2`` is D Bernoulli latents coded z_d in {0, 1} (``logits`` ``[*B, D]``, draws
    ``[*S, *B, D]``); ``categories=C > 2`` is D categorical latents coded one-hot and flattened
    (``logits`` ``[*B, D, C]``, draws ``[*S, *B, D * C]``). With noise g (logistic for a Bernoulli,
    Gumbel per category otherwise) one noise draw gives both points:

        hard:    z = [logits + g > 0]  or  one_hot(argmax(logits + g))   an exact draw from q;
        relaxed: z~ = sigmoid((logits + g) / tau)  or  softmax((logits + g) / tau)

    (the Concrete / Gumbel-softmax relaxation, Maddison, Mnih & Teh 2017; Jang, Gu & Poole 2017).

    - ``sample`` is the hard draw, without gradient (the score-function estimator).
    - ``rsample`` is the relaxed point z~; with ``straight_through`` it is the hard draw in the
      forward pass with z~'s gradient (hard + (z~ - z~.detach()), Bengio et al. 2013); with
      ``hard`` (a model in evaluation mode) it is the hard draw without gradient.
    - ``log_prob(z)`` is the discrete log pmf sum_d log q(z_d): exact at every hard point (so a
      straight-through draw's log-weight is exactly the discrete model's); at a relaxed z~ it is
      the pmf's multilinear extension sum z~ log pi, which is not a density of z~.

    So which bound a draw gives: hard and straight-through draws give log-weights of the
    discrete model itself, and every bound over them is a bound on the discrete log p(x)
    (straight-through biases only the gradient). Relaxed draws feed z~ to the decoder; the
    ELBO is then E_z~ log p(x | z~) - KL(q || p) with the discrete, closed-form KL (Jang et al.
    2017): a training surrogate, not a bound, which tends to the discrete ELBO as tau -> 0.
    """

    arg_constraints = {"logits": constraints.real}  # noqa: RUF012 (torch's convention)
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self, logits: Tensor, categories: int = 2, *, temperature: float = 0.5, straight_through: bool = False,
        hard: bool = False,
    ) -> None:  # fmt: skip
        self.logits, self.categories = logits, categories
        self.temperature, self.straight_through, self.hard = temperature, straight_through, hard
        batch = logits.shape[:-1] if categories == 2 else logits.shape[:-2]
        super().__init__(batch, torch.Size([self.width]), validate_args=False)

    @property
    def dim(self) -> int:
        return self.logits.shape[-1] if self.categories == 2 else self.logits.shape[-2]

    @property
    def width(self) -> int:
        """The length of a coded draw: D for Bernoulli latents, D * C for categorical ones."""
        return self.dim if self.categories == 2 else self.dim * self.categories

    @property
    def probs(self) -> Tensor:
        """q's probabilities in the coding of the draws, ``[*B, W]``."""
        if self.categories == 2:
            return torch.sigmoid(self.logits)
        return torch.softmax(self.logits, -1).flatten(-2)

    @property
    def mean(self) -> Tensor:
        return self.probs

    def _draws(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """The hard draw and the relaxed point from one noise draw, both ``[*S, *B, W]``."""
        shape = torch.Size(sample_shape) + self.logits.shape
        u = _uniform_noise(shape, self.logits)
        if self.categories == 2:
            noisy = self.logits + (u.log() - (-u).log1p())  # logistic noise: P(noisy > 0) = sigmoid(logits)
            return (noisy > 0).to(noisy.dtype), torch.sigmoid(noisy / self.temperature)
        noisy = self.logits - (-u.log()).log()  # Gumbel noise: argmax is a draw from softmax(logits)
        hard = F.one_hot(noisy.argmax(-1), self.categories).to(noisy.dtype)
        return hard.flatten(-2), torch.softmax(noisy / self.temperature, -1).flatten(-2)

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        with torch.no_grad():
            return self._draws(sample_shape)[0]

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        if self.hard:
            return self.sample(sample_shape)
        hard, relaxed = self._draws(sample_shape)
        return hard + (relaxed - relaxed.detach()) if self.straight_through else relaxed  # exactly hard forward

    def log_prob(self, z: Tensor) -> Tensor:
        if self.categories == 2:
            return (z * self.logits - F.softplus(self.logits)).sum(-1)
        return (z.unflatten(-1, (self.dim, self.categories)) * torch.log_softmax(self.logits, -1)).sum((-2, -1))

    def entropy(self) -> Tensor:
        if self.categories == 2:
            p = torch.sigmoid(self.logits)
            return (F.softplus(self.logits) - p * self.logits).sum(-1)
        log_p = torch.log_softmax(self.logits, -1)
        return -(log_p.exp() * log_p).sum((-2, -1))

    def stopped(self) -> "GumbelDiscrete":
        return GumbelDiscrete(self.logits.detach(), self.categories, temperature=self.temperature,
                              straight_through=self.straight_through, hard=self.hard)  # fmt: skip


class UniformDiscrete(Distribution):
    """The uniform distribution over the codes of ``GumbelDiscrete``: p(z) = C^-D, batch shape ``[]``.

    ``log_prob`` is -D log C at every code (and, as the multilinear extension, at relaxed points).
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's convention)
    support = constraints.unit_interval

    def __init__(self, dim: int, categories: int = 2, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:  # fmt: skip
        self.dim, self.categories = dim, categories
        self.logits = torch.zeros(dim, *(() if categories == 2 else (categories,)), dtype=dtype, device=device)
        width = dim if categories == 2 else dim * categories
        super().__init__(torch.Size(), torch.Size([width]), validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.full(z.shape[:-1], -self.dim * math.log(self.categories), dtype=z.dtype, device=z.device)

    def sample(self, sample_shape: torch.Size = _SCALAR, generator: torch.Generator | None = None) -> Tensor:
        """Uniform codes ``[*S, W]``, drawn with ``generator`` when given."""
        shape = torch.Size(sample_shape) + torch.Size([self.dim])
        device = generator.device if generator is not None else self.logits.device  # a CPU generator draws on the CPU
        k = torch.randint(self.categories, shape, generator=generator, device=device).to(self.logits.device)
        if self.categories == 2:
            return k.to(self.logits.dtype)
        return F.one_hot(k, self.categories).to(self.logits.dtype).flatten(-2)


@register_kl(GumbelDiscrete, UniformDiscrete)
def _kl_discrete_uniform(q: GumbelDiscrete, p: UniformDiscrete) -> Tensor:
    """KL(q || uniform) = D log C - H(q), exact for the discrete q, ``[*B]``."""
    return q.dim * math.log(q.categories) - q.entropy()


class Discrete(Family):
    """D discrete latents (``GumbelDiscrete``): Bernoulli (D raw logits) or categorical with C
    categories (D C raw logits). ``width`` is the length of a coded draw, what a decoder takes.

    In training mode ``rsample`` gives the relaxed (or straight-through) draws; in evaluation
    mode (``module.eval()``) it gives hard draws, so every bound a model in evaluation mode
    reports is a bound on the discrete model's log p(x).

    >>> q = Discrete(3, nn.Linear(4, 3))(torch.zeros(5, 4))
    >>> q.rsample((7,)).shape, q.log_prob(q.sample()).shape
    (torch.Size([7, 5, 3]), torch.Size([5]))
    >>> Discrete(3, categories=4).width
    12
    """

    settings = ("temperature", "straight_through")

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, categories: int = 2, temperature: float = 0.5,
        straight_through: bool = False, min_scale: float = 1e-4,
    ) -> None:  # fmt: skip
        if categories < 2:
            raise ValueError(f"a categorical latent needs at least 2 categories, got {categories}")
        if not 0 < temperature < math.inf:
            raise ValueError(f"the temperature must be positive and finite, got {temperature}")
        self.categories, self.temperature, self.straight_through = categories, temperature, straight_through
        super().__init__(dim, encoder, min_scale=min_scale)

    @property
    def width(self) -> int:
        return self.dim if self.categories == 2 else self.dim * self.categories

    def num_params(self) -> int:
        return self.width

    def initial(self) -> Tensor:
        return torch.zeros(self.width)

    def distribution(self, raw: Tensor) -> Distribution:
        logits = raw if self.categories == 2 else raw.unflatten(-1, (self.dim, self.categories))
        return GumbelDiscrete(logits, self.categories, temperature=self.temperature,
                              straight_through=self.straight_through, hard=not self.training)  # fmt: skip

    def extra_repr(self) -> str:
        return f"dim={self.dim}, categories={self.categories}, temperature={self.temperature}"


class CategoricalDiscrete(Discrete):
    """``Discrete`` with C >= 2 categories per latent, as the table names it: ``categorical[:C]``
    (default C = 10).

    >>> CategoricalDiscrete(3, categories=4).width
    12
    """

    option = Option("C", "categories", "C categories", least=2, default=10)

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, categories: int = 10, temperature: float = 0.5,
        straight_through: bool = False, min_scale: float = 1e-4,
    ) -> None:  # fmt: skip
        super().__init__(dim, encoder, categories=categories, temperature=temperature,
                         straight_through=straight_through, min_scale=min_scale)  # fmt: skip
