"""Discrete latents on the embedded digits: relaxed, straight-through and score-function gradients.

One VAE per way of drawing 16 Bernoulli latents (``--family bernoulli``): Gumbel-softmax
relaxed draws (temperature 0.5), straight-through draws, and hard draws with the
score-function estimator. Each is trained by ``elbox.train`` for the same epochs and
seed, then scored on the test split in evaluation mode, where every draw is hard and every
density the discrete model's: the test ELBO and log p(x) by importance sampling (``--k``
particles, ``elbox.evaluate``), both bounds on the discrete model's log p(x). The last
training epoch's ELBO is printed beside them: for relaxed draws it is the surrogate that was
trained, not a bound.

    python bench/discrete_estimators.py             # about 2 minutes on 2 cores
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, set_threads, write_results

from elbox.evaluation import evaluate
from elbox.training import train

RESULTS = Path(__file__).resolve().parent / "results" / "discrete_estimators.json"
WAYS = {"relaxed": {}, "straight-through": {"straight_through": True}, "score": {"estimator": "score"}}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--k", type=int, default=1000, help="particles of the test log p(x) estimate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


def main() -> None:
    args = parse()
    set_threads(args.threads)
    print(environment())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, options in WAYS.items():
            started = time.perf_counter()
            run = train(data="digits", family="bernoulli", latent_dim=args.latent_dim, epochs=args.epochs,
                        seed=args.seed, out=str(Path(folder) / name), progress=False, **options)  # fmt: skip
            e = evaluate(run, k=args.k, gap_points=0, mi_points=100, seed=args.seed)
            row = {"draws": name, "train_objective": run.metrics[-1]["train_elbo"],
                   "test_elbo": run.summary["test"]["elbo"], "test_log_px": float(e.log_px.mean()),
                   "test_log_px_se": float(e.log_px.std() / len(e.log_px) ** 0.5),
                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            rows.append(row)
            print(f"{name:<17} last train epoch {row['train_objective']:9.2f}  test ELBO {row['test_elbo']:9.2f}  "
                  f"test log p(x) {row['test_log_px']:9.2f} ± {row['test_log_px_se']:.2f}  {row['seconds']} s")
    write_results(args, {"test": rows})


if __name__ == "__main__":
    main()
