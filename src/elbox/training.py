"""Training: init, one epoch, evaluation; and ``train`` / ``resume``, which add a run folder.

The core is three small functions: ``prepare`` (data and model, every check done before a
file is written), ``train_epoch`` (minibatch Adam steps on a ``VariationalLoss``) and
``evaluate`` (the ELBO split into reconstruction and KL over a data split). ``train`` adds
the run folder, checkpoints, metrics and a progress bar.
"""

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__
from .bounds import ELBO, IWAE, Bound, Objective, RenyiBound
from .checkpoints import (
    append_json_line,
    load_checkpoint,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    save_checkpoint,
    write_json,
    write_json_lines,
)
from .config import PRECISIONS, TrainConfig
from .data import Dataset, binarize, load_dataset
from .errors import ElboxError
from .models import VAE, VAEConfig
from .runs import (
    CHECKPOINTS,
    CONFIG,
    FIGURES,
    INFO,
    METRICS,
    Run,
    load_run,
    model_tensors,
    read_metrics,
    restore_model,
)
from .schedules import kl_weight

__all__ = [
    "NonFiniteError",
    "Setup",
    "VariationalLoss",
    "compile_loss",
    "evaluate",
    "kl_schedule",
    "load_splits",
    "make_objective",
    "make_optimizer",
    "prepare",
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

    def forward(self, x: Tensor) -> Bound:
        o = self.objective
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            bound = o(self.model(x, self.k, reparameterize=o.reparameterize, stop_q=o.stop_q))
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


def _resolve_model(model: VAEConfig, dataset: Dataset, binarized: bool) -> VAEConfig:
    likelihood, levels = model.likelihood, model.levels
    if likelihood == "auto":
        if binarized or dataset.levels == 1:
            likelihood = "bernoulli"
        elif dataset.levels is not None:
            likelihood = "binomial"
        else:
            likelihood = "gaussian"
    if likelihood == "binomial" and levels is None:
        levels = dataset.levels
    return replace(model, data_dim=dataset.dim, likelihood=likelihood, levels=levels)


def load_splits(config: TrainConfig) -> tuple[Dataset, dict[str, Tensor]]:
    """The data set of ``config`` and its train / valid / test splits ``[N, X]``, binarized as asked.

    Held-out splits are binarized once (fixed by the seed), so every epoch is evaluated on
    the same data; with ``dynamic`` the training split stays grey and is drawn per epoch.
    """
    dataset = load_dataset(config.data, config.data_dir, download=config.download)
    splits = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    if config.binarize == "none":
        return dataset, splits
    g = torch.Generator().manual_seed(config.seed)
    fixed = {"valid", "test"} | ({"train"} if config.binarize == "static" else set())
    return dataset, {name: binarize(x, g) if name in fixed else x for name, x in splits.items()}


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
    torch.manual_seed(config.seed)
    model = VAE(model_config)
    for name, x in splits.items():
        dynamic = name == "train" and config.binarize == "dynamic"
        model.check(binarize(x, torch.Generator().manual_seed(0)) if dynamic else x, name)
    return Setup(replace(config, model=model_config), dataset, splits, model)


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


class NonFiniteError(ElboxError):
    """Too many training steps in a row had a non-finite loss or gradient."""


def _finite(bound: Bound, loss: nn.Module) -> bool:
    """Whether a step's loss and every gradient are finite: one fused check, one host sync.

    A NaN or an infinity anywhere makes the sum non-finite (inf - inf is NaN), so the sum of
    the loss and of each gradient's sum decides for all of them at once.
    """
    grads = [p.grad.sum() for p in loss.parameters() if p.grad is not None]
    return bool(torch.isfinite(bound.loss.detach() + torch.stack(grads).sum() if grads else bound.loss.detach()))


def _first_nonfinite(bound: Bound, loss: nn.Module) -> str:
    """The first tensor of a failed step that is not finite: the objective's parts, then the gradients."""
    for name, value in (("the reconstruction term E_q log p(x | z)", bound.reconstruction), ("the KL term", bound.kl),
                        ("the objective", bound.loss)):  # fmt: skip
        if not torch.isfinite(value).all():
            return f"{name} ({int((~torch.isfinite(value)).sum())} non-finite values)"
    for name, p in loss.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name.removeprefix('model.')}"
    return "no single tensor: the gradients are finite but their sum overflows float range"


def train_epoch(
    loss: VariationalLoss,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[], Any] | None = None,
    schedule: Callable[[int], float] | None = None,
    first_step: int = 0,
    max_nonfinite: int = 10,
) -> dict[str, Any]:
    """One pass over ``x`` ``[N, X]`` in shuffled minibatches; returns the mean bound and its parts.

    With a ``schedule``, the objective's KL weight is set to ``schedule(step)`` before each
    step (steps counted from ``first_step``) and the weights used are returned as
    ``kl_weight``. The running sums stay tensors until the end of the epoch.

    A step whose loss or any gradient is not finite is skipped (no update; its batch left out
    of the means) and counted in ``skipped_steps``; after ``max_nonfinite`` such steps in a row
    ``NonFiniteError`` is raised, naming the first tensor that went non-finite at the first of them.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=generator)
    totals, used = torch.zeros(3), 0
    weights, skipped, in_a_row, first_bad = [], 0, 0, ""
    for i, start in enumerate(range(0, n, batch_size)):
        if schedule is not None:
            loss.objective.beta = schedule(first_step + i)
            weights.append(loss.objective.beta)
        batch = x[order[start : start + batch_size]]
        bound = loss(batch)
        optimizer.zero_grad(set_to_none=True)
        bound.loss.backward()
        if _finite(bound, loss):
            optimizer.step()
            in_a_row, used = 0, used + batch.shape[0]
            with torch.no_grad():
                totals += _sums(bound)
        else:
            skipped, in_a_row = skipped + 1, in_a_row + 1
            first_bad = first_bad if in_a_row > 1 else f"step {first_step + i + 1}: {_first_nonfinite(bound, loss)}"
            if in_a_row >= max_nonfinite:
                raise NonFiniteError(f"{in_a_row} training steps in a row had a non-finite loss or gradient "
                                     f"(the first, {first_bad}); the run stopped.")  # fmt: skip
        if on_step is not None:
            on_step()
    means = _means(totals, used) if used else dict.fromkeys(("elbo", "reconstruction", "kl", "bound"), math.nan)
    return means | {"skipped_steps": skipped} | ({"kl_weight": weights} if schedule is not None else {})


@torch.no_grad()
def evaluate(model: VAE, x: Tensor, *, analytic_kl: bool = True, batch_size: int = 1000) -> dict[str, float]:
    """The mean ELBO over ``x`` ``[N, X]`` with one particle, in nats per data point, with its parts.

    ``elbo = reconstruction - kl``: reconstruction is E_q log p(x | z), kl is KL(q || p).
    """
    objective = ELBO(analytic_kl=analytic_kl)
    totals = torch.zeros(3)
    for start in range(0, x.shape[0], batch_size):
        totals += _sums(objective(model(x[start : start + batch_size])))
    means = _means(totals, x.shape[0])
    del means["bound"]  # the ELBO itself
    return means


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


def _checkpoint(path: Path, model: VAE, optimizer: torch.optim.Optimizer, g: torch.Generator, state: dict) -> None:
    opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer.state_dict())
    rng = {"rng.torch": torch.get_rng_state(), "rng.data": g.get_state()}
    save_checkpoint(path, model_tensors(model) | opt_tensors | rng, state | {"optimizer": opt_meta})


def _dataset_info(setup: Setup) -> dict[str, Any]:
    d = setup.dataset
    sizes = {name: int(x.shape[0]) for name, x in setup.splits.items()}
    return {"name": d.name, "image_shape": d.image_shape, "levels": d.levels, "sizes": sizes}


def _start(
    path: Path, model: VAE, optimizer: torch.optim.Optimizer, g: torch.Generator, resume_from: Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The training state and metrics to start from: fresh, or restored from a checkpoint."""
    if resume_from is None:
        return {"epoch": 0, "step": 0, "best_valid_elbo": -math.inf, "best_epoch": None}, []
    tensors, state = load_checkpoint(resume_from)
    restore_model(model, tensors, resume_from)
    optimizer.load_state_dict(optimizer_state_from_tensors(tensors, state.pop("optimizer")))
    torch.set_rng_state(tensors["rng.torch"])
    g.set_state(tensors["rng.data"])
    # epochs written to metrics after the checkpoint (a crash in between) are done again
    metrics = [m for m in read_metrics(path) if m["epoch"] <= state["epoch"]]
    write_json_lines(path / METRICS, metrics)
    return state, metrics


def _epoch(
    setup: Setup,
    loss: VariationalLoss,
    optimizer: torch.optim.Optimizer,
    g: torch.Generator,
    on_step: Callable,
    schedule: Callable[[int], float] | None,
    first_step: int,
) -> dict[str, Any]:
    """Train one epoch and evaluate on the validation split: the epoch's metrics.

    ``train_*`` is the training objective's reported value (the true bound, whatever beta);
    ``valid_*`` is always the ELBO, so runs with different objectives compare.
    """
    config, model = setup.config, setup.model
    started = time.perf_counter()
    x = setup.splits["train"]
    x = binarize(x, g) if config.binarize == "dynamic" else x
    model.train()
    train = train_epoch(loss, optimizer, x, config.batch_size, g, on_step, schedule, first_step, config.max_nonfinite)
    seconds = time.perf_counter() - started
    weights = train.pop("kl_weight", None)
    bound, skipped = train.pop("bound"), train.pop("skipped_steps")
    model.eval()
    valid = evaluate(model, setup.splits["valid"], analytic_kl=config.analytic_kl)
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


def _fit(
    setup: Setup, path: Path, progress: bool | None, resume_from: Path | None = None, on_epoch: OnEpoch | None = None
) -> Run:
    config, model = setup.config, setup.model
    optimizer = make_optimizer(model, config.lr)
    g = torch.Generator().manual_seed(config.seed)
    state, metrics = _start(path, model, optimizer, g, resume_from)
    info = {"elbox_version": __version__, "dataset": _dataset_info(setup), "status": "running"}
    write_json(path / INFO, info)
    loss = VariationalLoss(model, make_objective(config), config.k, precision=config.precision)
    loss = compile_loss(loss) if config.compile else loss
    steps = math.ceil(setup.splits["train"].shape[0] / config.batch_size)
    schedule = kl_schedule(config, steps)
    bar = tqdm(
        total=config.epochs * steps,
        initial=state["epoch"] * steps,
        disable=None if progress is None else not progress,  # None: only on a terminal
        unit="step",
        desc=f"training {path.name}",
        leave=False,
    )
    hooks = [h for h in (on_epoch, _tensorboard(setup, path)) if h is not None]
    with bar:
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            record = {"epoch": epoch, "step": state["step"] + steps}
            try:
                record |= _epoch(setup, loss, optimizer, g, bar.update, schedule, state["step"])
            except NonFiniteError as e:
                raise ElboxError(
                    f"{e} The last good checkpoint (epoch {state['epoch']}) is in {path / CHECKPOINTS}, unchanged. "
                    "Lower --lr, look for outliers in the data, or check the model's likelihood; continue with "
                    f"`elbox train --resume {path}`."
                ) from None
            if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
                raise ElboxError(
                    f"training diverged at epoch {epoch} (train ELBO {record['train_elbo']}, valid ELBO "
                    f"{record['valid_elbo']}); the last good checkpoint is in {path / CHECKPOINTS}. "
                    "Lower --lr, or look for outliers in the data."
                )
            metrics.append(record)
            append_json_line(path / METRICS, record)  # before the checkpoint: see _start
            state.update(epoch=epoch, step=record["step"])
            if record["valid_elbo"] > state["best_valid_elbo"]:
                state.update(best_valid_elbo=record["valid_elbo"], best_epoch=epoch)
                _checkpoint(path / CHECKPOINTS / "best.safetensors", model, optimizer, g, state)
            _checkpoint(path / CHECKPOINTS / "last.safetensors", model, optimizer, g, state)
            bar.set_postfix(train=f"{record['train_elbo']:.2f}", valid=f"{record['valid_elbo']:.2f}")
            for hook in hooks:
                with torch.random.fork_rng():  # whatever it draws leaves the run's numbers unchanged
                    hook(record, model)
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
    test = evaluate(setup.model, setup.splits["test"], analytic_kl=setup.config.analytic_kl)
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
    write_json(path / INFO, info)
    run = load_run(path)
    from .plots import write_figures  # matplotlib is imported only when figures are drawn

    write_figures(run, setup.splits["test"], labels=setup.dataset.labels.get("test"))
    return run


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
    path = _run_folder(setup.config, overwrite)
    config = replace(setup.config, out=str(path))
    write_json(path / CONFIG, config.to_dict())
    return _fit(setup._replace(config=config), path, progress, on_epoch=on_epoch)


def resume(path: str | Path, *, epochs: int | None = None, progress: bool | None = None) -> Run:
    """Continue a run from its last checkpoint, to its configured epochs or to ``epochs``.

    The data order and every draw continue from the saved random states, so a run stopped at
    an epoch's end and resumed gives the same numbers as one that was never stopped.
    """
    path = Path(path)
    run = load_run(path)  # validates the folder and the checkpoint before anything changes
    config = run.config if epochs is None else replace(run.config, epochs=epochs)
    setup = prepare(config)
    if epochs is not None:
        write_json(path / CONFIG, config.to_dict())
    return _fit(setup, path, progress, resume_from=path / CHECKPOINTS / "last.safetensors")
