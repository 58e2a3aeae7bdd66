"""A training run: ``train`` and ``resume`` around the loop, with its folder, checkpoints, metrics and stop signals.

The loop's state is one ``Fit``; its steps are named functions over it: ``_begin`` (the
optimiser, the state fresh or restored, the loss, the progress bar), ``_on_step`` (a
periodic checkpoint; a stop asked for by a signal), ``_epoch`` (train one epoch and
validate), ``_keep`` (record the epoch: metrics, checkpoints, epoch hooks) and ``_finish``
(the test split, the summary, then the ``on_finish`` hook: the figures).
"""

import math
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .._version import __version__
from ..checkpoints import append_json_line, load_checkpoint, write_json
from ..data import binarize
from ..distributed import barrier, from_main, sum_over_ranks, world
from ..errors import ElboxError, ElboxWarning, StoppedError
from ..models import VAEConfig
from ..optim import NonFiniteError, make_optimizer
from ..runs import (
    CHECKPOINTS,
    CONFIG,
    FIGURES,
    INFO,
    METRICS,
    Run,
    load_run,
    owned,
    read_json,
    read_metrics,
    run_folder_problem,
)
from .average import WeightAverage
from .config import TrainConfig
from .hooks import Hooks, OnEpoch, OnFinish, default_hooks
from .loop import EpochProgress, steps_per_epoch, train_epoch, validate
from .loss import VariationalLoss, compile_loss, kl_schedule, make_objective
from .setup import Setup, labels_for, prepare
from .state import restore, write_checkpoint

__all__ = ["Fit", "resume", "train"]


def _folder_name(config: TrainConfig) -> Path:
    if config.out is not None:
        return Path(config.out)
    stem = Path(config.data).stem if config.data.endswith((".npy", ".npz")) else config.data
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def _clear(path: Path, overwrite: bool) -> None:
    """Refuse a folder that holds a run (unless ``overwrite``: then empty it); the caller holds its lock."""
    taken = [p for p in (CONFIG, INFO, METRICS, CHECKPOINTS) if (path / p).exists()]
    if taken and not overwrite:
        raise ElboxError(
            f"{path} already holds a run ({', '.join(taken)}); nothing was changed. Choose another "
            f"--out, continue it with `elbox train --resume {path}`, or replace it with --overwrite."
        )
    for p in [*taken, FIGURES]:
        target = path / p
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def _diverged(fit: "Fit", what: str) -> ElboxError:
    """The error that ends a diverged run, once ``run.json`` says ``diverged``: it points only to what exists."""
    fit.info["status"] = "diverged"
    if world().main:
        write_json(fit.path / INFO, fit.info)
    if fit.last.exists():
        where = (f"The last good checkpoint (epoch {fit.state['epoch']}) is {fit.last}, unchanged; continue from "
                 f"it with `elbox train --resume {fit.path}`, or train again with --overwrite.")  # fmt: skip
    else:
        where = (f"No checkpoint was written yet, so there is nothing to resume: train again with --overwrite "
                 f"--out {fit.path}.")  # fmt: skip
    return ElboxError(f"{what} Lower --lr, look for outliers or values of a huge scale in the data (standardise "
                      f"them), or check the model's likelihood. {where}")  # fmt: skip


def _dataset_info(setup: Setup) -> dict[str, Any]:
    d = setup.dataset
    # the data set's own splits: with all_rows the training split holds every row, but the rows of a split
    # (``data.tables.split_rows``, which ``impute.embedding_rows`` cuts from their total) stay the data set's
    sizes = {name: int(getattr(d, name).shape[0]) for name in setup.splits}
    table = {} if d.schema is None else {"schema": d.schema.to_dict()}  # the user's units, for a reloaded run
    return {"name": d.name, "image_shape": d.image_shape, "levels": d.levels, "sizes": sizes} | table


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


@dataclass
class Fit:
    """A run in progress: what the loop's functions share, from ``_begin`` to ``_finish``.

    ``state`` is the scalar state a checkpoint's metadata holds (epoch, step, best validation
    ELBO and epoch); ``data_rng`` the data generator's state at the start of the epoch in
    progress (a mid-epoch resume draws the epoch's order again from it); ``received`` the stop
    signals caught so far; ``loggers`` the epoch hooks (the caller's and the hooks' logger);
    ``average`` the weight average (``config.ema``), which validation scores and checkpoints hold.
    """

    setup: Setup
    path: Path
    loss: nn.Module  # a VariationalLoss, or DistributedDataParallel around one
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    state: dict[str, Any]
    metrics: list[dict[str, Any]]
    info: dict[str, Any]
    steps: int  # per epoch
    schedule: Callable[[int], float] | None
    bar: tqdm
    loggers: list[OnEpoch]
    received: list[int] = field(default_factory=list)
    data_rng: Tensor | None = None
    average: WeightAverage | None = None  # config.ema's running average of the weights

    @property
    def last(self) -> Path:
        return self.path / CHECKPOINTS / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.path / CHECKPOINTS / "best.safetensors"


def _begin(
    setup: Setup, path: Path, progress: bool | None, resume_from: Path | None, loggers: list[OnEpoch], hooks: Hooks
) -> tuple[Fit, EpochProgress | None]:
    """The run's state, fresh or restored from ``resume_from``, and the epoch in progress there (or None)."""
    config, model = setup.config, setup.model
    optimizer = make_optimizer(model, config.lr)
    g = torch.Generator().manual_seed(config.seed)
    average = WeightAverage(config.ema) if config.ema is not None else None
    state, metrics, partial_epoch = restore(path, model, optimizer, g, resume_from, average)
    w = world()
    info = {"elbox_version": __version__, "dataset": _dataset_info(setup), "status": "running", "processes": w.size}
    if w.main:
        write_json(path / INFO, info)
    loss = VariationalLoss(model, make_objective(config), config.k, precision=config.precision)
    loss = compile_loss(loss) if config.compile else loss
    if w.size > 1:  # the objective inside DDP, so that backward averages the gradients over ranks
        device = next(model.parameters()).device
        loss = DistributedDataParallel(loss, device_ids=[device] if device.type == "cuda" else None)
    steps = steps_per_epoch(setup.splits["train"].shape[0], config.batch_size, w.size)
    bar = tqdm(
        total=config.epochs * steps,
        initial=state["epoch"] * steps + (partial_epoch.position if partial_epoch is not None else 0),
        disable=True if not w.main else None if progress is None else not progress,  # None: only on a terminal
        unit="step",
        desc=f"training {path.name}",
        leave=False,
    )
    logger = hooks.logger(setup, path) if hooks.logger is not None and w.main else None
    loggers = [h for h in (*loggers, logger) if h is not None] if w.main else []
    fit = Fit(setup, path, loss, optimizer, g, state, metrics, info, steps, kl_schedule(config, steps), bar, loggers,
              average=average)  # fmt: skip
    return fit, partial_epoch


def _stopping(fit: Fit) -> bool:
    """Whether a signal asks to stop; under DDP, whether any rank got one (all stop at one step)."""
    if world().size == 1:
        return bool(fit.received)
    device = next(fit.setup.model.parameters()).device
    return bool(sum_over_ranks(torch.tensor([float(bool(fit.received))], device=device)))


def _stop(fit: Fit, where: str) -> StoppedError:
    """The error that ends a run stopped by a signal, once ``run.json`` says so."""
    fit.info["status"] = "interrupted"
    if world().main:
        write_json(fit.path / INFO, fit.info)
    signum = fit.received[0] if fit.received else signal.SIGTERM  # SIGTERM: another rank's signal
    name = signal.Signals(signum).name
    return StoppedError(f"stopped by {name} {where}; the checkpoint {fit.last} holds the run as it stood. "
                        f"Continue it with `elbox train --resume {fit.path}`.", signum)  # fmt: skip


def _averaged(fit: Fit) -> AbstractContextManager[None]:
    """The model with the run's averaged weights inside the block (its live ones after); as is without one."""
    return fit.average.applied(fit.setup.model) if fit.average is not None else nullcontext()


def _on_step(fit: Fit, p: EpochProgress) -> None:
    """After each step: the progress bar, a periodic checkpoint, and a stop when a signal asks for one."""
    fit.bar.update()
    step = fit.state["step"] + p.position
    if fit.average is not None and fit.state["epoch"] >= fit.setup.config.ema_start:
        fit.average.update(fit.setup.model)  # before a checkpoint of this step, which holds it
    # a periodic checkpoint only between good steps: one taken inside a run of non-finite
    # steps would replace the last good one
    asked = _stopping(fit)
    every = fit.setup.config.checkpoint_every
    if asked or (every and step % every == 0 and p.in_a_row == 0 and p.position < fit.steps):
        write_checkpoint(fit.last, fit.setup.model, fit.optimizer, fit.data_rng, fit.state, p, fit.average)
    if asked:
        raise _stop(fit, f"at step {step} (epoch {fit.state['epoch'] + 1}, {p.position} of {fit.steps} steps)")


def _epoch(fit: Fit, epoch: int, progress: EpochProgress | None) -> dict[str, Any]:
    """Train one epoch (or the rest of one) and evaluate on the validation split: its metrics.

    ``train_*`` is the training objective's reported value (the true bound, whatever beta);
    ``valid_*`` is always the ELBO, so runs with different objectives compare.
    """
    setup = fit.setup
    config, model = setup.config, setup.model
    device = next(model.parameters()).device
    x = setup.splits["train"]
    x = (binarize(x, fit.generator) if config.binarize == "dynamic" else x).to(device)
    progress = progress if progress is not None else EpochProgress(totals=torch.zeros(3, device=device))
    model.train()
    y = labels_for(setup, "train")
    try:
        train = train_epoch(fit.loss, fit.optimizer, x, config.batch_size, fit.generator, partial(_on_step, fit),
                            fit.schedule, fit.state["step"], config.max_nonfinite, progress,
                            y=None if y is None else y.to(device))  # fmt: skip
    except NonFiniteError as e:
        raise _diverged(fit, str(e)) from None
    seconds = progress.seconds
    weights = train.pop("kl_weight", None)
    bound, skipped = train.pop("bound"), train.pop("skipped_steps")
    model.eval()
    with _averaged(fit):  # the weights the checkpoints will hold are the ones scored
        valid = validate(model, setup.splits["valid"], analytic_kl=config.analytic_kl, y=labels_for(setup, "valid"))
    record = {"epoch": epoch, "step": fit.state["step"] + fit.steps}
    record |= {f"train_{k}": v for k, v in train.items()} | {f"valid_{k}": v for k, v in valid.items()}
    if config.objective != "elbo":  # the trained bound beside the ELBO, under its own name
        record[f"train_{config.objective}"] = bound
    if weights is not None:  # every step's beta, so the schedule is on record as it ran
        record |= {"kl_weight": weights[-1], "kl_weight_per_step": weights}
    return record | {"skipped_steps": skipped, "seconds": seconds, "images_per_second": x.shape[0] / seconds}


def _keep(fit: Fit, record: dict[str, Any]) -> None:
    """Record a finished epoch: refuse a diverged one, then metrics, checkpoints, the bar and the epoch hooks."""
    epoch = record["epoch"]
    if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
        raise _diverged(fit, f"training diverged at epoch {epoch} (train ELBO {record['train_elbo']}, valid ELBO "
                             f"{record['valid_elbo']}).")
    fit.metrics.append(record)
    if world().main:
        append_json_line(fit.path / METRICS, record)  # before the checkpoint: see state.restore
    state, model = fit.state, fit.setup.model
    state.update(epoch=epoch, step=record["step"])
    if record["valid_elbo"] > state["best_valid_elbo"]:
        state.update(best_valid_elbo=record["valid_elbo"], best_epoch=epoch)
        write_checkpoint(fit.best, model, fit.optimizer, fit.generator.get_state(), state, average=fit.average)
    write_checkpoint(fit.last, model, fit.optimizer, fit.generator.get_state(), state, average=fit.average)
    fit.bar.set_postfix(train=f"{record['train_elbo']:.2f}", valid=f"{record['valid_elbo']:.2f}")
    for hook in fit.loggers:
        with torch.random.fork_rng():  # whatever it draws leaves the run's numbers unchanged
            hook(record, model)


def _fit(
    setup: Setup,
    path: Path,
    progress: bool | None,
    resume_from: Path | None = None,
    on_epoch: OnEpoch | None = None,
    hooks: Hooks | None = None,
) -> Run:
    """Train ``setup``'s model into the run folder ``path`` (from ``resume_from`` when given) and load the run."""
    hooks = hooks if hooks is not None else default_hooks()
    if setup.dataset.schema is not None and progress is not False and world().main:
        # what was inferred of each column, for the user to check (and to declare otherwise with --schema)
        print(f"columns of {setup.dataset.name}:\n{setup.dataset.schema.describe()}", file=sys.stderr)
    fit, partial_epoch = _begin(setup, path, progress, resume_from, [] if on_epoch is None else [on_epoch], hooks)
    first = fit.state["epoch"]
    with fit.bar, _stop_signals() as fit.received:
        for epoch in range(fit.state["epoch"] + 1, setup.config.epochs + 1):
            fit.data_rng = fit.generator.get_state()  # an epoch's draws start here; a mid-epoch resume draws them again
            record = _epoch(fit, epoch, partial_epoch)
            partial_epoch = None
            _keep(fit, record)
            if _stopping(fit):
                raise _stop(fit, f"at the end of epoch {epoch}")
    for hook in fit.loggers:
        getattr(hook, "close", lambda: None)()
    return replace(_finish(fit, hooks.on_finish), epochs_trained=fit.state["epoch"] - first)


def _finish(fit: Fit, on_finish: OnFinish | None = None) -> Run:
    """Evaluate on the test split, write the summary, call ``on_finish`` (the figures), and load the run."""
    setup, info, state, metrics = fit.setup, fit.info, fit.state, fit.metrics
    setup.model.eval()
    with _averaged(fit):
        test = validate(setup.model, setup.splits["test"], analytic_kl=setup.config.analytic_kl,
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
        from ..impute import reconstruction_by_kind

        info["summary"]["test"]["reconstruction_by_kind"] = reconstruction_by_kind(setup.model, setup.splits["test"])
    if world().main:
        write_json(fit.path / INFO, info)
        if on_finish is not None:
            on_finish(load_run(fit.path), setup)
    barrier()  # the other ranks read the run once rank 0 has written it
    return load_run(fit.path)


def train(
    config: TrainConfig | None = None,
    *,
    progress: bool | None = None,
    overwrite: bool = False,
    on_epoch: OnEpoch | None = None,
    hooks: Hooks | None = None,
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
        hooks: what the layers above add to the run (``train.Hooks``); ``None`` takes the
            package's defaults, the figures and, when the config asks, TensorBoard.

    >>> import tempfile
    >>> run = train(epochs=2, out=tempfile.mkdtemp(), progress=False)
    >>> run.summary["epochs"], run.model.config.likelihood, sorted(run.summary["valid"])
    (2, 'binomial', ['elbo', 'kl', 'reconstruction'])
    """
    base = config.to_dict() if config is not None else {}
    if options:
        model = base.pop("model", {}) | {k: v for k, v in options.items() if k in VAEConfig.__dataclass_fields__}
        base |= {k: v for k, v in options.items() if k not in VAEConfig.__dataclass_fields__} | {"model": model}
    hooks = hooks if hooks is not None else default_hooks()
    setup = _prepare(TrainConfig.from_dict(base), hooks)
    with ExitStack() as owner:
        chosen, problem = None, None
        if world().main:  # rank 0 owns the folder; the others learn its name, or the reason it failed
            path = _folder_name(setup.config)
            try:
                owner.enter_context(owned(path, create=True))  # before anything is deleted or written
                _clear(path, overwrite)
                write_json(path / CONFIG, replace(setup.config, out=str(path)).to_dict())
                chosen = str(path)
            except ElboxError as e:
                problem = str(e)
            except OSError as e:
                problem = str(run_folder_problem(path, e))
        if (problem := from_main(problem)) is not None:
            raise ElboxError(problem)
        path = Path(from_main(chosen))
        setup = setup._replace(config=replace(setup.config, out=str(path)))
        return _written(path, lambda: _fit(setup, path, progress, on_epoch=on_epoch, hooks=hooks))


def _written(path: Path, run: Callable[[], Run]) -> Run:
    """``run()``, with an ``OSError`` on the run's files (a full disk, a folder removed) told as the user's error."""
    try:
        return run()
    except OSError as e:
        raise run_folder_problem(path, e) from None


def resume(
    path: str | Path,
    *,
    epochs: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    hooks: Hooks | None = None,
) -> Run:
    """Continue a run from its last checkpoint, to its configured epochs or to ``epochs``.

    The checkpoint holds the weights, Adam's state, every random state and, when the run
    stopped mid-epoch, the epoch's position and running sums: a run killed at any point
    (SIGKILL included) and resumed ends bitwise as if never stopped (same machine and device).
    A run killed before its first checkpoint starts again from its config. ``device``
    continues on another device (no longer bitwise). ``hooks`` as for ``train``.
    """
    path = Path(path)
    if not path.is_dir():
        raise ElboxError(f"the run folder {path} does not exist; give --resume the folder `elbox train` wrote.")
    with owned(path):
        return _written(path, lambda: _resume(path, epochs, device, progress, hooks))


def _resume(path: Path, epochs: int | None, device: str | None, progress: bool | None, hooks: Hooks | None) -> Run:
    """``resume`` once the folder is held."""
    status = read_json(path / INFO).get("status") if (path / INFO).is_file() else None
    if not (path / CHECKPOINTS / "last.safetensors").exists() and (path / CONFIG).is_file():
        if status == "diverged":
            raise ElboxError(f"{path} diverged before its first checkpoint, so there is nothing to resume. Train it "
                             "again with --overwrite, with a lower --lr or rescaled data.")  # fmt: skip
        if read_metrics(path):
            raise ElboxError(f"{path} has metrics but no checkpoint ({path / CHECKPOINTS / 'last.safetensors'}); "
                             "the run cannot continue exactly. Train it again with --overwrite.")  # fmt: skip
        config = TrainConfig.from_dict(read_json(path / CONFIG))  # killed before its first checkpoint
        resume_from, done = None, 0
    else:
        run = load_run(path)  # validates the folder and the checkpoint before anything changes
        config, resume_from = run.config, path / CHECKPOINTS / "last.safetensors"
        done = load_checkpoint(resume_from, with_tensors=False)[1]["epoch"]  # metrics may run one epoch ahead
        if epochs is not None and epochs < done:
            raise ElboxError(f"{path} has trained {done} epochs; --epochs {epochs} would end it before where it "
                             f"stands, and a resume only goes forward. Give --epochs above {done} to extend it, "
                             "or leave --epochs out.")  # fmt: skip
        if status == "finished" and (epochs if epochs is not None else config.epochs) <= done:
            warnings.warn(f"the run {path} is already complete ({done} of {config.epochs} epochs); nothing was "
                          f"trained. Extend it with `elbox train --resume {path} --epochs N`, N > {done}.",
                          ElboxWarning, stacklevel=3)  # fmt: skip
            return replace(run, epochs_trained=0)
    changes = {k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None}
    config = replace(config, **changes)
    hooks = hooks if hooks is not None else default_hooks()
    setup = _prepare(config, hooks)
    if changes and world().main:
        write_json(path / CONFIG, config.to_dict())
    return _fit(setup, path, progress, resume_from=resume_from, hooks=hooks)


def _prepare(config: TrainConfig, hooks: Hooks) -> Setup:
    """``prepare``, after the hooks' check: every refusal comes before anything is written."""
    if hooks.check is not None:
        hooks.check(config)
    if config.kl_warmup > config.epochs:
        warnings.warn(f"the KL warm-up lasts {config.kl_warmup} epochs but the run {config.epochs}: beta reaches only "
                      f"{config.beta * config.epochs / config.kl_warmup:.3g} of {config.beta:g}, so the run ends "
                      "before its objective is the ELBO it reports. Give --kl-warmup at most --epochs.",
                      ElboxWarning, stacklevel=3)  # fmt: skip
    return prepare(config)
