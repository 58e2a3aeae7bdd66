"""The variational autoencoder, ``VAE``, and its conditional form (``model="cvae"``), with the
amortized q(z | x) and the prior p(z) a ``VAEConfig`` names (``encoder_for``, ``prior_for``)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from ..bounds import Particles
from ..errors import ElboxError
from ..families import Discrete, Family, center, line_between, make_family
from ..likelihoods import UNBOUNDED, make_likelihood
from ..networks import ConvDecoder, ConvEncoder, mlp
from ..priors import ClassPrior, UniformPrior, make_prior, probit_grid
from .base import LatentVariableModel, check_width, draw, no_labels, one_hot_labels
from .config import VAEConfig

__all__ = ["VAE", "encoder_for", "prior_for"]


def encoder_for(config: VAEConfig, inputs: int) -> Family:
    """q(z | x) amortized by an MLP from ``inputs`` features, after convolutions for ``network="conv"``."""
    c = config
    body = ConvEncoder(c.image_shape, c.channels, c.activation) if c.network == "conv" else None
    first = inputs if body is None else body.out_features
    return make_family(c.family, c.latent_dim, [first, *c.hidden], activation=c.activation, min_scale=c.min_scale,
                       body=body, temperature=c.temperature, straight_through=c.straight_through)  # fmt: skip


def prior_for(config: VAEConfig, encoder: Family) -> nn.Module:
    """p(z): uniform over discrete codes, a Gaussian per class (``class_prior``), else ``config.prior``."""
    if isinstance(encoder, Discrete):
        return UniformPrior(config.latent_dim, encoder.categories)
    if config.class_prior:
        return ClassPrior(config.classes, config.latent_dim)
    return make_prior(config.prior, config.latent_dim, encode=encoder, data_dim=config.data_dim,
                      min_scale=config.min_scale, bounded=config.likelihood not in UNBOUNDED)  # fmt: skip


class VAE(nn.Module, LatentVariableModel):
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
                                     columns=config.columns, noise_rank=config.noise_rank)  # fmt: skip
        reads, outputs = likelihood.widths(x)  # what the encoder reads, what the decoder outputs
        m = likelihood.outputs_per_dim  # decoder outputs per data dimension (a conv decoder's channels)
        self.encoder = encoder_for(config, reads + c)
        self.prior = prior_for(config, self.encoder)
        w = self.encoder.width + c  # the decoder takes z and the one-hot label
        if config.network == "conv":
            self.decoder = ConvDecoder([w, *reversed(h)], config.image_shape, config.channels, m, act)
        else:
            self.decoder = mlp([w, *reversed(h), outputs], act)
        self.likelihood = likelihood

    def _given(self, inputs: Tensor, y: Tensor | None) -> Tensor:
        """``inputs`` ``[*S, B, F]`` with the one-hot label appended for a conditional model: ``[*S, B, F + C]``."""
        if not self.conditional:
            no_labels(y, "this VAE")
            return inputs
        one_hot = one_hot_labels(y, self.config.classes, "conditional VAE").to(inputs)
        return torch.cat([inputs, one_hot.expand(*inputs.shape[:-1], one_hot.shape[-1])], -1)

    def prior_given(self, y: Tensor | None = None) -> Distribution:
        """p(z), or p(z | y) with a class prior: batch shape ``[]`` or ``[B]``, event shape ``[W]``."""
        if isinstance(self.prior, ClassPrior):
            return self.prior(one_hot_labels(y, self.config.classes, "prior").to(self.prior.loc))
        return self.prior()

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x) (or q(z | x, y)): batch shape ``[B]``, event shape ``[D]`` for x of shape ``[B, X]``.

        A table's rows are read through its likelihood's ``features`` (missing values zero-filled, with
        the mask of observed entries)."""
        return self.encoder(self._given(self.encoder_input(x), y))

    def encoder_input(self, x: Tensor) -> Tensor:
        """The likelihood's ``features`` of x: x itself, or a table's rows zero-filled with their mask."""
        return self.likelihood.features(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z) (or p(x | z, y)): batch shape ``z.shape[:-1]``, event shape ``[X]``."""
        return self.likelihood(self.decoder(self._given(z, y)))

    def amortized_family(self) -> Family:
        """The encoder, q(z | x) (or q(z | x, y)) = family(encoder(inputs))."""
        return self.encoder

    def forward(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(x | z) ``[K, B]`` (given y for a cvae).

        The switches are the gradient estimator's (``bounds.Objective``): draws without
        reparameterization for the score-function estimator; log q evaluated with q's
        parameters detached for STL and DReG.
        """
        q = self.encode(x, y)
        z, stopped, log_q = draw(q, k, reparameterize, stop_q)
        return Particles(z, self.decode(z, y).log_prob(x), q, self.prior_given(y), stopped, log_q)

    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse data of the wrong width or outside the likelihood's support."""
        check_width(x, self.config.data_dim, name)
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
    def sample(self, n: int, generator: torch.Generator | None = None, condition: int | Tensor | None = None) -> Tensor:
        """Decode n draws from the prior: the means of p(x | z), ``[n, X]``.

        A conditional VAE draws given ``condition``, a class label (int) or one per draw ``[n]``:
        z ~ p(z | y), then the mean of p(x | z, y).
        """
        y = self._condition(condition, n)
        one_hot = None if y is None else F.one_hot(y, self.config.classes).float()
        z = self.prior.sample(n, generator, y=one_hot)  # p(z), or p(z | y) for a class prior
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
