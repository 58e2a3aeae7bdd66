"""What the layers above ``training/`` add to a run (figures, TensorBoard), given to it rather than imported by it.

``training/`` sits below ``plots`` and ``tensorboard`` and never imports them (DESIGN.md: arrows
point down, deferred imports included). They reach a run as ``Hooks``: ``train`` and ``resume``
take them as an argument, and without one use the defaults, which the package face
(``elbox/__init__``, the top layer) sets once to ``elbox.hooks.DEFAULT_HOOKS``: so
``elbox.train(...)`` and ``elbox train`` draw the figures as they always did, and
``train(..., hooks=Hooks())`` runs with none.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import LatentVariableModel
from ..runs import Run
from .config import TrainConfig
from .setup import Setup

__all__ = ["Hooks", "OnEpoch", "OnFinish", "default_hooks", "set_default_hooks"]

OnEpoch = Callable[[dict[str, Any], LatentVariableModel], Any]  # on_epoch(metrics, model), after the epoch's checkpoint
OnFinish = Callable[[Run, Setup], Any]  # on_finish(run, setup), once run.json holds the summary


@dataclass(frozen=True)
class Hooks:
    """Callables that a run calls at fixed points; each may be ``None``.

    Attributes:
        check: ``check(config)`` before anything is read or written; raises ``ElboxError`` to
            refuse the config (``--tensorboard`` without the package).
        logger: ``logger(setup, path)`` on the main process when the loop starts: an ``OnEpoch``
            for the run or ``None``; its ``close()``, where it has one, is called at the end.
        on_finish: ``on_finish(run, setup)`` on the main process at the end, once the test
            split is evaluated and ``run.json`` holds the summary (the figures).
    """

    check: Callable[[TrainConfig], Any] | None = None
    logger: Callable[[Setup, Path], OnEpoch | None] | None = None
    on_finish: OnFinish | None = None


_default = Hooks()


def default_hooks() -> Hooks:
    """The hooks a run gets when its caller gives none: ``elbox.hooks.DEFAULT_HOOKS`` once ``elbox`` is imported."""
    return _default


def set_default_hooks(hooks: Hooks) -> None:
    """Make ``hooks`` the ones every later run gets by default (the package face does this once)."""
    global _default
    _default = hooks
