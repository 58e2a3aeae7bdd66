"""Speed of a Bayesian fit against NumPyro and Pyro: eight schools (non-centered), mean-field Gaussian
q (NumPyro's and Pyro's AutoNormal), one particle per step, Adam, the same number of steps.

Each system runs in its own process (`--worker`), the peers in a separate environment that has
them (`--peer-python`, e.g. /tmp/benchenv/bin/python with torch pinned by constraints.txt,
pyro-ppl, numpyro and jax); rounds rotate the order so machine drift hits all alike. A worker
times the whole fit as a user runs it (elbox: `bayes.fit` with its start search, STL
gradients, convergence rule off; NumPyro: `SVI.run`, one jit-compiled loop, compile
included; Pyro: a loop of `svi.step`) and the step loop alone (elbox: the fit without the
start search; NumPyro: `jax.jit(svi.update)` called `steps` times after one compiling call).

    python bench/bayes_peers.py --peer-python /tmp/benchenv/bin/python --steps 5000 --rounds 5

Ends with `RESULT elbox/numpyro=... elbox/pyro=...` (medians of per-round ratios of wall time).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
LR = 0.02


def elbox_worker(steps: int, dtype: str) -> dict:
    import torch

    from elbox import bayes

    torch.set_num_threads(1)
    reference = bayes.load("eight_schools_noncentered")
    never = bayes.Convergence(window=10 * steps)  # the rule off: exactly `steps` steps
    kwargs = dict(family="diagonal", particles=1, steps=steps, lr=LR, convergence=never, progress=False,
                  dtype=getattr(torch, dtype))  # fmt: skip
    t0 = time.perf_counter()
    posterior = bayes.fit(reference.model, reference.data, **kwargs)
    total = time.perf_counter() - t0
    return {"seconds": total, "loop_seconds": posterior.seconds, "elbo": posterior.elbo}


def numpyro_worker(steps: int) -> dict:
    import jax
    import numpyro
    import numpyro.distributions as dist
    from jax import numpy as jnp
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    def model(sigma: jnp.ndarray, y: jnp.ndarray) -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", len(sigma)):
            theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * theta_trans, sigma), obs=y)

    sigma, y = jnp.array(SIGMA), jnp.array(Y)
    svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(LR), Trace_ELBO())
    t0 = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(0), steps, sigma, y, progress_bar=False)
    result.losses.block_until_ready()
    total = time.perf_counter() - t0
    update = jax.jit(svi.update)  # the compiled step alone: compiled once, then timed over `steps` steps
    state = svi.init(jax.random.PRNGKey(1), sigma, y)
    state, loss = update(state, sigma, y)
    loss.block_until_ready()
    t0 = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, sigma, y)
    loss.block_until_ready()
    return {"seconds": total, "loop_seconds": time.perf_counter() - t0,
            "elbo": -float(result.losses[-steps // 10 :].mean())}  # fmt: skip


def pyro_worker(steps: int) -> dict:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    torch.set_num_threads(1)
    sigma, y = torch.tensor(SIGMA), torch.tensor(Y)

    def model(sigma: torch.Tensor, y: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("J", len(sigma)):
            theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * theta_trans, sigma), obs=y)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    t0 = time.perf_counter()
    losses = [svi.step(sigma, y) for _ in range(steps)]
    total = time.perf_counter() - t0
    return {"seconds": total, "loop_seconds": total, "elbo": -statistics.fmean(losses[-steps // 10 :])}


def run_worker(python: str, system: str, steps: int) -> dict:
    out = subprocess.run([python, __file__, "--worker", system, "--steps", str(steps)], check=True,
                         capture_output=True, text=True, env=os.environ | {"JAX_PLATFORMS": "cpu"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/tmp/benchenv/bin/python")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=("elbox", "elbox32", "numpyro", "pyro"))
    args = parser.parse_args()
    if args.worker:
        worker = {"elbox": lambda s: elbox_worker(s, "float64"), "elbox32": lambda s: elbox_worker(s, "float32"),
                  "numpyro": numpyro_worker, "pyro": pyro_worker}[args.worker]  # fmt: skip
        print(json.dumps(worker(args.steps)))
        return
    systems = {"elbox": sys.executable, "elbox32": sys.executable, "numpyro": args.peer_python,
               "pyro": args.peer_python}  # fmt: skip
    print(f"{args.steps} steps, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    rows: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(args.rounds):
        order = list(systems)[r % len(systems) :] + list(systems)[: r % len(systems)]
        for system in order:
            rows[system].append(run_worker(systems[system], system, args.steps))
        print(f"round {r}: " + ", ".join(f"{s} {rows[s][-1]['seconds']:.2f} s" for s in systems), flush=True)
    for s, results in rows.items():
        print(f"{s:8s} wall {statistics.median(x['seconds'] for x in results):7.2f} s  loop "
              f"{statistics.median(x['loop_seconds'] for x in results):7.2f} s  "
              f"({1e6 * statistics.median(x['loop_seconds'] for x in results) / args.steps:.0f} us/step)  "
              f"final ELBO {statistics.median(x['elbo'] for x in results):.2f}")  # fmt: skip
    ratio = lambda a, b, key: statistics.median(x[key] / y[key] for x, y in zip(rows[a], rows[b], strict=True))  # noqa: E731
    print(f"RESULT elbox/numpyro={ratio('elbox', 'numpyro', 'seconds'):.2f} (step loops alone: "
          f"{ratio('elbox', 'numpyro', 'loop_seconds'):.2f}) elbox/pyro={ratio('elbox', 'pyro', 'seconds'):.2f} "
          f"elbox32/pyro={ratio('elbox32', 'pyro', 'seconds'):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
