"""Poisson generalized linear mixed model: counts with a random intercept per group and an exposure offset,

    y_n ~ Poisson(exposure_n exp(alpha + beta x_n + u[g_n])),   u_j = tau z_j,   z_j ~ N(0, 1),
    alpha ~ N(0, 5^2),  beta ~ N(0, 2.5^2),  tau ~ half-N(0, 1).

Data (data.csv, made by generate.py): one row per observation with the group ``g`` (integers
0..J-1), the predictor ``x``, the ``exposure`` (> 0) and the count ``y``.

    elbox fit examples/poisson_glmm/model.py --data examples/poisson_glmm/data.csv
"""

from typing import Any

from torch import Tensor
from torch.distributions import HalfNormal, Normal, Poisson, constraints

from elbox import bayes


def model(data: dict[str, Any]) -> bayes.Model:
    """The number of groups J is read off the data: the largest group index + 1."""
    groups = int(data["g"].max()) + 1
    params = {"alpha": bayes.Param(), "beta": bayes.Param(), "tau": bayes.Param(support=constraints.positive),
              "z": bayes.Param(groups)}  # fmt: skip

    def prior(p: dict[str, Tensor]) -> Tensor:  # [K]
        return (Normal(0.0, 5.0).log_prob(p["alpha"]) + Normal(0.0, 2.5).log_prob(p["beta"])
                + HalfNormal(1.0).log_prob(p["tau"]) + Normal(0.0, 1.0).log_prob(p["z"]).sum(-1))  # fmt: skip

    def likelihood(p: dict[str, Tensor], data: dict[str, Tensor]) -> Tensor:  # one term per observation: [K, N]
        u = p["tau"][:, None] * p["z"]  # [K, J]
        log_rate = data["exposure"].log() + p["alpha"][:, None] + p["beta"][:, None] * data["x"] + u[:, data["g"]]
        return Poisson(log_rate.exp()).log_prob(data["y"].to(log_rate.dtype))

    return bayes.Model(params, prior, likelihood, observed=("g", "x", "exposure", "y"),
                       transformed=lambda p: {"u": p["tau"][:, None] * p["z"]})  # fmt: skip
