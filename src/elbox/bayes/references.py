"""Built-in reference models: eight schools, Bayesian linear regression with its exact posterior,
and the posteriordb posteriors, each log density written in PyTorch from its Stan program.

posteriordb (Magnusson, Bürkner & Vehtari; github.com/stan-dev/posteriordb) gives, for each
posterior, the data, the Stan program and 10,000 gold-standard draws (NUTS). A posterior's
folder (``<data>-<model>``: ``data.json``, ``reference_draws.npz``, ``info.json``) is read from
``ELBOX_POSTERIORDB`` or ``../shared/data/posteriordb``; nothing is downloaded.

Densities follow the Stan programs, with one convention: a prior on a constrained support
is the proper density there (a half-Cauchy for ``real<lower=0> tau; tau ~ cauchy(0, 5)``),
which differs from Stan's ``target`` by a constant only. Names are 0-based (``theta[0]``);
the reference draws' Stan names (``theta[1]``) are renamed to match.
"""

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import constraints

from ..errors import ElboxError
from . import densities as log_pdf
from .model import Model, Param, positive_ordered
from .model import ordered as ordered_support

__all__ = [
    "EIGHT_SCHOOLS",
    "POSTERIORDB",
    "Comparison",
    "Reference",
    "compare",
    "eight_schools",
    "linear_regression",
    "linear_regression_posterior",
    "load",
    "posteriordb_folder",
]

EIGHT_SCHOOLS = {
    "J": 8,
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
}  # Rubin (1981); fmt: skip


@dataclass
class Reference:
    """A built-in model with its data and, where posteriordb has them, reference draws
    ``{name: [10000]}`` (constrained, 0-based scalar names)."""

    name: str
    model: Model
    data: dict[str, Any]
    draws: dict[str, np.ndarray] | None = None
    info: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- eight schools


def eight_schools(centered: bool = False) -> Model:
    """Rubin's eight schools (Gelman et al., BDA 5.5): y_j ~ N(theta_j, sigma_j), theta_j ~ N(mu, tau),
    mu ~ N(0, 5), tau ~ half-Cauchy(5). Non-centered: theta = mu + tau * theta_trans, theta_trans ~ N(0, 1)
    (``theta`` is then a transformed quantity). The centered form has a funnel between tau and theta."""
    if centered:
        params = {"theta": Param(8), "mu": Param(), "tau": Param(support=constraints.positive)}
        prior = lambda p: (  # noqa: E731
            log_pdf.normal(p["theta"], p["mu"][:, None], p["tau"][:, None]).sum(-1) + _mu_tau(p)
        )
        return Model(params, prior, lambda p, d: log_pdf.normal(d["y"], p["theta"], d["sigma"]),
                     observed=("y", "sigma"), name="eight_schools_centered")  # fmt: skip
    params = {"theta_trans": Param(8), "mu": Param(), "tau": Param(support=constraints.positive)}
    theta = lambda p: torch.addcmul(p["mu"][:, None], p["tau"][:, None], p["theta_trans"])  # noqa: E731
    return Model(
        params, lambda p: log_pdf.normal(p["theta_trans"], 0.0, 1.0).sum(-1) + _mu_tau(p),
        lambda p, d: log_pdf.normal(d["y"], theta(p), d["sigma"]), observed=("y", "sigma"),
        transformed=lambda p: {"theta": theta(p)}, name="eight_schools_noncentered",
    )  # fmt: skip


def _mu_tau(p: dict[str, Tensor]) -> Tensor:
    return log_pdf.normal(p["mu"], 0.0, 5.0) + log_pdf.half_cauchy(p["tau"], 5.0)


# ----------------------------------------------------------------------------- linear regression


def linear_regression(dim: int, noise: float = 1.0, prior_scale: float = 10.0) -> Model:
    """Bayesian linear regression y ~ N(X beta, noise^2), beta ~ N(0, prior_scale^2 I) in R^dim, noise
    known: a Gaussian posterior known exactly (``linear_regression_posterior``). Data: ``X`` ``[N, dim]``,
    ``y`` ``[N]``."""
    return Model(
        {"beta": Param(dim)}, lambda p: log_pdf.normal(p["beta"], 0.0, prior_scale).sum(-1),
        lambda p, d: log_pdf.normal(d["y"], p["beta"] @ d["X"].T, noise), observed=("X", "y"),
        name="linear_regression",
    )  # fmt: skip


def linear_regression_posterior(
    x: Tensor, y: Tensor, noise: float = 1.0, prior_scale: float = 10.0
) -> tuple[Tensor, Tensor, float]:
    """The exact posterior N(m, S) of ``linear_regression`` and its log evidence log p(y | X):

    S = (X^T X / noise^2 + I / prior_scale^2)^-1,   m = S X^T y / noise^2,
    y ~ N(0, prior_scale^2 X X^T + noise^2 I) marginally.
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    precision = x.T @ x / noise**2 + torch.eye(x.shape[1], dtype=x.dtype) / prior_scale**2
    cov = torch.linalg.inv(precision)
    mean = cov @ x.T @ y / noise**2
    marginal = prior_scale**2 * x @ x.T + noise**2 * torch.eye(x.shape[0], dtype=x.dtype)
    log_evidence = torch.distributions.MultivariateNormal(torch.zeros_like(y), marginal).log_prob(y)
    return mean, (cov + cov.T) / 2, float(log_evidence)


# ----------------------------------------------------------------------------- posteriordb models


def _kilpisjarvi(data: dict[str, Any]) -> Model:
    # alpha ~ normal(pmualpha, psalpha); beta ~ normal(pmubeta, psbeta); sigma flat on (0, inf);
    # y ~ normal(alpha + beta x, sigma)
    (mu_a, sd_a), (mu_b, sd_b) = ((float(data[f"pmu{n}"]), float(data[f"ps{n}"])) for n in ("alpha", "beta"))
    params = {"alpha": Param(), "beta": Param(), "sigma": Param(support=constraints.positive)}
    mean = lambda p, d: p["alpha"][:, None] + p["beta"][:, None] * d["x"]  # noqa: E731
    return Model(
        params, lambda p: log_pdf.normal(p["alpha"], mu_a, sd_a) + log_pdf.normal(p["beta"], mu_b, sd_b),
        lambda p, d: log_pdf.normal(d["y"], mean(p, d), p["sigma"][:, None]), observed=("x", "y"), name="kilpisjarvi",
    )  # fmt: skip


def _blr() -> Model:
    # beta ~ normal(0, 10); sigma ~ normal(0, 10) on (0, inf); y ~ normal(X beta, sigma)
    params = {"beta": Param(5), "sigma": Param(support=constraints.positive)}
    prior = lambda p: log_pdf.normal(p["beta"], 0.0, 10.0).sum(-1) + log_pdf.half_normal(p["sigma"], 10.0)  # noqa: E731
    likelihood = lambda p, d: log_pdf.normal(d["y"], p["beta"] @ d["X"].T, p["sigma"][:, None])  # noqa: E731
    return Model(params, prior, likelihood, observed=("X", "y"), name="blr")


def _diamonds() -> Model:
    # brms: b ~ normal(0, 1); Intercept ~ student_t(3, 8, 10); sigma ~ student_t(3, 0, 10) on (0, inf);
    # Y ~ normal(Intercept + Xc b, sigma), Xc = the columns 2..K of X, centered
    params = {"b": Param(24), "Intercept": Param(), "sigma": Param(support=constraints.positive)}
    prior = lambda p: (log_pdf.normal(p["b"], 0.0, 1.0).sum(-1) + log_pdf.student_t(p["Intercept"], 3.0, 8.0, 10.0)  # noqa: E731
                       + log_pdf.half_student_t(p["sigma"], 3.0, 10.0))  # fmt: skip
    return Model(params, prior, _gaussian_glm, name="diamonds")


def _gaussian_glm(p: dict[str, Tensor], d: dict[str, Any]) -> Tensor:
    """sum_n log N(Y_n; Intercept + x_n b, sigma) from the sufficient statistics of ``_diamonds_data``: ``[K]``.

    With y_n = Y_n - mean(Y) and c = Intercept - mean(Y), the sum of squares is
    S = sum_n (y_n - c - x_n b)^2 = yy - 2 c sy - 2 b.xy + N c^2 + 2 c b.sx + b^T G b  (G = X^T X [24, 24]),
    so a draw costs O(24^2) instead of O(5,000 x 24): the verdict's 20,000 draws took 3.5 s row by row.
    Centering Y keeps yy near N var(Y), not N mean(Y)^2, so the cancellation costs no digits that matter."""
    b, c, sigma = p["b"], p["Intercept"] - d["ybar"], p["sigma"]
    squares = (d["yy"] - 2 * c * d["sy"] - 2 * b @ d["xy"] + d["n"] * c**2 + 2 * c * (b @ d["sx"])
               + ((b @ d["xx"]) * b).sum(-1))  # fmt: skip
    return -d["n"] * (sigma.log() + log_pdf._LOG_SQRT_2PI) - squares / (2 * sigma**2)


def _diamonds_data(data: dict[str, Any]) -> dict[str, Any]:
    """The centered predictors Xc and Y (as the Stan program's transformed data), and the sufficient statistics
    of ``_gaussian_glm``."""
    x = np.asarray(data["X"], dtype=np.float64)[:, 1:]
    x = x - x.mean(0)
    y = np.asarray(data["Y"], dtype=np.float64)
    ybar = float(y.mean())
    yc = y - ybar
    return {"Y": y, "Xc": x, "ybar": ybar, "n": float(len(y)), "yy": float(yc @ yc), "sy": float(yc.sum()),
            "xy": x.T @ yc, "sx": x.sum(0), "xx": x.T @ x}  # fmt: skip


def _low_dim_gauss_mix() -> Model:
    # sigma ~ normal(0, 2) on (0, inf); mu ~ normal(0, 2), ordered; theta ~ beta(5, 5);
    # y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2)
    params = {"mu": Param(2, support=ordered_support), "sigma": Param(2, support=constraints.positive),
              "theta": Param(support=constraints.unit_interval)}  # fmt: skip
    prior = lambda p: (log_pdf.half_normal(p["sigma"], 2.0).sum(-1) + log_pdf.normal(p["mu"], 0.0, 2.0).sum(-1)  # noqa: E731
                       + log_pdf.beta(p["theta"], 5.0, 5.0))  # fmt: skip

    def likelihood(p: dict[str, Tensor], d: dict[str, Any]) -> Tensor:
        components = log_pdf.normal(d["y"][None, :, None], p["mu"][:, None, :], p["sigma"][:, None, :])  # [K, N, 2]
        theta = p["theta"][:, None]
        return torch.logaddexp(theta.log() + components[..., 0], torch.log1p(-theta) + components[..., 1])

    return Model(params, prior, likelihood, observed=("y",), name="low_dim_gauss_mix")


def _hmm_example() -> Model:
    # mu_1 ~ normal(3, 1), mu_2 ~ normal(10, 1), positive ordered; rows of the transition matrix
    # theta1, theta2 on the simplex (flat); y_t ~ normal(mu_{z_t}, 1), the states z summed out by the
    # forward algorithm (Stan's gamma[1, k] = normal_lpdf(y[1] | mu[k], 1): no initial distribution)
    params = {"theta1": Param(2, support=constraints.simplex), "theta2": Param(2, support=constraints.simplex),
              "mu": Param(2, support=positive_ordered)}  # fmt: skip
    prior = lambda p: log_pdf.normal(p["mu"][:, 0], 3.0, 1.0) + log_pdf.normal(p["mu"][:, 1], 10.0, 1.0)  # noqa: E731

    def likelihood(p: dict[str, Tensor], d: dict[str, Any]) -> Tensor:
        emissions = log_pdf.normal(d["y"][None, :, None], p["mu"][:, None, :], 1.0)  # [K, N, 2]: log p(y_t | z_t = k)
        log_theta = torch.stack([p["theta1"], p["theta2"]], -2).log()  # [K, 2 (from), 2 (to)]
        steps = log_theta[:, None] + emissions[:, 1:, None, :]  # [K, N-1, 2, 2]: the forward step t-1 -> t
        return torch.logsumexp(emissions[:, 0, :, None] + _log_matrix_product(steps), (-2, -1))

    return Model(params, prior, likelihood, name="hmm_example")


def _log_matrix_product(m: Tensor) -> Tensor:
    """The product of the matrices ``m[:, 0] ... m[:, T-1]`` in log space, ``[K, T, n, n] -> [K, n, n]``,
    by pairwise reduction: log2(T) batched steps instead of T sequential ones.

    Each matrix is scaled to largest entry 1 (exp(m - c), log c kept aside), the pairs are multiplied with
    ``matmul`` and rescaled the same way at every level: exact to rounding (tested against Stan's forward
    recursion to 1e-9), and half the time of a log-sum-exp over an [n, n, n] broadcast at 2,048 draws.
    ``_TINY`` keeps a product that underflows entirely (only at points where that log-likelihood term is
    some 690 nats below its largest) from turning into log 0 and NaN gradients."""
    c = m.amax((-2, -1), keepdim=True)  # [K, T, 1, 1]
    p, log_scale = (m - c).exp(), c.sum(1)  # [K, T, n, n], [K, 1, 1]
    while p.shape[1] > 1:
        odd = p[:, -1:] if p.shape[1] % 2 else None
        even = p[:, : p.shape[1] - (odd is not None)]
        p = even[:, 0::2] @ even[:, 1::2]
        s = p.amax((-2, -1), keepdim=True).clamp_min(_TINY)
        p, log_scale = p / s, log_scale + s.log().sum(1)
        if odd is not None:
            p = torch.cat([p, odd], 1)
    return p[:, 0].clamp_min(_TINY).log() + log_scale


_TINY = 1e-300


@dataclass(frozen=True)
class _Posteriordb:
    folder: str
    build: Callable[[dict[str, Any]], Model]  # from the data (kilpisjarvi's prior reads it)
    data: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d


POSTERIORDB = {
    "eight_schools_noncentered": _Posteriordb("eight_schools-eight_schools_noncentered", lambda d: eight_schools()),
    "eight_schools_centered": _Posteriordb("eight_schools-eight_schools_centered", lambda d: eight_schools(True)),
    "kilpisjarvi": _Posteriordb("kilpisjarvi_mod-kilpisjarvi", _kilpisjarvi),
    "blr": _Posteriordb("sblrc-blr", lambda d: _blr()),
    "diamonds": _Posteriordb("diamonds-diamonds", lambda d: _diamonds(), _diamonds_data),
    "low_dim_gauss_mix": _Posteriordb("low_dim_gauss_mix-low_dim_gauss_mix", lambda d: _low_dim_gauss_mix()),
    "hmm_example": _Posteriordb("hmm_example-hmm_example", lambda d: _hmm_example()),
}
_ALIASES = {entry.folder: name for name, entry in POSTERIORDB.items()}


def posteriordb_folder(path: str | Path | None = None) -> Path:
    """The posteriordb folder: ``path``, else ``ELBOX_POSTERIORDB``, else ``../shared/data/posteriordb``."""
    folder = Path(path or os.environ.get("ELBOX_POSTERIORDB", "../shared/data/posteriordb"))
    if not folder.is_dir():
        raise ElboxError(
            f"the posteriordb folder {folder} does not exist: pass its path (--posteriordb DIR) or set "
            "ELBOX_POSTERIORDB; it holds one folder per posterior with data.json and reference_draws.npz"
        )
    return folder


def load(name: str, folder: str | Path | None = None) -> Reference:
    """A built-in model by name (``POSTERIORDB``'s keys or posteriordb's ``<data>-<model>`` folder
    names) with its data and reference draws. The eight-schools models need no folder: their
    data are built in, and the reference draws are added when the folder is there."""
    key = _ALIASES.get(name, name)
    if key not in POSTERIORDB:
        raise ElboxError(f"unknown model {name!r}: choose one of {', '.join(POSTERIORDB)}")
    entry = POSTERIORDB[key]
    if key.startswith("eight_schools") and folder is None and not _default_present(entry.folder):
        return Reference(key, entry.build(EIGHT_SCHOOLS), dict(EIGHT_SCHOOLS))
    path = posteriordb_folder(folder) / entry.folder
    if not path.is_dir():
        raise ElboxError(f"{path} is missing: the posteriordb folder has no {entry.folder}")
    # every array of these Stan programs is real (``vector``, ``array[] real``); JSON writes 28.0 as 28
    raw = {k: np.asarray(v, dtype=np.float64) if isinstance(v, list) else v
           for k, v in json.loads((path / "data.json").read_text()).items()}  # fmt: skip
    model, data = entry.build(raw), entry.data(raw)
    with np.load(path / "reference_draws.npz") as f:
        draws = f["draws"].reshape(-1, f["draws"].shape[-1])
        names = [_zero_based(str(n)) for n in f["names"]]
    info = json.loads((path / "info.json").read_text())
    return Reference(key, model, data, {n: draws[:, i] for i, n in enumerate(names)}, info)


def _default_present(folder: str) -> bool:
    try:
        return (posteriordb_folder() / folder).is_dir()
    except ElboxError:
        return False


def _zero_based(stan_name: str) -> str:
    """``theta[1]`` -> ``theta[0]``, ``L[2,1]`` -> ``L[1,0]``."""
    return re.sub(r"\[([\d,]+)\]", lambda m: "[" + ",".join(str(int(i) - 1) for i in m.group(1).split(",")) + "]",
                  stan_name)  # fmt: skip


# ----------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Draws from q against reference draws, per scalar quantity both have: the mean error in
    reference sds, the sd ratio q / reference, and the 1-Wasserstein distance in reference sds."""

    names: list[str]
    mean_error: np.ndarray
    sd_ratio: np.ndarray
    wasserstein: np.ndarray

    def passes(self, mean_tol: float = 0.1, sd_tol: float = 0.1) -> bool:
        """Every mean within ``mean_tol`` reference sds and every sd within ``sd_tol`` of the reference."""
        return bool((np.abs(self.mean_error) <= mean_tol).all() and (np.abs(self.sd_ratio - 1) <= sd_tol).all())

    def __str__(self) -> str:
        width = max(8, *map(len, self.names))
        head = f"{'':<{width}} {'mean err (sd)':>14} {'sd ratio':>9} {'W1 (sd)':>8}"
        rows = [f"{n:<{width}} {e:>+14.3f} {r:>9.3f} {w:>8.3f}"
                for n, e, r, w in zip(self.names, self.mean_error, self.sd_ratio, self.wasserstein,
                                      strict=True)]  # fmt: skip
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {n: {"mean_error": float(self.mean_error[i]), "sd_ratio": float(self.sd_ratio[i]),
                    "wasserstein": float(self.wasserstein[i])} for i, n in enumerate(self.names)}  # fmt: skip


def compare(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> Comparison:
    """Compare draws ``{name: [n]}`` with reference draws ``{name: [m]}`` on the names they share."""
    names = [n for n in reference if n in draws]
    if not names:
        raise ElboxError("the draws and the reference share no quantity name")
    rows = []
    for n in names:
        x, ref = np.asarray(draws[n], dtype=np.float64), np.asarray(reference[n], dtype=np.float64)
        sd = ref.std(ddof=1)
        rows.append(((x.mean() - ref.mean()) / sd, x.std(ddof=1) / sd, wasserstein_1d(x, ref) / sd))
    error, ratio, w1 = map(np.array, zip(*rows, strict=True))
    return Comparison(names, error, ratio, w1)


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """The 1-Wasserstein distance between the empirical distributions of samples u ``[n]`` and v ``[m]``:
    the integral of |F_u(t) - F_v(t)| over t, exact between successive pooled sample values.

    The algorithm of ``scipy.stats.wasserstein_distance``, written here so that ``elbox fit`` does
    not import scipy.stats (half a second) for one function.
    """
    u, v = np.sort(np.asarray(u, dtype=np.float64)), np.sort(np.asarray(v, dtype=np.float64))
    pooled = np.sort(np.concatenate((u, v)), kind="mergesort")  # [n + m]
    u_cdf = u.searchsorted(pooled[:-1], "right") / u.size  # F_u on each interval between pooled values
    v_cdf = v.searchsorted(pooled[:-1], "right") / v.size
    return float(np.abs(u_cdf - v_cdf) @ np.diff(pooled))
