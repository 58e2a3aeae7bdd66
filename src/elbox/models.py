"""Latent-variable models p(x, z) = p(z) p(x | z) with an amortized q(z | x): the VAE, the VIB,
and ``build_model``, which builds the model a ``VAEConfig`` names (``hierarchical`` holds the
two-layer VAE)."""

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from .bounds import Particles, log_weights
from .errors import ElboxError
from .families import (
    DISCRETE,
    Discrete,
    Family,
    center,
    check_family_name,
    line_between,
    make_family,
    stop_gradient,
)  # fmt: skip
from .hierarchical import UNBOUNDED, HierarchicalVAE
from .likelihoods import LIKELIHOODS, TABLE, make_likelihood
from .networks import ACTIVATIONS, ConvDecoder, ConvEncoder, mlp
from .priors import (
    ClassPrior,
    MixturePrior,
    UniformPrior,
    VampPrior,
    check_prior_name,
    make_prior,
    probit_grid,
)  # fmt: skip

__all__ = ["MODELS", "NETWORKS", "VAE", "VIB", "VAEConfig", "build_model", "latent_floats"]

MODELS = ("vae", "cvae", "vib", "hvae")
NETWORKS = ("mlp", "conv")


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
        family: q's family: ``diagonal``, ``fullrank``, ``lowrank[:R]``, a flow ``iaf|maf|nsf|realnvp[:L]``,
            ``mixture[:K]``, or discrete latents ``bernoulli`` / ``categorical[:C]`` (``families.make_family``).
        network: ``mlp``, or ``conv`` for images: strided convolutions before the encoder's
            hidden layers, transposed convolutions after the decoder's (``networks.ConvEncoder``,
            ``networks.ConvDecoder``).
        channels: the conv encoder's channels per layer; the decoder mirrors them.
        image_shape: (H, W) of the conv network's images; filled in from the data.
        model: ``vae``; ``cvae``, the conditional VAE (``VAE`` given a class label y); or ``vib``,
            the deep variational information bottleneck classifier (``VIB``).
        classes: C, the number of class labels (cvae, vib); filled in from the data's labels.
        class_prior: a cvae's prior p(z | y), one learned Gaussian per class, instead of N(0, I).
        temperature: tau of the Gumbel-softmax relaxation of discrete latents.
        straight_through: discrete latents drawn hard in the forward pass, with the relaxed
            draw's gradient (``families.GumbelDiscrete``).
        prior: p(z) (of the top layer for ``hvae``): ``standard``, ``mog[:K]`` (a learned
            mixture of K Gaussians, default 10) or ``vamp[:K]`` (the VampPrior, K pseudo-inputs,
            default 500); ``priors.make_prior``. For ``vae`` and ``hvae``; the VampPrior needs
            the diagonal family.
        top_latent_dim: for ``model="hvae"`` (two stochastic layers, ``hierarchical``, whose
            ``latent_dim`` and ``hidden`` are the bottom layer's): the top layer's size; default
            half of ``latent_dim``.
        top_hidden: the widths between the two layers for ``hvae``; default half of ``hidden``.
            Burda et al.'s 784-200-200-100-100-100-50 is ``latent_dim=100`` with the defaults.
        columns: for ``likelihood="table"``, each column's likelihood (``likelihoods.Table``); filled in from
            a table's schema (``data.tables``).
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
    model: str = "vae"
    classes: int | None = None
    class_prior: bool = False
    temperature: float = 0.5
    straight_through: bool = False
    prior: str = "standard"
    top_latent_dim: int | None = None
    top_hidden: tuple[int, ...] | None = None
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.hidden, self.channels = tuple(self.hidden), tuple(self.channels)
        self.columns = None if self.columns is None else tuple(self.columns)
        self.image_shape = None if self.image_shape is None else tuple(self.image_shape)
        problems = []
        if self.latent_dim < 1:
            problems.append(f"latent_dim must be at least 1, got {self.latent_dim}")
        if any(h < 1 for h in self.hidden):
            problems.append(f"hidden widths must be positive, got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in (*LIKELIHOODS, TABLE, "auto"):
            problems.append(f"likelihood must be auto or one of {LIKELIHOODS}, got {self.likelihood!r}")
        try:
            check_family_name(self.family)
        except ValueError as e:
            problems.append(str(e))
        if self.gaussian_scale is not None and not 0 < self.gaussian_scale < math.inf:
            problems.append(f"gaussian_scale must be positive and finite, got {self.gaussian_scale}")
        if not 0 < self.min_scale < math.inf:
            problems.append(f"min_scale must be positive and finite, got {self.min_scale}")
        problems += self._network_problems() + self._zoo_problems() + self._latent_problems()
        if problems:
            raise ElboxError("invalid model options: " + "; ".join(problems) + ".")

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

    def _zoo_problems(self) -> list[str]:
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {MODELS}, got {self.model!r}")
        if self.classes is not None and self.classes < 2:
            problems.append(f"classes must be at least 2, got {self.classes}")
        if self.class_prior and self.model != "cvae":
            problems.append("class_prior is the prior p(z | y) of a conditional VAE: use it with --model cvae")
        if not 0 < self.temperature < math.inf:
            problems.append(f"temperature must be positive and finite, got {self.temperature}")
        if self.model == "cvae" and self.network == "conv":
            problems.append("a conditional VAE appends the label to the encoder's input rows, which convolutions "
                            "do not take: use --network mlp with --model cvae")
        if self.class_prior and self.family.partition(":")[0] in DISCRETE:
            problems.append("class_prior is a Gaussian per class; discrete latents have a uniform prior")
        return problems

    def _latent_problems(self) -> list[str]:
        """Check the prior and the hvae's options; fill in the top layer of an ``hvae``."""
        problems = []
        try:
            kind, _ = check_prior_name(self.prior)
        except ValueError as e:
            problems.append(str(e))
            kind = None
        if kind not in (None, "standard") and self.model not in ("vae", "hvae"):
            problems.append(f"the learned priors are for --model vae or hvae, not {self.model}")
        if self.model == "hvae":
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
            problems.append("top_latent_dim and top_hidden shape the second layer of --model hvae; this model has one")
        if kind == "vamp" and self.family != "diagonal":
            problems.append(f"the VampPrior is a mixture of the encoder's diagonal Gaussians: use --family diagonal, "
                            f"not {self.family}")  # fmt: skip
        return problems

    @property
    def discrete(self) -> bool:
        """Whether the latents are discrete (``bernoulli`` or ``categorical`` family)."""
        return self.family.partition(":")[0] in DISCRETE

    def to_dict(self) -> dict:
        shape = None if self.image_shape is None else list(self.image_shape)
        top = None if self.top_hidden is None else list(self.top_hidden)
        columns = None if self.columns is None else list(self.columns)
        return {**asdict(self), "hidden": list(self.hidden), "channels": list(self.channels), "image_shape": shape,
                "top_hidden": top, "columns": columns}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            raise ElboxError(f"unknown model options {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**d)


def _draw(
    q: Distribution, k: int, reparameterize: bool, stop_q: bool
) -> tuple[Tensor, Distribution | None, Tensor | None]:
    """K draws from q ``[K, B, D]`` for the gradient estimator's switches (``bounds.Objective``),
    with q stopped (STL, DReG) and log q along the draw where a flow computes it in one pass."""
    stopped, log_q = stop_gradient(q) if stop_q else None, None
    if reparameterize and stopped is None and hasattr(q, "rsample_and_log_prob"):
        z, log_q = q.rsample_and_log_prob((k,))  # a flow: log q along the draw, in its fast direction
    else:
        z = q.rsample((k,)) if reparameterize else q.sample((k,))
    return z, stopped, log_q


def _family(config: VAEConfig, inputs: int) -> Family:
    """q(z | x) amortized by an MLP from ``inputs`` features, after convolutions for ``network="conv"``."""
    c = config
    body = ConvEncoder(c.image_shape, c.channels, c.activation) if c.network == "conv" else None
    first = inputs if body is None else body.out_features
    return make_family(c.family, c.latent_dim, [first, *c.hidden], activation=c.activation, min_scale=c.min_scale,
                       body=body, temperature=c.temperature, straight_through=c.straight_through)  # fmt: skip


def _prior(config: VAEConfig, encoder: Family) -> nn.Module:
    if isinstance(encoder, Discrete):
        return UniformPrior(config.latent_dim, encoder.categories)
    if config.class_prior:
        return ClassPrior(config.classes, config.latent_dim)
    return make_prior(config.prior, config.latent_dim, encode=encoder, data_dim=config.data_dim,
                      min_scale=config.min_scale, bounded=config.likelihood not in UNBOUNDED)  # fmt: skip


def _prior_draws(prior: nn.Module, n: int, generator: torch.Generator | None, y: Tensor | None) -> Tensor:
    """n draws from p(z) (or p(z | y) for one-hot ``y`` ``[n, C]``) with ``generator``: ``[n, W]``."""
    if isinstance(prior, UniformPrior):
        return prior().sample((n,), generator=generator)
    if isinstance(prior, MixturePrior | VampPrior):  # a learned prior draws its own
        return prior.sample(n, generator)
    eps = torch.randn(n, prior.dim, generator=generator).to(prior.loc)
    if isinstance(prior, ClassPrior):
        p = prior(y)
        return p.base_dist.loc + p.base_dist.scale * eps
    return eps


def _labels_given(y: Tensor | None, classes: int, what: str) -> Tensor:
    """Class labels as one-hot rows ``[B, C]``, from indices ``[B]`` or one-hot rows."""
    if y is None:
        raise ElboxError(f"this {what} is conditioned on a class label: give y (labels 0..{classes - 1}). On the "
                         "command line, `elbox sample --condition` and `elbox reconstruct` draw a conditional VAE's "
                         "figures; the others are for unconditional models.")  # fmt: skip
    if y.ndim == 1:
        if y.dtype.is_floating_point or bool(((y < 0) | (y >= classes)).any()):
            raise ElboxError(f"class labels must be whole numbers in 0..{classes - 1}, got {y.tolist()[:10]}.")
        return F.one_hot(y.long(), classes).float()
    if y.ndim != 2 or y.shape[-1] != classes:
        raise ElboxError(f"labels must be indices [B] or one-hot rows [B, {classes}], got shape {list(y.shape)}.")
    return y.float()


class VAE(nn.Module):
    """A variational autoencoder (Kingma & Welling, 2014; Rezende, Mohamed & Wierstra, 2014).

    Generative model p(z) = N(0, I), p(x | z) = likelihood(decoder(z)); amortized family
    q(z | x) from an MLP encoder: N(mu(x), diag sigma(x)^2) by default, or any family of
    ``families`` (full-rank, low-rank, flows, mixtures, discrete latents with a uniform prior).
    With ``network="conv"`` the encoder starts with, and the decoder ends with, convolutions over
    the ``image_shape`` images; the decoder outputs the likelihood's ``outputs_per_dim`` values per
    data dimension. ``forward(x, k)`` draws K particles per input and returns what every bound needs
    (``bounds.Particles``); ``log_weights(x, k)`` is their ``[K, B]`` log-weights.

    With ``model="cvae"`` it is the conditional VAE (Sohn, Lee & Yan, 2015): a label y (one
    of C classes, one-hot) is concatenated to the encoder's and the decoder's inputs,
    q(z | x, y) and p(x | z, y), and the prior is N(0, I) or, with ``class_prior``, a learned
    Gaussian per class p(z | y). Every method then takes y (indices ``[B]`` or one-hot
    ``[B, C]``), and the log-weights log p(x, z | y) - log q(z | x, y) bound log p(x | y).

    >>> from elbox.bounds import ELBO
    >>> vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    >>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    >>> vae.log_weights(x, k=5).shape
    torch.Size([5, 1])
    >>> bound = ELBO()(vae(x))
    >>> bool(bound.value <= 0), bound.value.shape
    (True, torch.Size([1]))
    >>> cvae = VAE(VAEConfig(data_dim=4, hidden=(8,), likelihood="bernoulli", model="cvae", classes=3))
    >>> cvae.log_weights(x, k=5, y=torch.tensor([2])).shape, cvae.sample(4, condition=1).shape
    (torch.Size([5, 1]), torch.Size([4, 4]))
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.data_dim is None or config.likelihood == "auto":
            raise ValueError("resolve data_dim and likelihood from the data before building a VAE")
        if config.network == "conv" and config.image_shape is None:
            raise ValueError("resolve image_shape from the data before building a conv VAE")
        if config.model not in ("vae", "cvae"):
            raise ValueError(f"a VAE is model vae or cvae, not {config.model!r}: build it with build_model")
        self.conditional = self.needs_labels = config.model == "cvae"
        if self.conditional and config.classes is None:
            raise ValueError("resolve the number of classes from the labels before building a conditional VAE")
        self.config = config
        c = config.classes if self.conditional else 0
        x, h, act = config.data_dim, list(config.hidden), config.activation
        likelihood = make_likelihood(config.likelihood, levels=config.levels, scale=config.gaussian_scale, dim=x,
                                     columns=config.columns)  # fmt: skip
        # a table's likelihood says its own widths: what the encoder reads, what the decoder outputs
        self._features = getattr(likelihood, "features", None)
        outputs = getattr(likelihood, "outputs", None) or x * likelihood.outputs_per_dim
        m = likelihood.outputs_per_dim if hasattr(likelihood, "outputs_per_dim") else 1
        self.encoder = _family(config, getattr(likelihood, "input_width", x) + c)
        self.prior = _prior(config, self.encoder)
        w = self.encoder.width + c  # the decoder takes z and the one-hot label
        if config.network == "conv":
            self.decoder = ConvDecoder([w, *reversed(h)], config.image_shape, config.channels, m, act)
        else:
            self.decoder = mlp([w, *reversed(h), outputs], act)
        self.likelihood = likelihood

    def _given(self, inputs: Tensor, y: Tensor | None) -> Tensor:
        """``inputs`` ``[*S, B, F]`` with the one-hot label appended for a conditional model: ``[*S, B, F + C]``."""
        if not self.conditional:
            if y is not None:
                raise ElboxError("this VAE is not conditional: it takes no labels (train it with --model cvae).")
            return inputs
        one_hot = _labels_given(y, self.config.classes, "conditional VAE").to(inputs)
        return torch.cat([inputs, one_hot.expand(*inputs.shape[:-1], one_hot.shape[-1])], -1)

    def prior_given(self, y: Tensor | None = None) -> Distribution:
        """p(z), or p(z | y) with a class prior: batch shape ``[]`` or ``[B]``, event shape ``[W]``."""
        if isinstance(self.prior, ClassPrior):
            return self.prior(_labels_given(y, self.config.classes, "prior").to(self.prior.loc))
        return self.prior()

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x) (or q(z | x, y)): batch shape ``[B]``, event shape ``[D]`` for x of shape ``[B, X]``.

        A table's rows are read through its likelihood's ``features`` (missing values zero-filled, with
        the mask of observed entries)."""
        if self._features is not None:
            x = self._features(x)
        return self.encoder(self._given(x, y))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z) (or p(x | z, y)): batch shape ``z.shape[:-1]``, event shape ``[X]``."""
        return self.likelihood(self.decoder(self._given(z, y)))

    def forward(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(x | z) ``[K, B]`` (given y for a cvae).

        The switches are the gradient estimator's (``bounds.Objective``): draws without
        reparameterization for the score-function estimator; log q evaluated with q's
        parameters detached for STL and DReG.
        """
        q = self.encode(x, y)
        z, stopped, log_q = _draw(q, k, reparameterize, stop_q)
        return Particles(z, self.decode(z, y).log_prob(x), q, self.prior_given(y), stopped, log_q)

    def log_weights(self, x: Tensor, k: int = 1, y: Tensor | None = None) -> Tensor:
        """log p(x, z_k) - log q(z_k | x) for K draws per input: ``[B, X] -> [K, B]`` (given y for a cvae)."""
        return log_weights(self(x, k, y=y))

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse data of the wrong width or outside the likelihood's support."""
        _check_width(x, self.config.data_dim, name)
        self.likelihood.check(x, name)

    def _condition(self, condition: int | Tensor | None, n: int) -> Tensor | None:
        """The labels of n draws ``[n]`` from a class given as an int or ``[n]``; None unconditionally."""
        if not self.conditional:
            if condition is not None:
                raise ElboxError("this model is not conditional, so it draws without --condition "
                                 "(train with --model cvae to condition on a label).")  # fmt: skip
            return None
        classes = self.config.classes
        if condition is None:
            raise ElboxError(f"this conditional VAE draws given a class: give --condition, a label in 0..{classes - 1}"
                             ".")  # fmt: skip
        y = torch.as_tensor(condition).long()
        y = y.expand(n) if y.ndim == 0 else y
        if bool(((y < 0) | (y >= classes)).any()):
            raise ElboxError(f"--condition must be a class label in 0..{classes - 1}, got {condition!r}.")
        return y.to(next(self.decoder.parameters()).device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, condition: int | Tensor | None = None
    ) -> Tensor:
        """Decode n draws from the prior: the means of p(x | z), ``[n, X]``.

        A conditional VAE draws given ``condition``, a class label (int) or one per draw ``[n]``:
        z ~ p(z | y), then the mean of p(x | z, y).
        """
        y = self._condition(condition, n)
        one_hot = None if y is None else F.one_hot(y, self.config.classes).float()
        z = _prior_draws(self.prior, n, generator, one_hot)
        return self.decode(z.to(next(self.decoder.parameters())), y).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x | z) at the center of q(z | x) (its mean where known): ``[B, X] -> [B, X]``."""
        return self.decode(center(self.encode(x, y)), y).mean

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
        """Decode the straight line between the posterior centers of two inputs ``[X]``: ``[steps, X]``."""
        return self.decode(line_between(self.encode(torch.stack([x_a, x_b])), steps)).mean

    @torch.no_grad()
    def manifold(self, n: int = 20) -> Tensor:
        """Decode an n x n grid over a 2-D latent space: ``[n, n, X]``.

        The grid is ``priors.probit_grid``: evenly spaced in probability, so it covers the
        prior's mass rather than a box.
        """
        if self.config.latent_dim != 2:
            raise ElboxError(
                f"the latent manifold is drawn for 2-D latent spaces, but this model has "
                f"{self.config.latent_dim} dimensions; train with --latent-dim 2, or use "
                "`elbox interpolate` which works in any dimension."
            )
        return self.decode(probit_grid(n).to(next(self.decoder.parameters()))).mean


def _check_width(x: Tensor, width: int, name: str) -> None:
    if x.ndim != 2 or x.shape[1] != width:
        raise ElboxError(
            f"the {name} data have shape {list(x.shape)} but this model takes rows of "
            f"{width} values (shape [N, {width}])."
        )


class VIB(nn.Module):
    """The deep variational information bottleneck (Alemi, Fischer, Dillon & Murphy, 2017): a
    classifier through a stochastic encoder.

    q(z | x) is any amortized family (the diagonal Gaussian of the paper by default), the
    decoder p(y | z) = softmax(W z + b) is a logistic regression on z as in the paper, and
    r(z) = N(0, I) is the variational marginal. The objective

        E_q(z | x)[log p(y | z)] - beta KL(q(z | x) || r(z))     per example, [B]

    is the ELBO of the latent-variable model r(z) p(y | z) with q(z | x) as its amortized
    posterior, with log p(y | z) in place of log p(x | z). So ``forward`` returns
    ``Particles`` with ``log_lik = log p(y | z)`` and every objective of ``bounds`` trains it:
    ``ELBO(beta=beta)`` is the VIB loss. The KL is the rate, an upper bound on I(z; x)
    (Alemi et al. 2017, eq. 13); -E_q log p(y | z) the cross-entropy, an upper bound on H(y | z).
    Its value at beta = 1 is a lower bound on both log of the predictive
    p(y | x) = E_q p(y | z) and log of int r(z) p(y | z) dz.

    >>> vib = VIB(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), model="vib", classes=3))
    >>> x, y = torch.zeros(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> vib(x, 7, y=y).log_w.shape, vib.predict(x).shape
    (torch.Size([7, 5]), torch.Size([5, 3]))
    """

    needs_labels = True

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.data_dim is None or config.classes is None:
            raise ValueError("resolve data_dim and the number of classes from the data before building a VIB")
        self.config = config
        self.encoder = _family(config, config.data_dim)
        self.prior = _prior(config, self.encoder)
        self.decoder = mlp([self.encoder.width, config.classes])

    def encode(self, x: Tensor) -> Distribution:
        """q(z | x): batch shape ``[B]``, event shape ``[D]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Distribution:
        """p(y | z): a categorical over the C classes with batch shape ``z.shape[:-1]``."""
        return Categorical(logits=self.decoder(z), validate_args=False)

    def forward(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(y | z) ``[K, B]`` as their log-likelihood."""
        labels = _labels_given(y, self.config.classes, "VIB classifier").argmax(-1).to(x.device)  # [B]
        q = self.encode(x)
        z, stopped, log_q = _draw(q, k, reparameterize, stop_q)
        return Particles(z, self.decode(z).log_prob(labels), q, self.prior(), stopped, log_q)

    def log_weights(self, x: Tensor, k: int = 1, y: Tensor | None = None) -> Tensor:
        """log p(y | z_k) + log r(z_k) - log q(z_k | x): ``[B, X] -> [K, B]``."""
        return log_weights(self(x, k, y=y))

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 12) -> Tensor:
        """p(y | x) ~ (1/S) sum_s p(y | z_s), z_s ~ q(z | x), as Alemi et al. (2017) predict with
        S = 12: ``[B, X] -> [B, C]``."""
        z = self.encode(x).sample((samples,))  # [S, B, D]
        return self.decode(z).probs.mean(0)

    def _no_data(self, *args: Any, **kwargs: Any) -> None:
        raise ElboxError("a VIB is a classifier p(y | x): it has no model of x to sample, reconstruct or "
                         "interpolate; its accuracy and rate are in the run's summary (run.json).")  # fmt: skip

    sample = reconstruct = interpolate = manifold = _no_data

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse data of the wrong width or with non-finite values."""
        _check_width(x, self.config.data_dim, name)
        if not bool(torch.isfinite(x).all()):
            raise ElboxError(f"the {name} data hold non-finite values (NaN or infinity); remove or impute them.")


def build_model(config: VAEConfig) -> VAE | VIB | HierarchicalVAE:
    """The model ``config.model`` names, built from a resolved config: a VAE (vae, cvae), a VIB or
    a ``hierarchical.HierarchicalVAE`` (hvae)."""
    if config.model == "hvae":
        return HierarchicalVAE(config)
    return VIB(config) if config.model == "vib" else VAE(config)


def latent_floats(config: VAEConfig) -> int:
    """Rough floats per particle and data point that the latent side adds to a pass without autograd.

    A learned prior's log density forms every component's, ``[K, B, M]`` a few times over (in
    float64); an ``hvae`` adds its top layer's networks and draws.
    """
    d = config.top_latent_dim if config.model == "hvae" else config.latent_dim
    _, components = check_prior_name(config.prior)
    floats = 8 * (components or 0) + 4 * d
    if config.model == "hvae":
        floats += 4 * sum(config.top_hidden) + 6 * (config.latent_dim + d)
    return floats
