"""The cost of a richer family: training-step time of each family over the diagonal Gaussian.

The benchmark VAE (784-200-200-50 tanh, batch 100, one particle, fused Adam) with q in each
family, each trained by ``elbox.training.train_epoch`` (the loop ``elbox train`` runs) on the
same slice of binarized MNIST, in one process. Rounds are interleaved and rotate which family
goes first, so the machine's drift hits all alike; the figure is the median over rounds of
each family's step time divided by the diagonal family's in the same round.

    python bench/family_cost.py                              # 6 rounds x 50 steps
    python bench/family_cost.py --rounds 1 --steps 5         # smoke test
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import (
    BATCH_SIZE,
    DEFAULT_DATA_DIR,
    LR,
    elbox_model,
    environment,
    load_binarized_mnist,
    set_threads,
    write_results,
)

from elbox import ELBO
from elbox.training import VariationalLoss, make_optimizer, train_epoch

FAMILIES = ("diagonal", "lowrank", "fullrank", "mixture:4", "iaf:4", "nsf:4", "realnvp:4", "maf:4")


def runner(family: str, x: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    model = elbox_model(family)
    loss = VariationalLoss(model, ELBO(), k=1)
    optimizer = make_optimizer(model, LR)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    return lambda: train_epoch(loss, optimizer, x, BATCH_SIZE, generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50, help="optimiser steps per family per round")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "family_cost.json")
    args = parser.parse_args()
    set_threads(args.threads)
    x = load_binarized_mnist(args.data_dir).train[: args.steps * BATCH_SIZE].contiguous()
    families = args.families.split(",")
    runners = {name: runner(name, x, args.seed) for name in families}
    print(f"{args.rounds} rounds x {args.steps} steps; {environment()}")
    for run in runners.values():  # warm-up: allocations, caches, threads
        run()
    ms: dict[str, list[float]] = {name: [] for name in families}
    for r in range(args.rounds):
        for name in families[r % len(families) :] + families[: r % len(families)]:
            started = time.perf_counter()
            runners[name]()
            ms[name].append(1000 * (time.perf_counter() - started) / args.steps)
        print(f"round {r + 1}: " + ", ".join(f"{n} {ms[n][-1]:.2f}" for n in families) + " (ms/step)")
    results = {}
    print(f"\n{'family':<12}{'ms/step':>9}{'x diagonal':>12}   (medians; ratio = median of per-round ratios)")
    for name in families:
        ratio = statistics.median(a / b for a, b in zip(ms[name], ms["diagonal"], strict=True))
        results[name] = {"ms_per_step": statistics.median(ms[name]), "ratio_to_diagonal": ratio}
        print(f"{name:<12}{results[name]['ms_per_step']:>9.2f}{ratio:>12.2f}")
    write_results(args, results)


if __name__ == "__main__":
    main()
