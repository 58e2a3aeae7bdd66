"""Figures of a run: training curves, prior samples, reconstructions, the latent manifold, interpolations,
latent traversals and embeddings, and the figures of an evaluation (KL per dimension, bound tightness,
the gap decomposition, rate and distortion).

Matplotlib's object-oriented API on the Agg canvas: no pyplot, no global state, no window.
Each function returns a ``Figure``; ``save`` writes it atomically and frees it.
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from .checkpoints import write_atomic
from .data import spread  # re-exported: figures of a sorted split take its rows evenly spread
from .evaluate import ACTIVE_THRESHOLD, Estimate, Evaluation, unit_activity
from .families import center
from .models import LatentVariableModel
from .runs import Run

__all__ = [
    "bound_tightness",
    "curves",
    "embedding",
    "gaps",
    "interpolation",
    "kl_per_dimension",
    "manifold",
    "rate_distortion",
    "reconstructions",
    "samples",
    "save",
    "spread",
    "tile",
    "traversals",
    "write_evaluation_figures",
    "write_figures",
]

MAX_TRAVERSED = 10  # rows of a traversal figure: more dimensions than this do not read


def _as_images(x: Tensor, image_shape: tuple[int, int] | None) -> np.ndarray:
    """``[..., X]`` -> ``[..., H, W]``: the data's image shape, a square, or one row per point."""
    if image_shape is None:
        side = math.isqrt(x.shape[-1])
        image_shape = (side, side) if side * side == x.shape[-1] else (1, x.shape[-1])
    return x.detach().cpu().float().reshape(*x.shape[:-1], *image_shape).numpy()


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """Arrange ``[R, C, H, W]`` images into one ``[R(H+pad)-pad, C(W+pad)-pad]`` picture."""
    r, c, h, w = images.shape
    out = np.ones((r * (h + pad) - pad, c * (w + pad) - pad), dtype=images.dtype)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = images[i, j]
    return out


def _picture(grid: np.ndarray, title: str, inches: float = 6.0) -> Figure:
    fig = Figure(figsize=(inches, inches * grid.shape[0] / grid.shape[1] + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def _grid(x: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` -> ``[R, C, H, W]`` with R about sqrt(N), padding with blank images."""
    n = x.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    padded = np.ones((rows * cols, *x.shape[1:]), dtype=x.dtype)
    padded[:n] = x
    return padded.reshape(rows, cols, *x.shape[1:])


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
    return _picture(tile(_grid(_as_images(x, image_shape))), title)


def class_samples(
    model: LatentVariableModel, per_class: int = 8, image_shape: tuple[int, int] | None = None, seed: int = 0
) -> Figure:
    """A conditional VAE's draws, one row per class: the means of p(x | z, y), z ~ p(z | y)."""
    classes = model.config.classes
    y = torch.arange(classes).repeat_interleave(per_class)  # [C * per_class]
    x = model.sample(len(y), torch.Generator().manual_seed(seed), condition=y)
    grid = _as_images(x, image_shape)
    return _picture(tile(grid.reshape(classes, per_class, *grid.shape[1:])), "samples given each class (rows)")


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
    return _picture(tile(_as_images(grid, image_shape)), "inputs (odd rows) and reconstructions (even rows)")


def manifold(model: LatentVariableModel, n: int = 20, image_shape: tuple[int, int] | None = None) -> Figure:
    """The decoded n x n grid over a 2-D latent space (Kingma & Welling 2014, Figure 4)."""
    grid = _as_images(model.manifold(n), image_shape)
    return _picture(tile(grid), "decoded latent space, z = Φ⁻¹(u) on a grid")


def interpolation(
    model: LatentVariableModel, x: Tensor, steps: int = 10, image_shape: tuple[int, int] | None = None
) -> Figure:
    """Each row decodes the line between the posterior means of two inputs; x is ``[2R, X]``."""
    rows = [model.interpolate(x[i], x[i + 1], steps) for i in range(0, x.shape[0] - 1, 2)]
    grid = _as_images(torch.stack(rows), image_shape)
    return _picture(tile(grid), "interpolations between encoded inputs", inches=8.0)


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


def _is_image(data_dim: int, image_shape: tuple[int, int] | None) -> bool:
    """Whether rows of ``data_dim`` values are drawn as pictures: a given shape, or a square."""
    return image_shape is not None or (data_dim > 1 and math.isqrt(data_dim) ** 2 == data_dim)


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


def traversals(model: LatentVariableModel, x: Tensor, dims: Sequence[int] | None = None, steps: int = 9,
               span: float = 3.0, image_shape: tuple[int, int] | None = None) -> Figure:  # fmt: skip
    """Latent traversals: encode ``x[0]``, move one latent dimension at a time over
    [-span, span] around its posterior mean, decode (Higgins et al. 2017, beta-VAE, Figure 1).

    Args:
        x: ``[N, X]`` (or one input ``[X]``): the first row is traversed; all rows decide the
            default ``dims``, the active units (Cov_x E_q[z_d | x] > ``ACTIVE_THRESHOLD``, Burda
            et al. 2016), largest first, at most ``MAX_TRAVERSED``; with none active, the most
            variable dimensions.
        dims: the latent dimensions to traverse, one row each.
        steps: columns, the values of z_d.

    Image data (``image_shape`` given, or a square number of values) make a grid of pictures,
    rows = dimensions, columns = steps; other data a panel per dimension with the decoded means
    as lines, coloured by the step.
    """
    x = x[None] if x.ndim == 1 else x
    means = _encoded_means(model, x)
    dims = list(dims) if dims is not None else _traversed_dims(means)
    if not dims or not all(0 <= d < means.shape[1] for d in dims):
        raise ValueError(f"dims must be latent dimensions in 0..{means.shape[1] - 1}, got {dims}")
    mean = center(model.encode(x[:1]))[0].detach()
    decoded = _traverse(model, mean, dims, steps, span)  # [R, C, X]
    if _is_image(decoded.shape[-1], image_shape):
        return _picture(tile(_as_images(decoded, image_shape)), f"traversals of z_d over ±{span:g} (rows: d = {dims})")
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


def kl_per_dimension(evaluation: Evaluation) -> Figure:
    """Bars of the mean over points of KL(q(z_d | x) || p(z_d)) per latent dimension d, in order,
    the active units (Cov_x E_q[z_d | x] > ``ACTIVE_THRESHOLD``) in a second colour.

    Raises ValueError when ``evaluation.kl_per_dimension`` is ``None`` (a q or p that does not
    factorize over dimensions has no per-dimension KL): plot nothing rather than a stand-in.
    """
    if evaluation.kl_per_dimension is None:
        raise ValueError(
            "this evaluation has no KL per latent dimension: its q(z | x) or p(z) does not factorize over "
            "dimensions (a full-rank, low-rank, flow or mixture family); use a diagonal family, or read "
            "evaluation.unit_variances for the active units"
        )
    kl = evaluation.kl_per_dimension.detach().double().mean(0).cpu().numpy()  # [N, D] -> [D]
    active = (evaluation.unit_variances > ACTIVE_THRESHOLD).cpu().numpy()
    d = np.arange(len(kl))
    fig = Figure(figsize=(max(4.0, 0.35 * len(kl) + 1.5), 3.4), layout="constrained")
    ax = fig.add_subplot()
    colours = np.where(active, "tab:blue", "tab:gray")
    ax.bar(d, kl, color=colours)
    # the legend from patches: a bar call with no bars would draw its entry in the default colour
    ax.legend(handles=[Patch(color="tab:blue", label=f"active, Cov_x E_q[z_d|x] > {ACTIVE_THRESHOLD} ({active.sum()})"),
                       Patch(color="tab:gray", label=f"inactive ({(~active).sum()})")], fontsize=8)  # fmt: skip
    ax.set_xticks(d if len(d) <= 32 else d[:: math.ceil(len(d) / 32)])
    ax.set_xlabel("latent dimension d")
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)), nats")
    ax.set_title("rate per latent dimension, mean over points", fontsize=10)
    return fig


def bound_tightness(evaluation: Evaluation) -> Figure:
    """IWAE_k against k (log axis), mean over points ± SE, with the ELBO (a line at IWAE_1's
    level), CUBO_2 from the K particles above and the log p(x) estimate (IWAE_K) as a band of
    ± SE; nats per data point. The SEs are over data points, so they say how well the mean
    over this data set is known, not how far apart two bounds are."""
    ks = sorted(evaluation.iwae)
    curve = [Estimate.of(evaluation.iwae[k]) for k in ks]
    elbo, cubo, log_px = (Estimate.of(v) for v in (evaluation.elbo, evaluation.cubo, evaluation.log_px))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(log_px.mean - log_px.se, log_px.mean + log_px.se, color="tab:green", alpha=0.2,
               label=f"log p(x) ≈ {log_px:.2f}")  # fmt: skip
    ax.axhline(log_px.mean, color="tab:green", lw=1)
    ax.errorbar(ks, [e.mean for e in curve], yerr=[e.se for e in curve], marker="o", capsize=3, label="IWAE_k")
    ax.axhline(elbo.mean, color="tab:gray", ls="--", label=f"ELBO = {elbo:.2f}")
    ax.axhline(cubo.mean, color="tab:red", ls=":", label=f"CUBO_2 = {cubo:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("k (particles)")
    ax.set_ylabel("nats per data point")
    ax.set_title(f"bound tightness on {evaluation.points} points")
    ax.legend(fontsize=8)
    return fig


def gaps(evaluation: Evaluation) -> Figure:
    """The inference gap log p(x) - L[q_enc] as a stacked bar: the approximation gap
    log p(x) - L[q*] below, the amortization gap L[q*] - L[q_enc] on top (Cremer, Li & Duvenaud
    2018), each the mean over the gap points with its SE as an error bar; nats per data point.

    Raises ValueError when the evaluation has no gap decomposition (``gap_points = 0``).
    """
    if evaluation.gaps is None:
        raise ValueError(
            "this evaluation has no gap decomposition (it ran with gap_points = 0); "
            "evaluate with gap_points > 0 (elbox evaluate --gap-points N) to draw the gaps"
        )
    approximation, amortization = Estimate.of(evaluation.gaps.approximation), Estimate.of(evaluation.gaps.amortization)
    fig = Figure(figsize=(5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar([0], [approximation.mean], width=0.5, color="tab:blue", label=f"approximation {approximation:.2f}")
    ax.bar([0], [amortization.mean], width=0.5, bottom=[approximation.mean], color="tab:orange",
           label=f"amortization {amortization:.2f}")  # fmt: skip
    # each error bar sits at the top of its own segment, where that segment's mean ends
    tops = [approximation.mean, approximation.mean + amortization.mean]
    ax.errorbar([0.08, -0.08], tops, yerr=[approximation.se, amortization.se], fmt="none", color="black", capsize=4)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks([0], [f"{evaluation.gaps.log_px.shape[0]} points"])
    ax.set_xlim(-0.5, 1.6)  # room on the right for the legend
    ax.set_ylabel("nats per data point")
    ax.set_title("inference gap  log p(x) - L[q_enc]", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def rate_distortion(evaluations: Evaluation | Sequence[Evaluation], labels: Sequence[str] | None = None,
                    *, iso_elbo: bool = True) -> Figure:  # fmt: skip
    """Rate R = mean KL(q(z | x) || p(z)) against distortion D = mean -E_q log p(x | z) (Alemi et al.
    2018), one point ± SE per evaluation; with ``iso_elbo``, the line R + D = -ELBO through each."""
    evaluations = [evaluations] if isinstance(evaluations, Evaluation) else list(evaluations)
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(evaluations))]
    if len(labels) != len(evaluations):
        raise ValueError(f"labels must name each evaluation: {len(evaluations)} evaluations, {len(labels)} labels")
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for e, label in zip(evaluations, labels, strict=True):
        rate, distortion = Estimate.of(e.kl), Estimate.of(-e.reconstruction)
        ax.errorbar(rate.mean, distortion.mean, xerr=rate.se, yerr=distortion.se, marker="o", capsize=3, label=label)
    if iso_elbo:
        _iso_elbo_lines(ax, [Estimate.of(-e.elbo).mean for e in evaluations])
    ax.set_xlabel("rate  KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion  -E_q log p(x|z), nats")
    ax.set_title("rate and distortion")
    ax.legend(fontsize=8)
    return fig


def _iso_elbo_lines(ax: Any, totals: Sequence[float]) -> None:
    """The lines R + D = c (equal ELBO) for each c, across the axes' current view."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    r = np.linspace(min(x0, 0.0), x1, 2)
    for c in totals:
        ax.plot(r, c - r, color="gray", lw=0.7, ls=":")
    ax.set_xlim(x0, x1)  # the lines must not widen the view
    ax.set_ylim(y0, y1)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG, atomically, and release it."""
    path = Path(path)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    fig.clear()
    return path


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


def write_evaluation_figures(evaluation: Evaluation, directory: str | Path) -> list[Path]:
    """The figures of an evaluation into ``directory``: bound tightness, rate and distortion, and
    where the evaluation has them, the KL per latent dimension and the gap decomposition."""
    directory = Path(directory)
    written = [
        save(bound_tightness(evaluation), directory / "bound_tightness.png"),
        save(rate_distortion(evaluation), directory / "rate_distortion.png"),
    ]
    if evaluation.kl_per_dimension is not None:
        written.append(save(kl_per_dimension(evaluation), directory / "kl_per_dimension.png"))
    if evaluation.gaps is not None:
        written.append(save(gaps(evaluation), directory / "gaps.png"))
    return written
