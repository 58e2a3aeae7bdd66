"""Training a VAE, shaped init / step / validate as NumPyro's SVI is, with a run folder around it.

``prepare`` (setup) is the init, ``train_step`` and ``train_epoch`` (loop) the steps,
``validate`` (loop) the ELBO of a split; ``train`` and ``resume`` (run) add the run folder,
checkpoints, stop signals and the hooks of the layers above (figures, TensorBoard).
Note that ``elbox.train`` is the function; this package is ``from elbox.training import ...``.
"""

from ..optim import NonFiniteError, make_optimizer
from .average import WeightAverage
from .config import TrainConfig, options_from, read_config_file
from .hooks import Hooks, OnEpoch, OnFinish, default_hooks, set_default_hooks
from .loop import EpochProgress, train_epoch, train_step, validate
from .loss import VariationalLoss, compile_loss, kl_schedule, make_objective
from .run import Fit, resume, train
from .setup import Setup, labels_for, prepare, resolve_device

__all__ = [
    "EpochProgress",
    "Fit",
    "Hooks",
    "NonFiniteError",
    "OnEpoch",
    "OnFinish",
    "Setup",
    "TrainConfig",
    "VariationalLoss",
    "WeightAverage",
    "compile_loss",
    "default_hooks",
    "kl_schedule",
    "labels_for",
    "make_objective",
    "make_optimizer",
    "options_from",
    "prepare",
    "read_config_file",
    "resolve_device",
    "resume",
    "set_default_hooks",
    "train",
    "train_epoch",
    "train_step",
    "validate",
]
