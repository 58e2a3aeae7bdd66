"""``evaluate``: a trained VAE or run, evaluated honestly, in one call (the counterpart of ``elbox.train``).

Densities are in nats per data point; a ± is a standard error over data points unless said
otherwise. Randomness goes through ``config.seed`` only: the caller's random state is left as it was.
"""

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import binarize, spread, spread_index
from ..distributed import init
from ..errors import ElboxError
from ..models import LatentVariableModel
from ..runs import Run, load_run, load_splits, owned
from .config import EvaluationConfig
from .gaps import gap_problem, gap_split
from .information import mi_values
from .likelihood import main_pass
from .particles import check_data, device_of, evaluating
from .result import Evaluation

__all__ = ["evaluate"]


def _load(
    source: "LatentVariableModel | Run | str | Path", x: Tensor | None, config: EvaluationConfig
) -> tuple[LatentVariableModel, Tensor, dict]:
    """The model, the data and a description of where they came from."""
    if isinstance(source, torch.nn.Module):  # a VAE or a HierarchicalVAE
        if x is None:
            raise ElboxError("evaluating a model needs the data: evaluate(model, x).")
        return source, x, {}
    run = source if isinstance(source, Run) else load_run(source, config.checkpoint)
    checkpoint = config.checkpoint if not isinstance(source, Run) else "as loaded"
    described = {"run": str(run.path), "split": config.split, "checkpoint": checkpoint}
    if x is None:
        x = _split(run, config)
    else:
        described["split"] = "given"
    return run.model, x, described


def _split(run: Run, config: EvaluationConfig) -> Tensor:
    """The run's split, binarized as in training; a dynamically binarized train split is drawn once from ``seed``."""
    x = load_splits(run.config)[1][config.split]
    if config.split == "train" and run.config.binarize == "dynamic":
        x = binarize(x, torch.Generator().manual_seed(config.seed))
    return x


def evaluate(
    source: "LatentVariableModel | Run | str | Path",
    x: Tensor | None = None,
    config: EvaluationConfig | None = None,
    *,
    progress: bool | None = False,
    **options: Any,
) -> Evaluation:
    """Evaluate a trained VAE honestly: log p(x) with error bars, bounds, rate, distortion, gaps.

    Args:
        source: a VAE (then give ``x``), a loaded ``Run``, or a run folder (loaded at
            ``config.checkpoint``).
        x: data ``[N, X]``; for a run, ``None`` takes its ``config.split`` (binarized as in training).
        config: an ``EvaluationConfig``; keyword ``options`` override its fields.
        progress: a progress bar over the points; ``None`` shows one only on a terminal.

    One pass of K particles per point gives log p(x), its Monte Carlo error, the ESS, PSIS
    k-hat, the IWAE_k curve, CUBO_2, rate, distortion and the posterior means; the mutual
    information and the gap split use subsets spread through the data. Nothing is written:
    ``Evaluation.save`` writes ``evaluation.json``. The caller's random state is left as it was.
    Under torchrun (``torchrun --nproc_per_node N -m elbox evaluate RUN``) the log p(x) pass
    splits its batches over the processes; each batch draws from its own seeds, so the numbers
    are those of one process. The mutual information and the gap split run on every process.

    >>> from elbox import VAE, VAEConfig
    >>> vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    >>> x = torch.bernoulli(torch.full((20, 4), 0.5))
    >>> e = evaluate(vae, x, k=50, gap_points=4, gap_steps=20)
    >>> sorted(e.iwae), e.gaps.approximation.shape, e.active_units <= 2
    ([1, 5, 50], torch.Size([4]), True)
    >>> print(e.table())  # doctest: +ELLIPSIS
    Evaluation of the data given: 20 points, K = 50 particles each, seed 0.
    ...
    """
    config = replace(config or EvaluationConfig(), **options)
    if isinstance(source, str | Path):  # a folder being written (a training) is refused, not read half-way
        if not Path(source).is_dir():
            raise ElboxError(f"the run folder {source} does not exist; give the folder `elbox train` wrote.")
        with owned(source):
            return _evaluate(source, x, config, progress)
    return _evaluate(source, x, config, progress)


def _evaluate(
    source: "LatentVariableModel | Run | str | Path", x: Tensor | None, config: EvaluationConfig, progress: bool | None
) -> Evaluation:
    """``evaluate`` once its config is built (and a run folder held)."""
    started = time.perf_counter()
    model, x, described = _load(source, x, config)
    if model.needs_labels:
        raise ElboxError(
            f"elbox evaluate estimates log p(x) of an unconditional VAE; this model ({model.config.model}) is given "
            "a class label. Its ELBO given the labels is in the run's summary (run.json); estimate log p(x | y) "
            "with elbox.bounds.iwae(model.log_weights(x, 5000, y)) over batches of x."
        )
    x = check_data(model, x)
    init(device_of(model))  # under torchrun: the log p(x) pass splits its batches over the processes
    with evaluating(model):
        stats = main_pass(model, x, config, khat=config.khat, progress=progress)
        mi = mi_values(model, spread(x, config.mi_points), config.mi_samples, config.seed)
        gap_index = spread_index(x.shape[0], config.gap_points)
        problem = gap_problem(model) if config.gap_points else None  # evaluate the rest, and say why not this
        gaps = gap_split(model, x[gap_index], config) if config.gap_points and problem is None else None
    return Evaluation(
        config=config, source=described | {"points": x.shape[0]}, log_px=stats["log_px"], mc_se=stats["mc_se"],
        ess=stats["ess"], khat=stats.get("khat"), iwae={j: stats[f"iwae_{j}"] for j in config.ks}, cubo=stats["cubo"],
        reconstruction=stats["reconstruction"], kl=stats["kl"], kl_per_dimension=stats.get("kl_dims"),
        means=stats["mean"], mutual_information=mi, gaps=gaps, gap_log_px=stats["log_px"][gap_index] if gaps else None,
        seconds=time.perf_counter() - started, warnings=[f"the gap split was skipped: {problem}"] if problem else [],
    )  # fmt: skip
