"""An exponential moving average of a model's weights during training: what a run's checkpoints give to readers.

With decay ``d`` and the live weights ``theta_t`` after step ``t``, the average is

    bar_theta_t = d * bar_theta_{t-1} + (1 - d) * theta_t        (one ``torch._foreach_lerp_``)

started as a copy of the live weights at the first step after epoch ``start`` (so weights of the
early, far-off iterates never enter it). Buffers that are not floating point (counters) are
copied, not averaged. The rule on disk (``state.write_checkpoint``): ``model.*`` holds the
averaged weights, which ``load_run`` (and so evaluate, sample, impute) reads; ``live.model.*``
the optimiser's weights, which a resume continues from, bitwise. Polyak & Juditsky 1992;
Izmailov et al. 2018 ("SWA"); ``torch.optim.swa_utils.get_ema_multi_avg_fn`` does the same lerp.

A plain dict of tensors rather than ``torch.optim.swa_utils.AveragedModel``: the average has to
travel in the checkpoint's flat tensor dict beside the live weights, and ``AveragedModel``
deep-copies the module (a compiled or DDP-wrapped loss in the way) and adds its own
``n_averaged`` buffer; the lerp itself is the same one call.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running EMA of ``model``'s state (parameters and buffers), keyed as in ``model.state_dict()``.

    >>> net = nn.Linear(1, 1, bias=False)
    >>> avg = WeightAverage(decay=0.5)
    >>> _ = net.weight.data.fill_(0.0); avg.update(net)   # the first update copies
    >>> _ = net.weight.data.fill_(2.0); avg.update(net)   # 0.5 * 0 + 0.5 * 2
    >>> avg.state["weight"].item()
    1.0
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.state: dict[str, Tensor] = {}  # empty until the first update

    @property
    def started(self) -> bool:
        return bool(self.state)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s live state (a copy of it, the first time)."""
        live = model.state_dict()
        if not self.state:
            self.state = {k: v.detach().clone() for k, v in live.items()}
            return
        floats = [k for k, v in live.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state[k] for k in floats], [live[k] for k in floats], 1.0 - self.decay)
        for k, v in live.items():
            if not v.is_floating_point():
                self.state[k].copy_(v)

    def load(self, state: dict[str, Tensor]) -> None:
        """Continue from a saved average (``state.restore``)."""
        self.state = {k: v.clone() for k, v in state.items()}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """``model`` with the averaged weights inside the block, its live weights back (bitwise) after it."""
        if not self.state:
            yield
            return
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(live)
