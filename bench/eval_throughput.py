"""Evaluation throughput: K = 5000 importance-sampled log p(x) with elbox, a hand-written loop and pythae.

All three estimate log p(x) on the same test images with the same network weights (the
784-200-200-50 tanh VAE with a Bernoulli decoder) and the same q, so their estimates agree
within Monte Carlo error, which the script prints beside the timings:

- elbox: ``elbox.evaluation.log_likelihood`` (what ``elbox evaluate`` runs), chunks of particles;
- hand-written: the vectorised loop a user writes: per batch of images, chunks of particles
  through the decoder as one ``[chunk, B, 784]`` batch, logsumexp at the end;
- pythae: ``VAE.get_nll``, which loops over the images one at a time (``--pythae-python``:
  an interpreter of a separate environment with pythae installed; skipped without one).

elbox runs three ways: eager (``compile=False``), compiled (what ``elbox evaluate`` does on a
whole test split) and compiled in bf16 (``--precision bf16``, opt-in). Beside them, the GEMM
floor in fp32 and bf16: the decoder's matrix products alone for the same particle-images, in
row blocks of the same size, on preallocated operands (``gemm_floor.py`` measures the same at
fixed shapes). Interleaved rounds rotate which goes first, so the machine's drift hits all
alike, and every ratio is a median of per-round ratios.

    python bench/eval_throughput.py                                    # 200 images x 3 rounds
    python bench/eval_throughput.py --pythae-python /tmp/benchenv/bin/python
    python bench/eval_throughput.py --points 20 --rounds 1 --k 500    # smoke test
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The pythae worker (``--worker``) runs in pythae's environment, which has no elbox: everything
# that needs elbox is imported inside ``main``.


# --------------------------------------------------------------------------- pythae, in its own environment


def pythae_worker(folder: Path, k: int) -> None:
    """Time pythae's ``get_nll`` on the images and weights in ``folder``; print one JSON line."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    weights = np.load(folder / "weights.npz")
    x = torch.from_numpy(np.load(folder / "images.npy"))

    def mlp(prefix: str) -> nn.Sequential:
        layers = [nn.Linear(*weights[f"{prefix}.{i}.weight"].shape[::-1]) for i in (0, 2, 4)]
        net = nn.Sequential(layers[0], nn.Tanh(), layers[1], nn.Tanh(), layers[2])
        net.load_state_dict({k.removeprefix(f"{prefix}."): torch.from_numpy(v) for k, v in weights.items()
                             if k.startswith(prefix)})  # fmt: skip
        return net

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp("encoder")

        def forward(self, x: torch.Tensor) -> ModelOutput:
            loc, raw = self.net(x.reshape(x.shape[0], -1)).chunk(2, -1)
            # elbox's q: scale = softplus(raw) + 1e-4, so all three estimate with the same q
            return ModelOutput(embedding=loc, log_covariance=2 * torch.log(F.softplus(raw) + 1e-4))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp("decoder")

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    config = VAEConfig(
        input_dim=(x.shape[1],), latent_dim=weights["decoder.0.weight"].shape[1], reconstruction_loss="bce"
    )
    model = VAE(config, encoder=Encoder(), decoder=Decoder()).eval()
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.no_grad():  # get_nll builds no graph then: the fastest way to call it
        log_px = model.get_nll(x, n_samples=k)  # default batch_size 100: k / 100 batches per image
    print(json.dumps({"seconds": time.perf_counter() - started, "log_px": float(log_px)}))


# --------------------------------------------------------------------------- the hand-written loop


@torch.inference_mode()
def handwritten_log_px(model: torch.nn.Module, x: torch.Tensor, k: int, chunk: int, batch: int) -> torch.Tensor:
    """IWAE_k estimate of log p(x) per image, ``[N]``: batches of images, chunks of particles, vectorised."""
    out = []
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch]
        loc, raw = model.encoder(xb).chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-4
        log_w = []
        for first in range(0, k, chunk):
            eps = torch.randn(min(chunk, k - first), *loc.shape)  # [c, B, D]
            z = loc + scale * eps
            logits = model.decoder(z)  # [c, B, 784]
            log_lik = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            log_q = (-0.5 * (eps.pow(2) + math.log(2 * math.pi)) - scale.log()).sum(-1)
            log_w.append(log_lik + log_prior - log_q)
        out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))
    return torch.cat(out)


# --------------------------------------------------------------------------- the comparison


def floor_runner(model: torch.nn.Module, points: int, k: int, rows: int, dtype: torch.dtype) -> "Callable":
    """The decoder's GEMMs alone for ``points x k`` particle-images, ``rows`` at a time: the time to beat."""
    layers = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, layer.in_features).to(dtype) for layer in layers]
    weights = [layer.weight.detach().t().contiguous().to(dtype) for layer in layers]
    outputs = [torch.empty(rows, layer.out_features, dtype=dtype) for layer in layers]
    calls = math.ceil(points * k / rows)

    def run() -> tuple[float, float]:
        started = time.perf_counter()
        for _ in range(calls):
            for a, w, out in zip(inputs, weights, outputs, strict=True):
                torch.mm(a, w, out=out)
        return time.perf_counter() - started, math.nan

    return run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="binarized MNIST folder")
    parser.add_argument("--points", type=int, default=200, help="test images, spread through the split")
    parser.add_argument("--k", type=int, default=5000, help="particles per image")
    parser.add_argument("--chunk", type=int, default=500, help="particles per decoder pass (elbox and hand-written)")
    parser.add_argument("--batch", type=int, default=100, help="images per pass (elbox and hand-written)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--run", type=Path, default=None, help="a trained run's weights (default: seeded random)")
    parser.add_argument("--pythae-python", type=Path, default=None, help="python of an environment with pythae")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "eval_throughput.json"
    )
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.points, args.k, args.chunk, args.batch, args.rounds) < 1:
        parser.error("--points, --k, --chunk, --batch and --rounds must be at least 1")
    return args


def run_pythae(python: Path, folder: Path, k: int) -> dict:
    done = subprocess.run(
        [str(python), __file__, "--worker", str(folder), "--k", str(k)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"error: the pythae worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.worker is not None:
        pythae_worker(args.worker, args.k)
        return
    sys.stdout.reconfigure(line_buffering=True)
    from common import DEFAULT_DATA_DIR, HandwrittenVAE, elbox_model, environment, load_binarized_mnist, set_threads

    import elbox
    from elbox.evaluation import log_likelihood
    from elbox.plots import spread

    set_threads(args.threads)
    x = spread(load_binarized_mnist(args.data_dir or DEFAULT_DATA_DIR).test, args.points).contiguous()
    torch.manual_seed(0)
    model = elbox.load_run(args.run).model if args.run is not None else elbox_model()
    model.eval()
    hand = HandwrittenVAE()  # the same layers: load elbox's weights into it
    hand.encoder.load_state_dict(model.encoder.encoder.state_dict())
    hand.decoder.load_state_dict(model.decoder.state_dict())
    hand.eval()

    env = environment()
    print(
        f"torch {env['torch']}, {env['threads']} threads, {env['cpus']} CPUs, load average {env['load_average_1min']}"
    )
    print(f"{x.shape[0]} test images, K = {args.k}, chunks of {args.chunk} particles, batches of {args.batch} images")

    values: dict[str, torch.Tensor] = {}

    def elbox_runner(name: str, **options: object) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            started = time.perf_counter()
            ll = log_likelihood(model, x, args.k, chunk=args.chunk, batch_size=args.batch, seed=0, **options)
            seconds = time.perf_counter() - started
            values[name] = ll.values
            return seconds, ll.mean

        return run

    def run_hand() -> tuple[float, float]:
        started = time.perf_counter()
        values = handwritten_log_px(hand, x, args.k, args.chunk, args.batch)
        return time.perf_counter() - started, values.mean().item()

    rows = args.chunk * min(args.batch, x.shape[0])  # particle-images per decoder pass, as elbox and the loop run
    runners = {
        "elbox-eager": elbox_runner("elbox-eager", compile=False),
        "elbox": elbox_runner("elbox", compile=True),
        "elbox-bf16": elbox_runner("elbox-bf16", compile=True, precision="bf16"),
        "handwritten": run_hand,
        "floor-fp32": floor_runner(model, x.shape[0], args.k, rows, torch.float32),
        "floor-bf16": floor_runner(model, x.shape[0], args.k, rows, torch.bfloat16),
    }
    # one untimed pass of each first: allocations, caches, threads, compilation
    for name, options in (("eager", {"compile": False}), ("compiled", {"compile": True}),
                          ("bf16", {"compile": True, "precision": "bf16"})):  # fmt: skip
        started = time.perf_counter()
        log_likelihood(model, x[: args.batch], args.chunk, chunk=args.chunk, batch_size=args.batch, **options)
        print(f"warm-up of elbox {name}: {time.perf_counter() - started:.1f} s (compilation included)")
    handwritten_log_px(hand, x[:10], args.chunk, args.chunk, args.batch)
    with tempfile.TemporaryDirectory(prefix="elbox-eval-") as tmp:
        if args.pythae_python is not None:
            np.save(Path(tmp) / "images.npy", x.numpy())
            weights = {f"encoder.{k}": v for k, v in model.encoder.encoder.state_dict().items()}
            weights |= {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
            np.savez(Path(tmp) / "weights.npz", **{k: v.numpy() for k, v in weights.items()})

            def run_py() -> tuple[float, float]:
                r = run_pythae(args.pythae_python, Path(tmp), args.k)
                return r["seconds"], r["log_px"]

            runners["pythae"] = run_py
        results = rounds(runners, args.rounds)
    report(results, x.shape[0], args, env, values)


def rounds(runners: dict, n: int) -> dict[str, dict[str, list[float]]]:
    """n rounds of every runner, rotating which goes first; per runner its seconds and log p(x) means."""
    results = {name: {"seconds": [], "log_px": []} for name in runners}
    names = list(runners)
    print(f"{'round':>5}  " + "  ".join(f"{name:>12}" for name in names) + "  (seconds)")
    for r in range(n):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds, log_px = runners[name]()
            results[name]["seconds"].append(seconds)
            results[name]["log_px"].append(log_px)
        print(f"{r + 1:>5}  " + "  ".join(f"{results[name]['seconds'][-1]:>12.2f}" for name in names))
    return results


def paired(results: dict, slow: str, fast: str) -> float:
    """The median over rounds of seconds(slow) / seconds(fast): each round compares them on one machine state."""
    return statistics.median(s / f for s, f in zip(results[slow]["seconds"], results[fast]["seconds"], strict=True))


def report(results: dict, points: int, args: argparse.Namespace, env: dict, values: dict) -> None:
    seconds = {name: statistics.median(r["seconds"]) for name, r in results.items()}
    for name, r in results.items():
        per_1000 = 1000 * seconds[name] / points
        minutes = 10 * per_1000 / 60
        estimate = "" if name.startswith("floor") else f"; mean log p(x) {statistics.mean(r['log_px']):.3f}"
        print(f"{name:<12} median {seconds[name]:7.2f} s = {per_1000:6.1f} s per 1,000 images ({minutes:5.1f} min "
              f"for 10,000){estimate}")  # fmt: skip
    summary = {}
    pairs = (("elbox-eager", "handwritten", "(target >= 1: no slower)"), ("elbox", "handwritten", ""),
             ("elbox", "elbox-eager", "(the compiled pass)"), ("elbox-bf16", "elbox", "(bf16)"))
    for ours, theirs, target in pairs:
        summary[f"{ours}/{theirs}"] = paired(results, theirs, ours)
        print(f"speed {ours} / {theirs}: {summary[f'{ours}/{theirs}']:.3f}  {target}")
    for ours, floor in (("elbox", "floor-fp32"), ("elbox-eager", "floor-fp32"), ("elbox-bf16", "floor-bf16"),
                        ("elbox-bf16", "floor-fp32"), ("handwritten", "floor-fp32")):  # fmt: skip
        summary[f"{ours}/{floor}"] = paired(results, ours, floor)
        print(f"time {ours} / {floor}: {summary[f'{ours}/{floor}']:.2f}x the GEMM floor (target for elbox: <= 1.5)")
    difference = values["elbox-bf16"] - values["elbox"]  # the same draws: a paired difference per image
    summary["bf16_minus_fp32_mean"] = difference.mean().item()
    summary["bf16_minus_fp32_max_abs"] = difference.abs().max().item()
    verdict = "within" if abs(summary["bf16_minus_fp32_mean"]) < 0.05 else "NOT within"
    print(f"bf16 - fp32 log p(x), same draws: mean {summary['bf16_minus_fp32_mean']:+.4f} nats, largest per image "
          f"{summary['bf16_minus_fp32_max_abs']:.4f} ({verdict} the 0.05-nat tolerance)")  # fmt: skip
    if "pythae" in results:
        summary["elbox/pythae"] = paired(results, "pythae", "elbox")
        print(f"speed elbox / pythae get_nll: {summary['elbox/pythae']:.2f} (target >= 3)")
    else:
        print("pythae: not measured (give --pythae-python)")
    print("RESULT " + " ".join(f"{name}={v:.3f}" for name, v in summary.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"}
    args.json.write_text(json.dumps({"settings": settings, "environment": env, "results": results,
                                     "summary": summary}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
