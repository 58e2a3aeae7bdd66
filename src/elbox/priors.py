"""Priors p(z) over the latent variables: the standard normal with its closed-form KL
divergences, and two learned priors, a mixture of Gaussians and the VampPrior.

A prior is an ``nn.Module`` whose ``forward()`` returns p(z) (batch shape ``[]``, event
``[D]``, so ``log_prob`` takes draws of any leading shape, ``[K, B, D] -> [K, B]``) and whose
``sample(n, generator)`` draws ``[n, D]``. The learned priors are mixtures: torch registers
no KL from q to them, so ``bounds.ELBO`` and ``evaluate`` estimate the KL by Monte Carlo
from the particles, log q(z) - log p(z), by themselves.
"""

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    MultivariateNormal,
    register_kl,
)

from .catalogue import Option, parse
from .families import DiagonalNormal, UniformDiscrete, _inverse_positive, _positive

__all__ = [
    "PRIORS",
    "ClassPrior",
    "DiagonalMixture",
    "MixturePrior",
    "StandardNormal",
    "UniformPrior",
    "UnitNormal",
    "VampPrior",
    "check_prior_name",
    "draw_diagonal",
    "make_prior",
    "probit_grid",
]

MOG_COMPONENTS, VAMP_COMPONENTS = 10, 500  # vamp: Tomczak & Welling (2018) on MNIST


class UnitNormal(DiagonalNormal):
    """N(0, I) over ``dim`` dimensions: batch shape ``[]``, event shape ``[dim]``.

    Its own type, built from a size alone, so the KL below can rely on loc = 0, scale = 1.
    """

    def __init__(self, dim: int, dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        super().__init__(torch.zeros(dim, dtype=dtype, device=device), torch.ones(dim, dtype=dtype, device=device))

    def expand(self, batch_shape: torch.Size, _instance: Independent | None = None) -> DiagonalNormal:
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.base_dist.loc.expand(shape), self.base_dist.scale.expand(shape))


@register_kl(DiagonalNormal, UnitNormal)
def _kl_diagonal_unit(q: DiagonalNormal, p: UnitNormal) -> Tensor:
    """KL(N(m, diag s^2) || N(0, I)) = 1/2 sum_d (m_d^2 + s_d^2 - 1) - sum_d log s_d.

    Kingma & Welling (2014), Appendix B. The same value as torch's Normal-Normal formula with
    fewer operations: about 2% of a training step of the benchmark VAE.
    """
    loc, scale = q.base_dist.loc, q.base_dist.scale
    return 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum(-1) - scale.log().sum(-1)


@register_kl(MultivariateNormal, UnitNormal)
@register_kl(LowRankMultivariateNormal, UnitNormal)
def _kl_gaussian_unit(q: Distribution, p: UnitNormal) -> Tensor:
    """KL(N(m, S) || N(0, I)) = 1/2 (tr S + m^T m) + D/2 log(2 pi e) - H(q) - D/2, via q's entropy.

    The entropy uses the family's own factorisation (Cholesky or low-rank), so no D x D
    matrix is formed for the low-rank family.
    """
    d = q.event_shape[-1]
    return 0.5 * (q.variance.sum(-1) + q.mean.pow(2).sum(-1)) + 0.5 * d * math.log(2 * math.pi) - q.entropy()


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``dim`` latent dimensions: batch shape ``[]``, event ``[dim]``.

    Holds no parameters; a buffer keeps the prior on the model's device and dtype, and the
    distribution is built once per dtype and device (it is constant).

    >>> StandardNormal(2)().sample((3,)).shape
    torch.Size([3, 2])
    """

    option = None  # the name ``standard`` carries no number

    @classmethod
    def named(cls, dim: int, number: int | None, **context: Any) -> "StandardNormal":
        """``make_prior``'s factory: N(0, I) needs only D."""
        return cls(dim)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))
        self._cache: dict[tuple[torch.dtype, torch.device], UnitNormal] = {}

    def forward(self) -> Distribution:
        key = (self.loc.dtype, self.loc.device)
        if key not in self._cache:
            self._cache[key] = UnitNormal(self.dim, *key)
        return self._cache[key]

    def sample(self, n: int, generator: torch.Generator | None = None, *, y: Tensor | None = None) -> Tensor:
        """n draws ``[n, D]``, made on the generator's device and moved to the prior's. Every prior's
        ``sample`` takes the one-hot labels ``y`` of a conditional model; an unconditional prior ignores them."""
        return _randn((n, self.dim), generator, self.loc)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise drawn where ``generator`` lives (a CPU generator serves a GPU model), as ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like)


def draw_diagonal(p: Distribution, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n draws from a diagonal Gaussian of batch shape ``[]`` (``[n, D]``), or of batch ``[n]`` (one draw each).

    torch's ``sample`` takes no generator; drawing through one keeps samples reproducible.
    """
    loc, scale = p.base_dist.loc, p.base_dist.scale
    return loc + scale * _randn((n, loc.shape[-1]), generator, loc)


def _draw_mixture(p: MixtureSameFamily, n: int, generator: torch.Generator | None) -> Tensor:
    """n draws ``[n, D]`` from a mixture of diagonal Gaussians: a component by its weight, then a Gaussian draw."""
    device = generator.device if generator is not None else p.mixture_distribution.probs.device
    probs = p.mixture_distribution.probs.detach().to(device=device, dtype=torch.float64)
    loc, scale = p.component_distribution.base_dist.loc, p.component_distribution.base_dist.scale  # [M, D]
    index = torch.multinomial(probs, n, replacement=True, generator=generator).to(loc.device)  # [n]
    return draw_diagonal(DiagonalNormal(loc[index], scale[index]), n, generator)


class DiagonalMixture(MixtureSameFamily):
    """A mixture of M diagonal Gaussians, sum_m pi_m N(z; mu_m, diag s_m^2), batch shape ``[]``, event ``[D]``,
    whose log density is a matrix product:

        sum_d (z_d - mu_md)^2 / s_md^2 = (z^2) . s_m^-2 - 2 z . (mu_m s_m^-2) + sum_d mu_md^2 s_md^-2,

    so draws ``[*S, D]`` make ``[*S, M]`` values where torch's ``MixtureSameFamily`` makes
    ``[*S, M, D]``: D times less memory and a BLAS product (the VampPrior's 500 components at
    K = 5,000 particles). The expansion cancels, so it is summed in float64.

    Shapes: ``logits`` ``[M]``, ``loc`` and ``scale`` ``[M, D]``.
    """

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Categorical(logits=logits, validate_args=False), DiagonalNormal(loc, scale),
                         validate_args=False)  # fmt: skip

    def log_prob(self, z: Tensor) -> Tensor:
        components = self.component_distribution.base_dist
        loc, precision = components.loc.double(), components.scale.double().pow(-2)  # [M, D]
        w = z.double()
        square = w.pow(2) @ precision.T - 2 * w @ (loc * precision).T + (loc.pow(2) * precision).sum(-1)  # [*S, M]
        log_norm = -components.scale.double().log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # [M]
        log_pi = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
        return torch.logsumexp(log_pi + log_norm - 0.5 * square, -1).to(z.dtype)


class MixturePrior(nn.Module):
    """A learned mixture of M diagonal Gaussians, p(z) = sum_m pi_m N(z; mu_m, diag s_m^2).

    Means, scales and weights are all learned (pi = softmax of free logits); the means start
    at N(0, I) draws, the scales at 1 and the weights equal. Batch shape ``[]``, event ``[D]``.

    >>> p = MixturePrior(2, components=3)()
    >>> p.log_prob(torch.zeros(4, 5, 2)).shape
    torch.Size([4, 5])
    """

    option = Option("K", "components", "a learned mixture of K Gaussians", default=MOG_COMPONENTS)

    @classmethod
    def named(cls, dim: int, number: int, *, min_scale: float = 1e-4, **context: Any) -> "MixturePrior":
        """``make_prior``'s factory: K = ``number``, the families' scale floor."""
        return cls(dim, number, min_scale)

    def __init__(self, dim: int, components: int = MOG_COMPONENTS, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.dim, self.components, self.min_scale = dim, components, min_scale
        self.loc = nn.Parameter(torch.randn(components, dim))
        # softplus(raw) + floor = 1 at the start
        self.raw_scale = nn.Parameter(torch.full((components, dim), math.log(math.expm1(1.0 - min_scale))))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self) -> DiagonalMixture:
        return DiagonalMixture(self.logits, self.loc, F.softplus(self.raw_scale) + self.min_scale)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, y: Tensor | None = None) -> Tensor:
        """n draws ``[n, D]`` (without gradients, as torch's ``sample``), through ``generator``."""
        return _draw_mixture(self(), n, generator)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}"


class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling, 2018): the encoder's posterior at K learned pseudo-inputs,

        p(z) = (1/K) sum_k q(z | u_k),   u_k = h(w_k) in data space,

    the mixture that approximates the aggregate posterior, the prior that maximises the ELBO
    on average over the data. ``encode`` maps pseudo-inputs ``[K, X]`` to a diagonal Gaussian
    (``families.DiagonalNormal``) of batch shape ``[K]`` and event ``[D]``; the prior holds only the pseudo-inputs, the
    encoder stays its model's (passed as a function, so its weights are not registered twice).

    As in the paper's code, the pseudo-inputs are w_k ~ N(0.05, 0.01^2) passed through
    h = hardtanh onto [0, 1] when the data lie there (``bounded``: Bernoulli and binomial
    likelihoods); for unbounded data h is the identity and w_k ~ N(0, 1). ``start_at(x)``
    puts them at K training points instead, which ``elbox.train`` does: the K near-black
    images of the default start give K nearly equal components, a prior the encoder matches
    at once by ignoring its input. With ReLU networks the data start makes the prior useful
    from the first steps; with tanh ones the fit can stay collapsed (KL 0) for thousands of
    steps either way (docs/benchmarks.md, the zoo).

    >>> from elbox.families import DiagonalGaussian
    >>> encoder = DiagonalGaussian(2, nn.Linear(6, 4))
    >>> p = VampPrior(encoder, data_dim=6, components=5)()
    >>> p.log_prob(torch.zeros(3, 7, 2)).shape, p.mixture_distribution.probs.shape
    (torch.Size([3, 7]), torch.Size([5]))
    """

    option = Option("K", "components", "the VampPrior with K pseudo-inputs", default=VAMP_COMPONENTS)

    @classmethod
    def named(
        cls, dim: int, number: int, *, encode: Callable[[Tensor], Distribution] | None = None,
        data_dim: int | None = None, bounded: bool = True, **context: Any,
    ) -> "VampPrior":  # fmt: skip
        """``make_prior``'s factory: K = ``number`` pseudo-inputs through the model's ``encode``."""
        if encode is None or data_dim is None:
            raise ValueError("the VampPrior needs the model's encoder and the data's width")
        return cls(encode, data_dim, number, bounded=bounded)

    def __init__(
        self, encode: Callable[[Tensor], Distribution], data_dim: int, components: int = VAMP_COMPONENTS,
        *, bounded: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data_dim, self.components, self.bounded = data_dim, components, bounded
        self._encode = (encode,)  # in a tuple: a module here would register the encoder's weights again
        mean, std = (0.05, 0.01) if bounded else (0.0, 1.0)
        self.raw_inputs = nn.Parameter(mean + std * torch.randn(components, data_dim))

    @property
    def pseudo_inputs(self) -> Tensor:
        """u_k, ``[K, X]``."""
        return F.hardtanh(self.raw_inputs, 0.0, 1.0) if self.bounded else self.raw_inputs

    def forward(self) -> DiagonalMixture:
        q = self._encode[0](self.pseudo_inputs)  # a diagonal Gaussian, batch [K], event [D]
        return DiagonalMixture(self.raw_inputs.new_zeros(self.components), q.base_dist.loc, q.base_dist.scale)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, y: Tensor | None = None) -> Tensor:
        """n draws ``[n, D]`` (without gradients, as torch's ``sample``), through ``generator``."""
        return _draw_mixture(self(), n, generator)

    @torch.no_grad()
    def start_at(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Put the pseudo-inputs at K points of ``x`` ``[N, X]`` drawn through ``generator``
        (without replacement when N >= K), in place.

        For bounded data u_k = 0.05 + 0.9 x_n: inside (0, 1), where hardtanh passes gradients;
        a pixel at exactly 0 or 1 would never move.
        """
        if x.shape[-1] != self.data_dim:
            raise ValueError(f"the pseudo-inputs have {self.data_dim} values each, the data {x.shape[-1]}")
        n = x.shape[0]
        if n >= self.components:
            index = torch.randperm(n, generator=generator)[: self.components]
        else:
            index = torch.randint(n, (self.components,), generator=generator)
        points = x[index.to(x.device)].to(self.raw_inputs)
        self.raw_inputs.copy_(0.05 + 0.9 * points if self.bounded else points)

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, components={self.components}, bounded={self.bounded}"


def probit_grid(n: int) -> Tensor:
    """An n x n grid over two latent dimensions, ``[n, n, 2]``, evenly spaced in N(0, 1)
    probability: z = Phi^-1(u) for u in (0.05, 0.95) (Kingma & Welling 2014, Figure 4), so it
    covers the standard normal's mass rather than a box. Rows go from high to low z_2, so the
    picture reads like a plot with y upward."""
    u = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    return torch.stack(torch.meshgrid(u.flip(0), u, indexing="ij")[::-1], dim=-1)


PRIORS: dict[str, type[nn.Module]] = {"standard": StandardNormal, "mog": MixturePrior, "vamp": VampPrior}
DEFAULT_COMPONENTS = {name: cls.option.default for name, cls in PRIORS.items() if cls.option is not None}


def check_prior_name(name: str) -> tuple[str, int | None]:
    """Split ``mog:K`` or ``vamp:K`` into the kind and K (default: the class's ``option``); refuse
    names that ``PRIORS`` does not hold (``ValueError``, listing them)."""
    kind, number = parse(name, PRIORS, "prior")
    option = PRIORS[kind].option
    return kind, number if number is not None or option is None else option.default


def make_prior(
    name: str, dim: int, *, encode: Callable[[Tensor], Distribution] | None = None, data_dim: int | None = None,
    bounded: bool = True, min_scale: float = 1e-4,
) -> nn.Module:  # fmt: skip
    """A prior by name (``check_prior_name``, ``PRIORS``) over ``dim`` dimensions; a VampPrior needs
    ``encode`` and ``data_dim``. Each class's ``named`` takes the settings it needs."""
    kind, number = check_prior_name(name)
    return PRIORS[kind].named(dim, number, encode=encode, data_dim=data_dim, bounded=bounded, min_scale=min_scale)


class ClassPrior(nn.Module):
    """p(z | y) = N(mu_y, diag sigma_y^2), one learned diagonal Gaussian per class (a conditional VAE's prior).

    ``forward(y)`` takes one-hot labels ``[*B, C]`` and returns batch shape ``[*B]``, event ``[D]``;
    every class starts at N(0, I). sigma = softplus(.) + 1e-4, the families' floor.

    >>> p = ClassPrior(classes=3, dim=2)(torch.eye(3)[[0, 2]])
    >>> p.batch_shape, p.event_shape
    (torch.Size([2]), torch.Size([2]))
    """

    def __init__(self, classes: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.zeros(classes, dim))
        self.raw_scale = nn.Parameter(torch.full((classes, dim), _inverse_positive(1.0, 1e-4)))

    def forward(self, y: Tensor) -> Distribution:
        return DiagonalNormal(y @ self.loc, _positive(y @ self.raw_scale, 1e-4))

    def sample(self, n: int, generator: torch.Generator | None = None, *, y: Tensor | None = None) -> Tensor:
        """n draws ``[n, D]`` from p(z | y), one per one-hot row of ``y`` ``[n, C]``, through ``generator``."""
        return draw_diagonal(self(y), n, generator)


class UniformPrior(nn.Module):
    """p(z) uniform over D discrete latents with C categories each (``families.UniformDiscrete``).

    >>> UniformPrior(3, categories=4)().sample((2,)).shape
    torch.Size([2, 12])
    """

    def __init__(self, dim: int, categories: int = 2) -> None:
        super().__init__()
        self.dim, self.categories = dim, categories
        self.register_buffer("loc", torch.zeros(dim))  # the model's device and dtype, as StandardNormal's

    def forward(self) -> Distribution:
        return UniformDiscrete(self.dim, self.categories, self.loc.dtype, self.loc.device)

    def sample(self, n: int, generator: torch.Generator | None = None, *, y: Tensor | None = None) -> Tensor:
        """n uniform codes ``[n, W]``, drawn through ``generator``."""
        return self().sample((n,), generator=generator)
