"""Honest evaluation of a trained VAE: log p(x) with error bars, the bounds around it, rate and
distortion, active units, mutual information, the inference-gap split and PSIS k-hat.

Every figure comes from log-weights (DESIGN.md). K particles per data point, drawn from the
encoder's q in chunks so that memory stays bounded (``particles.particles``, the one source of
them, yields ``bounds.Particles``), give

    log w[k, n] = log p(x_n | z_kn) + log p(z_kn) - log q(z_kn | x_n),   z_kn ~ q(z | x_n)   # [K, N]

and from them, per data point:

| figure | from log_w |
| --- | --- |
| log p(x) estimate | IWAE_K = log (1/K) sum_k w_k, K = 5000 (Burda et al. 2016) |
| its Monte Carlo standard error | sqrt((1/ESS - 1/K) K / (K - 1)), the delta method |
| importance ESS | 1 / sum_k w~_k^2 (Kish), w~ the normalised weights |
| PSIS k-hat | the shape of a generalised Pareto fit to the largest weights (ArviZ) |
| the IWAE_k curve | IWAE_k averaged over the K // k disjoint groups of k particles (``bounds.iwae_curve``) |
| CUBO_2 | (1/2) log (1/K) sum_k w_k^2 (Dieng et al. 2017) |

Densities are in nats per data point; a ± is a standard error over data points unless said
otherwise. Randomness goes through ``seed`` only: the caller's random state is left as it was.

Modules: ``config`` (``EvaluationConfig``), ``particles`` (the chunked, seeded draws),
``likelihood`` (log p(x) and the main pass), ``information`` (rate, mutual information, active
units), ``gaps`` (the approximation/amortization split), ``estimate``, ``result``
(``Evaluation``) and ``pipeline`` (``evaluate``).
"""

from .._lazy import lazy_face

# public name -> the module that defines it (a lazy face, PEP 562, as ``elbox`` and ``elbox.bayes``): the command
# line reads ``config`` for its options, and nothing else of the evaluation (nor torch) is imported until used
_MODULES = {
    "ACTIVE_THRESHOLD": "information", "BLOCK": "particles", "COLLAPSE_MI": "information", "COMPILE_ABOVE": "config",
    "KS": "config", "PRECISIONS": "config", "SHORTFALL": "result", "Estimate": "estimate", "Evaluation": "result",
    "EvaluationConfig": "config", "Gaps": "gaps", "LogLikelihood": "likelihood", "evaluate": "pipeline",
    "inference_gaps": "gaps", "log_likelihood": "likelihood", "mutual_information": "information",
    "unit_activity": "information",
}  # fmt: skip

__all__ = [
    "ACTIVE_THRESHOLD",
    "BLOCK",
    "COLLAPSE_MI",
    "COMPILE_ABOVE",
    "KS",
    "PRECISIONS",
    "SHORTFALL",
    "Estimate",
    "Evaluation",
    "EvaluationConfig",
    "Gaps",
    "LogLikelihood",
    "evaluate",
    "inference_gaps",
    "log_likelihood",
    "mutual_information",
    "unit_activity",
]

__getattr__, __dir__ = lazy_face(__name__, _MODULES, __all__)
