"""What training minimises: a model bound to an objective (``VariationalLoss``); the objective a config names."""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..bounds import SETTINGS, Bound, Objective
from ..bounds import make_objective as objective_named
from ..errors import ElboxError
from ..models import LatentVariableModel
from ..schedules import kl_weight
from .config import PRECISIONS, TrainConfig

__all__ = ["VariationalLoss", "compile_loss", "kl_schedule", "make_objective"]


class VariationalLoss(nn.Module):
    """A model bound to an objective: ``forward(x)`` returns the ``Bound`` per data point.

    Minimise ``forward(x).loss``. One module holding both is what any optimiser (and
    DistributedDataParallel) expects. With ``precision="bf16"`` the forward pass runs under
    ``torch.autocast`` in bfloat16 (matrix products in bf16, reductions and the bound's
    log-densities in float32 as autocast keeps them): opt-in, its accuracy in tests/test_train.py.
    """

    def __init__(
        self, model: LatentVariableModel, objective: Objective, k: int = 1, *, precision: str = "fp32"
    ) -> None:
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


def make_objective(config: TrainConfig) -> Objective:
    """The training objective that ``config`` names (``bounds.OBJECTIVES``), with its estimator and KL weight."""
    return objective_named(config.objective, **{key: value for key, value in vars(config).items() if key in SETTINGS})


def kl_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float] | None:
    """beta as a function of the training step, or ``None`` when it is constant."""
    if config.kl_warmup:
        return lambda step: kl_weight(step, beta=config.beta, warmup=config.kl_warmup * steps_per_epoch)
    if config.kl_cycles:
        cycle = math.ceil(config.epochs * steps_per_epoch / config.kl_cycles)
        return lambda step: kl_weight(step, beta=config.beta, cycle=cycle)
    return None
