"""TensorBoard logging of a training run: each epoch's metrics as scalars, prior samples as images.

An optional view of a run (``pip install 'elbox[tensorboard]'``); ``metrics.jsonl`` stays the
record. Scalars are grouped by split (``train/elbo``, ``valid/kl``, ...), the KL weight of a
schedule is ``schedule/beta``, and for image data a fixed set of prior draws z ~ N(0, I) is
decoded every epoch, so the grids show the same z as the decoder learns.
"""

import importlib.util
from pathlib import Path
from typing import Any

import torch

from .errors import ElboxError
from .models import LatentVariableModel

__all__ = ["LOG_DIR", "check_installed", "epoch_logger"]

LOG_DIR = "tensorboard"  # inside the run folder: `tensorboard --logdir RUN/tensorboard`
SAMPLES = 64


def check_installed() -> None:
    """Refuse ``--tensorboard`` before anything is written when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ElboxError(
            "--tensorboard needs the tensorboard package: pip install 'elbox[tensorboard]' (or pip install "
            "tensorboard), or train without --tensorboard."
        )


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """``train_elbo`` -> ``train/elbo``; the schedule's last KL weight as ``schedule/beta``."""
    scalars = {}
    for key, value in metrics.items():
        if key in ("epoch", "step") or not isinstance(value, int | float):
            continue
        split, _, name = key.partition("_")
        scalars[f"{split}/{name}" if name else key] = float(value)
    if weights := metrics.get("kl_weight_per_step"):
        scalars["schedule/beta"] = float(weights[-1])
    return scalars


def epoch_logger(run_dir: str | Path, image_shape: tuple[int, int] | None, seed: int = 0) -> Any:
    """An ``on_epoch(metrics, model)`` hook that writes to ``RUN/tensorboard``; call ``.close()`` at the end."""
    from torch.utils.tensorboard import SummaryWriter  # the optional extra, imported only when asked for

    writer = SummaryWriter(str(Path(run_dir) / LOG_DIR))

    def on_epoch(metrics: dict[str, Any], model: LatentVariableModel) -> None:
        epoch = int(metrics["epoch"])
        for tag, value in _scalars(metrics).items():
            writer.add_scalar(tag, value, epoch)
        if image_shape is not None:  # the same seed every epoch: one fixed set of z for the whole run
            mean = model.sample(SAMPLES, torch.Generator().manual_seed(seed))  # [n, H * W]
            writer.add_images("prior samples", mean.clamp(0, 1).reshape(-1, 1, *image_shape).cpu(), epoch)
        writer.flush()

    on_epoch.close = writer.close  # type: ignore[attr-defined]
    return on_epoch
