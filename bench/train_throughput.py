"""Training throughput: images/second of elbox's training loop vs a hand-written PyTorch loop.

Both train the 784-200-200-50 tanh VAE (batch 100, Adam 1e-3, closed-form KL, one particle)
on the same slice of binarized MNIST, in one process, in interleaved rounds that alternate
which goes first: the machine's speed drifts (±25% on a shared 2-core box), and interleaving
exposes both loops to the same drift. elbox is timed through ``elbox.train.train_epoch``, the
loop ``elbox train`` runs, so the number is the package's real cost per step.

    python bench/train_throughput.py                      # 8 rounds x 200 steps each
    python bench/train_throughput.py --rounds 2 --steps 20  # smoke test
"""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import (
    BATCH_SIZE,
    DEFAULT_DATA_DIR,
    LR,
    elbox_model,
    environment,
    handwritten_setup,
    handwritten_train_epoch,
    load_binarized_mnist,
    set_threads,
)
from torch import Tensor

from elbox import ELBO, IWAE, training

TARGET_RATIO = 0.95


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="binarized MNIST folder")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds of each loop")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per loop per round")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objective", choices=("elbo", "iwae"), default="elbo", help="what both loops train")
    parser.add_argument("--k", type=int, default=1, help="particles (iwae)")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.warmup_rounds < 0:
        parser.error("--rounds and --steps must be at least 1, --warmup-rounds at least 0")
    return args


def elbox_runner(x: Tensor, seed: int, plain_adam: bool = False, k: int = 1) -> Callable[[], None]:
    """One call = one ``train_epoch`` over ``x``: exactly the step ``elbox train`` takes.

    With ``plain_adam``, the optimiser is the baseline's (Adam looping over parameters), so
    the comparison isolates the cost of elbox's model and objective API.
    """
    torch.manual_seed(seed)
    model = elbox_model()
    objective = ELBO(analytic_kl=True) if k == 1 else IWAE()
    loss = training.VariationalLoss(model, objective, k=k)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR) if plain_adam else training.make_optimizer(model, LR)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    return lambda: training.train_epoch(loss, optimizer, x, BATCH_SIZE, generator)


def handwritten_runner(x: Tensor, seed: int, k: int = 1) -> Callable[[], None]:
    """One call = one shuffled pass of the hand-written loop over ``x`` (vectorised IWAE_k for k > 1)."""
    model, optimizer, generator = handwritten_setup(seed)
    return lambda: handwritten_train_epoch(model, optimizer, x, generator, k=k)


def timed(run: Callable[[], None]) -> float:
    """Wall seconds of one call; both loops end in a host read (``.tolist()`` / ``.item()``)."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    train = load_binarized_mnist(args.data_dir).train
    n = args.steps * BATCH_SIZE
    if n > train.shape[0]:
        raise SystemExit(f"error: --steps {args.steps} needs {n} images; the training split has {train.shape[0]}.")
    x = train[:n].contiguous()
    if args.objective == "elbo" and args.k != 1:
        raise SystemExit("error: the elbo objective is trained with one particle here; use --objective iwae --k K")
    k = args.k if args.objective == "iwae" else 1
    print(f"objective {args.objective}, k = {k}")

    runners = {
        "elbox": elbox_runner(x, args.seed, k=k),
        "elbox-plain-adam": elbox_runner(x, args.seed, plain_adam=True, k=k),
        "handwritten": handwritten_runner(x, args.seed, k=k),
    }
    env = environment()
    print(
        f"torch {env['torch']}, {env['threads']} threads ({env['interop_threads']} inter-op), "
        f"{env['cpus']} CPUs, load average {env['load_average_1min']}"
    )
    print(
        f"{args.rounds} rounds x {args.steps} steps x batch {BATCH_SIZE} per loop, after {args.warmup_rounds} warm-up"
    )

    for _ in range(args.warmup_rounds):  # first calls allocate, fill caches and spin up threads
        for run in runners.values():
            run()

    speed: dict[str, list[float]] = {name: [] for name in runners}
    print(f"{'round':>5}  {'elbox':>8}  {'plain-adam':>10}  {'hand':>8}  {'ratio':>6}  {'plain ratio':>11}  (img/s)")
    names = list(runners)
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate who goes first
            speed[name].append(n / timed(runners[name]))
        e, p, h = (speed[name][-1] for name in names)
        print(f"{r + 1:>5}  {e:>8,.0f}  {p:>10,.0f}  {h:>8,.0f}  {e / h:>6.3f}  {p / h:>11.3f}")

    medians = {name: statistics.median(v) for name, v in speed.items()}
    print("median img/s: " + ", ".join(f"{name} {v:,.0f}" for name, v in medians.items()))
    # The machine's speed drifts between rounds (by 40% within a minute, seen here), so the
    # figures are medians of per-round ratios: each compares the loops on the same machine state.
    ratio = paired_ratio(speed["elbox"], speed["handwritten"], "elbox (as `elbox train` runs it) / handwritten")
    paired_ratio(speed["elbox-plain-adam"], speed["handwritten"], "elbox with the baseline's plain Adam / handwritten")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"(ratio {verdict} the target >= {TARGET_RATIO}; threads {env['threads']}, torch {env['torch']})")
    print(f"RESULT elbox={medians['elbox']:.0f} img/s handwritten={medians['handwritten']:.0f} img/s ratio={ratio:.3f}")


def paired_ratio(ours: list[float], theirs: list[float], label: str) -> float:
    """Print and return the median of per-round ratios, with its quartiles."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio] * 3
    print(f"{label}: median of per-round ratios {ratio:.3f} (quartiles {q[0]:.3f} to {q[2]:.3f})")
    return ratio


if __name__ == "__main__":
    main()
