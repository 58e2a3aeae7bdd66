"""Training throughput: images/second of elbox's training loop vs a hand-written loop, Pyro and NumPyro.

All train the 784-200-200-50 tanh VAE (batch 100, Adam 1e-3, one particle) on the same slice
of binarized MNIST, in interleaved rounds that rotate which goes first: the machine's speed
drifts (±25% on a shared 2-core box), and interleaving exposes every loop to the same drift.
elbox is timed through ``elbox.training.train_epoch``, the loop ``elbox train`` runs, eager and
with the loss compiled (``--compile``, ``train.compile_loss``). The peers (Pyro
``Trace_ELBO`` and ``JitTrace_ELBO``, NumPyro's jit-compiled ``SVI.update`` and the same with
the whole pass in ``lax.scan``) run in the bench-only environment (``--peer-python``), each in
one worker process kept alive for every round (``peers_vae.py``).

    python bench/train_throughput.py                          # 8 rounds x 200 steps, elbox and hand-written
    python bench/train_throughput.py --peer-python /tmp/benchenv/bin/python   # and the peers
    python bench/train_throughput.py --rounds 2 --steps 20    # smoke test
    python bench/train_throughput.py --profile                # where a step's time goes
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
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

from elbox import ELBO, IWAE
from elbox.training import VariationalLoss, compile_loss, make_optimizer, train_epoch

TARGET_RATIO = 0.95
PEERS = ("pyro", "pyro-jit", "numpyro-jit", "numpyro-scan")


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
    parser.add_argument("--no-compile", action="store_true", help="leave out elbox with the compiled loss")
    parser.add_argument("--plain-adam", action="store_true", help="add elbox with the baseline's plain Adam")
    parser.add_argument("--peer-python", type=Path, default=None, help="python of the bench env (pyro, numpyro)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--profile", action="store_true", help="profile a few steps of each torch loop instead")
    parser.add_argument("--exactness", action="store_true", help="compare compiled and eager losses step by step")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.warmup_rounds < 0:
        parser.error("--rounds and --steps must be at least 1, --warmup-rounds at least 0")
    return args


def elbox_runner(x: Tensor, seed: int, plain_adam: bool = False, k: int = 1, compile: bool = False) -> Callable:
    """One call = one ``train_epoch`` over ``x``: exactly the step ``elbox train`` takes.

    With ``plain_adam``, the optimiser is the baseline's (Adam looping over parameters), so
    the comparison isolates the cost of elbox's model and objective API; with ``compile``, the
    loss is compiled as ``elbox train --compile`` does.
    """
    torch.manual_seed(seed)
    model = elbox_model()
    objective = ELBO(analytic_kl=True) if k == 1 else IWAE()
    loss = VariationalLoss(model, objective, k=k)
    loss = compile_loss(loss) if compile else loss
    optimizer = torch.optim.Adam(model.parameters(), lr=LR) if plain_adam else make_optimizer(model, LR)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    return lambda: train_epoch(loss, optimizer, x, BATCH_SIZE, generator)


def handwritten_runner(x: Tensor, seed: int, k: int = 1) -> Callable[[], None]:
    """One call = one shuffled pass of the hand-written loop over ``x`` (vectorised IWAE_k for k > 1)."""
    model, optimizer, generator = handwritten_setup(seed)
    return lambda: handwritten_train_epoch(model, optimizer, x, generator, k=k)


class Peer:
    """A worker of ``peers_vae.py`` in the bench env: one line in, one round out, timed in the worker."""

    def __init__(self, python: Path, system: str, data: Path, steps: int) -> None:
        script = Path(__file__).resolve().parent / "peers_vae.py"
        command = [str(python), str(script), "--system", system, "--data", str(data), "--steps", str(steps)]
        self.system = system
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"error: the {self.system} worker stopped (see its error above)")
        return json.loads(line)

    def seconds(self) -> float:
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def timer(run: Callable[[], object]) -> Callable[[], float]:
    """A function timing one call of ``run`` in wall seconds; every loop ends in a host read (``.tolist()``)."""

    def timed() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    return timed


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

    loops = {"elbox": elbox_runner(x, args.seed, k=k)}
    if not args.no_compile:
        loops["elbox-compiled"] = elbox_runner(x, args.seed, k=k, compile=True)
    if args.plain_adam:
        loops["elbox-plain-adam"] = elbox_runner(x, args.seed, plain_adam=True, k=k)
    loops["handwritten"] = handwritten_runner(x, args.seed, k=k)
    if args.profile:
        profile(loops, args.steps)
        return
    if args.exactness:
        exactness(x, args.seed, args.steps)
        return
    runners: dict[str, Callable[[], float]] = {name: timer(loop) for name, loop in loops.items()}

    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads ({env['interop_threads']} inter-op), "
          f"{env['cpus']} CPUs, load average {env['load_average_1min']}")  # fmt: skip
    peers: list[Peer] = []
    with tempfile.TemporaryDirectory(prefix="elbox-train-") as tmp:
        if args.peer_python is not None and k == 1:
            np.save(Path(tmp) / "x.npy", x.numpy())
            for system in args.peers.split(","):
                peers.append(Peer(args.peer_python, system, Path(tmp) / "x.npy", args.steps))
                print(f"{system}: {peers[-1].info['versions']}")
                runners[system] = peers[-1].seconds
        elif args.peer_python is None:
            print("peers: not measured (give --peer-python, the bench env's python)")
        print(f"{args.rounds} rounds x {args.steps} steps x batch {BATCH_SIZE} per loop, after "
              f"{args.warmup_rounds} warm-up")  # fmt: skip
        try:
            speed = measure(runners, n, args)
        finally:
            for peer in peers:
                peer.close()
    report(speed, env, args)


def measure(runners: dict[str, Callable[[], float]], n: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Images/s of every runner per round, after untimed warm-up rounds (allocation, compilation, jit)."""
    for _ in range(args.warmup_rounds):
        for run in runners.values():
            run()
    speed: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    print(f"{'round':>5}  " + "  ".join(f"{name:>14}" for name in names) + "  (img/s)")
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            speed[name].append(n / runners[name]())
        print(f"{r + 1:>5}  " + "  ".join(f"{speed[name][-1]:>14,.0f}" for name in names))
    return speed


def report(speed: dict[str, list[float]], env: dict, args: argparse.Namespace) -> None:
    medians = {name: statistics.median(v) for name, v in speed.items()}
    print("median img/s: " + ", ".join(f"{name} {v:,.0f}" for name, v in medians.items()))
    # The machine's speed drifts between rounds (by 40% within a minute, seen here), so the
    # figures are medians of per-round ratios: each compares the loops on the same machine state.
    ratios = {}
    for ours in [name for name in speed if name.startswith("elbox")]:
        for theirs in [name for name in speed if not name.startswith("elbox")]:
            ratios[f"{ours}/{theirs}"] = paired_ratio(speed[ours], speed[theirs], f"{ours} / {theirs}")
    if "elbox-compiled" in speed:
        ratios["elbox-compiled/elbox"] = paired_ratio(speed["elbox-compiled"], speed["elbox"], "compiled / eager")
    ratio = ratios["elbox/handwritten"]
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"(elbox / handwritten {verdict} the target >= {TARGET_RATIO}; threads {env['threads']})")
    print("RESULT " + " ".join(f"{name}={v:.0f}" for name, v in medians.items()) + " img/s "
          + " ".join(f"{name}={v:.3f}" for name, v in ratios.items()))  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
        results = {"speed": speed, "medians": medians, "ratios": ratios}
        args.json.write_text(json.dumps({"settings": settings, "environment": env, "results": results}, indent=2))
        print(f"wrote {args.json}")


def paired_ratio(ours: list[float], theirs: list[float], label: str) -> float:
    """Print and return the median of per-round ratios, with its quartiles."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio] * 3
    print(f"{label}: median of per-round ratios {ratio:.3f} (quartiles {q[0]:.3f} to {q[2]:.3f})")
    return ratio


# --------------------------------------------------------------------------- --exactness


def step_losses(x: Tensor, seed: int, steps: int, compile: bool) -> Tensor:
    """The loss of each of ``steps`` Adam steps on consecutive batches of ``x``, from ``seed``."""
    torch.manual_seed(seed)
    model = elbox_model()
    loss = VariationalLoss(model, ELBO(analytic_kl=True))
    loss = compile_loss(loss) if compile else loss
    optimizer = make_optimizer(model, LR)
    values = []
    for i in range(steps):
        bound = loss(x[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])
        optimizer.zero_grad(set_to_none=True)
        bound.loss.backward()
        optimizer.step()
        values.append(bound.loss.item())
    return torch.tensor(values, dtype=torch.float64)


def exactness(x: Tensor, seed: int, steps: int) -> None:
    """Compiled against eager training, step by step: the largest relative difference of the losses."""
    eager, compiled = step_losses(x, seed, steps, False), step_losses(x, seed, steps, True)
    relative = ((compiled - eager).abs() / eager.abs()).max().item()
    print(f"{steps} steps: loss {eager[0]:.4f} -> {eager[-1]:.4f} (eager), {compiled[0]:.4f} -> {compiled[-1]:.4f} "
          f"(compiled); largest relative difference {relative:.2e}")  # fmt: skip
    print(f"RESULT exactness steps={steps} max_relative_difference={relative:.3e} exact={relative < 1e-4}")


# --------------------------------------------------------------------------- --profile

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"}


def _in_optimizer(event: object) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


def breakdown(events: list) -> dict[str, float]:
    """Seconds per part of a profiled run: Adam (its whole ``step``), matmul, fused kernels, other ops."""
    parts = dict.fromkeys(("matmul", "optimizer (Adam step, all of it)", "compiled kernels (fused elementwise)",
                           "elementwise and other ops"), 0.0)  # fmt: skip
    for event in events:
        if event.name.startswith("Optimizer.step"):
            if not _in_optimizer(event):
                parts["optimizer (Adam step, all of it)"] += event.cpu_time_total / 1e6
        elif _in_optimizer(event):
            continue
        elif event.name in MATMUL:
            parts["matmul"] += event.self_cpu_time_total / 1e6
        elif event.name.startswith("## Call CompiledFxGraph"):
            parts["compiled kernels (fused elementwise)"] += event.self_cpu_time_total / 1e6
        elif event.name.startswith("aten::"):
            parts["elementwise and other ops"] += event.self_cpu_time_total / 1e6
    return parts


def profile(runners: dict[str, Callable[[], object]], steps: int) -> None:
    """Where a step's time goes, per loop: matmul, Adam, elementwise ops, and Python the rest of the wall time.

    ``torch.profiler`` on the calling thread (an op's intra-op threads run inside it): the
    self time of each op outside the optimiser, and the whole of each ``optimizer.step``.
    What the ops do not account for is Python, dispatch and autograd's bookkeeping. Figures are
    shares of the profiled wall time (the profiler slows every op a little).
    """
    from torch.profiler import profile as torch_profile

    for name, run in runners.items():
        run()  # warm: compiled, allocated
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
        with torch_profile() as prof:
            started = time.perf_counter()
            run()
            profiled = time.perf_counter() - started
        parts = breakdown(prof.events())
        parts["Python, dispatch, autograd (the rest)"] = max(0.0, profiled - sum(parts.values()))
        print(f"\n{name}: {1e6 * wall / steps:.0f} us per step unprofiled ({steps * BATCH_SIZE / wall:,.0f} img/s), "
              f"{1e6 * profiled / steps:.0f} us profiled:")  # fmt: skip
        for part, seconds in parts.items():
            print(f"  {part:<40} {1e6 * seconds / steps:7.0f} us  {seconds / profiled:6.1%}")
        print(f"PROFILE {name} " + " ".join(f"{p.split()[0]}={s / profiled:.3f}" for p, s in parts.items()))


if __name__ == "__main__":
    main()
