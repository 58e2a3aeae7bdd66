"""Evaluation throughput: K = 5000 importance-sampled log p(x) with elbox, a hand-written loop and pythae.

All three estimate log p(x) on the same test images with the same network weights (the
784-200-200-50 tanh VAE with a Bernoulli decoder) and the same q, so their estimates agree
within Monte Carlo error, which the script prints beside the timings:

- elbox: ``elbox.evaluate.log_likelihood`` (what ``elbox evaluate`` runs), chunks of particles;
- hand-written: the vectorised loop a user writes: per batch of images, chunks of particles
  through the decoder as one ``[chunk, B, 784]`` batch, logsumexp at the end;
- pythae: ``VAE.get_nll``, which loops over the images one at a time (``--pythae-python``:
  an interpreter of a separate environment with pythae installed; skipped without one).

Interleaved rounds rotate which goes first, so the machine's drift hits all alike.

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
    from elbox.evaluate import log_likelihood
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

    def run_elbox() -> tuple[float, float]:
        started = time.perf_counter()
        ll = log_likelihood(model, x, args.k, chunk=args.chunk, batch_size=args.batch, seed=0)
        return time.perf_counter() - started, ll.mean

    def run_hand() -> tuple[float, float]:
        started = time.perf_counter()
        values = handwritten_log_px(hand, x, args.k, args.chunk, args.batch)
        return time.perf_counter() - started, values.mean().item()

    # one untimed pass of each first: allocations, caches, threads
    log_likelihood(model, x[:10], args.chunk, chunk=args.chunk, batch_size=args.batch)
    handwritten_log_px(hand, x[:10], args.chunk, args.chunk, args.batch)
    runners = {"elbox": run_elbox, "handwritten": run_hand}
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
    report(results, x.shape[0], args, env)


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


def report(results: dict, points: int, args: argparse.Namespace, env: dict) -> None:
    seconds = {name: statistics.median(r["seconds"]) for name, r in results.items()}
    for name, r in results.items():
        per_1000 = 1000 * seconds[name] / points
        minutes = 10 * per_1000 / 60
        print(f"{name:<12} median {seconds[name]:7.2f} s = {per_1000:6.1f} s per 1,000 images ({minutes:5.1f} min "
              f"for 10,000); mean log p(x) {statistics.mean(r['log_px']):.3f}")  # fmt: skip
    ratio = paired(results, "handwritten", "elbox")
    print(f"elbox speed / hand-written speed: median of per-round ratios {ratio:.3f} (target >= 1: no slower)")
    summary = {"elbox_over_handwritten_speed": ratio}
    if "pythae" in results:
        speedup = paired(results, "pythae", "elbox")
        print(f"elbox speed / pythae get_nll speed: {speedup:.2f} (target >= 3)")
        summary["elbox_over_pythae_speed"] = speedup
    else:
        print("pythae: not measured (give --pythae-python)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"}
    args.json.write_text(json.dumps({"settings": settings, "environment": env, "results": results,
                                     "summary": summary}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
