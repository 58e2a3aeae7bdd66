"""The optimiser and the non-finite policy that every gradient loop of elbox shares (``training/``, ``bayes``).

Two things, written once:

- ``make_optimizer``: Adam (Kingma & Ba, 2015), torch's fused kernel where there is one, the
  loop over parameter tensors where not (a device or dtype without the kernel).
- the non-finite guard: a step whose loss or any gradient is NaN or infinite is skipped (no
  update), counted, and after ``limit`` such steps in a row the loop stops with
  ``NonFiniteError`` naming the first tensor that went non-finite. ``all_finite`` decides with
  one fused sum and one host sync; ``first_nonfinite`` names the culprit (only on failure);
  ``guard_step`` applies the policy to a ``NonFiniteCounts``.

A loop uses them as ``train.loop.train_epoch`` does::

    optimizer = make_optimizer(module, lr)
    counts = NonFiniteCounts()
    for step, batch in enumerate(batches, start=1):
        loss = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if guard_step(counts, all_finite(loss, module.parameters()), step=step, limit=10,
                      describe=lambda: first_nonfinite([("the objective", loss)], module.named_parameters())):
            optimizer.step()

``bayes.fitting`` should call the same three (its ``MAX_FAILURES`` is the ``limit``): one NaN
policy and one fused-Adam fallback for the whole package.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.optim.adam import adam  # imported by torch itself: free here, unlike building an optimiser

from .distributed import sum_over_ranks, world
from .errors import ElboxError

__all__ = [
    "Adam",
    "NonFiniteCounts",
    "NonFiniteError",
    "all_finite",
    "first_nonfinite",
    "guard_step",
    "make_optimizer",
]


def make_optimizer(parameters: nn.Module | Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015) over a module's (or an iterable's) parameters, fused where torch has the kernel.

    The fused kernel computes the same update as the loop over parameter tensors (to float
    rounding) and is about 10% of a training step faster on the benchmark VAE.
    """
    # a list: the fallback needs the parameters a second time, which a generator no longer has
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr)


class Adam:
    """Adam over a list of tensors, torch.optim.Adam(params, lr, fused=True)'s update through torch's
    functional kernel (``torch.optim.adam.adam``), without ``torch.optim.Optimizer``.

    Why: constructing any torch optimiser imports ``torch._dynamo`` (0.6-0.8 s; see ``elbox.lbfgs``),
    which is most of a small Bayesian fit. ``param_groups`` and ``zero_grad`` behave as torch's, so a loop
    written for a torch optimiser (learning-rate decays included) runs with this one; the update is the
    same to the last bit (``tests/test_optim.py``).
    """

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        adam([self.params[i] for i in live], [self.params[i].grad for i in live],
             [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [],
             [self.steps[i] for i in live], fused=True, amsgrad=False, beta1=0.9, beta2=0.999,
             lr=self.param_groups[0]["lr"], weight_decay=0.0, eps=1e-8, maximize=False)  # fmt: skip


class NonFiniteError(ElboxError):
    """Too many steps in a row had a non-finite loss or gradient."""


class Counts(Protocol):
    """What the guard keeps between steps (``NonFiniteCounts``, or a loop's own record with these fields)."""

    skipped: int
    in_a_row: int
    first_bad: str


@dataclass
class NonFiniteCounts:
    """The guard's record: steps skipped in all, skipped in a row now, and the first of that row named."""

    skipped: int = 0
    in_a_row: int = 0
    first_bad: str = ""


def all_finite(loss: Tensor, parameters: Iterable[Tensor]) -> bool:
    """Whether a step's loss and every gradient are finite: one fused check, one host sync.

    A NaN or an infinity anywhere makes the sum non-finite (inf - inf is NaN), so the sum of
    the loss and of each gradient's sum decides for all of them at once. Under DDP every rank
    gets the same answer (any rank's failure fails all), so the replicas stay equal.
    """
    grads = [p.grad.sum() for p in parameters if p.grad is not None]
    finite = torch.isfinite(loss.detach() + torch.stack(grads).sum() if grads else loss.detach())
    if world().size > 1:  # every rank skips the step, or none does: the replicas stay equal
        return not bool(sum_over_ranks((~finite).float().reshape(1)))
    return bool(finite)


def first_nonfinite(values: Iterable[tuple[str, Tensor]], parameters: Iterable[tuple[str, Tensor]]) -> str:
    """The first tensor of a failed step that is not finite: the named ``values``, then the gradients."""
    for name, value in values:
        if not torch.isfinite(value).all():
            return f"{name} ({int((~torch.isfinite(value)).sum())} non-finite values)"
    for name, p in parameters:
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name}"
    return "no single tensor: the gradients are finite but their sum overflows float range"


def guard_step(counts: Counts, finite: bool, *, step: int, limit: int, describe: Callable[[], str]) -> bool:
    """The one non-finite policy: whether to take the step; counts a skipped one, and stops after ``limit`` in a row.

    ``step`` numbers the step in messages; ``describe()`` (called once, at the first failure of
    a row, when the tensors are still those of the failed step) names what went non-finite.
    Raises ``NonFiniteError`` when ``counts.in_a_row`` reaches ``limit``.
    """
    if finite:
        counts.in_a_row = 0
        return True
    counts.skipped, counts.in_a_row = counts.skipped + 1, counts.in_a_row + 1
    if counts.in_a_row == 1:
        counts.first_bad = f"step {step}: {describe()}"
    if counts.in_a_row >= limit:
        raise NonFiniteError(f"{counts.in_a_row} training steps in a row had a non-finite loss or gradient "
                             f"(the first, {counts.first_bad}); the run stopped.")  # fmt: skip
    return False
