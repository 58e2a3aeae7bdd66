"""The training core: one minibatch step behind the non-finite guard, an epoch of them, and the ELBO of a split.

``setup.prepare`` is the init; ``train_step`` takes one Adam step on a ``VariationalLoss``
(skipped, by ``optim.guard_step``, when its loss or a gradient is not finite); ``train_epoch``
runs the steps of one pass over the data, resumable from any step; ``validate`` is the ELBO
split into reconstruction and KL over a data split. ``run`` adds the run folder around them.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..bounds import ELBO, Bound
from ..distributed import shard, sum_over_ranks, world
from ..models import LatentVariableModel
from ..optim import all_finite, first_nonfinite, guard_step
from .loss import VariationalLoss

__all__ = ["EpochProgress", "steps_per_epoch", "train_epoch", "train_step", "validate"]


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


def steps_per_epoch(n: int, batch_size: int, processes: int = 1) -> int:
    """Steps in an epoch over n points; under DDP a last batch with fewer rows than processes is left out."""
    tail = n % batch_size
    return n // batch_size + (tail >= processes if tail else 0)


def _unwrap(loss: nn.Module) -> nn.Module:
    """The ``VariationalLoss`` inside a ``DistributedDataParallel`` wrapper, or ``loss`` itself."""
    return getattr(loss, "module", loss)


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


def _finite(bound: Bound, loss: nn.Module) -> bool:
    """Whether a step's loss and every gradient are finite (``optim.all_finite``)."""
    return all_finite(bound.loss, loss.parameters())


def _first_nonfinite(bound: Bound, loss: nn.Module) -> str:
    """The first tensor of a failed step that is not finite: the objective's parts, then the gradients."""
    parts = (("the reconstruction term E_q log p(x | z)", bound.reconstruction), ("the KL term", bound.kl),
             ("the objective", bound.loss))  # fmt: skip
    grads = ((name.removeprefix("model."), p) for name, p in _unwrap(loss).named_parameters())
    return first_nonfinite(parts, grads)


def train_step(
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Tensor,
    y: Tensor | None,
    progress: EpochProgress,
    *,
    step: int,
    weight: float | None = None,
    max_nonfinite: int = 10,
) -> Bound:
    """One Adam step on the bound of ``batch`` ``[B, X]`` (labels ``y`` ``[B]``), behind the non-finite guard.

    A step whose loss or any gradient is not finite is skipped (``optim.guard_step``): no
    update, its batch left out of ``progress``'s sums. ``weight`` scales the loss before
    backward (under DDP: this rank's share of the global batch, since DDP averages over ranks);
    ``step`` (from 1) names the step in the guard's message.
    """
    bound = loss(batch, y)
    optimizer.zero_grad(set_to_none=True)
    (bound.loss if weight is None else bound.loss * weight).backward()
    describe = partial(_first_nonfinite, bound, loss)  # only called on a failed step
    if guard_step(progress, _finite(bound, loss), step=step, limit=max_nonfinite, describe=describe):
        optimizer.step()
        progress.used += batch.shape[0]
        with torch.no_grad():
            progress.totals += _sums(bound)
    return bound


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

    Each step is a ``train_step``: one whose loss or any gradient is not finite is skipped and
    counted in ``skipped_steps``; after ``max_nonfinite`` such steps in a row ``NonFiniteError``
    is raised, naming the first tensor that went non-finite at the first of them.

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
    starts = range(p.position * batch_size, n, batch_size)[: steps_per_epoch(n, batch_size, w.size) - p.position]
    for i, start in enumerate(starts, start=p.position):
        if schedule is not None:
            objective.beta = schedule(first_step + i)
            p.weights.append(objective.beta)
        index = order[start : start + batch_size]
        batch = shard(x[index], w)  # the whole batch in one process
        # DDP averages gradients over ranks: weigh each by its share of the global batch
        weight = None if w.size == 1 else batch.shape[0] * w.size / min(batch_size, n - start)
        train_step(loss, optimizer, batch, None if y is None else shard(y[index], w), p, step=first_step + i + 1,
                   weight=weight, max_nonfinite=max_nonfinite)  # fmt: skip
        p.position, p.seconds = i + 1, seconds + time.perf_counter() - started
        if on_step is not None:
            on_step(p)
    return _epoch_means(p, schedule is not None)


def _epoch_means(p: EpochProgress, scheduled: bool) -> dict[str, Any]:
    """An epoch's means over every rank's data points, the steps skipped, and the KL weights used."""
    parts = ("elbo", "reconstruction", "kl", "bound")
    totals, used = p.totals, p.used
    if world().size > 1:  # every rank's sums: the epoch's means over the whole data set
        reduced = sum_over_ranks(torch.cat((totals, totals.new_tensor([used]))))
        totals, used = reduced[:3], int(reduced[3])
    means = _means(totals, used) if used else dict.fromkeys(parts, math.nan)
    return means | {"skipped_steps": p.skipped} | ({"kl_weight": p.weights} if scheduled else {})


@torch.no_grad()
def validate(
    model: LatentVariableModel, x: Tensor, *, analytic_kl: bool = True, batch_size: int = 1000, y: Tensor | None = None
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
    classifier = y is not None and model.classifier
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
