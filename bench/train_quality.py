"""Training quality: test ELBO after E epochs, elbox vs a hand-written PyTorch loop.

Both train the 784-200-200-50 tanh VAE on static binarized MNIST (batch 100, Adam 1e-3,
closed-form KL, one particle) from ``torch.manual_seed(seed)``, one after the other. Every
``--eval-every`` epochs and at the end, the single-particle ELBO over all 10,000 test images
is recorded; the final number of each is the mean of ``--eval-repeats`` evaluations, which
shrinks the Monte Carlo noise of one evaluation.

elbox is trained by ``elbox.train`` itself, exactly as ``elbox train`` runs; its ``on_epoch``
hook adds the test ELBO along the way (hooks run on a forked RNG, so they change nothing).

    python bench/train_quality.py                                      # 100 epochs, seed 0
    python bench/train_quality.py --epochs 1 --eval-every 1 --json /tmp/q.json         # smoke
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from common import (
    BATCH_SIZE,
    DEFAULT_DATA_DIR,
    HIDDEN,
    LATENT_DIM,
    LR,
    environment,
    handwritten_setup,
    handwritten_test_elbo,
    handwritten_train_epoch,
    load_binarized_mnist,
    set_threads,
)

import elbox
from elbox import ElboxError
from elbox.training import validate

TARGET_NATS = 0.3
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "train_quality.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="binarized MNIST folder")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10, help="test ELBO every N epochs (and at the end)")
    parser.add_argument("--eval-repeats", type=int, default=10, help="evaluations averaged for the final test ELBO")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    args = parser.parse_args()
    if min(args.epochs, args.eval_every, args.eval_repeats) < 1:
        parser.error("--epochs, --eval-every and --eval-repeats must be at least 1")
    return args


def elbox_options(args: argparse.Namespace) -> dict:
    """The keyword options of ``elbox.train`` for this benchmark (``elbox train`` on the command line)."""
    return {
        "data": "binarized-mnist",
        "data_dir": args.data_dir,
        "latent_dim": LATENT_DIM,
        "hidden": HIDDEN,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "seed": args.seed,
    }


def is_eval_epoch(epoch: int, args: argparse.Namespace) -> bool:
    return epoch % args.eval_every == 0 or epoch == args.epochs


def summarise(name: str, sizes: dict[str, int], epochs: list[dict], repeats: list[float]) -> dict:
    """The per-epoch records with the final test ELBO (mean and its standard error) and timing."""
    sd = statistics.stdev(repeats) if len(repeats) > 1 else 0.0
    return {
        "name": name,
        "images": sizes,
        "epochs": epochs,
        "final_test_elbo": statistics.fmean(repeats),
        "final_test_elbo_stderr": sd / math.sqrt(len(repeats)),
        "final_test_elbo_repeats": repeats,
        "median_epoch_seconds": statistics.median(e["seconds"] for e in epochs),
    }


def log_epoch(name: str, record: dict) -> None:
    """A progress line on stderr, so stdout keeps only the report."""
    test = f"  test {record['test_elbo']:.2f}" if record.get("test_elbo") is not None else ""
    print(
        f"{name:<11} epoch {record['epoch']:>4}  train {record['train_elbo']:.2f}{test}  {record['seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def train_handwritten(args: argparse.Namespace) -> dict:
    """The plain-PyTorch loop of ``common``, with its test ELBO along the way."""
    data = load_binarized_mnist(args.data_dir)
    x_train, x_test = data.train, data.test
    model, optimizer, generator = handwritten_setup(args.seed)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        train_elbo = handwritten_train_epoch(model, optimizer, x_train, generator)
        record = {"epoch": epoch, "train_elbo": train_elbo, "seconds": time.perf_counter() - started}
        if is_eval_epoch(epoch, args):
            with torch.random.fork_rng():  # evaluation draws leave training's draws unchanged
                record["test_elbo"] = handwritten_test_elbo(model, x_test)
        epochs.append(record)
        log_epoch("handwritten", record)
    repeats = [handwritten_test_elbo(model, x_test) for _ in range(args.eval_repeats)]
    sizes = {"train": x_train.shape[0], "test": x_test.shape[0]}
    return summarise("handwritten", sizes, epochs, repeats)


def train_elbox(args: argparse.Namespace) -> dict:
    """elbox trained by ``elbox.train``, with the test ELBO added by its ``on_epoch`` hook."""
    x_test = load_binarized_mnist(args.data_dir).test
    epochs = []

    def on_epoch(metrics: dict, model: elbox.VAE) -> None:
        record = {k: metrics[k] for k in ("epoch", "train_elbo", "valid_elbo", "seconds")}
        if is_eval_epoch(record["epoch"], args):
            record["test_elbo"] = validate(model, x_test)["elbo"]
        epochs.append(record)
        log_epoch("elbox", record)

    with tempfile.TemporaryDirectory(prefix="elbox-bench-") as tmp:
        try:
            run = elbox.train(**elbox_options(args), out=Path(tmp) / "run", progress=False, on_epoch=on_epoch)
        except ElboxError as e:
            sys.exit(f"error: {e}")
    # the first is the test ELBO elbox train reported; more draws shrink the Monte Carlo noise
    repeats = [run.summary["test"]["elbo"]]
    repeats += [validate(run.model, x_test)["elbo"] for _ in range(args.eval_repeats - 1)]
    return summarise("elbox", run.info["dataset"]["sizes"], epochs, repeats)


def report(hand: dict, box: dict, difference: float) -> None:
    """The curve, the timings and the final comparison, on stdout."""
    print(f"\n{'epoch':>5}  {'hand train':>10}  {'elbox train':>11}  {'hand test':>9}  {'elbox test':>10}")
    for h, e in zip(hand["epochs"], box["epochs"], strict=True):
        if "test_elbo" in h:
            print(
                f"{h['epoch']:>5}  {h['train_elbo']:>10.2f}  {e['train_elbo']:>11.2f}  "
                f"{h['test_elbo']:>9.2f}  {e['test_elbo']:>10.2f}"
            )
    print(
        f"\nmedian epoch seconds: handwritten {hand['median_epoch_seconds']:.2f}, "
        f"elbox {box['median_epoch_seconds']:.2f}"
    )
    for s in (hand, box):
        n = len(s["final_test_elbo_repeats"])
        print(
            f"final test ELBO {s['name']:<11} {s['final_test_elbo']:.3f} ± {s['final_test_elbo_stderr']:.3f} "
            f"(mean ± s.e. of {n} evaluations)"
        )
    # the target guards against elbox losing quality: no worse than the baseline by more than 0.3
    verdict = "meets" if difference >= -TARGET_NATS else "MISSES"
    print(f"elbox - handwritten = {difference:+.3f} nats ({verdict} the target: not below -{TARGET_NATS})")


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    sys.stdout.reconfigure(line_buffering=True)  # keep the report in order with the progress on stderr
    started = datetime.now(UTC)
    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads, load average {env['load_average_1min']}")
    print(f"{args.epochs} epochs, seed {args.seed}, test ELBO every {args.eval_every}")

    hand = train_handwritten(args)
    box = train_elbox(args)
    difference = box["final_test_elbo"] - hand["final_test_elbo"]
    report(hand, box, difference)

    results = {
        "benchmark": "train_quality",
        "started": started.isoformat(timespec="seconds"),
        "seconds": (datetime.now(UTC) - started).total_seconds(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"model": "784-200-200-50 tanh, Bernoulli", "batch_size": BATCH_SIZE, "lr": LR},
        "environment": env | {"elbox": elbox.__version__},
        "handwritten": hand,
        "elbox": box,
        "difference_nats": difference,
        "target_nats": TARGET_NATS,
        "meets_target": difference >= -TARGET_NATS,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
