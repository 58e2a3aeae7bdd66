"""Logistic regression: y_n ~ Bernoulli(logit^-1(alpha + X_n beta)), alpha, beta_d ~ N(0, 2.5^2).

Data (data.csv, made by generate.py): the outcome ``y`` (0 or 1) and the predictors ``X[0]``, ``X[1]``, ...,
one column each (elbox gathers them into the matrix X [N, D]). Fit it with

    elbox fit examples/logistic/model.py --data examples/logistic/data.csv
"""

from typing import Any

from torch import Tensor
from torch.distributions import Bernoulli, Normal

from elbox import bayes


def model(data: dict[str, Any]) -> bayes.Model:
    """The model for data with D = X.shape[1] predictors: the parameters' shapes follow the data."""
    d = data["X"].shape[1]

    def prior(p: dict[str, Tensor]) -> Tensor:  # parameters arrive with K particles first: alpha [K], beta [K, D]
        return Normal(0.0, 2.5).log_prob(p["alpha"]) + Normal(0.0, 2.5).log_prob(p["beta"]).sum(-1)

    def likelihood(p: dict[str, Tensor], data: dict[str, Tensor]) -> Tensor:  # one term per observation: [K, N]
        logits = p["alpha"][:, None] + p["beta"] @ data["X"].T
        return Bernoulli(logits=logits).log_prob(data["y"].to(logits.dtype))

    return bayes.Model({"alpha": bayes.Param(), "beta": bayes.Param(d)}, prior, likelihood, observed=("X", "y"))
