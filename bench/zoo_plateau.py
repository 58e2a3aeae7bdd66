"""Why the VampPrior VAE collapsed on MNIST: the first steps of training, logged.

The one-layer 784-200-200-50 VAE on static binarized MNIST (batch 100 drawn with replacement,
Adam lr 1e-3, single-particle ELBO, one thread), with tanh or ReLU networks, the standard
prior or the VampPrior (500 pseudo-inputs started as in the paper's code, N(0.05, 0.01^2),
or at training images, ``VampPrior.start_at``), and the KL weight beta constant, 0, or rising
linearly over the first ``--warmup`` steps. Every ``--every`` steps it prints the mean ELBO and
KL of the steps since the last line: an ELBO near -206 with a KL near 0 is the plateau where
the decoder models each pixel's marginal and ignores z.

    python bench/zoo_plateau.py --steps 3000                 # every run: about 6 minutes on 2 cores
    python bench/zoo_plateau.py --runs tanh-vamp,relu-vamp --steps 1000
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA_DIR, HIDDEN, LATENT_DIM, LR, environment, load_binarized_mnist, write_results

from elbox import VAEConfig
from elbox.bounds import ELBO
from elbox.models import build_model
from elbox.training import VariationalLoss, make_optimizer

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (activation, prior, pseudo-inputs at data, beta: "1", "0" or "warmup")
RUNS = {
    "tanh-standard": ("tanh", "standard", False, "1"),
    "tanh-standard-beta0": ("tanh", "standard", False, "0"),
    "tanh-vamp": ("tanh", "vamp:500", False, "1"),
    "tanh-vamp-beta0": ("tanh", "vamp:500", False, "0"),
    "tanh-vamp-warmup": ("tanh", "vamp:500", False, "warmup"),
    "tanh-vamp-data": ("tanh", "vamp:500", True, "1"),
    "relu-standard": ("relu", "standard", False, "1"),
    "relu-vamp": ("relu", "vamp:500", False, "1"),
    "relu-vamp-data": ("relu", "vamp:500", True, "1"),
}


def trace(x: torch.Tensor, name: str, steps: int, every: int, warmup: int, seed: int) -> list[dict]:
    """Train run ``name`` for ``steps`` steps on ``x`` ``[N, 784]``; the mean ELBO and KL of each ``every`` steps."""
    activation, prior, at_data, beta = RUNS[name]
    torch.manual_seed(seed)
    model = build_model(VAEConfig(data_dim=x.shape[1], latent_dim=LATENT_DIM, hidden=HIDDEN, activation=activation,
                                  likelihood="bernoulli", prior=prior))  # fmt: skip
    if at_data:
        model.prior.start_at(x, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # how much the untrained encoder's means depend on x, against its scale
        q = model.encode(x[:100])
        print(f"{name:<20} at the start: spread of the means over 100 images {q.mean.std(0).mean():.3f}, "
              f"mean posterior scale {q.stddev.mean():.3f}")  # fmt: skip
    objective = ELBO()
    loss, optimizer = VariationalLoss(model, objective), make_optimizer(model, LR)
    g, started, sums, lines = torch.Generator().manual_seed(seed), time.perf_counter(), torch.zeros(2), []
    for step in range(1, steps + 1):
        objective.beta = {"1": 1.0, "0": 0.0}.get(beta, min(1.0, (step - 1) / warmup))
        bound = loss(x[torch.randint(x.shape[0], (100,), generator=g)])
        optimizer.zero_grad(set_to_none=True)
        bound.loss.backward()
        optimizer.step()
        sums += torch.stack([bound.value.mean(), bound.kl.mean()]).detach()
        if step % every == 0:
            elbo, kl = (sums / every).tolist()
            lines.append({"step": step, "beta": objective.beta, "elbo": elbo, "kl": kl})
            print(f"{name:<20} step {step:5d}  beta {objective.beta:4.2f}  ELBO {elbo:8.2f}  KL {kl:6.2f}  "
                  f"{time.perf_counter() - started:4.0f} s")  # fmt: skip
            sums.zero_()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"a comma list of {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3000, help="steps of the warm-up runs' linear rise of beta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "zoo_plateau.json")
    args = parser.parse_args()
    names = args.runs.split(",")
    if unknown := [n for n in names if n not in RUNS]:
        sys.exit(f"error: unknown runs {unknown}; choose from {', '.join(RUNS)}")
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    x = load_binarized_mnist(args.data_dir).train
    print(environment())
    results = {}
    for name in names:
        results[name] = trace(x, name, args.steps, args.every, args.warmup, args.seed)
        write_results(args, results)


if __name__ == "__main__":
    main()
