"""The benchmark VAE trained by Pyro and NumPyro: a worker that ``train_throughput.py`` drives.

Runs in the bench-only environment (``bench/README.md``: pyro-ppl, numpyro, jax; elbox never
depends on them), started once per peer and kept alive, so rounds interleave with elbox's
without paying an interpreter start or a jit compilation each round:

    python bench/peers_vae.py --system numpyro-jit --data /tmp/x.npy --steps 100   # then one line per round on stdin

Each line read on stdin is one round: ``steps`` optimiser steps on consecutive minibatches of
100 from the data, timed inside the worker (the host read of the last loss included), answered
with one JSON line ``{"seconds": ..., "loss": ...}``. The first round after start-up is the
warm-up (jit compilation happens there); the driver does not time it.

The model is the benchmark's: 784-200-200-50 tanh MLPs, q = N(mu, diag softplus(raw) + 1e-4),
Bernoulli likelihood on logits, Adam lr 1e-3. Pyro and NumPyro estimate the ELBO with one
particle and a Monte Carlo KL (``Trace_ELBO``), as their tutorials do.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

SYSTEMS = ("pyro", "pyro-jit", "numpyro-jit", "numpyro-scan")
DATA_DIM, LATENT_DIM, HIDDEN, BATCH_SIZE, LR = 784, 50, 200, 100, 1e-3


def pyro_runner(x: np.ndarray, steps: int, jit: bool) -> Callable[[], float]:
    import pyro
    import pyro.distributions as dist
    import torch
    import torch.nn.functional as F
    from torch import nn

    def mlp(sizes: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.Tanh()]
        return nn.Sequential(*layers[:-1])

    torch.manual_seed(0)
    encoder = mlp([DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT_DIM])
    decoder = mlp([LATENT_DIM, HIDDEN, HIDDEN, DATA_DIM])

    def model(batch: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        with pyro.plate("data", batch.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z), validate_args=False).to_event(1), obs=batch)

    def guide(batch: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("data", batch.shape[0]):
            loc, raw = encoder(batch).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))

    pyro.clear_param_store()
    elbo = pyro.infer.JitTrace_ELBO() if jit else pyro.infer.Trace_ELBO()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": LR}), elbo)
    data = torch.from_numpy(x)

    def run() -> float:
        loss = 0.0
        for i in range(steps):
            loss = svi.step(data[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])  # a float: one host read per step
        return loss

    return run


def numpyro_runner(x: np.ndarray, steps: int, scan: bool) -> Callable[[], float]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO

    def init(key: jax.Array, n_in: int, n_out: int) -> tuple[jax.Array, jax.Array]:
        bound = 1 / np.sqrt(n_in)  # torch.nn.Linear's initialisation
        k1, k2 = jax.random.split(key)
        return (jax.random.uniform(k1, (n_in, n_out), minval=-bound, maxval=bound),
                jax.random.uniform(k2, (n_out,), minval=-bound, maxval=bound))  # fmt: skip

    def mlp(prefix: str, sizes: list[int], h: jax.Array) -> jax.Array:
        for i in range(len(sizes) - 1):
            w0, b0 = init(jax.random.PRNGKey(hash((prefix, i)) % 2**31), sizes[i], sizes[i + 1])
            h = h @ numpyro.param(f"{prefix}.{i}.w", w0) + numpyro.param(f"{prefix}.{i}.b", b0)
            h = jnp.tanh(h) if i < len(sizes) - 2 else h
        return h

    def model(batch: jax.Array) -> None:
        with numpyro.plate("data", batch.shape[0]):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(LATENT_DIM), 1.0).to_event(1))
            logits = mlp("decoder", [LATENT_DIM, HIDDEN, HIDDEN, DATA_DIM], z)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=batch)

    def guide(batch: jax.Array) -> None:
        out = mlp("encoder", [DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT_DIM], batch)
        loc, raw = jnp.split(out, 2, -1)
        with numpyro.plate("data", batch.shape[0]):
            numpyro.sample("z", dist.Normal(loc, jax.nn.softplus(raw) + 1e-4).to_event(1))

    svi = SVI(model, guide, numpyro.optim.Adam(LR), Trace_ELBO())
    data = jnp.asarray(x[: steps * BATCH_SIZE]).reshape(steps, BATCH_SIZE, DATA_DIM)
    state = [svi.init(jax.random.PRNGKey(0), data[0])]
    update = jax.jit(svi.update)

    @jax.jit
    def epoch(s: object, batches: jax.Array) -> tuple[object, jax.Array]:
        return jax.lax.scan(lambda s, b: svi.update(s, b), s, batches)  # the whole pass as one XLA program

    def run() -> float:
        if scan:
            state[0], losses = epoch(state[0], data)
            return float(losses[-1])
        loss = None
        for i in range(steps):
            state[0], loss = update(state[0], data[i])
        return float(loss)  # blocks until the last step is done

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--data", required=True, help=".npy file of binary images [N, 784], float32")
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    x = np.load(args.data).astype(np.float32)
    if args.system.startswith("pyro"):
        run = pyro_runner(x, args.steps, jit=args.system == "pyro-jit")
    else:
        run = numpyro_runner(x, args.steps, scan=args.system == "numpyro-scan")
    versions = {}
    for name in ("torch", "pyro", "jax", "numpyro"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    print(json.dumps({"ready": True, "versions": versions}), flush=True)
    for _ in sys.stdin:
        started = time.perf_counter()
        loss = run()
        print(json.dumps({"seconds": time.perf_counter() - started, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()
