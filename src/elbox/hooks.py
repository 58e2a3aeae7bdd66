"""The hooks every run gets by default, from the layers above ``training/``: TensorBoard each epoch, figures at the end.

``elbox.train`` (the package face) installs ``DEFAULT_HOOKS`` with ``install_default_hooks``, so that
``elbox.train(...)`` and ``elbox train`` draw a run's figures as they always did while
``training/`` imports neither ``plots`` nor ``tensorboard``. Matplotlib and TensorBoard are
imported only when a run draws or logs.
"""

from pathlib import Path
from typing import Any

from .runs import Run
from .training import Hooks, OnEpoch, Setup, TrainConfig, set_default_hooks

__all__ = ["DEFAULT_HOOKS", "check_tensorboard", "figures", "install_default_hooks", "tensorboard_logger"]


def check_tensorboard(config: TrainConfig) -> None:
    """Refuse ``--tensorboard`` before anything is written when the package is missing."""
    if config.tensorboard:
        from .tensorboard import check_installed

        check_installed()


def tensorboard_logger(setup: Setup, path: Path) -> OnEpoch | None:
    """The TensorBoard epoch logger when the config asks for it (``elbox.tensorboard``), else None."""
    if not setup.config.tensorboard:
        return None
    from .tensorboard import epoch_logger

    return epoch_logger(path, setup.dataset.image_shape, setup.config.seed)


def figures(run: Run, setup: Setup) -> Any:
    """The run's figures into ``RUN/figures`` (``plots.write_figures``; per column for a table,
    ``plots.table.write_table_figures``), drawn from its test split."""
    from .plots import write_figures  # matplotlib is imported only when figures are drawn

    if setup.dataset.schema is not None:  # a table's figures are per column, not image grids
        from .plots.table import write_table_figures as write_figures
    return write_figures(run, setup.splits["test"], labels=setup.dataset.labels.get("test"))


DEFAULT_HOOKS = Hooks(check=check_tensorboard, logger=tensorboard_logger, on_finish=figures)


def install_default_hooks() -> None:
    """Make ``DEFAULT_HOOKS`` what a run gets when its caller passes none (``training.set_default_hooks``)."""
    set_default_hooks(DEFAULT_HOOKS)
