"""The deep variational information bottleneck, ``VIB``: a classifier p(y | x) through a stochastic
encoder, trained by the bounds of ``bounds`` as a latent-variable model of the labels."""

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from ..bounds import Particles
from ..errors import ElboxError
from ..families import Family
from ..networks import mlp
from .base import LatentVariableModel, check_width, draw, one_hot_labels
from .config import VAEConfig
from .vae import encoder_for, prior_for

__all__ = ["VIB"]


class VIB(nn.Module, LatentVariableModel):
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

    needs_labels = classifier = True

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if config.data_dim is None or config.classes is None:
            raise ValueError("resolve data_dim and the number of classes from the data before building a VIB")
        self.config = config
        self.encoder = encoder_for(config, config.data_dim)
        self.prior = prior_for(config, self.encoder)
        self.decoder = mlp([self.encoder.width, config.classes])

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x): batch shape ``[B]``, event shape ``[D]``. The bottleneck does not see the label:
        q(z | x, y) = q(z | x), so a ``y`` given changes nothing."""
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(y | z): a categorical over the C classes with batch shape ``z.shape[:-1]``; y is what it
        is a distribution of (``decode(z).log_prob(y)``), not a condition."""
        if y is not None:
            raise ElboxError("a VIB's decode(z) is p(y | z), the distribution of the labels, not conditioned on them: "
                             "score labels with decode(z).log_prob(y).")  # fmt: skip
        return Categorical(logits=self.decoder(z), validate_args=False)

    def amortized_family(self) -> Family:
        """The encoder, q(z | x) = family(encoder(x))."""
        return self.encoder

    def forward(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(y | z) ``[K, B]`` as their log-likelihood."""
        labels = one_hot_labels(y, self.config.classes, "VIB classifier").argmax(-1).to(x.device)  # [B]
        q = self.encode(x)
        z, stopped, log_q = draw(q, k, reparameterize, stop_q)
        return Particles(z, self.decode(z).log_prob(labels), q, self.prior(), stopped, log_q)

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
        check_width(x, self.config.data_dim, name)
        if not bool(torch.isfinite(x).all()):
            raise ElboxError(f"the {name} data hold non-finite values (NaN or infinity); remove or impute them.")
