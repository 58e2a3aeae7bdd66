"""Varying-intercept regression (a hierarchical model, non-centered):

    y_n ~ N(a[g_n] + b x_n, sigma),   a_j = mu + tau z_j,   z_j ~ N(0, 1),   j = 0..J-1,
    mu ~ N(0, 5^2),  b ~ N(0, 5^2),  tau ~ half-N(0, 2.5^2),  sigma ~ half-N(0, 2.5^2).

Writing a_j = mu + tau z_j (non-centered) instead of a_j ~ N(mu, tau) removes the funnel between
tau and the a_j that a Gaussian q cannot follow. Data (data.json, posteriordb's layout, made by
generate.py): ``J`` groups, the group ``g`` (integers 0..J-1), the predictor ``x``, the outcome ``y``.

    elbox fit examples/varying_intercept/model.py --data examples/varying_intercept/data.json
"""

from typing import Any

from torch import Tensor
from torch.distributions import HalfNormal, Normal, constraints

from elbox import bayes


def model(data: dict[str, Any]) -> bayes.Model:
    """J, the number of groups, comes from the data."""
    params = {"mu": bayes.Param(), "b": bayes.Param(), "tau": bayes.Param(support=constraints.positive),
              "sigma": bayes.Param(support=constraints.positive), "z": bayes.Param(int(data["J"]))}  # fmt: skip

    def intercepts(p: dict[str, Tensor]) -> Tensor:  # a: [K, J]
        return p["mu"][:, None] + p["tau"][:, None] * p["z"]

    def prior(p: dict[str, Tensor]) -> Tensor:  # [K]
        return (Normal(0.0, 5.0).log_prob(p["mu"]) + Normal(0.0, 5.0).log_prob(p["b"])
                + HalfNormal(2.5).log_prob(p["tau"]) + HalfNormal(2.5).log_prob(p["sigma"])
                + Normal(0.0, 1.0).log_prob(p["z"]).sum(-1))  # fmt: skip

    def likelihood(p: dict[str, Tensor], data: dict[str, Tensor]) -> Tensor:  # one term per observation: [K, N]
        mean = intercepts(p)[:, data["g"]] + p["b"][:, None] * data["x"]
        return Normal(mean, p["sigma"][:, None]).log_prob(data["y"])

    return bayes.Model(params, prior, likelihood, observed=("g", "x", "y"), transformed=lambda p: {"a": intercepts(p)})
