"""Shared pieces of the training benchmarks: the data, elbox's model and the hand-written baseline.

The baseline is the plain-PyTorch VAE a user would write after reading pytorch/examples
(``vae/main.py``): ``nn.Sequential`` of ``nn.Linear`` layers, an encoder output split into
mu and log-variance, BCE-with-logits plus the closed-form KL, Adam with its defaults. It is
written once here so that the throughput and the quality benchmark compare elbox with the
very same loop.
"""

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elbox import VAE, ElboxError, VAEConfig
from elbox.data import Dataset, load_dataset

# The sibling checkout's shared data, read in place (never copied): /work/shared/... for /work/main.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"

# The benchmark model: 784-200-200-50 tanh (Burda et al. 2016), Bernoulli decoder.
DATA_DIM, LATENT_DIM, HIDDEN = 784, 50, (200, 200)
BATCH_SIZE, LR = 100, 1e-3


def load_binarized_mnist(data_dir: Path) -> Dataset:
    """Static binarized MNIST from ``data_dir``; exits with a readable message when it is not there."""
    if not data_dir.is_dir():
        sys.exit(
            f"error: the binarized MNIST folder {data_dir} does not exist. Pass --data-dir with the folder "
            "holding binarized_mnist_{train,valid,test}.mat (or .amat)."
        )
    try:
        return load_dataset("binarized-mnist", data_dir)
    except ElboxError as e:  # a missing or corrupt file: elbox's message says which
        sys.exit(f"error: {e}")


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads if given; otherwise keep torch's default (one per core)."""
    if threads is not None:
        torch.set_num_threads(threads)


def environment() -> dict:
    """What the numbers depend on, printed and stored beside them."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # other work on the machine skews timings; a load near 0 before starting is what to want
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def write_results(args: argparse.Namespace, results: dict) -> None:
    """Write the settings (``args``), the environment and ``results`` as JSON to ``args.json``."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": settings, "environment": environment(), "results": results}, indent=2))
    print(f"wrote {args.json}")


def elbox_model(family: str = "diagonal") -> VAE:
    """elbox's VAE of the benchmark with q in ``family``, built from the global RNG (seed it first)."""
    config = VAEConfig(
        data_dim=DATA_DIM, latent_dim=LATENT_DIM, hidden=HIDDEN, activation="tanh", likelihood="bernoulli",
        family=family,
    )  # fmt: skip
    return VAE(config)


# --------------------------------------------------------------------------- hand-written baseline


class HandwrittenVAE(nn.Module):
    """The 784-200-200-50 tanh VAE as a user writes it in plain PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        h1, h2 = HIDDEN
        self.encoder = nn.Sequential(
            nn.Linear(DATA_DIM, h1),
            nn.Tanh(),
            nn.Linear(h1, h2),
            nn.Tanh(),
            nn.Linear(h2, 2 * LATENT_DIM),
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT_DIM, h2),
            nn.Tanh(),
            nn.Linear(h2, h1),
            nn.Tanh(),
            nn.Linear(h1, DATA_DIM),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Bernoulli logits of p(x | z) for one z ~ q(z | x), with q's mu and log-variance."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def negative_elbo(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """-ELBO per data point, ``[B]``: BCE summed over pixels plus the closed-form KL to N(0, I)."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    return bce + kl


def negative_iwae(model: HandwrittenVAE, x: Tensor, k: int) -> Tensor:
    """-IWAE_k per data point, ``[B]``, vectorised over the k particles as a user writes it."""
    mu, logvar = model.encoder(x).chunk(2, dim=-1)
    eps = torch.randn(k, *mu.shape)
    z = mu + torch.exp(0.5 * logvar) * eps  # [K, B, D]
    logits = model.decoder(z)  # [K, B, X]
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    log_q = -0.5 * (eps.pow(2) + math.log(2 * math.pi) + logvar).sum(-1)
    return -(torch.logsumexp(log_lik + log_prior - log_q, 0) - math.log(k))


def handwritten_setup(seed: int) -> tuple[HandwrittenVAE, torch.optim.Optimizer, torch.Generator]:
    """The baseline's model (weights from ``torch.manual_seed(seed)``), Adam and data-order generator."""
    torch.manual_seed(seed)
    model = HandwrittenVAE()
    optimizer = torch.optim.Adam(model.parameters())  # defaults: lr 1e-3, betas (0.9, 0.999)
    return model, optimizer, torch.Generator().manual_seed(seed)


def handwritten_train_epoch(
    model: HandwrittenVAE,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    generator: torch.Generator,
    batch_size: int = BATCH_SIZE,
    k: int = 1,
) -> float:
    """One shuffled pass over ``x`` ``[N, 784]``; returns the mean training ELBO of the epoch.

    The running sum stays a tensor until the end (no ``.item()`` per step), as in elbox's
    ``train_epoch``, so neither loop pays a host sync the other does not.
    """
    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator)
    total = torch.zeros(())
    for start in range(0, n, batch_size):
        batch = x[order[start : start + batch_size]]
        per_point = negative_elbo(batch, *model(batch)) if k == 1 else negative_iwae(model, batch, k)
        loss = per_point.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += per_point.detach().sum()
    return -total.item() / n


@torch.no_grad()
def handwritten_test_elbo(model: HandwrittenVAE, x: Tensor, batch_size: int = 1000) -> float:
    """The mean single-particle ELBO over ``x`` ``[N, 784]`` in nats per image."""
    model.eval()
    total = torch.zeros(())
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]
        total += negative_elbo(batch, *model(batch)).sum()
    return -total.item() / x.shape[0]
