"""The VAE with two stochastic layers of Burda, Grosse & Salakhutdinov (2016), and ``Chain``,
the distribution over both layers that lets every bound and estimator treat it as one latent.

Generative model and inference model, over z = [z1, z2] (``[..., D1 + D2]``):

    p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1),       q(z1, z2 | x) = q(z1 | x) q(z2 | z1),

each conditional a diagonal Gaussian from an MLP, p(z2) a prior of ``priors``. Because
``encode(x)`` is the joint q and ``prior()`` the joint p over the concatenated z, the
log-weights log p(x | z1) + log p(z1, z2) - log q(z1, z2 | x) come out of ``bounds.Particles``
unchanged, and with them every bound, gradient estimator and evaluation, but two: the gap
decomposition (it optimises one family's parameters per point; the hvae has two encoders)
and free bits (they need a KL that factorizes over dimensions), both refused with the reason.
Neither joint has a closed-form KL, so the KL is the Monte Carlo mean of log q - log p, by itself.
"""

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .bounds import Particles, log_weights
from .errors import ElboxError
from .families import DiagonalGaussian, center, line_between, make_family, stop_gradient
from .likelihoods import make_likelihood
from .networks import mlp
from .priors import draw_diagonal, make_prior, probit_grid

if TYPE_CHECKING:
    from .models import VAEConfig

__all__ = ["UNBOUNDED", "Chain", "ChainPrior", "HierarchicalVAE"]

# likelihoods of data outside [0, 1]: VampPrior inputs left free
UNBOUNDED = ("gaussian", "gaussian-pixel", "poisson", "negative-binomial", "zinb")

_SCALAR = torch.Size()


class Chain(Distribution):
    """A density over z = [z1, z2] that factorises along a chain, root(z_r) * conditional(z_r)(z_c):

        q(z1, z2 | x) = q(z1 | x) q(z2 | z1)     (``root_first``: the root is z1),
        p(z1, z2)     = p(z2) p(z1 | z2)         (the root is z2).

    ``conditional`` is a module mapping the root's value ``[..., D_r]`` to a distribution over
    the other block (batch ``[...]``); with ``params`` it runs with those tensors in place of
    its parameters (the stopped q of STL and DReG). Broadcasting follows the root: a z of
    shape ``[S, B', 1, D]`` against a root of batch ``[M]`` gives ``[S, B', M]``.

    Shapes: root batch ``[*B]``; draws ``[*S, *B, D1 + D2]``; log densities ``[*S, *B]``.
    """

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute; the parameters live in networks
    support = constraints.real_vector

    def __init__(
        self, root: Distribution, conditional: nn.Module, sizes: tuple[int, int], *, root_first: bool,
        params: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        self.root, self.conditional, self.sizes, self.root_first, self.params = (
            root, conditional, sizes, root_first, params
        )  # fmt: skip
        self.has_rsample = root.has_rsample
        super().__init__(root.batch_shape, torch.Size([sum(sizes)]), validate_args=False)

    def given(self, a: Tensor) -> Distribution:
        """The conditional distribution of the other block given the root's value ``a``."""
        if self.params is None:
            return self.conditional(a)
        return torch.func.functional_call(self.conditional, self.params, (a,))

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(root block, other block) of z ``[..., D1 + D2]``."""
        z1, z2 = z.split(list(self.sizes), -1)
        return (z1, z2) if self.root_first else (z2, z1)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.root_first else [b, a], -1)

    def log_prob(self, z: Tensor) -> Tensor:
        a, b = self._split(z)
        return self.root.log_prob(a) + self.given(a).log_prob(b)

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        """Reparameterized draws ``[*S, *B, D1 + D2]`` with their log density ``[*S, *B]``, the conditional run once."""
        a = self.root.rsample(sample_shape)
        given = self.given(a)
        b = given.rsample()
        return self._join(a, b), self.root.log_prob(a) + given.log_prob(b)

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        a = self.root.rsample(sample_shape)
        return self._join(a, self.given(a).rsample())

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        with torch.no_grad():
            a = self.root.sample(sample_shape)
            return self._join(a, self.given(a).sample())

    def center(self) -> Tensor:
        """The image of the base's center: the root's mean, then the conditional's mean there, ``[*B, D1 + D2]``."""
        a = center(self.root)
        return self._join(a, self.given(a).mean)

    def stopped(self) -> "Chain":
        """The same density with every parameter, the conditional network's included, cut from the graph."""
        params = {name: p.detach() for name, p in self.conditional.named_parameters()}
        return Chain(stop_gradient(self.root), self.conditional, self.sizes, root_first=self.root_first, params=params)


class ChainPrior(nn.Module):
    """p(z1, z2) = p(z2) p(z1 | z2) over z = [z1, z2]: ``forward()`` gives the ``Chain``, batch ``[]``.

    ``top`` is a prior module of ``priors`` over z2; ``conditional`` maps z2 to p(z1 | z2).
    """

    def __init__(self, top: nn.Module, conditional: DiagonalGaussian, sizes: tuple[int, int]) -> None:
        super().__init__()
        self.top, self.conditional, self.sizes = top, conditional, sizes

    def forward(self) -> Chain:
        return Chain(self.top(), self.conditional, self.sizes, root_first=False)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws ``[n, D1 + D2]``: z2 from the top prior, then z1 ~ p(z1 | z2), through ``generator``."""
        z2 = self.top.sample(n, generator)
        return torch.cat([draw_diagonal(self.conditional(z2), n, generator), z2], -1)


class HierarchicalVAE(nn.Module):
    """A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, section 5):

        p(z2) p(z1 | z2) p(x | z1),    q(z1 | x) q(z2 | z1),

    x -> ``hidden`` -> z1 (``latent_dim``) -> ``top_hidden`` -> z2 (``top_latent_dim``), the
    generative networks mirroring them, every conditional a diagonal Gaussian. With
    ``latent_dim=100`` and the default widths it is the paper's 784-200-200-100-100-100-50.
    The particles are z = [z1, z2], ``[K, B, D1 + D2]``; ``encode`` and ``prior()`` are the
    joint densities over them (``Chain``), so ``forward`` returns ordinary ``bounds.Particles``
    and STL and DReG work as for the VAE (the stopped q detaches its networks' weights too).

    With the VampPrior, p(z2) = (1/K) sum_k q(z2 | mu_1(u_k)): q(z2 | u) = E_q(z1|u) q(z2 | z1)
    has no closed form, so each pseudo-input's z1 is the mean of q(z1 | u_k). (Tomczak &
    Welling 2018 order their inference as q(z2 | x) q(z1 | x, z2), where q(z2 | u_k) is exact.)

    >>> from elbox.models import VAEConfig
    >>> hvae = HierarchicalVAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli",
    ...                                  model="hvae"))
    >>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    >>> hvae(x, k=5).z.shape, hvae.log_weights(x, k=5).shape
    (torch.Size([5, 1, 3]), torch.Size([5, 1]))
    """

    def __init__(self, config: "VAEConfig") -> None:
        super().__init__()
        if config.data_dim is None or config.likelihood == "auto":
            raise ValueError("resolve data_dim and likelihood from the data before building a model")
        self.config = config
        x, d1, d2 = config.data_dim, config.latent_dim, config.top_latent_dim
        h, top, act, floor = list(config.hidden), list(config.top_hidden), config.activation, config.min_scale
        self.sizes = (d1, d2)
        self.bottom_up = make_family("diagonal", d1, [x, *h], activation=act, min_scale=floor)  # q(z1 | x)
        self.top_up = make_family("diagonal", d2, [d1, *top], activation=act, min_scale=floor)  # q(z2 | z1)
        top_down = make_family("diagonal", d1, [d2, *reversed(top)], activation=act, min_scale=floor)  # p(z1 | z2)
        self.likelihood = make_likelihood(config.likelihood, levels=config.levels, scale=config.gaussian_scale)
        self.decoder = mlp([d1, *reversed(h), x * self.likelihood.outputs_per_dim], act)  # p(x | z1)
        top_prior = make_prior(config.prior, d2, encode=self._pseudo_posterior, data_dim=x, min_scale=floor,
                               bounded=config.likelihood not in UNBOUNDED)  # fmt: skip
        self.prior = ChainPrior(top_prior, top_down, self.sizes)

    def _pseudo_posterior(self, u: Tensor) -> Distribution:
        """q(z2 | mean of q(z1 | u)) for pseudo-inputs ``[M, X]``: the VampPrior's components, batch ``[M]``."""
        return self.top_up(self.bottom_up(u).mean)

    def encode(self, x: Tensor) -> Chain:
        """q(z1, z2 | x) = q(z1 | x) q(z2 | z1): batch shape ``[B]``, event ``[D1 + D2]`` for x ``[B, X]``."""
        return Chain(self.bottom_up(x), self.top_up, self.sizes, root_first=True)

    def decode(self, z: Tensor) -> Distribution:
        """p(x | z1) for z = [z1, z2] ``[..., D1 + D2]``: batch shape ``z.shape[:-1]``, event ``[X]``."""
        return self.likelihood(self.decoder(z[..., : self.sizes[0]]))

    def forward(self, x: Tensor, k: int = 1, *, reparameterize: bool = True, stop_q: bool = False) -> Particles:
        """K particles z = [z1, z2] ~ q(z1, z2 | x) ``[K, B, D1 + D2]`` with log p(x | z1) ``[K, B]``.

        The switches are the gradient estimator's, as for ``VAE.forward``.
        """
        q = self.encode(x)
        stopped, log_q = q.stopped() if stop_q else None, None
        if reparameterize and stopped is None:
            z, log_q = q.rsample_and_log_prob((k,))
        else:
            z = q.rsample((k,)) if reparameterize else q.sample((k,))
        return Particles(z, self.decode(z).log_prob(x), q, self.prior(), stopped, log_q)

    def log_weights(self, x: Tensor, k: int = 1) -> Tensor:
        """log p(x, z1, z2) - log q(z1, z2 | x) for K draws per input: ``[B, X] -> [K, B]``."""
        return log_weights(self(x, k))

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse data of the wrong width or outside the likelihood's support."""
        if x.ndim != 2 or x.shape[1] != self.config.data_dim:
            raise ElboxError(
                f"the {name} data have shape {list(x.shape)} but this model takes rows of "
                f"{self.config.data_dim} values (shape [N, {self.config.data_dim}])."
            )
        self.likelihood.check(x, name)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, condition: int | None = None) -> Tensor:
        """Decode n draws from p(z2) p(z1 | z2): the means of p(x | z1), ``[n, X]``."""
        if condition is not None:
            raise ElboxError("the hvae is not conditional, so it draws without --condition (--model cvae is).")
        return self.decode(self.prior.sample(n, generator)).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x | z1) at the mean of q(z1 | x): ``[B, X] -> [B, X]``."""
        return self.decode(center(self.encode(x))).mean

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
        """Decode the straight line between the means of q(z1 | x) of two inputs ``[X]``: ``[steps, X]``."""
        return self.decode(line_between(self.encode(torch.stack([x_a, x_b])), steps)).mean

    @torch.no_grad()
    def manifold(self, n: int = 20) -> Tensor:
        """Decode an n x n grid over a 2-D z1 by p(x | z1): ``[n, n, X]``, spaced as ``VAE.manifold``'s.

        z1's prior is the mixture of p(z1 | z2) over p(z2), not N(0, I): the grid shows the
        decoder, not where the prior puts its mass.
        """
        if self.config.latent_dim != 2:
            raise ElboxError(
                f"the latent manifold is drawn for a 2-D z1, but this model's has {self.config.latent_dim} "
                "dimensions; use `elbox interpolate`, which works in any dimension."
            )
        z1 = probit_grid(n).to(next(self.parameters()))  # [n, n, 2], as VAE.manifold
        return self.likelihood(self.decoder(z1)).mean
