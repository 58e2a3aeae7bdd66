"""Data-parallel scaling: training images/second of `elbox train` with 1 and with N processes.

Each run is the real command (`elbox train`, and `elbox train --nproc N`, which starts torchrun)
on the benchmark model (784-200-200-50 tanh VAE, global batch 100) on static binarized MNIST;
the figure is the median over epochs of ``images_per_second`` in its metrics (the training
loop's own clock, without start-up, validation or checkpoints). Rounds alternate which runs
first, so drift hits both. On a 2-core machine one process already uses both cores through
intra-op threads, and torchrun gives each of N workers one thread (OMP_NUM_THREADS=1): the
ratio says what DDP costs or gains here, not what it does on a machine with cores to spare.

    python bench/scaling.py --epochs 3 --rounds 3
    python bench/scaling.py --epochs 1 --rounds 1   # smoke test
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]


def run(nproc: int, args: argparse.Namespace, out: Path) -> float:
    command = [sys.executable, "-m", "elbox", "train", "--data", "binarized-mnist", "--data-dir", str(args.data_dir),
               "--hidden", "200,200", "--latent-dim", "50", "--epochs", str(args.epochs), "--out", str(out),
               "--no-progress", "--no-report", "--nproc", str(nproc), "--batch-size", str(args.batch_size)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(m["images_per_second"] for m in metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100, help="the global batch")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, cores {os.cpu_count()}, global batch {args.batch_size}")
    results: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for nproc in (1, args.nproc) if r % 2 == 0 else (args.nproc, 1):
                ips = run(nproc, args, Path(tmp) / f"r{r}-{nproc}")
                results[nproc].append(ips)
                print(f"round {r}: {nproc} process(es): {ips:,.0f} images/s")
    one, many = statistics.median(results[1]), statistics.median(results[args.nproc])
    print(f"RESULT one={one:.0f} img/s nproc{args.nproc}={many:.0f} img/s ratio={many / one:.3f}")


if __name__ == "__main__":
    main()
