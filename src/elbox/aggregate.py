"""The aggregate posterior q(z) = (1/N) sum_i q(z | x_i) of a set of rows, to draw latents from.

A VAE's decoder is trained on latents from q(z | x_i), not from the prior p(z); where the two
differ (holes in q(z) that p(z) fills, KL pressure the data could not meet) draws z ~ p(z)
decode to rows unlike the data. ``aggregate_sample`` draws from q(z) itself, the mixture of
the N rows' posteriors with equal weights:

    i ~ Uniform{1..N},  z ~ q(z | x_i),

exact and free of any fit. The rows are chosen stratified, as systematic resampling chooses
particles (Kitagawa 1996; Douc, Cappe & Moulines 2005): n draws take every row floor(n / N)
times and n mod N rows once more, picked without replacement. Each draw's distribution is still
q(z), but the set no longer carries the multinomial noise of which rows were picked, which on a
table of a few hundred rows is most of the error in the samples' correlations (docs/benchmarks.md,
synthetic data: breast cancer 0.037 -> 0.018). Each draw is near one training row's code: decoded, its rows
lie closer to the training rows than fresh rows of the data do (docs/benchmarks.md,
synthetic data, measures how close). Ex-post density estimation (Ghosh, Sajjadi, Vergari, Black &
Schoelkopf 2020, "From variational to deterministic autoencoders", ICLR) fits a Gaussian
mixture to the training rows' latents after training and decodes draws from it instead:

    z_{i,s} ~ q(z | x_i)  for every training row i and s = 1..S,
    q^(z) = sum_k pi_k N(z; m_k, C_k),  K in 1..max_components by BIC, full covariances C_k,

with the mixture ``[D]`` returned as a ``torch.distributions.MixtureSameFamily``: smoother
(K components for N rows), further from the rows, and on small tables worse on the
correlations between columns.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

__all__ = ["LATENTS", "aggregate_posterior", "aggregate_sample"]

# where ``sample`` draws z: p(z), the aggregate posterior (the rows' posteriors), or a Gaussian mixture fit to it
LATENTS = ("prior", "aggregate", "gmm")


@torch.no_grad()
def aggregate_sample(model: Any, x: Tensor, n: int, *, batch: int = 1000) -> Tensor:
    """n draws ``[n, D]`` of the aggregate posterior (1/N) sum_i q(z | x_i) of the rows ``x`` ``[N, C]``: for each,
    a row i, then z ~ q(z | x_i). The rows are stratified (the module docstring): each row's count is
    floor(n / N) or one more, and the draws come in a random order.

    Draws use torch's global generator (``torch.manual_seed``); rows are encoded ``batch`` at a time.
    """
    rows = torch.cat([torch.randperm(len(x)) for _ in range(-(-n // len(x)))])[:n]  # [n]: whole rounds, then a part
    return torch.cat([model.encode(x[part]).sample() for part in rows.split(batch)])


@torch.no_grad()
def aggregate_posterior(
    model: Any, x: Tensor, *, draws: int = 10, max_components: int = 10, seed: int = 0, batch: int = 1000
) -> MixtureSameFamily:
    """A Gaussian mixture over z ``[D]`` fit to ``draws`` draws of q(z | x_i) for each row of ``x`` ``[N, C]``.

    The number of components is the BIC's choice among 1..``max_components`` (at most one per
    row drawn); a ridge of 1e-4 on the covariances keeps each positive definite. The draws of q
    come from a generator seeded ``seed`` (torch's global state is left as it was), and the
    mixture's EM starts from ``seed``: the same model, rows and seed give the same mixture.
    """
    from sklearn.mixture import GaussianMixture

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = torch.cat([model.encode(xb).sample((draws,)).flatten(0, 1) for xb in x.split(batch)])  # [S N, D]
    data = z.double().cpu().numpy()
    fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(data)
            for k in range(1, min(max_components, len(x)) + 1)]  # fmt: skip
    best = min(fits, key=lambda g: g.bic(data))
    return _mixture(best)


def _mixture(g: Any) -> MixtureSameFamily:
    """sklearn's fitted ``GaussianMixture`` as torch's mixture (float32)."""
    weights = torch.as_tensor(np.asarray(g.weights_), dtype=torch.float32)
    loc = torch.as_tensor(np.asarray(g.means_), dtype=torch.float32)  # [K, D]
    tril = torch.linalg.cholesky(torch.as_tensor(np.asarray(g.covariances_), dtype=torch.float64)).float()  # [K, D, D]
    return MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(loc, scale_tril=tril))
