"""A training step with a realnvp:4 encoder and the STL gradient: log q's score along the draw against the frozen
inverse pass, alternated in one process.

    python bench/flow_stl_step.py

The benchmark VAE's shape (784-200-200-50, batch 100, one particle, Bernoulli), on random binary rows: the step's
cost does not depend on the pixels. Prints the median ms per step of six rounds of 20 steps each way.
"""

import statistics
import time

import torch

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO

torch.set_num_threads(1)
torch.manual_seed(0)
vae = VAE(VAEConfig(data_dim=784, latent_dim=50, hidden=(200, 200), likelihood="bernoulli", family="realnvp:4"))
opt = torch.optim.Adam(vae.parameters(), 1e-3)
x = torch.randint(0, 2, (100, 784)).float()
obj = ELBO(estimator="stl")


def step() -> None:
    bound = obj(vae(x, 1, stop_q=True))
    opt.zero_grad()
    bound.loss.backward()
    opt.step()


res: dict[bool, list[float]] = {True: [], False: []}
for _ in range(10):
    step()
for _ in range(6):
    for scored in (True, False):
        vae.encoder.flow.scores = scored
        t = time.perf_counter()
        for _ in range(20):
            step()
        res[scored].append((time.perf_counter() - t) / 20 * 1e3)
print({("score" if k else "inverse"): round(statistics.median(v), 2) for k, v in res.items()}, "ms/step")
