"""Figures of a trained model: training curves, prior samples, reconstructions, the latent manifold,
interpolations, latent traversals and embeddings; ``write_figures`` writes a run's set."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..errors import ElboxError
from ..evaluation import ACTIVE_THRESHOLD, unit_activity
from ..families import center
from ..models import LatentVariableModel
from ..runs import Run
from .base import as_images, is_image, picture, save, square_grid, tile

__all__ = [
    "MAX_TRAVERSED",
    "class_samples",
    "curves",
    "embedding",
    "interpolation",
    "manifold",
    "reconstructions",
    "samples",
    "traversals",
    "write_figures",
]

MAX_TRAVERSED = 10  # rows of a traversal figure: more dimensions than this do not read


def samples(
    model: LatentVariableModel,
    n: int = 64,
    image_shape: tuple[int, int] | None = None,
    seed: int = 0,
    condition: int | None = None,
) -> Figure:
    """The means of p(x | z) for n draws z ~ p(z), in a square grid; given a class ``condition``
    for a conditional VAE."""
    given = {} if condition is None else {"condition": condition}
    x = model.sample(n, torch.Generator().manual_seed(seed), **given)
    title = f"{n} samples from the prior" + ("" if condition is None else f" given the class {condition}")
    return picture(tile(square_grid(as_images(x, image_shape))), title)


def class_samples(
    model: LatentVariableModel, per_class: int = 8, image_shape: tuple[int, int] | None = None, seed: int = 0
) -> Figure:
    """A conditional VAE's draws, one row per class: the means of p(x | z, y), z ~ p(z | y)."""
    classes = model.config.classes
    y = torch.arange(classes).repeat_interleave(per_class)  # [C * per_class]
    x = model.sample(len(y), torch.Generator().manual_seed(seed), condition=y)
    grid = as_images(x, image_shape)
    return picture(tile(grid.reshape(classes, per_class, *grid.shape[1:])), "samples given each class (rows)")


def reconstructions(
    model: LatentVariableModel, x: Tensor, image_shape: tuple[int, int] | None = None, labels: Tensor | None = None
) -> Figure:
    """Inputs ``[N, X]`` (odd rows) above their reconstructions (even rows), given their ``labels``
    ``[N]`` for a conditional VAE."""
    cols = min(x.shape[0], 10)
    rows = math.ceil(x.shape[0] / cols)
    pairs = torch.stack([x, model.reconstruct(x) if labels is None else model.reconstruct(x, labels)])  # [2, N, X]
    padded = torch.ones(2, rows * cols, x.shape[-1])  # blank images fill the last row
    padded[:, : x.shape[0]] = pairs
    # [2, R, C, X] -> [R, 2, C, X] -> [2R, C, X]: each row of inputs above its reconstructions
    grid = padded.reshape(2, rows, cols, -1).transpose(0, 1).reshape(2 * rows, cols, -1)
    return picture(tile(as_images(grid, image_shape)), "inputs (odd rows) and reconstructions (even rows)")


def manifold(model: LatentVariableModel, n: int = 20, image_shape: tuple[int, int] | None = None) -> Figure:
    """The decoded n x n grid over a 2-D latent space (Kingma & Welling 2014, Figure 4)."""
    grid = as_images(model.manifold(n), image_shape)
    return picture(tile(grid), "decoded latent space, z = Φ⁻¹(u) on a grid")


def interpolation(
    model: LatentVariableModel, x: Tensor, steps: int = 10, image_shape: tuple[int, int] | None = None
) -> Figure:
    """Each row decodes the line between the posterior means of two inputs; x is ``[2R, X]``."""
    rows = [model.interpolate(x[i], x[i + 1], steps) for i in range(0, x.shape[0] - 1, 2)]
    grid = as_images(torch.stack(rows), image_shape)
    return picture(tile(grid), "interpolations between encoded inputs", inches=8.0)


def curves(metrics: list[dict[str, Any]]) -> Figure:
    """ELBO, reconstruction and KL per epoch, training and validation, in nats per data point; and
    where a KL schedule ran (``kl_weight_per_step``), a fourth panel with its weight beta per step."""
    schedule = [w for m in metrics for w in m.get("kl_weight_per_step") or ()]
    fig = Figure(figsize=(16 if schedule else 12, 3.6), layout="constrained")
    epochs = [m["epoch"] for m in metrics]
    axes = fig.subplots(1, 4 if schedule else 3)
    if schedule:
        steps = np.arange(1, len(schedule) + 1) * (metrics[-1]["step"] / len(schedule))
        axes[3].plot(steps, schedule)
        axes[3].set(title="KL weight beta (schedule)", xlabel="step", ylabel="beta")
        axes[3].grid(alpha=0.3)
    for ax, (key, label) in zip(
        axes[:3],
        [
            ("elbo", "ELBO"),
            ("reconstruction", "reconstruction  E_q log p(x|z)"),
            ("kl", "KL(q(z|x) || p(z))"),
        ],
        strict=True,
    ):
        for split, style in (("train", "-"), ("valid", "--")):
            ax.plot(epochs, [m[f"{split}_{key}"] for m in metrics], style, label=split)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per data point")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


@torch.no_grad()
def _encoded_means(model: LatentVariableModel, x: Tensor) -> Tensor:
    """E_q[z | x] (the center of q where the mean has no closed form): ``[N, X] -> [N, D]``."""
    return center(model.encode(x)).detach().cpu().double()


def _traversed_dims(means: Tensor) -> list[int]:
    """The active units of ``means`` ``[N, D]``, largest Cov_x E_q[z_d | x] first, at most ``MAX_TRAVERSED``.

    With no active unit (an untrained or collapsed model) the most variable dimensions stand in,
    so that the figure still shows what each direction decodes to.
    """
    d = means.shape[1]
    if means.shape[0] < 2:  # one point has no variance across x
        return list(range(min(d, MAX_TRAVERSED)))
    variances = unit_activity(means)
    order = torch.argsort(variances, descending=True).tolist()
    active = [i for i in order if variances[i] > ACTIVE_THRESHOLD]
    return (active or order)[:MAX_TRAVERSED]


@torch.no_grad()
def _traverse(model: LatentVariableModel, mean: Tensor, dims: Sequence[int], steps: int, span: float) -> Tensor:
    """Decoded means along each dimension of ``dims`` through ``mean`` ``[D]``: ``[len(dims), steps, X]``.

    Row r decodes z = mean + t e_{dims[r]} for t evenly spaced in [-span, span].
    """
    t = torch.linspace(-span, span, steps, device=mean.device)
    z = mean.expand(len(dims), steps, -1).clone()  # [R, C, D]
    for r, d in enumerate(dims):
        z[r, :, d] = mean[d] + t
    return model.decode(z).mean.cpu()


def traversals(model: LatentVariableModel, x: Tensor, dims: Sequence[int] | str | None = None, steps: int = 9,
               span: float = 3.0, image_shape: tuple[int, int] | None = None) -> Figure:  # fmt: skip
    """Latent traversals: encode ``x[0]``, move one latent dimension at a time over
    [-span, span] around its posterior mean, decode (Higgins et al. 2017, beta-VAE, Figure 1).

    Args:
        x: ``[N, X]`` (or one input ``[X]``): the first row is traversed; all rows decide the
            default ``dims``, the active units (Cov_x E_q[z_d | x] > ``ACTIVE_THRESHOLD``, Burda
            et al. 2016), largest first, at most ``MAX_TRAVERSED``; with none active, the most
            variable dimensions.
        dims: the latent dimensions to traverse, one row each (or as text, ``"0,3,7"``).
        steps: columns, the values of z_d.

    Image data (``image_shape`` given, or a square number of values) make a grid of pictures,
    rows = dimensions, columns = steps; other data a panel per dimension with the decoded means
    as lines, coloured by the step.
    """
    x = x[None] if x.ndim == 1 else x
    means = _encoded_means(model, x)
    dims = _dims(dims) if dims is not None else _traversed_dims(means)
    if not dims or not all(0 <= d < means.shape[1] for d in dims):
        raise ElboxError(f"dims must be latent dimensions in 0..{means.shape[1] - 1}, got {dims}; pass --dims as "
                         "comma-separated latent dimensions")  # fmt: skip
    mean = center(model.encode(x[:1]))[0].detach()
    decoded = _traverse(model, mean, dims, steps, span)  # [R, C, X]
    if is_image(decoded.shape[-1], image_shape):
        return picture(tile(as_images(decoded, image_shape)), f"traversals of z_d over ±{span:g} (rows: d = {dims})")
    return _traversal_lines(decoded, dims, span)


def _traversal_lines(decoded: Tensor, dims: Sequence[int], span: float) -> Figure:
    """``[R, C, X]`` decoded means: a panel per traversed dimension, a line per step."""
    rows, steps = decoded.shape[:2]
    fig = Figure(figsize=(6, 1.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    colours = matplotlib.colormaps["coolwarm"](np.linspace(0, 1, steps))
    for ax, d, curves_ in zip(axes, dims, decoded.numpy(), strict=True):
        for colour, y in zip(colours, curves_, strict=True):
            ax.plot(y, color=colour, lw=1)
        ax.set_ylabel(f"z_{d}", rotation=0, labelpad=12)
    axes[0].set_title(f"decoded means as z_d moves over ±{span:g} (blue: -{span:g}, red: +{span:g})")
    axes[-1].set_xlabel("data dimension")
    return fig


def _pca(means: Tensor) -> tuple[Tensor, Tensor]:
    """Project ``[N, D]`` onto its first two principal axes: ``[N, 2]`` and the share of variance of each ``[2]``."""
    centred = means - means.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = s**2 / (s**2).sum().clamp_min(1e-300)
    return centred @ vh[:2].T, share[:2]


def embedding(
    model: LatentVariableModel, x: Tensor, labels: Tensor | np.ndarray | Sequence[Any] | None = None
) -> Figure:
    """The encoded means E_q[z | x] of ``x`` ``[N, X]`` in the plane: themselves when D = 2, else
    their first two principal components (PCA by SVD of the centred ``[N, D]``; D = 1 is drawn
    against a zero axis). Coloured by ``labels`` ``[N]`` when given: a legend for at most 10
    integer classes, a colorbar otherwise."""
    means = _encoded_means(model, x)
    if means.shape[1] == 2:
        points, names = means, ("z_1", "z_2")
    elif means.shape[1] == 1:
        points, names = torch.cat([means, torch.zeros_like(means)], 1), ("z_1", "")
    else:
        points, share = _pca(means)
        names = tuple(f"PC {i + 1} ({100 * share[i]:.0f}% of the variance)" for i in range(2))
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    xy = points.numpy()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.7)
    else:
        _coloured_scatter(fig, ax, xy, np.asarray(labels).reshape(-1))
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"E_q[z | x] of {xy.shape[0]} points (D = {means.shape[1]})")
    return fig


def _coloured_scatter(fig: Figure, ax: Any, xy: np.ndarray, labels: np.ndarray) -> None:
    """Classes (at most 10 distinct integers) get a legend; anything else a colour scale."""
    if len(labels) != len(xy):
        raise ValueError(f"labels must have one entry per point: {len(xy)} points, {len(labels)} labels")
    classes = np.unique(labels)
    if np.issubdtype(labels.dtype, np.integer) and len(classes) <= 10:
        for c in classes:
            ax.scatter(*xy[labels == c].T, s=8, alpha=0.7, label=str(c))
        ax.legend(title="label", fontsize=8, markerscale=2)
    else:
        mappable = ax.scatter(xy[:, 0], xy[:, 1], c=labels.astype(float), s=8, alpha=0.7, cmap="viridis")
        fig.colorbar(mappable, ax=ax, label="label")


def write_figures(run: Run, x: Tensor, directory: str | Path | None = None, labels: Tensor | None = None) -> list[Path]:
    """The figures of a run into ``RUN/figures``: curves, samples, reconstructions of ``x``,
    interpolations, latent traversals, the embedding of ``x`` (coloured by ``labels`` where
    known) and, for a 2-D latent space, the manifold."""
    directory = Path(directory or run.path / "figures")
    shape, model = run.image_shape, run.model
    if model.needs_labels:  # a cvae draws given a class; a vib classifier draws no data
        written = [save(curves(run.metrics), directory / "curves.png")]
        if model.config.model == "cvae":
            written.append(save(class_samples(model, 8, shape), directory / "samples.png"))
            if labels is not None:
                recon = reconstructions(model, x[:20], shape, labels[:20])
                written.append(save(recon, directory / "reconstructions.png"))
        return written
    written = [
        save(curves(run.metrics), directory / "curves.png"),
        save(samples(model, 64, shape), directory / "samples.png"),
        save(reconstructions(model, x[:20], shape), directory / "reconstructions.png"),
        save(traversals(model, x, image_shape=shape), directory / "traversals.png"),
        save(embedding(model, x, labels), directory / "embedding.png"),
    ]
    if x.shape[0] >= 2:
        written.append(
            save(
                interpolation(model, x[: min(10, x.shape[0] // 2 * 2)], 10, shape),
                directory / "interpolation.png",
            )
        )
    if model.config.latent_dim == 2 and not model.config.discrete:  # a grid over R^2, not over codes
        written.append(save(manifold(model, 20, shape), directory / "manifold.png"))
    return written


def _dims(dims: Sequence[int] | str) -> list[int]:
    if not isinstance(dims, str):
        return list(dims)
    try:
        return [int(v) for v in dims.split(",") if v.strip()]
    except ValueError:
        raise ElboxError(f"--dims takes comma-separated integers, got {dims!r}") from None
