"""Bayesian models: named, constrained parameters and a log-joint; one global q fitted to their
posterior (the Laplace approximation first, deterministic L-BFGS fits, Adam where it pays); PSIS
diagnostics and a trust verdict; ArviZ export; built-in reference models.

Rubin's eight schools, non-centered:

>>> import torch
>>> from torch.distributions import HalfCauchy, Normal, constraints
>>> from elbox import bayes
>>> def prior(p):  # each parameter arrives with a leading dimension of K particles
...     return (Normal(0.0, 5.0).log_prob(p["mu"]) + HalfCauchy(5.0).log_prob(p["tau"])
...             + Normal(0.0, 1.0).log_prob(p["eta"]).sum(-1))
>>> def likelihood(p, data):  # one term per school: [K, 8]
...     theta = p["mu"][:, None] + p["tau"][:, None] * p["eta"]
...     return Normal(theta, data["sigma"]).log_prob(data["y"])
>>> params = {"mu": bayes.Param(), "tau": bayes.Param(support=constraints.positive), "eta": bayes.Param(8)}
>>> model = bayes.Model(params, prior, likelihood, observed=("y", "sigma"))
>>> data = {"y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
...         "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]}
>>> posterior = bayes.fit(model, data, family="fullrank", progress=False)
>>> draws = posterior.sample(4000, seed=0)  # constrained: {"mu": [4000], "tau": [4000], "eta": [4000, 8]}
>>> draws["eta"].shape, bool((draws["tau"] > 0).all()), 3.5 < draws["mu"].mean().item() < 5.5
(torch.Size([4000, 8]), True, True)
>>> posterior.diagnostics().verdict  # a Gaussian misses tau's tail: family="auto" moves on to a flow
'do not trust'
>>> print(posterior.diagnostics())  # k-hats, ESS, ELBO and log p(x) ± SE, the verdict and its reasons
PSIS k-hat over 4 x 5000 draws: ...
verdict: DO NOT TRUST
  - ...
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_face

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time ``__getattr__`` imports on demand
    from .diagnostics import Diagnostics, diagnose, verdict
    from .files import is_model_file, load_data_file, load_files, load_model_file, write_data_file
    from .fitting import AUTO, FLOW, LAPLACE, Convergence, fit
    from .laplace import Start, find_start
    from .large import find_start_at_scale, fit_at_scale
    from .model import Model, Param, ordered, positive_ordered
    from .posterior import Posterior, Summary
    from .references import Comparison, Reference, compare, eight_schools, linear_regression, load
    from .saa import Stopping
    from .shard import ShardedModel, shard_data
    from .subsample import diagnose_at_scale

# public name -> the module that defines it (a lazy face, PEP 562: nothing is imported until used)
_MODULES = {
    **dict.fromkeys(("find_start_at_scale", "fit_at_scale"), "large"),
    **dict.fromkeys(("ShardedModel", "shard_data"), "shard"),
    "diagnose_at_scale": "subsample",
    **dict.fromkeys(
        (
            "Diagnostics",
            "diagnose",
            "verdict",
        ),
        "diagnostics",
    ),
    **dict.fromkeys(
        (
            "is_model_file",
            "load_data_file",
            "load_files",
            "load_model_file",
            "write_data_file",
        ),
        "files",
    ),
    **dict.fromkeys(
        (
            "AUTO",
            "FLOW",
            "LAPLACE",
            "Convergence",
            "fit",
        ),
        "fitting",
    ),
    **dict.fromkeys(
        (
            "Start",
            "find_start",
        ),
        "laplace",
    ),
    **dict.fromkeys(
        (
            "Model",
            "Param",
            "ordered",
            "positive_ordered",
        ),
        "model",
    ),
    **dict.fromkeys(
        (
            "Posterior",
            "Summary",
        ),
        "posterior",
    ),
    **dict.fromkeys(
        (
            "Comparison",
            "Reference",
            "compare",
            "eight_schools",
            "linear_regression",
            "load",
        ),
        "references",
    ),
    **dict.fromkeys(("Stopping",), "saa"),
}

__all__ = [
    "AUTO",
    "FLOW",
    "LAPLACE",
    "Comparison",
    "Convergence",
    "Diagnostics",
    "Model",
    "Param",
    "Posterior",
    "Reference",
    "ShardedModel",
    "Start",
    "Stopping",
    "Summary",
    "compare",
    "diagnose",
    "diagnose_at_scale",
    "eight_schools",
    "find_start",
    "find_start_at_scale",
    "fit",
    "fit_at_scale",
    "is_model_file",
    "linear_regression",
    "load",
    "load_data_file",
    "load_files",
    "load_model_file",
    "ordered",
    "positive_ordered",
    "shard_data",
    "verdict",
    "write_data_file",
]


__getattr__, __dir__ = lazy_face(__name__, _MODULES, __all__)
