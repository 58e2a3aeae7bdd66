"""Checkpoint cost: the share of training time spent writing checkpoints, at the default interval.

Trains the benchmark model (784-200-200-50 tanh VAE, batch 100) on static binarized MNIST
through ``elbox``'s training loop (``train.run._fit``, what ``elbox train`` runs, without the
final test evaluation and figures) and times every checkpoint write (``train.run.write_checkpoint``:
the state gathered, serialized to safetensors, fsynced and renamed). Runs with writes and runs
with writes skipped alternate in one process. Two figures:

- the measured share: seconds inside checkpoint writes / the run's wall time;
- the A/B ratio: median wall time with writes / without.

    python bench/checkpoint_overhead.py --epochs 4 --rounds 3
    python bench/checkpoint_overhead.py --epochs 1 --rounds 1   # smoke test
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATA_DIR

from elbox import VAEConfig
from elbox.training import TrainConfig, prepare
from elbox.training import run as training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, cores {os.cpu_count()}, checkpoint every {args.checkpoint_every}")
    model = VAEConfig(hidden=(200, 200), latent_dim=50)
    config = TrainConfig(data="binarized-mnist", data_dir=str(args.data_dir), epochs=args.epochs,
                         checkpoint_every=args.checkpoint_every, model=model)  # fmt: skip
    real_checkpoint, real_finish = training.write_checkpoint, training._finish
    spent: list[float] = []

    def timed(*a, **k):
        started = time.perf_counter()
        real_checkpoint(*a, **k)
        spent.append(time.perf_counter() - started)

    training._finish = lambda *a, **k: None  # the test evaluation and figures are not training
    shares, walls = [], {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                spent.clear()
                training.write_checkpoint = timed if mode == "on" else (lambda *a, **k: None)
                setup = prepare(config)
                path = Path(tmp) / f"{r}-{mode}"
                path.mkdir()
                started = time.perf_counter()
                training._fit(setup, path, progress=False)
                wall = time.perf_counter() - started
                walls[mode].append(wall)
                if mode == "on":
                    shares.append(sum(spent) / wall)
                    print(f"round {r}: {len(spent)} writes took {sum(spent):.2f} s of {wall:.1f} s "
                          f"({100 * shares[-1]:.2f}%)")  # fmt: skip
                else:
                    print(f"round {r}: no writes: {wall:.1f} s")
    training.write_checkpoint, training._finish = real_checkpoint, real_finish
    share = statistics.median(shares)
    ratio = statistics.median(walls["on"]) / statistics.median(walls["off"])
    print(f"RESULT checkpoint_share={100 * share:.2f}% wall_ratio_with_without={ratio:.3f}")


if __name__ == "__main__":
    main()
