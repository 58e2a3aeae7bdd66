"""The whole test split at K = 5,000: elbox's evaluation pass (fp32 and bf16, compiled) against the GEMM floor.

The issue's figure: all 10,000 test images of static binarized MNIST at K = 5,000 in at most
1.5x the time of the decoder's matrix products alone at fp32 (the floor), or less with a
lower-precision path whose log p(x) stays within 0.05 nats. One process, in order: the
compiled fp32 pass over every image, the compiled bf16 pass over every image (the same draws),
and the floor, timed on a tenth of the particle-images and scaled (a rate of identical GEMM
calls). Prints the times, the ratios and the bf16 - fp32 change of log p(x).

    python bench/eval_full.py --run RUN    # RUN: the benchmark VAE (784-200-200-50), e.g. after 5 epochs
"""

import argparse
import json
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA_DIR, environment, load_binarized_mnist
from eval_throughput import floor_runner

import elbox
from elbox.evaluation import log_likelihood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    x = load_binarized_mnist(args.data_dir).test[: args.points].contiguous()
    model = elbox.load_run(args.run).model.eval()
    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads, load average {env['load_average_1min']}; "
          f"{x.shape[0]} images, K = {args.k}")  # fmt: skip
    options = {"fp32": {"compile": True}, "bf16": {"compile": True, "precision": "bf16"}}
    for o in options.values():  # compilation, outside the timing
        log_likelihood(model, x[: args.batch], args.chunk, chunk=args.chunk, batch_size=args.batch, **o)
    seconds, values = {}, {}
    for name, o in options.items():
        started = time.perf_counter()
        values[name] = log_likelihood(model, x, args.k, chunk=args.chunk, batch_size=args.batch, seed=0, **o).values
        seconds[name] = time.perf_counter() - started
        print(f"elbox {name}: {seconds[name]:.1f} s, log p(x) {values[name].mean():.4f}")
    rows = args.chunk * args.batch
    tenth = max(1, x.shape[0] // 10)
    floor_seconds = floor_runner(model, tenth, args.k, rows, torch.float32)()[0] * x.shape[0] / tenth
    change = values["bf16"] - values["fp32"]
    result = {
        "points": x.shape[0], "k": args.k, "seconds": seconds, "floor_fp32_seconds": floor_seconds,
        "ratio_to_floor": {n: s / floor_seconds for n, s in seconds.items()},
        "bf16_minus_fp32": {"mean": change.mean().item(), "max_abs": change.abs().max().item()},
        "log_px": {n: v.mean().item() for n, v in values.items()}, "environment": env,
    }  # fmt: skip
    print(f"floor (fp32 decoder GEMMs): {floor_seconds:.1f} s")
    ratio = {n: s / floor_seconds for n, s in seconds.items()}
    print(f"RESULT fp32={ratio['fp32']:.2f}x bf16={ratio['bf16']:.2f}x of the floor; bf16 - fp32 log p(x): "
          f"mean {change.mean():+.4f}, largest per image {change.abs().max():.4f} nats")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
