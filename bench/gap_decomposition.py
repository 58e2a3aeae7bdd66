"""The inference-gap split of Cremer, Li & Duvenaud (2018) on a VAE trained by elbox.

Trains the default diagonal-Gaussian VAE of the benchmarks (784-200-200-50 tanh, Bernoulli
decoder, ELBO, batch 100, Adam 1e-3) on static binarized MNIST for ``--epochs`` epochs with
``elbox.train``, then runs ``elbox.evaluate`` on test images spread through the split:
log p(x) with K = 5000, the bounds, rate and distortion, and the split of the encoder's gap

    log p(x) - L[q_enc] = (log p(x) - L[q*]) + (L[q*] - L[q_enc])
                          approximation gap     amortization gap

on ``--gap-points`` of them, q* being q optimised per image inside the diagonal family.
Cremer et al. report, for this kind of VAE after 3,280 epochs: approximation gap 1.43 nats,
amortization gap 1.34 nats (their Table 2, MNIST, fully factorized Gaussian).

    python bench/gap_decomposition.py --epochs 20                  # train, then evaluate
    python bench/gap_decomposition.py --run runs/mnist             # evaluate a trained run
    python bench/gap_decomposition.py --epochs 1 --test-points 50 --gap-points 10 --k 500   # smoke test
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import BATCH_SIZE, DEFAULT_DATA_DIR, HIDDEN, LATENT_DIM, LR, environment, load_binarized_mnist

import elbox
from elbox.evaluation import Estimate, evaluate
from elbox.plots import spread

CREMER = {"approximation": 1.43, "amortization": 1.34}  # nats, MNIST, FFG encoder, their Table 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (ignored with --run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, default=None, help="evaluate this trained run instead of training")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test",
                        help="images to evaluate (Cremer et al. report the gaps on training images)")  # fmt: skip
    parser.add_argument("--test-points", type=int, default=1000, help="images of --split for log p(x), spread")
    parser.add_argument("--gap-points", type=int, default=100, help="images of the gap split, spread")
    parser.add_argument("--k", type=int, default=5000, help="particles per image")
    parser.add_argument("--gap-steps", type=int, default=500)
    parser.add_argument("--gap-lr", type=float, default=1e-2)
    parser.add_argument("--gap-particles", type=int, default=10)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "gap_decomposition.json"
    )
    return parser.parse_args()


def train(args: argparse.Namespace, folder: Path) -> tuple[elbox.Run, float]:
    started = time.perf_counter()
    run = elbox.train(
        data="binarized-mnist", data_dir=args.data_dir, latent_dim=LATENT_DIM, hidden=HIDDEN, epochs=args.epochs,
        batch_size=BATCH_SIZE, lr=LR, seed=args.seed, out=folder, progress=False,
    )  # fmt: skip
    return run, time.perf_counter() - started


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(environment())
    x = spread(getattr(load_binarized_mnist(args.data_dir), args.split), args.test_points)
    with tempfile.TemporaryDirectory(prefix="elbox-gaps-") as tmp:
        if args.run is not None:
            run, train_seconds = elbox.load_run(args.run), None
        else:
            run, train_seconds = train(args, Path(tmp) / "run")
            print(f"trained {args.epochs} epochs in {train_seconds:.0f} s; test ELBO {run.summary['test']['elbo']:.2f}")
        started = time.perf_counter()
        e = evaluate(
            run.model, x, k=args.k, gap_points=args.gap_points, gap_steps=args.gap_steps, gap_lr=args.gap_lr,
            gap_particles=args.gap_particles, seed=args.seed, progress=None,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    print(e.table())
    g = e.gaps
    print(f"\nevaluation took {seconds:.0f} s")
    proposals = {"encoder": Estimate.of(e.gap_log_px), "mixture": Estimate.of(g.log_px), "gain": e.proposal_shortfall}
    print(
        f"log p(x) on the {g.log_px.shape[0]} gap points: {proposals['encoder']:.3f} with the encoder as proposal, "
        f"{proposals['mixture']:.3f} with the mixture of q_enc and q* (paired difference {proposals['gain']:.3f})"
    )
    for name in ("approximation", "amortization"):
        ours = Estimate.of(getattr(g, name))
        print(f"{name} gap: {ours:.2f} nats (Cremer et al., 3,280 epochs: {CREMER[name]})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {
        "settings": settings,
        "environment": environment(),
        "train_seconds": train_seconds,
        "evaluate_seconds": seconds,
        "log_px_on_gap_points": {k: v.to_dict() for k, v in proposals.items()},
        "evaluation": e.to_dict() | {"per_point": None},
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
