"""Issue 20's N = 10^4 fixed effects: elbox fits against a saved NUTS reference, deviations in NUTS sds.

    ~/benchenv/bin/python bench/bayes_scale_fe.py nuts                  # 1,000 + 4,000 draws -> /tmp/fe10k_nuts.npz
    PYTHONPATH=src python bench/bayes_scale_fe.py FIT                   # FIT: laplace mf_lbfgs mf_adam scale

Same data and model as bench/bayes_scale.py. Prints one JSON line per fit: rms / max deviation of the 20
fixed effects' means from NUTS's in NUTS sds, the slope of elbox's means on NUTS's, sigma's mean and sd.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import bayes_scale as bs


def nuts() -> None:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS
    jax.config.update("jax_enable_x64", True)
    D, G = 20, 1000
    data = bs.simulate(10000)
    x, g, y = jnp.asarray(data["x"]), jnp.asarray(data["g"]), jnp.asarray(data["y"])
    def model():
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([D]).to_event(1))
        a0 = numpyro.sample("a0", dist.Normal(0, 2))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1))
        z = numpyro.sample("z", dist.Normal(0, 1).expand([G]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta + a0 + sigma * z[g]), obs=y)
    t0 = time.perf_counter()
    m = MCMC(NUTS(model), num_warmup=1000, num_samples=4000, progress_bar=False)
    m.run(jax.random.PRNGKey(0))
    s = m.get_samples()
    b = np.asarray(s["beta"])
    ess = effective_sample_size(b[None])
    np.savez("/tmp/fe10k_nuts.npz", mean=b.mean(0), sd=b.std(0, ddof=1), ess=ess,
             sigma=np.asarray(s["sigma"]), a0=np.asarray(s["a0"]), beta=b)
    err = (b.mean(0) - bs.truth()["beta"]) / b.std(0)
    print(json.dumps(dict(s=time.perf_counter() - t0, ess_min=float(ess.min()),
                          sigma=[float(s["sigma"].mean()), float(s["sigma"].std())],
                          a0=[float(s["a0"].mean()), float(s["a0"].std())],
                          beta_err_rms=float(np.sqrt((err**2).mean())))))


def elbox_fit() -> None:
    import torch

    from elbox import bayes
    from elbox.bayes.large import fit_at_scale
    from elbox.bayes.saa import Stopping
    from elbox.bayes.stochastic import Convergence

    name = sys.argv[1]
    nuts = np.load("/tmp/fe10k_nuts.npz")
    data, model = bs.simulate(10_000), bs.elbox_model()
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    kw = dict(progress=False, threads=1)
    if name == "laplace":
        post = bayes.fit(model, data, family="laplace", **kw)
    elif name == "mf_lbfgs":
        post = bayes.fit(model, data, family="diagonal", **kw)
    elif name == "mf_lbfgs_tight":
        post = bayes.fit(model, data, family="diagonal", particles=1024, stopping=Stopping(tol=1e-4), **kw)
    elif name == "mf_adam":
        post = bayes.fit(model, data, family="diagonal", optimizer="adam", **kw)
    elif name == "mf_adam_long":
        post = bayes.fit(model, data, family="diagonal", optimizer="adam", steps=int(sys.argv[2]),
                         convergence=Convergence(window=1000, tol=0.001), **kw)
    elif name == "scale":
        post = fit_at_scale(model, data, family="diagonal", batch_size=1000, steps=20_000, **kw)
    elif name == "scale_long":
        post = fit_at_scale(model, data, family="diagonal", batch_size=1000, steps=int(sys.argv[2]),
                            convergence=Convergence(window=1000, tol=0.001), **kw)
    elif name.startswith("lowrank") or name == "fullrank":
        post = bayes.fit(model, data, family=name, **kw)
    t = time.perf_counter() - t0
    s = post.summary(4000)
    dev = (s.mean[:20] - nuts["mean"]) / nuts["sd"]
    names = list(s.names) if hasattr(s, "names") else []
    i_sig = names.index("sigma") if "sigma" in names else 21
    out = dict(name=name, args=sys.argv[2:], seconds=round(t, 1), steps=len(post.elbo_trace), converged=post.converged,
               stopped=post.options.get("stopped"), elbo=float(post.elbo) if hasattr(post, "elbo") else None,
               rms=float(np.sqrt((dev**2).mean())), max=float(np.abs(dev).max()),
               slope=float(np.polyfit(nuts["mean"], s.mean[:20], 1)[0]),  # elbox beta ~ slope * NUTS beta
               sd_ratio=[float((s.sd[:20] / nuts["sd"]).min()), float((s.sd[:20] / nuts["sd"]).max())],
               sigma=[float(s.mean[i_sig]), float(s.sd[i_sig])], a0=[float(s.mean[20]), float(s.sd[20])])
    print(json.dumps(out))
    with open("/tmp/fe10k_results.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    np.save(f"/tmp/fe10k_{name}_trace.npy", post.elbo_trace)


if __name__ == "__main__":
    nuts() if sys.argv[1] == "nuts" else elbox_fit()
