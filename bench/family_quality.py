"""Does a richer family give a better model? Test log p(x) of the benchmark VAE per family.

The 784-200-200-50 tanh VAE on static binarized MNIST, trained by ``elbox.train`` with the
same epochs, seed and data, with q diagonal, an inverse autoregressive flow and a neural
spline flow; then log p(x) estimated by ``elbox.evaluation.log_likelihood`` (importance
sampling with K = 5,000 draws from each model's own encoder) on test images spread through the
split. The same images serve every model, so the differences carry paired standard errors.
Literature: Rezende & Mohamed (2015) 89.9 -> 85.1 nats with 80 planar steps; Kingma et al.
(2016) about 2 nats from IAF, both after far longer training.

    python bench/family_quality.py --epochs 10 --test-points 1000
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BATCH_SIZE,
    DEFAULT_DATA_DIR,
    HIDDEN,
    LATENT_DIM,
    LR,
    environment,
    load_binarized_mnist,
    write_results,
)

import elbox
from elbox.evaluation import log_likelihood
from elbox.plots import spread

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default="diagonal,iaf:4,nsf:4", help="the first is the baseline")
    parser.add_argument("--test-points", type=int, default=1000, help="test images, evenly spread (sorted split)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=RESULTS / "family_quality.json")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    x_test = spread(load_binarized_mnist(args.data_dir).test, args.test_points)
    print(f"{args.epochs} epochs, seed {args.seed}, K={args.k} on {x_test.shape[0]} test images; {environment()}")
    results, per_point = {}, {}
    base = args.families.split(",")[0]
    with tempfile.TemporaryDirectory(prefix="elbox-families-") as tmp:
        for family in args.families.split(","):
            started = time.perf_counter()
            run = elbox.train(
                data="binarized-mnist", data_dir=args.data_dir, latent_dim=LATENT_DIM, hidden=HIDDEN,
                epochs=args.epochs, batch_size=BATCH_SIZE, lr=LR, seed=args.seed, family=family,
                out=Path(tmp) / family.replace(":", "-"), progress=False,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            ll = log_likelihood(run.model, x_test, k=args.k, seed=args.seed)
            per_point[family] = ll.values
            results[family] = {
                "train_seconds": seconds,
                "test_elbo": run.summary["test"]["elbo"],
                "test_log_px": ll.mean,
                "test_log_px_stderr": ll.se,
                "median_ess": ll.ess.median().item(),
            }
            r = results[family]
            print(
                f"{family:<10} log p(x) {r['test_log_px']:8.2f} ± {r['test_log_px_stderr']:.2f}   "
                f"ELBO {r['test_elbo']:8.2f}   median ESS {r['median_ess']:7.1f}   {seconds:5.0f} s training"
            )
            if family != base:  # printed at once: an interrupted run keeps what it measured
                diff = ll.values - per_point[base]
                r["gain_over_" + base] = diff.mean().item()
                r["gain_stderr"] = (diff.std() / math.sqrt(diff.shape[0])).item()
                print(f"{family} - {base}: {r['gain_over_' + base]:+.2f} ± {r['gain_stderr']:.2f} nats (paired)")
    write_results(args, results)


if __name__ == "__main__":
    main()
