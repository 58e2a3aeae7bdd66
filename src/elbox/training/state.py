"""A run's state on disk: the checkpoint that a resume continues bitwise from, written and read back."""

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoints import (
    load_checkpoint,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    write_json_lines,
)
from ..distributed import all_gather_tensors, sum_over_ranks, world
from ..models import LatentVariableModel
from ..runs import CHECKPOINTS, METRICS, model_tensors, read_metrics, restore_model
from .average import WeightAverage
from .loop import EpochProgress

__all__ = ["fresh_state", "restore", "write_checkpoint"]


def fresh_state() -> dict[str, Any]:
    """The scalar state of a run before its first step: what a checkpoint's metadata holds."""
    return {"epoch": 0, "step": 0, "best_valid_elbo": -math.inf, "best_epoch": None}


def write_checkpoint(
    path: Path,
    model: LatentVariableModel,
    optimizer: torch.optim.Optimizer,
    data_rng: Tensor,
    state: dict[str, Any],
    progress: EpochProgress | None = None,
    average: WeightAverage | None = None,
) -> None:
    """Write everything a resume needs to continue bitwise, atomically, to one file.

    ``data_rng`` is the data generator's state at the start of the epoch in progress (or of the
    next one, at an epoch's end): a resumed epoch draws its binarization and order again from
    it. ``progress`` is the epoch's position and running sums when stopped mid-epoch.

    With a started weight ``average``, ``model.*`` holds the averaged weights (what ``load_run``
    gives every reader) and ``live.model.*`` the optimiser's own, which a resume continues from.
    """
    w = world()
    opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer.state_dict())
    rng_tensors, rng_meta = rng_states()
    tensors = model_tensors(model) | opt_tensors | rng_tensors | {"rng.data": data_rng}
    if average is not None and average.started:
        tensors |= {f"live.{k}": v for k, v in model_tensors(model).items()}
        tensors |= {f"model.{k}": v for k, v in average.state.items()}
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


def restore(
    path: Path,
    model: LatentVariableModel,
    optimizer: torch.optim.Optimizer,
    g: torch.Generator,
    resume_from: Path | None,
    average: WeightAverage | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], EpochProgress | None]:
    """The training state, metrics and mid-epoch progress to start from: fresh, or from a checkpoint.

    A checkpoint with ``live.model.*`` (a run with a started weight average) puts those in
    ``model`` and its ``model.*`` (the average) in ``average``.
    """
    if resume_from is None:
        return fresh_state(), [], None
    tensors, state = load_checkpoint(resume_from)
    if any(k.startswith("live.model.") for k in tensors):
        if average is not None:
            average.load({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
        tensors = {k.removeprefix("live."): v for k, v in tensors.items() if not k.startswith("model.")}
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
