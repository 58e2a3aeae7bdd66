"""The deep variational information bottleneck on the embedded digits: accuracy and rate against beta.

Alemi et al. (2017) trade the rate KL(q(z | x) || r(z)), an upper bound on I(z; x), against
the cross-entropy -E_q log p(y | z): small beta keeps what predicts y and more; large beta
squeezes z toward r(z) = N(0, I) until it forgets the label. Each beta trains a VIB with
``elbox.train(model="vib", beta=...)``, the same loop as every VAE, and reports on
the test split: accuracy predicting from p(y | x) averaged over 12 draws of z (as in the
paper) and from the mean of q, the rate and the cross-entropy, in nats.

    python bench/vib_beta.py                       # about a minute on 2 cores
    python bench/vib_beta.py --betas 1e-3 1e-1 --epochs 50
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, set_threads, write_results

from elbox.runs import load_splits
from elbox.training import train

RESULTS = Path(__file__).resolve().parent / "results" / "vib_beta.json"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--betas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


@torch.no_grad()
def accuracy_at_the_mean(run: object, x: torch.Tensor, y: torch.Tensor) -> float:
    """The accuracy of the class of highest p(y | z) at z = the mean of q(z | x)."""
    model = run.model
    return float((model.decode(model.encode(x).mean).probs.argmax(-1) == y).double().mean())


def main() -> None:
    args = parse()
    set_threads(args.threads)
    print(environment())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for beta in args.betas:
            started = time.perf_counter()
            options = dict(model="vib", data="digits", beta=beta, epochs=args.epochs, latent_dim=args.latent_dim,
                           hidden=args.hidden, seed=args.seed, progress=False)  # fmt: skip
            run = train(out=str(Path(folder) / f"beta-{beta:g}"), **options)
            dataset, splits = load_splits(run.config)
            x, y = splits["test"], dataset.labels["test"]
            test = run.summary["test"]
            row = {"beta": beta, "accuracy": test["accuracy"], "accuracy_at_mean": accuracy_at_the_mean(run, x, y),
                   "rate": test["kl"], "cross_entropy": -test["reconstruction"],
                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            rows.append(row)
            print(f"beta {beta:<8g} accuracy {row['accuracy']:.4f} (at the mean {row['accuracy_at_mean']:.4f})  "
                  f"rate {row['rate']:7.3f} nats  cross-entropy {row['cross_entropy']:.4f} nats  {row['seconds']} s")
    write_results(args, {"test": rows})


if __name__ == "__main__":
    main()
