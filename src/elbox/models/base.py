"""The contract every latent-variable model meets, ``LatentVariableModel``, with its defaults, and
the parts the models share: drawing particles, reading class labels, checking the data's width."""

from abc import abstractmethod
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from ..bounds import Particles, log_weights
from ..errors import ElboxError
from ..families import Family
from ..families import draw_particles as draw  # the VAEs' draws for an estimator's switches
from .config import VAEConfig

__all__ = ["LatentVariableModel", "check_width", "draw", "no_labels", "one_hot_labels"]


@runtime_checkable
class LatentVariableModel(Protocol):
    """A latent-variable model p(x, z) = p(z) p(x | z) with an amortized q(z | x) (for a
    classifier, p(y | z) in place of p(x | z)): everything training, evaluation, the figures and
    the command line may ask of a model.

    ``forward(x, k)`` draws K particles z ~ q(z | x) per input, ``[K, B, D]``, and returns them
    with log p(x | z) ``[K, B]`` as ``bounds.Particles``; every bound and estimator is a function
    of those. A model given class labels (``needs_labels``) takes them as ``y`` (indices ``[B]``
    or one-hot rows ``[B, C]``) in every pass; the others refuse a ``y``.

    The members with a body are defaults, inherited by a model that names the protocol as a base
    (``class VAE(nn.Module, LatentVariableModel)``); the abstract ones each model writes.
    ``isinstance(m, LatentVariableModel)`` checks that the members exist, not their signatures.

    Attributes:
        config: the model's resolved ``VAEConfig``.
        needs_labels: whether every pass is given class labels y (cvae, vib).
        classifier: whether the model predicts labels from inputs, ``predict`` (vib).
        prior: the module whose call gives p(z) (a cvae's class prior: p(z | y) from one-hot y);
            its name is part of the checkpoints' tensor names (``model.prior.*``).
    """

    config: VAEConfig
    needs_labels: bool = False
    classifier: bool = False
    if TYPE_CHECKING:  # a submodule, which Python 3.12's runtime check (inspect.getattr_static) cannot see
        prior: nn.Module

    def __call__(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """``forward``: an ``nn.Module``'s own ``__call__`` (with its hooks) comes first in a model's bases."""
        return self.forward(x, k, y=y, reparameterize=reparameterize, stop_q=stop_q)

    @abstractmethod
    def forward(
        self, x: Tensor, k: int = 1, *, y: Tensor | None = None, reparameterize: bool = True, stop_q: bool = False
    ) -> Particles:
        """K particles z ~ q(z | x) ``[K, B, D]`` with log p(x | z) ``[K, B]``, for x ``[B, X]``.

        The switches are the gradient estimator's (``bounds.Objective``): draws without
        reparameterization for the score-function estimator; log q evaluated with q's parameters
        detached for STL and DReG.
        """

    @abstractmethod
    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x) (or q(z | x, y)): batch shape ``[B]``, event shape ``[D]`` for x ``[B, X]``."""

    @abstractmethod
    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z) (or p(x | z, y); a classifier's p(y | z)): batch shape ``z.shape[:-1]``."""

    def log_weights(self, x: Tensor, k: int = 1, y: Tensor | None = None) -> Tensor:
        """log p(x, z_k) - log q(z_k | x) for K draws per input: ``[B, X] -> [K, B]`` (given y where needed)."""
        return log_weights(self(x, k, y=y))

    @abstractmethod
    def check(self, x: Tensor, name: str = "training") -> None:
        """Refuse data ``[N, X]`` the model cannot take: the wrong width, or outside the likelihood's support."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, condition: int | Tensor | None = None) -> Tensor:
        """The means of p(x | z) at n draws from the prior (given a class ``condition`` where needed): ``[n, X]``."""

    @abstractmethod
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x | z) at the center of q(z | x): ``[B, X] -> [B, X]``."""

    @abstractmethod
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
        """Decode the straight line between the posterior centers of two inputs ``[X]``: ``[steps, X]``."""

    @abstractmethod
    def manifold(self, n: int = 20) -> Tensor:
        """Decode an n x n grid over a 2-D latent space: ``[n, n, X]``."""

    def predict(self, x: Tensor, samples: int = 12) -> Tensor:
        """p(y | x) ``[B, C]`` of a classifier; a generative model has no labels to predict."""
        raise ElboxError(f"{type(self).__name__} ({self.config.model}) is a generative model of x: it predicts no "
                         "class labels. Train --model vib for a classifier.")  # fmt: skip

    def encoder_input(self, x: Tensor) -> Tensor:
        """What the encoder of ``amortized_family()`` reads of data ``x`` ``[B, X]``: x itself, unless the
        likelihood says otherwise (a table's rows: ``Likelihood.features``)."""
        return x

    def amortized_family(self) -> Family | None:
        """The one amortized family q(z | x) = family(encoder(x)), or None where q is not one (hvae: two encoders).

        The gap split (``evaluate.inference_gaps``) optimises this family's raw parameters per data point.
        """
        return None


def one_hot_labels(y: Tensor | None, classes: int, what: str) -> Tensor:
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


def no_labels(y: Tensor | None, what: str) -> None:
    """Refuse class labels given to a model that takes none."""
    if y is not None:
        raise ElboxError(f"{what} is not conditional: it takes no labels (train it with --model cvae).")


def check_width(x: Tensor, width: int, name: str) -> None:
    """Refuse data that are not rows ``[N, width]``."""
    if x.ndim != 2 or x.shape[1] != width:
        raise ElboxError(
            f"the {name} data have shape {list(x.shape)} but this model takes rows of "
            f"{width} values (shape [N, {width}])."
        )
