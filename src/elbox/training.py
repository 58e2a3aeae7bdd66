"""Training: init, one epoch, evaluation; and ``train`` / ``resume``, which add a run folder.

The core is three small functions: ``prepare`` (data and model, every check done before a
file is written), ``train_epoch`` (minibatch Adam steps on a ``VariationalLoss``) and
``evaluate`` (the ELBO split into reconstruction and KL over a data split). ``train`` adds
the run folder, checkpoints, metrics and a progress bar.
"""

import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ._version import __version__
from .bounds import ELBO, IWAE, Bound, Objective, RenyiBound
from .checkpoints import (
    append_json_line,
    load_checkpoint,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    write_json,
    write_json_lines,
)
from .config import PRECISIONS, TrainConfig
from .data import Dataset, binarize
from .distributed import all_gather_tensors, barrier, device_of, from_main, init, shard, sum_over_ranks, world
from .errors import ElboxError, StoppedError
from .likelihoods import GRID_LIKELIHOODS
from .models import VAE, VAEConfig, build_model
from .priors import VampPrior
from .runs import (
    CHECKPOINTS,
    CONFIG,
    FIGURES,
    INFO,
    METRICS,
    Run,
    load_run,
    load_splits,
    model_tensors,
    read_json,
    read_metrics,
    restore_model,
)
from .schedules import kl_weight

__all__ = [
    "EpochProgress",
    "NonFiniteError",
    "Setup",
    "StoppedError",
    "VariationalLoss",
    "compile_loss",
    "evaluate",
    "kl_schedule",
    "labels_for",
    "make_objective",
    "make_optimizer",
    "prepare",
    "resolve_device",
    "resume",
    "train",
    "train_epoch",
]


class VariationalLoss(nn.Module):
    """A model bound to an objective: ``forward(x)`` returns the ``Bound`` per data point.

    Minimise ``forward(x).loss``. One module holding both is what any optimiser (and
    DistributedDataParallel) expects. With ``precision="bf16"`` the forward pass runs under
    ``torch.autocast`` in bfloat16 (matrix products in bf16, reductions and the bound's
    log-densities in float32 as autocast keeps them): opt-in, its accuracy in tests/test_train.py.
    """

    def __init__(self, model: VAE, objective: Objective, k: int = 1, *, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ElboxError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        self.model, self.objective, self.k, self.precision = model, objective, k, precision

    def forward(self, x: Tensor, y: Tensor | None = None) -> Bound:
        """The bound for inputs x ``[B, X]``, given labels y ``[B]`` for a model that needs them (cvae, vib)."""
        o = self.objective
        given = {} if y is None else {"y": y}
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            bound = o(self.model(x, self.k, reparameterize=o.reparameterize, stop_q=o.stop_q, **given))
        return Bound(*(v.to(x.dtype) for v in bound)) if self.precision == "bf16" else bound


def compile_loss(loss: VariationalLoss) -> VariationalLoss:
    """Compile ``loss``'s forward with ``torch.compile``, in place, and return it.

    The model, the draws and the objective become a few fused kernels, and their backward one
    compiled graph; the optimiser and the NaN guard stay as they are. Draws use torch's own
    random numbers (inductor's ``fallback_random``), so a compiled run draws exactly what an
    eager one does and its losses agree with eager ones to float rounding (tests/test_train.py).
    The first steps pay for the compilation (seconds).
    """
    loss.model.prior()  # fill the prior's cache now: a first call that fills it would be compiled twice
    loss.compile(dynamic=False, options={"fallback_random": True})
    return loss


class Setup(NamedTuple):
    """What a run trains on: the resolved config, the data set, fixed splits and the model."""

    config: TrainConfig
    dataset: Dataset
    splits: dict[str, Tensor]  # train / valid / test, [N, X], in the likelihood's support
    model: VAE


def _resolve_table(model: VAEConfig, dataset: Dataset, binarized: bool) -> VAEConfig:
    """A table's model: one likelihood per column, from the schema; the options that need images or labels refused."""
    problems = []
    if model.likelihood not in ("auto", "table"):
        problems.append(f"--likelihood {model.likelihood} (a table has one likelihood per column, set by its schema: "
                        "leave --likelihood out, or declare column kinds with --schema)")  # fmt: skip
    if binarized:
        problems.append("--binarize (it draws pixels; a table's binary columns are modelled as they are)")
    if model.model != "vae" or model.network != "mlp" or model.prior.startswith("vamp"):
        problems.append(f"--model {model.model} --network {model.network} --prior {model.prior} (tables train "
                        "--model vae with --network mlp, and a standard or mog prior)")  # fmt: skip
    if problems:
        raise ElboxError(f"the data {dataset.name} are a table, which does not take " + "; ".join(problems) + ".")
    return replace(model, data_dim=dataset.dim, likelihood="table", columns=dataset.schema.specs)


def _resolve_model(model: VAEConfig, dataset: Dataset, binarized: bool) -> VAEConfig:
    if dataset.schema is not None:
        return _resolve_table(model, dataset, binarized)
    likelihood, levels = model.likelihood, model.levels
    if likelihood == "auto":
        if binarized or dataset.levels == 1:
            likelihood = "bernoulli"
        elif dataset.levels is not None:
            likelihood = "binomial"
        else:
            likelihood = "gaussian"
    if likelihood in GRID_LIKELIHOODS and levels is None:
        levels = dataset.levels
        if levels is None:
            raise ElboxError(
                f"the {likelihood} likelihood is a pmf on the grey levels k/n, but the {dataset.name} data take "
                "continuous values; give n with --levels if they lie on such a grid, or use --likelihood "
                "gaussian or continuous-bernoulli."
            )
    image_shape = model.image_shape
    if model.network == "conv" and image_shape is None:
        image_shape = dataset.image_shape
        if image_shape is None:
            raise ElboxError(
                f"the conv network needs images, but the {dataset.name} data are rows of {dataset.dim} values with no "
                "image shape; save them as an [N, H, W] array, give --image-shape H,W, or use --network mlp."
            )
    return replace(model, data_dim=dataset.dim, likelihood=likelihood, levels=levels, image_shape=image_shape)


def prepare(config: TrainConfig) -> Setup:
    """Load the data, resolve the model's options from it and check the data fit the model.

    Nothing is written: every problem with the user's input surfaces here, before a run
    folder is touched. The weights are initialised from ``config.seed``.
    """
    if config.tensorboard:
        from .tensorboard import check_installed

        check_installed()
    dataset, splits = load_splits(config)
    model_config = _resolve_model(config.model, dataset, config.binarize != "none")
    model_config = _resolve_classes(model_config, dataset, config.data)
    device = resolve_device(config.device)
    if config.threads is not None:  # pinned for the run: a thread count that drifts changes speed and rounding
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    for prior in (m for m in model.modules() if isinstance(m, VampPrior)):  # a resumed run loads its own after
        prior.start_at(splits["train"], torch.Generator().manual_seed(config.seed))
    for name, x in splits.items():
        dynamic = name == "train" and config.binarize == "dynamic"
        model.check(binarize(x, torch.Generator().manual_seed(0)) if dynamic else x, name)
    w = init(device)  # under torchrun: join the other processes; every rank built the same weights
    if w.rank:  # each rank draws its own particles; rank 0 draws what a single process would
        torch.manual_seed(config.seed + 1_000_003 * w.rank)
    return Setup(replace(config, model=model_config), dataset, splits, model.to(device_of(device, w)))


def resolve_device(name: str) -> torch.device:
    """The device a config names: ``auto`` is the GPU when torch sees one, else the CPU.

    The data splits stay in host memory; each epoch's training data and each evaluation chunk
    go to the device, so a data set larger than the GPU's memory still trains.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ElboxError(
                f"device {name!r} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}, {build}). "
                "Use --device cpu, or --device auto to take a GPU only where there is one."
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ElboxError(f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s).")
    return torch.device(name)


def _resolve_classes(model: VAEConfig, dataset: Dataset, data: str) -> VAEConfig:
    """A cvae's or vib's number of classes, from labels that every split must have; refused without them."""
    if model.model not in ("cvae", "vib"):
        return model
    if missing := [s for s in ("train", "valid", "test") if s not in dataset.labels]:
        raise ElboxError(
            f"--model {model.model} needs a class label for every example, but the data {data!r} have none for "
            f"the {', '.join(missing)} split(s). Use a data set with labels (digits, mnist, fashion-mnist) or an "
            ".npz file with 'train_labels' (and 'valid_labels', 'test_labels' for the splits it holds)."
        )
    low = min(int(y.min()) for y in dataset.labels.values())
    high = max(int(y.max()) for y in dataset.labels.values())
    if low < 0:
        raise ElboxError(f"class labels must be 0, 1, ..., C - 1, but the data {data!r} have the label {low}.")
    if model.classes is not None and high >= model.classes:
        raise ElboxError(f"classes is {model.classes} but the data {data!r} have the label {high}; "
                         f"give --classes {high + 1} or more, or leave it out.")  # fmt: skip
    return replace(model, classes=model.classes or max(high + 1, 2))


def labels_for(setup: "Setup", split: str) -> Tensor | None:
    """The labels of a split ``[N]`` when the model needs them (cvae, vib), else None."""
    return setup.dataset.labels[split] if getattr(setup.model, "needs_labels", False) else None


def _sums(bound: Bound) -> Tensor:
    """The bound and its parts summed over the batch, ``[3]``: accumulated without a host sync."""
    return torch.stack((bound.value.sum(), bound.reconstruction.sum(), bound.kl.sum())).detach()


def _means(totals: Tensor, n: int) -> dict[str, float]:
    """The mean ELBO, its parts, and the value of the objective that produced them (``bound``).

    The parts are means over the particles, so reconstruction - kl is the ELBO whatever the
    objective (for IWAE it is the mean log-weight of its K particles).
    """
    bound, reconstruction, kl = (totals / n).tolist()
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl, "bound": bound}


def make_objective(config: TrainConfig) -> Objective:
    """The training objective that ``config`` names, with its estimator and KL weight."""
    options = {"estimator": config.estimator, "beta": config.beta, "free_bits": config.free_bits}
    if config.objective == "iwae":
        return IWAE(**options)
    if config.objective == "renyi":
        return RenyiBound(config.alpha, **options)
    return ELBO(analytic_kl=config.analytic_kl, **options)


def kl_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float] | None:
    """beta as a function of the training step, or ``None`` when it is constant."""
    if config.kl_warmup:
        return lambda step: kl_weight(step, beta=config.beta, warmup=config.kl_warmup * steps_per_epoch)
    if config.kl_cycles:
        cycle = math.ceil(config.epochs * steps_per_epoch / config.kl_cycles)
        return lambda step: kl_weight(step, beta=config.beta, cycle=cycle)
    return None


def _steps(n: int, batch_size: int, processes: int = 1) -> int:
    """Steps in an epoch over n points; under DDP a last batch with fewer rows than processes is left out."""
    tail = n % batch_size
    return n // batch_size + (tail >= processes if tail else 0)


def _unwrap(loss: nn.Module) -> nn.Module:
    """The ``VariationalLoss`` inside a ``DistributedDataParallel`` wrapper, or ``loss`` itself."""
    return getattr(loss, "module", loss)


class NonFiniteError(ElboxError):
    """Too many training steps in a row had a non-finite loss or gradient."""


def _finite(bound: Bound, loss: nn.Module) -> bool:
    """Whether a step's loss and every gradient are finite: one fused check, one host sync.

    A NaN or an infinity anywhere makes the sum non-finite (inf - inf is NaN), so the sum of
    the loss and of each gradient's sum decides for all of them at once.
    """
    grads = [p.grad.sum() for p in loss.parameters() if p.grad is not None]
    finite = torch.isfinite(bound.loss.detach() + torch.stack(grads).sum() if grads else bound.loss.detach())
    if world().size > 1:  # every rank skips the step, or none does: the replicas stay equal
        return not bool(sum_over_ranks((~finite).float().reshape(1)))
    return bool(finite)


def _first_nonfinite(bound: Bound, loss: nn.Module) -> str:
    """The first tensor of a failed step that is not finite: the objective's parts, then the gradients."""
    for name, value in (("the reconstruction term E_q log p(x | z)", bound.reconstruction), ("the KL term", bound.kl),
                        ("the objective", bound.loss)):  # fmt: skip
        if not torch.isfinite(value).all():
            return f"{name} ({int((~torch.isfinite(value)).sum())} non-finite values)"
    for name, p in _unwrap(loss).named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name.removeprefix('model.')}"
    return "no single tensor: the gradients are finite but their sum overflows float range"


@dataclass
class EpochProgress:
    """Where an epoch stands after ``position`` steps: what a mid-epoch checkpoint saves.

    ``totals`` ``[3]`` holds the sums of the bound, reconstruction and KL over the ``used``
    data points of the steps taken (skipped steps excluded); the rest is the NaN guard's count
    and the KL weights used so far. A resumed epoch continues from exactly these numbers.
    """

    position: int = 0
    totals: Tensor = field(default_factory=lambda: torch.zeros(3))
    used: int = 0
    skipped: int = 0
    in_a_row: int = 0
    first_bad: str = ""
    weights: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Everything but ``totals``, which travels as a tensor (bitwise)."""
        return {k: v for k, v in asdict(self).items() if k != "totals"}


def train_epoch(
    loss: VariationalLoss,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[EpochProgress], Any] | None = None,
    schedule: Callable[[int], float] | None = None,
    first_step: int = 0,
    max_nonfinite: int = 10,
    progress: EpochProgress | None = None,
    y: Tensor | None = None,
) -> dict[str, Any]:
    """One pass over ``x`` ``[N, X]`` in shuffled minibatches; returns the mean bound and its parts.

    The order is ``randperm(N, generator)``. With a ``schedule``, the objective's KL weight is
    set to ``schedule(step)`` before each step (steps counted from ``first_step``) and the
    weights used are returned as ``kl_weight``. The running sums stay tensors until the end.

    A step whose loss or any gradient is not finite is skipped (no update; its batch left out
    of the means) and counted in ``skipped_steps``; after ``max_nonfinite`` such steps in a row
    ``NonFiniteError`` is raised, naming the first tensor that went non-finite at the first of them.

    ``progress`` continues an epoch stopped after ``progress.position`` steps: the generator
    must be in the state it had at the epoch's start, so the order is drawn again identically
    and the steps already taken are passed over. It is updated in place, and ``on_step(progress)``
    is called after every step (to checkpoint, or to stop by raising).

    ``y`` ``[N]`` are the labels of ``x`` for a model that needs them, taken in the same order.
    """
    n, w = x.shape[0], world()
    order = torch.randperm(n, generator=generator).to(x.device)
    p = progress if progress is not None else EpochProgress(totals=torch.zeros(3, device=x.device))
    started, seconds = time.perf_counter(), p.seconds
    objective = _unwrap(loss).objective
    starts = range(p.position * batch_size, n, batch_size)[: _steps(n, batch_size, w.size) - p.position]
    for i, start in enumerate(starts, start=p.position):
        if schedule is not None:
            objective.beta = schedule(first_step + i)
            p.weights.append(objective.beta)
        index = order[start : start + batch_size]
        batch = shard(x[index], w)  # the whole batch in one process
        bound = loss(batch, None if y is None else shard(y[index], w))
        optimizer.zero_grad(set_to_none=True)
        if w.size == 1:
            bound.loss.backward()
        else:  # DDP averages gradients over ranks: weigh each by its share of the global batch
            (bound.loss * (batch.shape[0] * w.size / min(batch_size, n - start))).backward()
        if _finite(bound, loss):
            optimizer.step()
            p.in_a_row, p.used = 0, p.used + batch.shape[0]
            with torch.no_grad():
                p.totals += _sums(bound)
        else:
            p.skipped, p.in_a_row = p.skipped + 1, p.in_a_row + 1
            if p.in_a_row == 1:
                p.first_bad = f"step {first_step + i + 1}: {_first_nonfinite(bound, loss)}"
            if p.in_a_row >= max_nonfinite:
                raise NonFiniteError(f"{p.in_a_row} training steps in a row had a non-finite loss or gradient "
                                     f"(the first, {p.first_bad}); the run stopped.")  # fmt: skip
        p.position, p.seconds = i + 1, seconds + time.perf_counter() - started
        if on_step is not None:
            on_step(p)
    parts = ("elbo", "reconstruction", "kl", "bound")
    totals, used = p.totals, p.used
    if w.size > 1:  # every rank's sums: the epoch's means over the whole data set
        reduced = sum_over_ranks(torch.cat((totals, totals.new_tensor([used]))))
        totals, used = reduced[:3], int(reduced[3])
    means = _means(totals, used) if used else dict.fromkeys(parts, math.nan)
    return means | {"skipped_steps": p.skipped} | ({"kl_weight": p.weights} if schedule is not None else {})


@torch.no_grad()
def evaluate(
    model: VAE, x: Tensor, *, analytic_kl: bool = True, batch_size: int = 1000, y: Tensor | None = None
) -> dict[str, float]:
    """The mean ELBO over ``x`` ``[N, X]`` with one particle, in nats per data point, with its parts.

    ``elbo = reconstruction - kl``: reconstruction is E_q log p(x | z), kl is KL(q || p). Given
    labels ``y`` ``[N]`` (a cvae, a vib) every term is given y; a classifier (vib) adds its
    ``accuracy``, predicting the class of highest p(y | x) averaged over 12 draws of z.
    """
    objective = ELBO(analytic_kl=analytic_kl)
    device, n = next(model.parameters()).device, x.shape[0]
    x = shard(x, world())  # under torchrun each rank takes its rows; the sums are added up
    y = None if y is None else shard(y, world()).to(device)
    classifier = y is not None and hasattr(model, "predict")
    totals = torch.zeros(4, device=device)  # the bound, its two parts and, for a classifier, the correct
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device)
        labels = None if y is None else y[start : start + batch_size]
        totals[:3] += _sums(objective(model(batch) if labels is None else model(batch, y=labels)))
        if classifier:
            totals[3] += (model.predict(batch).argmax(-1) == labels).sum()
    totals = sum_over_ranks(totals)
    means = _means(totals[:3], n)
    del means["bound"]  # the ELBO itself
    return means | ({"accuracy": totals[3].item() / n} if classifier else {})


def _run_folder(config: TrainConfig, overwrite: bool) -> Path:
    if config.out is not None:
        path = Path(config.out)
    else:
        stem = Path(config.data).stem if config.data.endswith((".npy", ".npz")) else config.data
        path = Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    taken = [p for p in (CONFIG, INFO, METRICS, CHECKPOINTS) if (path / p).exists()]
    if taken and not overwrite:
        raise ElboxError(
            f"{path} already holds a run ({', '.join(taken)}); nothing was changed. Choose another "
            f"--out, continue it with `elbox train --resume {path}`, or replace it with --overwrite."
        )
    for p in [*taken, FIGURES]:
        target = path / p
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checkpoint(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data_rng: Tensor,
    state: dict[str, Any],
    progress: EpochProgress | None = None,
) -> None:
    """Write everything a resume needs to continue bitwise, atomically, to one file.

    ``data_rng`` is the data generator's state at the start of the epoch in progress (or of the
    next one, at an epoch's end): a resumed epoch draws its binarization and order again from
    it. ``progress`` is the epoch's position and running sums when stopped mid-epoch.
    """
    w = world()
    opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer.state_dict())
    rng_tensors, rng_meta = rng_states()
    tensors = model_tensors(model) | opt_tensors | rng_tensors | {"rng.data": data_rng}
    meta = state | {"optimizer": opt_meta, "rng": rng_meta, "progress": None}
    if progress is not None:
        totals, used = progress.totals, progress.used
        if w.size > 1:  # every rank's sums so far, kept by rank 0 on resume
            reduced = sum_over_ranks(torch.cat((totals, totals.new_tensor([used]))))
            totals, used = reduced[:3], int(reduced[3])
        tensors["progress.totals"] = totals
        meta["progress"] = progress.to_json() | {"used": used}
    if w.size > 1:  # each rank's own particle stream (a collective: every rank takes part)
        ranks = all_gather_tensors(torch.get_rng_state())
        tensors |= {f"rng.torch.rank{r}": t for r, t in enumerate(ranks)}
    if w.main:
        save_checkpoint(path, tensors, meta)


def _dataset_info(setup: Setup) -> dict[str, Any]:
    d = setup.dataset
    sizes = {name: int(x.shape[0]) for name, x in setup.splits.items()}
    table = {} if d.schema is None else {"schema": d.schema.to_dict()}  # the user's units, for a reloaded run
    return {"name": d.name, "image_shape": d.image_shape, "levels": d.levels, "sizes": sizes} | table


def _start(
    path: Path, model: VAE, optimizer: torch.optim.Optimizer, g: torch.Generator, resume_from: Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]], EpochProgress | None]:
    """The training state, metrics and mid-epoch progress to start from: fresh, or from a checkpoint."""
    if resume_from is None:
        return {"epoch": 0, "step": 0, "best_valid_elbo": -math.inf, "best_epoch": None}, [], None
    tensors, state = load_checkpoint(resume_from)
    restore_model(model, tensors, resume_from)
    device = next(model.parameters()).device
    optimizer.load_state_dict(optimizer_state_from_tensors(tensors, state.pop("optimizer")))
    restore_rng_states(tensors, state.pop("rng"))
    g.set_state(tensors["rng.data"])
    w = world()
    if f"rng.torch.rank{w.rank}" in tensors:
        torch.set_rng_state(tensors[f"rng.torch.rank{w.rank}"])
    elif w.rank:  # resumed with more processes than saved: a fresh stream for this one
        torch.manual_seed(hash((state["step"], w.rank)) % 2**62)
    progress = state.pop("progress")
    if progress is not None:
        progress = EpochProgress(**progress, totals=tensors["progress.totals"].to(device))
        if w.rank:  # rank 0 carries every rank's sums so far
            progress.used, progress.totals = 0, torch.zeros_like(progress.totals)
    # epochs written to metrics after the checkpoint (a crash in between) are done again
    metrics = [m for m in read_metrics(path) if m["epoch"] <= state["epoch"]]
    if w.main:
        for stale in (path / CHECKPOINTS).glob(".*.tmp"):  # a write killed before its rename
            stale.unlink()
        write_json_lines(path / METRICS, metrics)
    return state, metrics, progress


def _epoch(
    setup: Setup,
    loss: VariationalLoss,
    optimizer: torch.optim.Optimizer,
    g: torch.Generator,
    on_step: Callable[[EpochProgress], Any],
    schedule: Callable[[int], float] | None,
    first_step: int,
    progress: EpochProgress | None,
) -> dict[str, Any]:
    """Train one epoch (or the rest of one) and evaluate on the validation split: its metrics.

    ``train_*`` is the training objective's reported value (the true bound, whatever beta);
    ``valid_*`` is always the ELBO, so runs with different objectives compare.
    """
    config, model = setup.config, setup.model
    device = next(model.parameters()).device
    x = setup.splits["train"]
    x = (binarize(x, g) if config.binarize == "dynamic" else x).to(device)
    progress = progress if progress is not None else EpochProgress(totals=torch.zeros(3, device=device))
    model.train()
    y = labels_for(setup, "train")
    train = train_epoch(loss, optimizer, x, config.batch_size, g, on_step, schedule, first_step,
                        config.max_nonfinite, progress, y=None if y is None else y.to(device))  # fmt: skip
    seconds = progress.seconds
    weights = train.pop("kl_weight", None)
    bound, skipped = train.pop("bound"), train.pop("skipped_steps")
    model.eval()
    valid = evaluate(model, setup.splits["valid"], analytic_kl=config.analytic_kl, y=labels_for(setup, "valid"))
    record = {f"train_{k}": v for k, v in train.items()} | {f"valid_{k}": v for k, v in valid.items()}
    if config.objective != "elbo":  # the trained bound beside the ELBO, under its own name
        record[f"train_{config.objective}"] = bound
    if weights is not None:  # every step's beta, so the schedule is on record as it ran
        record |= {"kl_weight": weights[-1], "kl_weight_per_step": weights}
    return record | {"skipped_steps": skipped, "seconds": seconds, "images_per_second": x.shape[0] / seconds}


OnEpoch = Callable[[dict[str, Any], VAE], Any]


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015), fused into one kernel over all parameters where torch has one.

    The fused kernel computes the same update as the loop over parameter tensors (to float
    rounding) and is about 10% of a training step faster on the benchmark VAE.
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=lr)


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into a request read between steps: the list of signals received.

    The loop then stops at the next step's end with a checkpoint, so nothing is lost; a second
    signal while it does so stops at once (the last checkpoint is still whole: writes are atomic).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _fit(
    setup: Setup, path: Path, progress: bool | None, resume_from: Path | None = None, on_epoch: OnEpoch | None = None
) -> Run:
    config, model = setup.config, setup.model
    optimizer = make_optimizer(model, config.lr)
    g = torch.Generator().manual_seed(config.seed)
    state, metrics, partial = _start(path, model, optimizer, g, resume_from)
    w = world()
    info = {"elbox_version": __version__, "dataset": _dataset_info(setup), "status": "running", "processes": w.size}
    if w.main:
        write_json(path / INFO, info)
    loss = VariationalLoss(model, make_objective(config), config.k, precision=config.precision)
    loss = compile_loss(loss) if config.compile else loss
    if w.size > 1:  # the objective inside DDP, so that backward averages the gradients over ranks
        device = next(model.parameters()).device
        loss = DistributedDataParallel(loss, device_ids=[device] if device.type == "cuda" else None)
    steps = _steps(setup.splits["train"].shape[0], config.batch_size, w.size)
    schedule = kl_schedule(config, steps)
    last, best = path / CHECKPOINTS / "last.safetensors", path / CHECKPOINTS / "best.safetensors"
    bar = tqdm(
        total=config.epochs * steps,
        initial=state["epoch"] * steps + (partial.position if partial is not None else 0),
        disable=True if not w.main else None if progress is None else not progress,  # None: only on a terminal
        unit="step",
        desc=f"training {path.name}",
        leave=False,
    )
    hooks = [h for h in (on_epoch, _tensorboard(setup, path)) if h is not None] if w.main else []

    def stopping() -> bool:
        """Whether a signal asks to stop; under DDP, whether any rank got one (all stop at one step)."""
        if w.size == 1:
            return bool(received)
        return bool(sum_over_ranks(torch.tensor([float(bool(received))], device=next(model.parameters()).device)))

    def stop(signum: int, where: str) -> StoppedError:
        info["status"] = "interrupted"
        if w.main:
            write_json(path / INFO, info)
        name = signal.Signals(signum).name
        return StoppedError(f"stopped by {name} {where}; the checkpoint {last} holds the run as it stood. "
                           f"Continue it with `elbox train --resume {path}`.", signum)  # fmt: skip

    def on_step(p: EpochProgress) -> None:
        bar.update()
        step = state["step"] + p.position
        # a periodic checkpoint only between good steps: one taken inside a run of non-finite
        # steps would replace the last good one
        asked = stopping()
        if asked or (config.checkpoint_every and step % config.checkpoint_every == 0 and p.in_a_row == 0
                     and p.position < steps):  # fmt: skip
            _checkpoint(last, model, optimizer, data_rng, state, p)
        if asked:
            signum = received[0] if received else signal.SIGTERM  # another rank's signal
            raise stop(signum, f"at step {step} (epoch {state['epoch'] + 1}, {p.position} of {steps} steps)")

    with bar, _stop_signals() as received:
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            data_rng = g.get_state()  # an epoch's draws start here; a mid-epoch resume draws them again
            record = {"epoch": epoch, "step": state["step"] + steps}
            try:
                record |= _epoch(setup, loss, optimizer, g, on_step, schedule, state["step"], partial)
            except NonFiniteError as e:
                raise ElboxError(
                    f"{e} The last good checkpoint (epoch {state['epoch']}) is in {path / CHECKPOINTS}, unchanged. "
                    "Lower --lr, look for outliers in the data, or check the model's likelihood; continue with "
                    f"`elbox train --resume {path}`."
                ) from None
            partial = None
            if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
                raise ElboxError(
                    f"training diverged at epoch {epoch} (train ELBO {record['train_elbo']}, valid ELBO "
                    f"{record['valid_elbo']}); the last good checkpoint is in {path / CHECKPOINTS}. "
                    "Lower --lr, or look for outliers in the data."
                )
            metrics.append(record)
            if w.main:
                append_json_line(path / METRICS, record)  # before the checkpoint: see _start
            state.update(epoch=epoch, step=record["step"])
            if record["valid_elbo"] > state["best_valid_elbo"]:
                state.update(best_valid_elbo=record["valid_elbo"], best_epoch=epoch)
                _checkpoint(best, model, optimizer, g.get_state(), state)
            _checkpoint(last, model, optimizer, g.get_state(), state)
            bar.set_postfix(train=f"{record['train_elbo']:.2f}", valid=f"{record['valid_elbo']:.2f}")
            for hook in hooks:
                with torch.random.fork_rng():  # whatever it draws leaves the run's numbers unchanged
                    hook(record, model)
            if stopping():
                raise stop(received[0] if received else signal.SIGTERM, f"at the end of epoch {epoch}")
    for hook in hooks:
        getattr(hook, "close", lambda: None)()
    return _finish(setup, path, info, state, metrics)


def _tensorboard(setup: Setup, path: Path) -> OnEpoch | None:
    """The TensorBoard hook when the config asks for it (``elbox.tensorboard``), else None."""
    if not setup.config.tensorboard:
        return None
    from .tensorboard import epoch_logger

    return epoch_logger(path, setup.dataset.image_shape, setup.config.seed)


def _finish(
    setup: Setup, path: Path, info: dict[str, Any], state: dict[str, Any], metrics: list[dict[str, Any]]
) -> Run:
    """Evaluate on the test split, write the summary and the figures, and load the run."""
    setup.model.eval()
    test = evaluate(setup.model, setup.splits["test"], analytic_kl=setup.config.analytic_kl,
                    y=labels_for(setup, "test"))  # fmt: skip
    last = metrics[-1] if metrics else {}
    parts = ("elbo", "reconstruction", "kl")
    info["status"] = "finished"
    info["summary"] = {
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "train": {k: last.get(f"train_{k}") for k in parts},
        "valid": {k: last.get(f"valid_{k}") for k in parts},
        "test": test,
        "seconds": sum(m["seconds"] for m in metrics),
    }
    if setup.dataset.schema is not None:  # a table: log p(x | z) of each column kind, beside the total
        from .impute import reconstruction_by_kind

        info["summary"]["test"]["reconstruction_by_kind"] = reconstruction_by_kind(setup.model, setup.splits["test"])
    if world().main:
        write_json(path / INFO, info)
        from .plots import write_figures  # matplotlib is imported only when figures are drawn

        if setup.dataset.schema is not None:  # a table's figures are per column, not image grids
            from .plots_table import write_table_figures as write_figures
        write_figures(load_run(path), setup.splits["test"], labels=setup.dataset.labels.get("test"))
    barrier()  # the other ranks read the run once rank 0 has written it
    return load_run(path)


def train(
    config: TrainConfig | None = None,
    *,
    progress: bool | None = None,
    overwrite: bool = False,
    on_epoch: OnEpoch | None = None,
    **options: Any,
) -> Run:
    """Train a VAE and write a run folder; returns the loaded ``Run``.

    Options are those of ``TrainConfig`` and ``VAEConfig``, given as a config or as keywords
    (``train(data="digits", latent_dim=2, epochs=5)``). Every input problem is reported before
    anything is written; an existing run folder is refused unless ``overwrite``.

    Args:
        config: a full configuration; keyword ``options`` override its fields.
        progress: show a progress bar; ``None`` shows one only on a terminal.
        overwrite: replace the run already in ``config.out``.
        on_epoch: called as ``on_epoch(metrics, model)`` after each epoch, once its
            checkpoint is written (to log, evaluate or stop by raising); its random draws
            do not change the run.

    >>> import tempfile
    >>> run = train(epochs=2, out=tempfile.mkdtemp(), progress=False)
    >>> run.summary["epochs"], run.model.config.likelihood, sorted(run.summary["valid"])
    (2, 'binomial', ['elbo', 'kl', 'reconstruction'])
    """
    base = config.to_dict() if config is not None else {}
    if options:
        model = base.pop("model", {}) | {k: v for k, v in options.items() if k in VAEConfig.__dataclass_fields__}
        base |= {k: v for k, v in options.items() if k not in VAEConfig.__dataclass_fields__} | {"model": model}
    setup = prepare(TrainConfig.from_dict(base))
    if setup.dataset.schema is not None and progress is not False and world().main:
        # what was inferred of each column, for the user to check (and to declare otherwise with --schema)
        print(f"columns of {setup.dataset.name}:\n{setup.dataset.schema.describe()}", file=sys.stderr)
    chosen, problem = None, None
    if world().main:  # one rank makes the folder; the others learn its name, or the reason it failed
        try:
            chosen = str(_run_folder(setup.config, overwrite))
            write_json(Path(chosen) / CONFIG, replace(setup.config, out=chosen).to_dict())
        except ElboxError as e:
            problem = str(e)
    if (problem := from_main(problem)) is not None:
        raise ElboxError(problem)
    path = Path(from_main(chosen))
    return _fit(setup._replace(config=replace(setup.config, out=str(path))), path, progress, on_epoch=on_epoch)


def resume(
    path: str | Path, *, epochs: int | None = None, device: str | None = None, progress: bool | None = None
) -> Run:
    """Continue a run from its last checkpoint, to its configured epochs or to ``epochs``.

    The checkpoint holds the weights, Adam's state, every random state and, when the run
    stopped mid-epoch, the epoch's position and running sums: a run killed at any point
    (SIGKILL included) and resumed ends bitwise as if never stopped (same machine and device).
    A run killed before its first checkpoint starts again from its config. ``device``
    continues on another device (no longer bitwise).
    """
    path = Path(path)
    if not (path / CHECKPOINTS / "last.safetensors").exists() and (path / CONFIG).is_file():
        if read_metrics(path):
            raise ElboxError(f"{path} has metrics but no checkpoint ({path / CHECKPOINTS / 'last.safetensors'}); "
                             "the run cannot continue exactly. Train it again with --overwrite.")  # fmt: skip
        config = TrainConfig.from_dict(read_json(path / CONFIG))  # killed before its first checkpoint
        resume_from = None
    else:
        config = load_run(path).config  # validates the folder and the checkpoint before anything changes
        resume_from = path / CHECKPOINTS / "last.safetensors"
    changes = {k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None}
    config = replace(config, **changes)
    setup = prepare(config)
    if changes and world().main:
        write_json(path / CONFIG, config.to_dict())
    return _fit(setup, path, progress, resume_from=resume_from)
