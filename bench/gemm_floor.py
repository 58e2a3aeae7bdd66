"""The GEMM floor: this CPU's matmul rate at the benchmark models' shapes, and the speed it allows.

A training step of the 784-200-200-50 tanh VAE (batch 100) and the K = 5,000 log p(x) of
10,000 test images are, in FLOPs, almost nothing but matrix multiplications. Timing exactly
those multiplications with torch (no autograd, no elementwise work, no Python around them)
gives the time no implementation on this machine and in this precision can beat; the
benchmarks report their figures as a multiple of it.

Training, per step of B images (each ``nn.Linear`` of size in -> out):

    forward   y = x W^T + b          2 B in out  FLOPs   ([B, in] @ [in, out])
    backward  dx = dy W              2 B in out          ([B, out] @ [out, in]; not for the first layer: x needs none)
              dW = dy^T x            2 B in out          ([out, B] @ [B, in])

Evaluation, per particle and image: the decoder's three layers, forward only, on rows of
``chunk x batch`` particle-images at once (the encoder runs once per image: 1/5000 of it).

    python bench/gemm_floor.py                 # fp32 and bf16, about 30 s
    python bench/gemm_floor.py --dtypes fp32   # fp32 only
"""

import argparse
import time

import torch
from common import BATCH_SIZE, DATA_DIM, HIDDEN, LATENT_DIM, environment, set_threads

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
EVAL_IMAGES, EVAL_K = 10_000, 5000

# (in, out) of every Linear of the benchmark VAE: encoder (mu and scale from one 2D output), decoder
ENCODER = [(DATA_DIM, HIDDEN[0]), (HIDDEN[0], HIDDEN[1]), (HIDDEN[1], 2 * LATENT_DIM)]
DECODER = [(LATENT_DIM, HIDDEN[1]), (HIDDEN[1], HIDDEN[0]), (HIDDEN[0], DATA_DIM)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seconds", type=float, default=0.3, help="time per repeat of each shape")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per shape; the best is kept")
    parser.add_argument("--eval-rows", type=int, default=10_000, help="particle-images per decoder GEMM")
    return parser.parse_args()


def gemm_seconds(m: int, k: int, n: int, dtype: torch.dtype, seconds: float, repeats: int) -> float:
    """The best over ``repeats`` of the mean time of ``[m, k] @ [k, n]`` (into a preallocated output)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: the library picks its kernel, pages are touched
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < seconds / 4 or calls < 3:
        torch.mm(a, b, out=out)
        calls += 1
    per_call = (time.perf_counter() - started) / calls
    n_calls = max(3, int(seconds / per_call))
    times = []
    for _ in range(repeats):  # the best repeat: other processes only ever slow a repeat down
        started = time.perf_counter()
        for _ in range(n_calls):
            torch.mm(a, b, out=out)
        times.append((time.perf_counter() - started) / n_calls)
    return min(times)


def training_gemms(batch: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) of every GEMM of one training step: forward, and the two backward ones per layer."""
    shapes = []
    for layers, first_needs_no_dx in ((ENCODER, True), (DECODER, False)):
        for i, (n_in, n_out) in enumerate(layers):
            shapes.append((batch, n_in, n_out))  # forward
            if i > 0 or not first_needs_no_dx:
                shapes.append((batch, n_out, n_in))  # dx = dy W
            shapes.append((n_out, batch, n_in))  # dW = dy^T x
    return shapes


def flops(shapes: list[tuple[int, int, int]]) -> float:
    return sum(2.0 * m * k * n for m, k, n in shapes)


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads, {env['cpus']} CPUs, load {env['load_average_1min']}")
    print(f"bf16 kernels: mkldnn bf16 supported = {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        timer = lambda m, k, n, d=dtype: gemm_seconds(m, k, n, d, args.seconds, args.repeats)  # noqa: E731
        peak_rate = 2.0 * 2048**3 / timer(2048, 2048, 2048)

        train = training_gemms(BATCH_SIZE)
        step_seconds = sum(timer(*s) for s in train)
        train_rate = flops(train) / step_seconds
        print(f"\n[{name}] peak (2048^3): {peak_rate / 1e9:.1f} GFLOP/s")
        print(f"[{name}] training step, batch {BATCH_SIZE}: {len(train)} GEMMs, {flops(train) / 1e6:.2f} MFLOP, "
              f"{step_seconds * 1e6:.0f} us at {train_rate / 1e9:.1f} GFLOP/s "
              f"-> floor {BATCH_SIZE / step_seconds:,.0f} images/s")  # fmt: skip

        rows = args.eval_rows
        decoder = [(rows, n_in, n_out) for n_in, n_out in DECODER]
        encoder = [(min(rows, EVAL_IMAGES), n_in, n_out) for n_in, n_out in ENCODER]
        dec_seconds = sum(timer(*s) for s in decoder) / rows  # per particle-image
        enc_seconds = sum(timer(*s) for s in encoder) / min(rows, EVAL_IMAGES)  # per image
        eval_rate = flops(decoder) / rows / dec_seconds
        eval_seconds = EVAL_IMAGES * (EVAL_K * dec_seconds + enc_seconds)
        print(f"[{name}] evaluation, decoder on {rows:,} rows at once: {eval_rate / 1e9:.1f} GFLOP/s; K = {EVAL_K} on "
              f"{EVAL_IMAGES:,} images: {flops(decoder) / rows * EVAL_K * EVAL_IMAGES / 1e12:.2f} TFLOP "
              f"-> floor {eval_seconds:.1f} s ({eval_seconds / 60:.2f} min)")  # fmt: skip
        print(f"RESULT dtype={name} peak_gflops={peak_rate / 1e9:.1f} train_gflops={train_rate / 1e9:.1f} "
              f"train_floor_img_s={BATCH_SIZE / step_seconds:.0f} eval_gflops={eval_rate / 1e9:.1f} "
              f"eval_floor_s={eval_seconds:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
