"""Variational families q: Gaussians (diagonal, full-rank, low-rank), normalizing flows and
mixtures, global or amortized.

A family turns a vector of raw parameters into a distribution. The raw parameters come from
an encoder (amortized, q(z | x): ``family(x)`` has batch shape ``[B]``) or are free parameters
of the family itself (global, one q(z) over all of a Bayesian model's parameters:
``family()`` has batch shape ``[]``). Event shape ``[D]`` either way.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
import zuko
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    constraints,
    register_kl,
)

from .networks import mlp

__all__ = [
    "FAMILIES",
    "DiagonalGaussian",
    "DiagonalNormal",
    "Discrete",
    "Family",
    "Flow",
    "FlowNormal",
    "FullRankGaussian",
    "GumbelDiscrete",
    "LowRankGaussian",
    "Mixture",
    "MixtureNormal",
    "UniformDiscrete",
    "center",
    "check_family_name",
    "line_between",
    "make_family",
    "stop_gradient",
]


class DiagonalNormal(Independent):
    """N(loc, diag(scale^2)) over the last dimension: ``Independent(Normal(loc, scale), 1)``.

    A named type so that closed-form KL divergences can be registered for it
    (``priors`` registers the one to the standard normal). Batch shape ``loc.shape[:-1]``,
    event shape ``loc.shape[-1:]``.
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: Independent | None = None) -> "DiagonalNormal":
        shape = torch.Size(batch_shape) + self.event_shape
        return type(self)(self.base_dist.loc.expand(shape), self.base_dist.scale.expand(shape))


def stop_gradient(q: Distribution) -> Distribution:
    """``q`` with its parameters cut from the graph: ``log_prob`` then passes gradients to the
    point only (the STL and DReG estimators)."""
    if isinstance(q, FlowNormal | MixtureNormal | GumbelDiscrete):
        return q.stopped()
    if isinstance(q, DiagonalNormal):
        return DiagonalNormal(q.base_dist.loc.detach(), q.base_dist.scale.detach())
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach(), validate_args=False)
    if isinstance(q, LowRankMultivariateNormal):
        return LowRankMultivariateNormal(
            q.loc.detach(), q.cov_factor.detach(), q.cov_diag.detach(), validate_args=False
        )
    raise NotImplementedError(f"stop_gradient does not know {type(q).__name__}; add it to families.stop_gradient")


def _positive(raw: Tensor, floor: float) -> Tensor:
    """softplus(raw) + floor: grows linearly where exp would overflow; the floor keeps log q finite."""
    return F.softplus(raw) + floor


def _inverse_positive(value: float, floor: float) -> float:
    """The raw value that ``_positive`` maps to ``value``."""
    v = value - floor
    return v + math.log(-math.expm1(-v))


class Family(nn.Module):
    """A distribution family over R^D, amortized by ``encoder`` or global (free parameters).

    Subclasses say how many raw parameters they need (``num_params``), how to read a
    distribution off them (``distribution``) and where global parameters start
    (``initial``: a standard normal, so a global q starts at a common VI prior).

    Args:
        dim: D.
        encoder: a module mapping x ``[B, X]`` to ``[B, num_params]``; ``None`` for a global q.
        min_scale: the smallest standard deviation along any axis.
    """

    def __init__(self, dim: int, encoder: nn.Module | None = None, *, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.dim, self.encoder, self.min_scale = dim, encoder, min_scale
        self.raw = None if encoder is not None else nn.Parameter(self.initial())

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


class DiagonalGaussian(Family):
    """Mean-field Gaussian q = N(mu, diag(sigma^2)): 2D raw parameters (mu, then sigma's).

    sigma = softplus(.) + ``min_scale``. Draws use the reparameterization z = mu + sigma * eps,
    eps ~ N(0, I) (Kingma & Welling, 2014), so gradients flow through ``rsample``.

    >>> q = DiagonalGaussian(3, nn.Linear(4, 6))(torch.zeros(5, 4))
    >>> q.batch_shape, q.event_shape, q.rsample((7,)).shape
    (torch.Size([5]), torch.Size([3]), torch.Size([7, 5, 3]))
    >>> DiagonalGaussian(3)().batch_shape
    torch.Size([])
    """

    def num_params(self) -> int:
        return 2 * self.dim

    def initial(self) -> Tensor:
        return torch.cat([torch.zeros(self.dim), torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale = raw.chunk(2, dim=-1)
        return DiagonalNormal(loc, _positive(raw_scale, self.min_scale))


class FullRankGaussian(Family):
    """q = N(mu, L L^T) with L lower triangular, positive diagonal: D + D(D+1)/2 raw parameters.

    Can represent any Gaussian posterior, correlations included, at O(D^2) parameters and
    O(D^3) per density evaluation.

    >>> FullRankGaussian(3)().covariance_matrix
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]], grad_fn=<...>)
    """

    def num_params(self) -> int:
        return self.dim + self.dim * (self.dim + 1) // 2

    def initial(self) -> Tensor:
        raw = torch.zeros(self.num_params())
        rows, cols = torch.tril_indices(self.dim, self.dim)
        raw[self.dim :][rows == cols] = _inverse_positive(1.0, self.min_scale)
        return raw

    def distribution(self, raw: Tensor) -> Distribution:
        loc, entries = raw[..., : self.dim], raw[..., self.dim :]
        rows, cols = torch.tril_indices(self.dim, self.dim, device=raw.device)
        diagonal = rows == cols
        entries = torch.where(diagonal, _positive(entries, self.min_scale), entries)
        tril = raw.new_zeros(*raw.shape[:-1], self.dim, self.dim)
        tril[..., rows, cols] = entries
        return MultivariateNormal(loc, scale_tril=tril, validate_args=False)


class LowRankGaussian(Family):
    """q = N(mu, W W^T + diag(d^2)) with W of rank R: D (R + 2) raw parameters.

    Between the diagonal (R = 0) and the full-rank family: R directions of correlation at
    O(D R) cost. The default rank is about sqrt(D).

    >>> LowRankGaussian(4, rank=2)().rsample((3,)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, rank: int | None = None, min_scale: float = 1e-4
    ) -> None:
        self.rank = rank if rank is not None else max(1, round(math.sqrt(dim)))
        if not 1 <= self.rank <= dim:
            raise ValueError(f"the rank must be between 1 and the dimension {dim}, got {self.rank}")
        super().__init__(dim, encoder, min_scale=min_scale)

    def num_params(self) -> int:
        return self.dim * (self.rank + 2)

    def initial(self) -> Tensor:
        loc, factor = torch.zeros(self.dim), 0.01 * torch.randn(self.dim * self.rank)
        return torch.cat([loc, factor, torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        d, r = self.dim, self.rank
        loc, factor, raw_diag = raw[..., :d], raw[..., d : d + d * r], raw[..., d + d * r :]
        factor = factor.reshape(*raw.shape[:-1], d, r)
        diag = _positive(raw_diag, self.min_scale).pow(2)
        return LowRankMultivariateNormal(loc, factor, diag, validate_args=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}"


_SCALAR = torch.Size()  # the default sample shape: one draw


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    """log N(eps; 0, I) summed over the last dimension: ``[..., D] -> [...]``."""
    return -0.5 * (eps.pow(2).sum(-1) + eps.shape[-1] * math.log(2 * math.pi))


class FlowNormal(Distribution):
    """A normalizing flow on a standard normal, placed by a diagonal affine map:

        eps ~ N(0, I),   u = f(eps; h),   z = loc + scale * u,
        log q(z) = log N(eps; 0, I) - log |det df/deps| - sum_d log scale_d.

    f is a stack of zuko transforms conditioned on the context h (``None`` for a global q).
    The flow works in standardised coordinates, where splines (defined on [-5, 5]) act, and
    the affine map alone is the diagonal Gaussian family: a flow starting near the identity
    starts there. ``rsample_and_log_prob`` computes log q along the draw, in the flow's fast
    direction; ``log_prob`` at an arbitrary z runs f backward, which for an IAF or NSF takes
    D sequential passes (Kingma et al. 2016), for a MAF is one pass.

    Shapes: ``loc``, ``scale`` ``[*B, D]``; ``context`` ``[*B, C]``; draws ``[*S, *B, D]``.
    """

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute; the parameters live in a network
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self, flow: "FlowTransform", loc: Tensor, scale: Tensor, context: Tensor | None,
        params: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        self.flow, self.loc, self.scale, self.context, self.params = flow, loc, scale, context, params
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _flow(self, x: Tensor, sampling: bool) -> tuple[Tensor, Tensor]:
        if self.params is None:
            return self.flow(x, self.context, sampling)
        return torch.func.functional_call(self.flow, self.params, (x, self.context, sampling))

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        """Reparameterized draws ``[*S, *B, D]`` and their log q ``[*S, *B]``, in one pass."""
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        u, ladj = self._flow(eps, sampling=True)
        log_q = _standard_normal_log_prob(eps) - ladj - self.scale.log().sum(-1)
        return self.loc + self.scale * u, log_q

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        eps, ladj = self._flow((z - self.loc) / self.scale, sampling=False)
        return _standard_normal_log_prob(eps) + ladj - self.scale.log().sum(-1)

    def center(self) -> Tensor:
        """loc + scale * f(0): the image of the base's center, ``[*B, D]`` (the median when D = 1)."""
        u, _ = self._flow(torch.zeros_like(self.loc), sampling=True)
        return self.loc + self.scale * u

    def stopped(self) -> "FlowNormal":
        """The same q with every parameter, the flow's included, cut from the graph."""
        params = {name: p.detach() for name, p in self.flow.named_parameters()}
        context = None if self.context is None else self.context.detach()
        return FlowNormal(self.flow, self.loc.detach(), self.scale.detach(), context, params)


class FlowTransform(nn.Module):
    """f(eps; h) of a flow family: zuko's lazy transforms, run toward samples or toward the base.

    zuko's transforms map data to noise. ``fast_sampling`` inverts them, so that drawing (and
    log q along a draw) is one parallel pass: the inverse autoregressive flow (Kingma et al.
    2016). Returns the output and log |det| of the Jacobian of the map that was run, ``[...]``.
    """

    def __init__(self, steps: zuko.lazy.LazyTransform, fast_sampling: bool) -> None:
        super().__init__()
        self.steps, self.fast_sampling = steps, fast_sampling

    def forward(self, x: Tensor, context: Tensor | None, sampling: bool) -> tuple[Tensor, Tensor]:
        t = self.steps(context)
        return (t if sampling == self.fast_sampling else t.inv).call_and_ladj(x)


def _near_identity(steps: nn.Module) -> None:
    """Scale each step's last layer to about zero, so the flow starts at about the identity.

    The family then starts as the diagonal Gaussian (as Kingma et al. 2016 initialise IAF);
    the weights stay non-zero so that every layer receives a gradient from the first step.
    """
    for module in steps.modules():
        if isinstance(getattr(module, "hyper", None), nn.Sequential):
            last = module.hyper[-1]
            with torch.no_grad():
                last.weight.mul_(1e-2)
                last.bias.zero_()
        for phi in getattr(module, "phi", ()):  # zuko's global one-dimensional steps
            with torch.no_grad():
                phi.zero_()


FLOWS = ("iaf", "maf", "nsf", "realnvp")


class Flow(Family):
    """A normalizing-flow family (``FlowNormal``): L zuko steps between N(0, I) and a diagonal
    affine map. Raw parameters: loc and scale (D each), then the context h (C) that conditions
    every step; a global flow has no context and its steps hold all its freedom.

    Kinds:
        ``iaf``: affine autoregressive steps sampled in one pass (Kingma et al. 2016);
        ``maf``: the same steps the other way, density in one pass (Papamakarios et al. 2017);
        ``nsf``: rational-quadratic spline autoregressive steps, sampled in one pass (Durkan et al. 2019);
        ``realnvp``: affine coupling steps, both ways in one pass (Dinh et al. 2017); D >= 2.

    >>> q = Flow(3, nn.Linear(4, 6 + 16), kind="iaf", transforms=2)(torch.zeros(5, 4))
    >>> z, log_q = q.rsample_and_log_prob((7,))
    >>> z.shape, log_q.shape, bool(torch.allclose(q.log_prob(z), log_q, atol=1e-4))
    (torch.Size([7, 5, 3]), torch.Size([7, 5]), True)
    """

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, kind: str = "iaf", transforms: int = 4,
        context: int | None = None, hidden: int | None = None, min_scale: float = 1e-4,
    ) -> None:  # fmt: skip
        if kind not in FLOWS:
            raise ValueError(f"kind must be one of {FLOWS}, got {kind!r}")
        if kind == "realnvp" and dim < 2:
            raise ValueError("coupling (realnvp) needs at least 2 dimensions to split; use iaf or nsf in 1-D")
        if transforms < 1:
            raise ValueError(f"a flow needs at least one transform, got {transforms}")
        self.kind, self.transforms = kind, transforms
        self.context = 0 if encoder is None else (context if context is not None else max(16, 2 * dim))
        super().__init__(dim, encoder, min_scale=min_scale)
        options = dict(transforms=transforms, hidden_features=[hidden or max(64, 2 * dim)] * 2, activation=nn.ELU)
        build = {"iaf": zuko.flows.MAF, "maf": zuko.flows.MAF, "nsf": zuko.flows.NSF, "realnvp": zuko.flows.RealNVP}
        steps = build[kind](dim, self.context, **options).transform  # zuko's base is ours: dropped
        _near_identity(steps)
        self.flow = FlowTransform(steps, fast_sampling=kind != "maf")

    def num_params(self) -> int:
        return 2 * self.dim + self.context

    def initial(self) -> Tensor:
        return torch.cat([torch.zeros(self.dim), torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale, context = raw.split([self.dim, self.dim, self.context], dim=-1)
        return FlowNormal(self.flow, loc, _positive(raw_scale, self.min_scale), context if self.context else None)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind!r}, transforms={self.transforms}, context={self.context}"


class MixtureNormal(MixtureSameFamily):
    """An equal-weight mixture of M diagonal Gaussians, q(z) = (1/M) sum_m N(z; mu_m, diag s_m^2),
    with reparameterized draws.

    A draw picks its component by systematic sampling: draw k of a batch element takes
    component (r + k) mod M, with one uniform offset r per element, then z = mu_m + s_m * eps.
    Each draw is therefore marginally a draw from q, so the mean of log w is an unbiased ELBO
    and the mean of w an unbiased p(x): every bound keeps its meaning. K draws spread evenly
    over the components, which lowers the variance. With equal weights the choice of
    component needs no gradient, so every gradient is pathwise; learned weights would need a
    score-function or implicit gradient for the discrete choice (Jankowiak & Obermeyer 2018).

    Shapes: ``loc``, ``scale`` ``[*B, M, D]``; draws ``[*S, *B, D]``.
    """

    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        weights = Categorical(logits=loc.new_zeros(loc.shape[:-1]), validate_args=False)
        super().__init__(weights, DiagonalNormal(loc, scale), validate_args=False)

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        components = self.component_distribution.base_dist
        loc, scale = components.loc, components.scale  # [*B, M, D]
        m, n = loc.shape[-2], math.prod(sample_shape)
        offset = torch.randint(m, self.batch_shape, device=loc.device)  # [*B]
        index = (offset + torch.arange(n, device=loc.device).reshape(n, *[1] * offset.ndim)) % m  # [n, *B]
        index = index[..., None, None].expand(n, *loc.shape[:-2], 1, loc.shape[-1])
        pick = lambda t: torch.take_along_dim(t.expand(n, *t.shape), index, dim=-2).squeeze(-2)  # noqa: E731
        z = pick(loc) + pick(scale) * torch.randn(n, *self.batch_shape, *self.event_shape, dtype=loc.dtype,
                                                  device=loc.device)  # fmt: skip
        return z.reshape(self._extended_shape(sample_shape))

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def stopped(self) -> "MixtureNormal":
        components = self.component_distribution.base_dist
        return MixtureNormal(components.loc.detach(), components.scale.detach())


class Mixture(Family):
    """An equal-weight mixture of K diagonal Gaussians (``MixtureNormal``): 2 K D raw parameters.

    For multi-modal posteriors. A global mixture starts with its means spread by N(0, 1/4).

    >>> q = Mixture(2, components=3)()
    >>> q.rsample((5,)).shape, q.log_prob(torch.zeros(2)).shape
    (torch.Size([5, 2]), torch.Size([]))
    """

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, components: int = 4, min_scale: float = 1e-4
    ) -> None:
        if components < 1:
            raise ValueError(f"a mixture needs at least one component, got {components}")
        self.components = components
        super().__init__(dim, encoder, min_scale=min_scale)

    def num_params(self) -> int:
        return 2 * self.components * self.dim

    def initial(self) -> Tensor:
        loc = 0.5 * torch.randn(self.components * self.dim)
        return torch.cat([loc, torch.full_like(loc, _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale = raw.unflatten(-1, (2, self.components, self.dim)).unbind(-3)
        return MixtureNormal(loc, _positive(raw_scale, self.min_scale))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.components}"


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


FAMILIES = ("diagonal", "fullrank", "lowrank", *FLOWS, "mixture", "bernoulli", "categorical")
DISCRETE = ("bernoulli", "categorical")
_OPTION = {"lowrank": "R", "mixture": "K", "categorical": "C", **dict.fromkeys(FLOWS, "L")}


def check_family_name(name: str) -> tuple[str, str]:
    """Split ``lowrank:R``, ``iaf:L`` or ``mixture:K`` into its kind and option; refuse names that are no family."""
    kind, _, option = name.partition(":")
    least = 2 if kind == "categorical" else 1
    if kind not in FAMILIES or (option and (kind not in _OPTION or not option.isdigit() or int(option) < least)):
        raise ValueError(
            f"unknown family {name!r}: choose diagonal, fullrank, lowrank[:R] (rank R), "
            "iaf[:L], maf[:L], nsf[:L], realnvp[:L] (L flow steps), mixture[:K] (K components), or the "
            "discrete bernoulli or categorical[:C] (C categories, at least 2)"
        )
    return kind, option


def make_family(
    name: str, dim: int, encoder_sizes: list[int] | None = None, *, activation: str = "tanh", min_scale: float = 1e-4,
    body: nn.Module | None = None, temperature: float = 0.5, straight_through: bool = False,
) -> Family:  # fmt: skip
    """A family by name (``check_family_name``): ``diagonal``, ``fullrank``, ``lowrank[:R]``,
    ``iaf|maf|nsf|realnvp[:L]`` (default 4 steps), ``mixture[:K]`` (default 4 components), or the
    discrete ``bernoulli`` and ``categorical[:C]`` (default 10 categories; ``temperature`` and
    ``straight_through`` are their relaxation's, ``Discrete``).

    With ``encoder_sizes`` ``[X, *hidden]`` it is amortized by an MLP whose output layer has
    the family's number of raw parameters; without, it is global. A ``body`` (a convolutional
    trunk, say) runs before that MLP, and ``encoder_sizes[0]`` is then its output width.
    """
    kind, option = check_family_name(name)
    number = int(option) if option else None
    options = {"lowrank": {"rank": number}, "mixture": {"components": number or 4}}.get(kind, {})
    if kind in FLOWS:
        options = {"kind": kind, "transforms": number or 4}
    if kind in DISCRETE:
        categories = 2 if kind == "bernoulli" else number or 10
        options = {"categories": categories, "temperature": temperature, "straight_through": straight_through}
    cls = {"diagonal": DiagonalGaussian, "fullrank": FullRankGaussian, "lowrank": LowRankGaussian,
           "mixture": Mixture, **dict.fromkeys(FLOWS, Flow), **dict.fromkeys(DISCRETE, Discrete)}[kind]  # fmt: skip
    build = partial(cls, dim, min_scale=min_scale, **options)
    if encoder_sizes is None:
        return build(None)
    size = build(nn.Identity()).num_params()  # a placeholder encoder: nothing is initialised
    head = mlp([*encoder_sizes, size], activation)
    return build(head if body is None else nn.Sequential(body, head))


def start_at(family: Family, loc: Tensor, covariance: Tensor) -> None:
    """Set a global family's raw parameters so that q starts at N(loc, covariance), or at the
    family's nearest form of it (a Laplace approximation, say):

    - diagonal: the marginal variances; a mixture puts every component there;
    - full-rank: the Cholesky factor;
    - low-rank: W W^T + diag(d^2) by iterated principal factors: W from the top R eigenpairs
      of covariance - diag(d^2), then d^2 = the marginal variances that W leaves, from the
      isotropic start of probabilistic PCA (Tipping & Bishop 1999); exact when the covariance
      has that form;
    - flows: loc and the marginal scales; the steps stay near the identity.

    ``loc`` ``[D]``, ``covariance`` ``[D, D]``. Scales below the family's ``min_scale`` are raised to it.

    >>> q = LowRankGaussian(3, rank=1)
    >>> start_at(q, torch.zeros(3), torch.tensor([[2.0, 1.9, 0.0], [1.9, 2.0, 0.0], [0.0, 0.0, 1.0]]))
    >>> torch.allclose(q().covariance_matrix, torch.tensor([[2.0, 1.9, 0.0], [1.9, 2.0, 0.0], [0.0, 0.0, 1.0]]))
    True
    """
    if family.encoder is not None:
        raise ValueError("start_at sets a global family; an amortized family's parameters come from its encoder")
    loc, covariance = loc.to(family.raw), covariance.to(family.raw)
    floor = family.min_scale * (1 + 1e-6)
    raw_scale = lambda sd: _inverse_positive_tensor(sd.clamp(min=floor), family.min_scale)  # noqa: E731
    sd = covariance.diagonal().sqrt()
    if isinstance(family, FullRankGaussian):
        tril = torch.linalg.cholesky(covariance)
        rows, cols = torch.tril_indices(family.dim, family.dim)
        entries = tril[rows, cols]
        raw = torch.cat([loc, torch.where(rows == cols, raw_scale(entries), entries)])
    elif isinstance(family, LowRankGaussian):
        factor, diag = _principal_factors(covariance, family.rank)
        raw = torch.cat([loc, factor.reshape(-1), raw_scale(diag)])
    elif isinstance(family, Mixture):
        raw = torch.cat([loc.repeat(family.components), raw_scale(sd).repeat(family.components)])
    elif isinstance(family, DiagonalGaussian | Flow):
        raw = torch.cat([loc, raw_scale(sd)])
    else:
        raise NotImplementedError(f"start_at does not know {type(family).__name__}")
    with torch.no_grad():
        family.raw.copy_(raw)


def _inverse_positive_tensor(value: Tensor, floor: float) -> Tensor:
    """``_inverse_positive`` elementwise on a tensor."""
    v = value - floor
    return v + torch.log(-torch.expm1(-v))


def _principal_factors(covariance: Tensor, rank: int, iterations: int = 50) -> tuple[Tensor, Tensor]:
    """W ``[D, R]`` and d ``[D]`` with W W^T + diag(d^2) ~ covariance, its diagonal kept (see ``start_at``)."""
    values = torch.linalg.eigvalsh(covariance)  # ascending
    noise = values[:-rank].mean().expand(covariance.shape[0]) if rank < covariance.shape[0] else values.new_zeros(1)
    for _ in range(iterations):
        values, vectors = torch.linalg.eigh(covariance - torch.diag(noise.expand(covariance.shape[0])))
        factor = vectors[:, -rank:] * values[-rank:].clamp(min=0).sqrt()
        noise = (covariance.diagonal() - factor.pow(2).sum(-1)).clamp(min=0)
    return factor, noise.sqrt()


# ----------------------------------------------------------------- discrete latents


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
