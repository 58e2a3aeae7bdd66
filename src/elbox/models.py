"""Latent-variable models p(x, z) = p(z) p(x | z) with an amortized q(z | x): the VAE, and
``build_model``, which builds the architecture a ``VAEConfig`` names (``hierarchical`` holds
the two-layer model)."""

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from .bounds import Particles, log_weights
from .errors import ElboxError
from .families import center, check_family_name, make_family, stop_gradient
from .hierarchical import UNBOUNDED, HierarchicalVAE
from .likelihoods import LIKELIHOODS, make_likelihood
from .networks import ACTIVATIONS, ConvDecoder, ConvEncoder, mlp
from .priors import check_prior_name, make_prior

__all__ = ["ARCHITECTURES", "NETWORKS", "VAE", "VAEConfig", "build_model", "latent_floats"]

NETWORKS = ("mlp", "conv")
ARCHITECTURES = ("vae", "hvae")


@dataclass
class VAEConfig:
    """Everything that defines a VAE's architecture; written out as ``config.json["model"]``.

    Attributes:
        data_dim: X, the size of one (flattened) data point; filled in from the data.
        latent_dim: D.
        hidden: widths of the encoder's hidden layers; the decoder mirrors them.
        activation: one of ``networks.ACTIVATIONS``.
        likelihood: ``bernoulli``, ``binomial``, ``gaussian``, ``continuous-bernoulli``,
            ``gaussian-pixel``, ``logistic``, ``categorical`` (``likelihoods.make_likelihood``), or
            ``auto`` (chosen from the data: binary -> bernoulli, n + 1 grey levels -> binomial,
            else gaussian).
        levels: n for the binomial, logistic and categorical likelihoods; filled in from the data.
        gaussian_scale: a fixed scale for the gaussian likelihood, or ``None`` to learn it.
        min_scale: the floor of q's standard deviations.
        family: q's family: ``diagonal``, ``fullrank``, ``lowrank[:R]``, a flow ``iaf|maf|nsf|realnvp[:L]``
            or ``mixture[:K]`` (``families.make_family``).
        network: ``mlp``, or ``conv`` for images: strided convolutions before the encoder's
            hidden layers, transposed convolutions after the decoder's (``networks.ConvEncoder``,
            ``networks.ConvDecoder``).
        channels: the conv encoder's channels per layer; the decoder mirrors them.
        image_shape: (H, W) of the conv network's images; filled in from the data.
        prior: p(z) (of the top layer for ``hvae``): ``standard``, ``mog[:K]`` (a learned
            mixture of K Gaussians, default 10) or ``vamp[:K]`` (the VampPrior, K pseudo-inputs,
            default 500); ``priors.make_prior``. The VampPrior needs the diagonal family.
        architecture: ``vae`` (one stochastic layer) or ``hvae`` (two, ``hierarchical``;
            ``--model`` on the command line): then ``latent_dim`` and ``hidden`` are the
            bottom layer's, ``top_latent_dim`` and ``top_hidden`` the top layer's.
        top_latent_dim: the top layer's size for ``hvae``; default half of ``latent_dim``.
        top_hidden: the widths between the two layers for ``hvae``; default half of ``hidden``.
            Burda et al.'s 784-200-200-100-100-100-50 is ``latent_dim=100`` with the defaults.
    """

    data_dim: int | None = None
    latent_dim: int = 2
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "auto"
    levels: int | None = None
    gaussian_scale: float | None = None
    min_scale: float = field(default=1e-4)
    family: str = "diagonal"
    network: str = "mlp"
    channels: tuple[int, ...] = (32, 64)
    image_shape: tuple[int, ...] | None = None
    prior: str = "standard"
    architecture: str = "vae"
    top_latent_dim: int | None = None
    top_hidden: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.hidden, self.channels = tuple(self.hidden), tuple(self.channels)
        self.image_shape = None if self.image_shape is None else tuple(self.image_shape)
        problems = self._latent_problems()
        if self.latent_dim < 1:
            problems.append(f"latent_dim must be at least 1, got {self.latent_dim}")
        if any(h < 1 for h in self.hidden):
            problems.append(f"hidden widths must be positive, got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in (*LIKELIHOODS, "auto"):
            problems.append(f"likelihood must be auto or one of {LIKELIHOODS}, got {self.likelihood!r}")
        try:
            check_family_name(self.family)
        except ValueError as e:
            problems.append(str(e))
        if self.gaussian_scale is not None and not 0 < self.gaussian_scale < math.inf:
            problems.append(f"gaussian_scale must be positive and finite, got {self.gaussian_scale}")
        if not 0 < self.min_scale < math.inf:
            problems.append(f"min_scale must be positive and finite, got {self.min_scale}")
        problems += self._network_problems()
        if problems:
            raise ElboxError("invalid model options: " + "; ".join(problems) + ".")

    def _latent_problems(self) -> list[str]:
        """Check the prior and the architecture; fill in the top layer of an ``hvae``."""
        problems = []
        try:
            kind, _ = check_prior_name(self.prior)
        except ValueError as e:
            problems.append(str(e))
            kind = None
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture (--model) must be one of {ARCHITECTURES}, got {self.architecture!r}")
        elif self.architecture == "hvae":
            if self.family != "diagonal":
                problems.append(f"the hvae's q(z1 | x) q(z2 | z1) are diagonal Gaussians: use --family diagonal, "
                                f"not {self.family}")  # fmt: skip
            if self.network != "mlp":
                problems.append(f"the hvae is built of MLPs: use --network mlp, not {self.network}")
            if self.top_latent_dim is None:
                self.top_latent_dim = max(1, math.ceil(self.latent_dim / 2))
            if self.top_hidden is None:
                self.top_hidden = tuple(max(1, h // 2) for h in self.hidden)
            self.top_hidden = tuple(self.top_hidden)
            if self.top_latent_dim < 1 or any(h < 1 for h in self.top_hidden):
                problems.append(f"top_latent_dim and top_hidden must be positive, got {self.top_latent_dim} and "
                                f"{list(self.top_hidden)}")  # fmt: skip
        elif self.top_latent_dim is not None or self.top_hidden is not None:
            problems.append("top_latent_dim and top_hidden shape the second layer of --model hvae; the vae has one")
        if kind == "vamp" and self.family != "diagonal":
            problems.append(f"the VampPrior is a mixture of the encoder's diagonal Gaussians: use --family diagonal, "
                            f"not {self.family}")  # fmt: skip
        return problems

    def _network_problems(self) -> list[str]:
        problems = []
        if self.network not in NETWORKS:
            problems.append(f"network must be one of {NETWORKS}, got {self.network!r}")
        if not self.channels or any(c < 1 for c in self.channels):
            problems.append(f"channels must be one or more positive widths, got {list(self.channels)}")
        shape = self.image_shape
        if shape is not None and (len(shape) != 2 or any(s < 1 for s in shape)):
            problems.append(f"image_shape must be two positive sides (H, W), got {list(shape)}")
        elif shape is not None and self.data_dim is not None and shape[0] * shape[1] != self.data_dim:
            problems.append(f"image_shape {list(shape)} holds {shape[0] * shape[1]} pixels, but the data have "
                            f"{self.data_dim} values per row")  # fmt: skip
        return problems

    def to_dict(self) -> dict:
        shape = None if self.image_shape is None else list(self.image_shape)
        top = None if self.top_hidden is None else list(self.top_hidden)
        return {**asdict(self), "hidden": list(self.hidden), "channels": list(self.channels), "image_shape": shape,
                "top_hidden": top}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            raise ElboxError(f"unknown model options {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**d)


class VAE(nn.Module):
    """A variational autoencoder (Kingma & Welling, 2014; Rezende, Mohamed & Wierstra, 2014).

    Generative model p(z) = N(0, I) or a learned prior (``priors``: a mixture of Gaussians,
    the VampPrior), p(x | z) = likelihood(decoder(z)); amortized family
    q(z | x) from an MLP encoder: N(mu(x), diag sigma(x)^2) by default, or any family of
    ``families`` (full-rank, low-rank, flows, mixtures). With ``network="conv"`` the encoder
    starts with, and the decoder ends with, convolutions over the ``image_shape`` images; the
    decoder outputs the likelihood's ``outputs_per_dim`` values per data dimension. ``forward(x, k)`` draws K
    reparameterized particles per input and returns what every bound needs
    (``bounds.Particles``); ``log_weights(x, k)`` is their ``[K, B]`` log-weights.

    >>> from elbox.bounds import ELBO
    >>> vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    >>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    >>> vae.log_weights(x, k=5).shape
    torch.Size([5, 1])
    >>> bound = ELBO()(vae(x))
    >>> bool(bound.value <= 0), bound.value.shape
    (True, torch.Size([1]))
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.data_dim is None or config.likelihood == "auto":
            raise ValueError("resolve data_dim and likelihood from the data before building a VAE")
        if config.network == "conv" and config.image_shape is None:
            raise ValueError("resolve image_shape from the data before building a conv VAE")
        self.config = config
        d, x, h, act = config.latent_dim, config.data_dim, list(config.hidden), config.activation
        likelihood = make_likelihood(config.likelihood, levels=config.levels, scale=config.gaussian_scale)
        m = likelihood.outputs_per_dim  # decoder outputs per data dimension
        if config.network == "conv":
            body = ConvEncoder(config.image_shape, config.channels, act)
            self.encoder = make_family(config.family, d, [body.out_features, *h], activation=act,
                                       min_scale=config.min_scale, body=body)  # fmt: skip
            self.decoder = ConvDecoder([d, *reversed(h)], config.image_shape, config.channels, m, act)
        else:
            self.encoder = make_family(config.family, d, [x, *h], activation=act, min_scale=config.min_scale)
            self.decoder = mlp([d, *reversed(h), x * m], act)
        self.likelihood = likelihood
        # last, so that a learned prior's initial draws leave the networks' as they were
        self.prior = make_prior(config.prior, d, encode=self.encoder, data_dim=x, min_scale=config.min_scale,
                                bounded=config.likelihood not in UNBOUNDED)  # fmt: skip

    def encode(self, x: Tensor) -> Distribution:
        """q(z | x): batch shape ``[B]``, event shape ``[D]`` for x of shape ``[B, X]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Distribution:
        """p(x | z): batch shape ``z.shape[:-1]``, event shape ``[X]``."""
        return self.likelihood(self.decoder(z))

    def forward(self, x: Tensor, k: int = 1, *, reparameterize: bool = True, stop_q: bool = False) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(x | z) ``[K, B]``.

        The switches are the gradient estimator's (``bounds.Objective``): draws without
        reparameterization for the score-function estimator; log q evaluated with q's
        parameters detached for STL and DReG.
        """
        q = self.encode(x)
        stopped, log_q = stop_gradient(q) if stop_q else None, None
        if reparameterize and stopped is None and hasattr(q, "rsample_and_log_prob"):
            z, log_q = q.rsample_and_log_prob((k,))  # a flow: log q along the draw, in its fast direction
        else:
            z = q.rsample((k,)) if reparameterize else q.sample((k,))
        return Particles(z, self.decode(z).log_prob(x), q, self.prior(), stopped, log_q)

    def log_weights(self, x: Tensor, k: int = 1) -> Tensor:
        """log p(x, z_k) - log q(z_k | x) for K draws per input: ``[B, X] -> [K, B]``."""
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
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior: the means of p(x | z), ``[n, X]``."""
        return self.decode(self.prior.sample(n, generator)).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x | z) at the center of q(z | x) (its mean where known): ``[B, X] -> [B, X]``."""
        return self.decode(center(self.encode(x))).mean

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
        """Decode the straight line between the posterior centers of two inputs ``[X]``: ``[steps, X]``."""
        z_a, z_b = center(self.encode(torch.stack([x_a, x_b])))
        t = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
        return self.decode((1 - t) * z_a + t * z_b).mean

    @torch.no_grad()
    def manifold(self, n: int = 20) -> Tensor:
        """Decode an n x n grid over a 2-D latent space: ``[n, n, X]``.

        The grid is evenly spaced in probability, z = Phi^-1(u) for u in (0.05, 0.95), as in
        Kingma & Welling (2014, Figure 4), so it covers the prior's mass rather than a box.
        """
        if self.config.latent_dim != 2:
            raise ElboxError(
                f"the latent manifold is drawn for 2-D latent spaces, but this model has "
                f"{self.config.latent_dim} dimensions; train with --latent-dim 2, or use "
                "`elbox interpolate` which works in any dimension."
            )
        u = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
        # rows go from high to low z_2 so the picture reads like a plot with y upward
        z = torch.stack(torch.meshgrid(u.flip(0), u, indexing="ij")[::-1], dim=-1)  # [n, n, 2]
        return self.decode(z.to(next(self.parameters()))).mean


def build_model(config: VAEConfig) -> "VAE | HierarchicalVAE":
    """The model a resolved config names: a ``VAE`` or a ``hierarchical.HierarchicalVAE``."""
    return HierarchicalVAE(config) if config.architecture == "hvae" else VAE(config)


def latent_floats(config: VAEConfig) -> int:
    """Rough floats per particle and data point that the latent side adds to a pass without autograd.

    A learned prior's log density forms every component's, ``[K, B, M]`` a few times over (in
    float64); an ``hvae`` adds its top layer's networks and draws.
    """
    d = config.top_latent_dim if config.architecture == "hvae" else config.latent_dim
    _, components = check_prior_name(config.prior)
    floats = 8 * (components or 0) + 4 * d
    if config.architecture == "hvae":
        floats += 4 * sum(config.top_hidden) + 6 * (config.latent_dim + d)
    return floats
