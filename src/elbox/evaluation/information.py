"""What the code says about x: the rate KL(q || p), the mutual information I(x; z) and the active units."""

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence

from ..bounds import COLLAPSE_MI
from ..errors import ElboxError
from ..models import LatentVariableModel
from .particles import STREAM_MI, check_data, draw, evaluating, reseed, stream_seeds

__all__ = ["ACTIVE_THRESHOLD", "COLLAPSE_MI", "mi_values", "mutual_information", "rate", "unit_activity"]

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): unit d is active when Cov_x(E_q[z_d | x]) exceeds it


def rate(q: Distribution, prior: Distribution, monte_carlo: Tensor) -> tuple[Tensor, Tensor | None]:
    """The rate KL(q || p) per point ``[B]``, and per latent dimension ``[B, D]`` where q and p factorize.

    The total is in closed form where torch.distributions has one, else ``monte_carlo`` (the
    mean of log q - log p over the particles). Per dimension only in closed form, for q and p
    independent over dimensions (``Independent`` over one event dimension).
    """
    try:
        total = kl_divergence(q, prior)
    except NotImplementedError:
        total = monte_carlo
    factorized = all(isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 for d in (q, prior))
    if not factorized:
        return total, None
    try:
        return total, kl_divergence(q.base_dist, prior.base_dist).expand(*q.batch_shape, *q.event_shape)
    except NotImplementedError:
        return total, None


def unit_activity(means: Tensor) -> Tensor:
    """Cov_x(E_q[z_d | x]) per latent dimension d: ``[N, D] -> [D]``.

    The activity statistic of Burda et al. (2016, section 5.2): unit d is active when it
    exceeds ``ACTIVE_THRESHOLD`` (0.01), that is, when the posterior mean of z_d moves with x.
    """
    return means.double().var(0)


def mi_values(model: LatentVariableModel, x: Tensor, samples: int, seed: int) -> Tensor:
    """``mutual_information``'s values ``[M]``, for a model already in evaluation mode and checked data."""
    with torch.inference_mode():
        q = model.encode(x)  # batch shape [M]
        m = x.shape[0]
        reseed(x.device, stream_seeds(seed, STREAM_MI, 0, 1)[0])
        z, log_own = draw(q, samples)  # [S, M, D], [S, M]
        log_own = q.log_prob(z) if log_own is None else log_own
        rows = max(1, 2**22 // (samples * m * z.shape[-1]))  # S x rows x M x D values per pass
        log_aggregate = torch.cat(
            [torch.logsumexp(q.log_prob(z[:, i : i + rows, None, :]), -1) for i in range(0, m, rows)], 1
        ) - math.log(m)  # [S, M]: log (1/M) sum_m' q(z | x_m') at each draw
    return (log_own - log_aggregate).mean(0)  # outside inference mode: an ordinary tensor for the caller


def mutual_information(model: LatentVariableModel, x: Tensor, *, samples: int = 10, seed: int = 0) -> Tensor:
    """I(x; z) under the aggregate posterior of the rows of ``x`` ``[M, X]``, per point ``[M]``; the mean estimates it.

    With q(z) = (1/M) sum_m q(z | x_m) the aggregate posterior and x uniform on the M points,

        I(x; z) = E_x E_q(z|x) [log q(z | x) - log q(z)]
                = E_x KL(q(z | x) || p(z)) - KL(q(z) || p(z)),

    the second line the "ELBO surgery" of Hoffman & Johnson (2016): the average rate is the
    information the code carries about x plus the mismatch of the aggregate posterior and
    the prior. Estimated as He et al. (2019) and Dieng et al. (2019) do: ``samples`` draws
    z ~ q(z | x_n) per point, and q(z) the mixture over the M points themselves, so
    I <= log M (each point's own component keeps log q(z) >= log q(z | x_n) - log M); near
    that ceiling the estimate saturates and says "at least". A q(z | x) that does not depend
    on x gives exactly 0. The values per point are not independent (they share q(z)): their
    standard error is a guide, not an exact one.
    """
    if samples < 1:
        raise ElboxError(f"samples must be at least 1, got {samples}.")
    x = check_data(model, x)
    with evaluating(model):
        return mi_values(model, x, samples, seed)
