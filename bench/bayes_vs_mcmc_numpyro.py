"""The posteriordb posteriors in NumPyro, fitted by NUTS or SVI: the peer side of bench/bayes_vs_mcmc.py.

Run by the bench-only interpreter (``~/benchenv``: jax, numpyro; never a dependency of elbox):

    python bench/bayes_vs_mcmc_numpyro.py NAME {nuts,svi-normal,svi-mvn} [--posteriordb DIR]

Each model is the Stan program of posteriordb (as ``elbox.bayes.references`` writes it in
PyTorch), in float64. NUTS: 4 chains x (1,000 warm-up + 1,000 draws), run one after the other,
compilation included. SVI: AutoNormal or AutoMultivariateNormal, Adam(0.01), 10,000 steps, then
4,000 draws from q. Prints one JSON line: the worst |mean error| over the reference's quantities
in reference sds (the check: within 0.1 for NUTS), and for NUTS the smallest ESS and largest R-hat.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, autoguide

numpyro.enable_x64()

FOLDERS = {
    "eight_schools_noncentered": "eight_schools-eight_schools_noncentered",
    "eight_schools_centered": "eight_schools-eight_schools_centered",
    "kilpisjarvi": "kilpisjarvi_mod-kilpisjarvi",
    "blr": "sblrc-blr",
    "diamonds": "diamonds-diamonds",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix",
    "hmm_example": "hmm_example-hmm_example",
}


def _mu_tau() -> tuple:
    return numpyro.sample("mu", dist.Normal(0.0, 5.0)), numpyro.sample("tau", dist.HalfCauchy(5.0))


def eight_schools_noncentered(d: dict) -> None:
    mu, tau = _mu_tau()
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([8]).to_event(1))
    theta = numpyro.deterministic("theta", mu + tau * theta_trans)
    numpyro.sample("y", dist.Normal(theta, d["sigma"]).to_event(1), obs=d["y"])


def eight_schools_centered(d: dict) -> None:
    mu, tau = _mu_tau()
    theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([8]).to_event(1))
    numpyro.sample("y", dist.Normal(theta, d["sigma"]).to_event(1), obs=d["y"])


def kilpisjarvi(d: dict) -> None:
    alpha = numpyro.sample("alpha", dist.Normal(d["pmualpha"], d["psalpha"]))
    beta = numpyro.sample("beta", dist.Normal(d["pmubeta"], d["psbeta"]))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))  # flat on (0, inf)
    numpyro.sample("y", dist.Normal(alpha + beta * d["x"], sigma).to_event(1), obs=d["y"])


def blr(d: dict) -> None:
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([d["X"].shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(d["X"] @ beta, sigma).to_event(1), obs=d["y"])


def diamonds(d: dict) -> None:
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([d["Xc"].shape[1]]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    numpyro.factor("sigma_prior", dist.StudentT(3.0, 0.0, 10.0).log_prob(sigma))  # half-t, up to a constant
    numpyro.sample("Y", dist.Normal(intercept + d["Xc"] @ b, sigma).to_event(1), obs=d["Y"])


def low_dim_gauss_mix(d: dict) -> None:
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    components = dist.Normal(mu, sigma).log_prob(d["y"][:, None])  # [N, 2]
    numpyro.factor("y", jnp.logaddexp(jnp.log(theta) + components[:, 0], jnp.log1p(-theta) + components[:, 1]).sum())


def hmm_example(d: dict) -> None:
    theta1 = numpyro.sample("theta1", dist.Dirichlet(jnp.ones(2)))  # flat on the simplex
    theta2 = numpyro.sample("theta2", dist.Dirichlet(jnp.ones(2)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(3.0, 1.0).log_prob(mu[0]) + dist.Normal(10.0, 1.0).log_prob(mu[1]))
    log_theta = jnp.log(jnp.stack([theta1, theta2]))  # [from, to]
    emissions = dist.Normal(mu, 1.0).log_prob(d["y"][:, None])  # [N, 2]

    def step(gamma: jnp.ndarray, emission: jnp.ndarray) -> tuple:
        return jax.nn.logsumexp(gamma[:, None] + log_theta, 0) + emission, None

    gamma, _ = jax.lax.scan(step, emissions[0], emissions[1:])
    numpyro.factor("y", jax.nn.logsumexp(gamma))


def load(name: str, folder: Path) -> tuple[dict, dict]:
    path = folder / FOLDERS[name]
    raw = json.loads((path / "data.json").read_text())
    data = {k: jnp.asarray(v, dtype=jnp.float64) if isinstance(v, list) else v for k, v in raw.items()}
    if name == "diamonds":
        x = np.asarray(raw["X"], dtype=np.float64)[:, 1:]
        data = {"Y": jnp.asarray(raw["Y"], dtype=jnp.float64), "Xc": jnp.asarray(x - x.mean(0))}
    with np.load(path / "reference_draws.npz") as f:
        draws = f["draws"].reshape(-1, f["draws"].shape[-1])
        names = [re.sub(r"\[(\d+)\]", lambda m: f"[{int(m.group(1)) - 1}]", str(n)) for n in f["names"]]
    return data, {n: draws[:, i] for i, n in enumerate(names)}


def columns(samples: dict) -> dict[str, np.ndarray]:
    """``{site: [n, *shape]}`` -> ``{"theta[0]": [n], ...}`` (0-based)."""
    out = {}
    for site, v in samples.items():
        v = np.asarray(v).reshape(np.shape(v)[0], -1)
        for i in range(v.shape[1]):
            out[site if v.shape[1] == 1 and np.ndim(samples[site]) == 1 else f"{site}[{i}]"] = v[:, i]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=FOLDERS)
    parser.add_argument("method", choices=("nuts", "svi-normal", "svi-mvn"))
    parser.add_argument("--posteriordb", type=Path, default=Path("../shared/data/posteriordb"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, reference = load(args.name, args.posteriordb)
    model = globals()[args.name]
    key = jax.random.PRNGKey(args.seed)
    result: dict = {"name": args.name, "method": args.method}
    if args.method == "nuts":
        mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, chain_method="sequential",
                    progress_bar=False)  # fmt: skip
        mcmc.run(key, data)
        samples = mcmc.get_samples()
        summary = numpyro.diagnostics.summary(mcmc.get_samples(group_by_chain=True), group_by_chain=True)
        result["min_ess"] = float(min(np.min(s["n_eff"]) for s in summary.values()))
        result["max_rhat"] = float(max(np.max(s["r_hat"]) for s in summary.values()))
        result["divergences"] = int(mcmc.get_extra_fields()["diverging"].sum())
    else:
        guide = (autoguide.AutoNormal if args.method == "svi-normal" else autoguide.AutoMultivariateNormal)(model)
        svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
        run = svi.run(key, 10_000, data, progress_bar=False)
        sites = sorted({n.split("[")[0] for n in reference})  # the latent and deterministic sites compared
        predictive = numpyro.infer.Predictive(model, guide=guide, params=run.params, num_samples=4000,
                                              return_sites=sites)  # fmt: skip
        samples = predictive(jax.random.PRNGKey(args.seed + 1), data)
    draws = columns(samples)
    errors = {n: abs(draws[n].mean() - ref.mean()) / ref.std(ddof=1) for n, ref in reference.items() if n in draws}
    missing = sorted(set(reference) - set(draws))
    result |= {"max_mean_error_sd": float(max(errors.values())), "worst": max(errors, key=errors.get),
               "compared": len(errors), "missing": missing}  # fmt: skip
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
