"""Figures of a table run: per-column marginals and correlations of data against samples, reconstructions
as predicted against true per column, and the latent embedding coloured by a column.

An image grid means nothing for a row of mixed columns; these figures read in the table's own
terms. Every function takes rows as the model sees them (``[N, C]`` in encoded units: standardised
continuous columns, Yeo-Johnson-transformed first under ``--power``; 0/1 binary, level codes 0..K-1,
counts; NaN where missing) with the run's ``Schema`` for names, kinds and levels. Matplotlib's
object-oriented API, no pyplot: each function returns a ``Figure``; ``plots.save`` writes it.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..data import Schema
from ..families import center
from .base import save
from .model import curves

__all__ = [
    "correlations",
    "default_color",
    "embedding_by_column",
    "marginals",
    "model_samples",
    "reconstruction_scatter",
    "write_table_figures",
]

MAX_PANELS = 36  # columns drawn in one per-column figure: beyond this the panels no longer read
LEVELED = ("binary", "categorical")  # kinds drawn as bar charts of their levels


def _panels(n: int, inches: float = 2.4) -> tuple[Figure, list[Any]]:
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(inches * cols, inches * 0.85 * rows + 0.5), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=float)


def _levels(schema: Schema, j: int) -> list[str]:
    return [str(v) for v in schema.columns[j].levels]


def marginals(schema: Schema, data: Tensor | np.ndarray, samples: Tensor | np.ndarray) -> Figure:
    """One panel per column (the first ``MAX_PANELS``): the data's marginal against the samples'.

    Continuous and count columns: density histograms on shared bins (the data filled, the
    samples outlined); binary and categorical: bars of each level's share, side by side. Missing
    entries of the data are left out. ``data`` ``[N, C]``, ``samples`` ``[M, C]``.
    """
    x, s = _numpy(data), _numpy(samples)
    columns = schema.columns[:MAX_PANELS]
    fig, axes = _panels(len(columns))
    for j, (c, ax) in enumerate(zip(columns, axes, strict=True)):
        xj, sj = x[:, j][~np.isnan(x[:, j])], s[:, j]
        if c.kind in LEVELED:
            k = np.arange(len(c.levels))
            share = lambda v, k=k: np.array([(v == i).mean() if len(v) else 0.0 for i in k])  # noqa: E731
            ax.bar(k - 0.2, share(xj), 0.4, label="data", color="C0")
            ax.bar(k + 0.2, share(sj), 0.4, label="samples", color="C1")
            ax.set_xticks(k, _levels(schema, j), fontsize=7, rotation=30 if len(k) > 3 else 0)
        else:
            both = np.concatenate([xj, sj])
            lo, hi = np.percentile(both, [0.5, 99.5]) if len(both) else (0.0, 1.0)
            bins = np.arange(math.floor(lo), math.ceil(hi) + 2) - 0.5 if c.kind == "count" and hi - lo < 40 else \
                np.linspace(lo, hi if hi > lo else lo + 1, 30)  # fmt: skip
            ax.hist(xj, bins=bins, density=True, alpha=0.5, color="C0", label="data")
            ax.hist(sj, bins=bins, density=True, histtype="step", lw=1.5, color="C1", label="samples")
            ax.tick_params(labelsize=7)
        ax.set_title(f"{c.name} ({c.kind})", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Marginals: {x.shape[0]} rows of data against {s.shape[0]} samples x ~ p(x | z), z ~ p(z)"
                 + _cut(schema), fontsize=10)  # fmt: skip
    return fig


def _cut(schema: Schema) -> str:
    n = len(schema.columns)
    return f" (first {MAX_PANELS} of {n} columns)" if n > MAX_PANELS else ""


def _correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlations of the columns ``[C, C]`` over the rows where both are observed; 0 for a
    constant column (no correlation is defined)."""
    import pandas as pd

    with np.errstate(invalid="ignore", divide="ignore"):
        r = pd.DataFrame(x).corr(min_periods=2).to_numpy()
    return np.nan_to_num(r, nan=0.0)


def correlations(schema: Schema, data: Tensor | np.ndarray, samples: Tensor | np.ndarray) -> Figure:
    """The correlation matrix of the data ``[N, C]`` beside the samples' ``[M, C]``, and their difference.

    Correlations of the encoded numbers (a categorical column's level codes), pairwise over the
    observed rows. The title gives the mean absolute difference over the pairs j < l.
    """
    r_data, r_samples = _correlation(_numpy(data)), _correlation(_numpy(samples))
    upper = np.triu_indices(len(r_data), 1)
    gap = float(np.abs(r_data - r_samples)[upper].mean()) if len(upper[0]) else 0.0
    fig = Figure(figsize=(14, 4.8), layout="constrained")
    names = [c.name for c in schema.columns]
    for i, (r, title) in enumerate(((r_data, "data"), (r_samples, "samples"), (r_samples - r_data, "samples - data"))):
        ax = fig.add_subplot(1, 3, i + 1)
        image = ax.imshow(r, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(title)
        if len(names) <= 20:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
        else:
            ax.set_xlabel("column")
            ax.set_ylabel("column")
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label="Pearson correlation")
    fig.suptitle(f"Correlations between columns: mean |difference| {gap:.3f} over {len(upper[0])} pairs")
    return fig


def reconstruction_scatter(schema: Schema, data: Tensor | np.ndarray, predicted: Tensor | np.ndarray) -> Figure:
    """One panel per column (the first ``MAX_PANELS``): the reconstruction (the mean of p(x | z) at the
    center of q(z | x); a level column's most probable level) against the true value, the diagonal
    dashed. Level columns are jittered so that the points of one cell show their number; the
    title gives the RMSE (continuous, count) or the share reconstructed exactly (levels). Rows
    missing the column are left out. ``data``, ``predicted`` ``[N, C]``.
    """
    x, p = _numpy(data), _numpy(predicted)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(2, *x.shape))
    columns = schema.columns[:MAX_PANELS]
    fig, axes = _panels(len(columns))
    for j, (c, ax) in enumerate(zip(columns, axes, strict=True)):
        seen = ~np.isnan(x[:, j])
        xj, pj = x[seen, j], p[seen, j]
        if c.kind in LEVELED:
            score = f"{100 * (xj == pj).mean():.0f}% right" if len(xj) else "no rows"
            ax.scatter(xj + jitter[0, seen, j], pj + jitter[1, seen, j], s=6, alpha=0.5)
            k = np.arange(len(c.levels))
            ax.set_xticks(k, _levels(schema, j), fontsize=6)
            ax.set_yticks(k, _levels(schema, j), fontsize=6)
        else:
            score = f"RMSE {np.sqrt(np.mean((xj - pj) ** 2)):.3g}" if len(xj) else "no rows"
            ax.scatter(xj, pj, s=6, alpha=0.5)
            ax.tick_params(labelsize=7)
        lo, hi = (min(xj.min(), pj.min()), max(xj.max(), pj.max())) if len(xj) else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="gray", ls="--", lw=0.8)
        ax.set_title(f"{c.name}: {score}", fontsize=8)
    fig.supxlabel("true (encoded units)", fontsize=9)
    fig.supylabel("reconstructed", fontsize=9)
    fig.suptitle(f"Reconstructions of {x.shape[0]} rows, per column" + _cut(schema), fontsize=10)
    return fig


def embedding_by_column(model: Any, x: Tensor, schema: Schema, column: str | None = None) -> Figure:
    """The posterior means E_q[z | x] of rows ``x`` ``[N, C]`` in the plane (their first two principal
    components beyond D = 2), coloured by ``column``: a legend of its levels (binary, categorical),
    a colour scale otherwise (in its encoded units); rows missing it in gray. ``column=None``: one colour.
    """
    with torch.no_grad():
        means = center(model.encode(x)).double()
    if means.shape[1] == 1:
        xy, names = torch.cat([means, torch.zeros_like(means)], 1), ("z_1", "")
    elif means.shape[1] == 2:
        xy, names = means, ("z_1", "z_2")
    else:
        centred = means - means.mean(0)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        share = s**2 / (s**2).sum().clamp_min(1e-300)
        xy, names = centred @ vh[:2].T, tuple(f"PC {i + 1} ({100 * share[i]:.0f}% of the variance)" for i in (0, 1))
    xy = xy.numpy()
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    if column is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.7)
    else:
        _coloured(fig, ax, xy, schema, column, _numpy(x)[:, schema.names.index(column)])
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    by = "" if column is None else f", coloured by {column}"
    ax.set_title(f"E_q[z | x] of {xy.shape[0]} rows (D = {means.shape[1]}){by}", fontsize=10)
    return fig


def _coloured(fig: Figure, ax: Any, xy: np.ndarray, schema: Schema, column: str, values: np.ndarray) -> None:
    c = schema.columns[schema.names.index(column)]
    missing = np.isnan(values)
    if missing.any():
        ax.scatter(*xy[missing].T, s=8, color="lightgray", label="missing")
    if c.kind in LEVELED:
        for code, level in enumerate(c.levels):
            ax.scatter(*xy[values == code].T, s=8, alpha=0.7, label=str(level))
        ax.legend(title=column, fontsize=8, markerscale=2)
    else:
        seen = ~missing
        mappable = ax.scatter(xy[seen, 0], xy[seen, 1], c=values[seen], s=8, alpha=0.7, cmap="viridis")
        unit = (" (Yeo-Johnson, standardised)" if c.power else " (standardised)") if c.kind == "continuous" else ""
        fig.colorbar(mappable, ax=ax, label=column + unit)


@torch.no_grad()
def model_samples(model: Any, n: int, seed: int = 0) -> Tensor:
    """``n`` rows x ~ p(x | z), z ~ p(z), in encoded units ``[n, C]``, from a generator seeded ``seed``
    (torch's global generator is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model.decode(model.prior_given().sample((n,))).sample()


def default_color(schema: Schema) -> str | None:
    """The column an embedding is coloured by when none is named: the last binary or categorical one
    (a table's label is often its last column), else None."""
    leveled = [c.name for c in schema.columns if c.kind in LEVELED]
    return leveled[-1] if leveled else None


def write_table_figures(run: Any, x: Tensor, directory: str | Path | None = None, labels: Any = None) -> list[Path]:
    """The figures of a table run into ``RUN/figures``: curves, marginals and correlations of ``x``
    ``[N, C]`` against as many samples (at least 1000), reconstructions of ``x``, and the embedding
    of ``x`` coloured by ``default_color``. No image grid. ``labels`` is accepted for the call
    shape of ``plots.write_figures`` and unused (a table's labels are its columns)."""
    directory = Path(directory or run.path / "figures")
    schema, model = run.schema, run.model
    drawn = model_samples(model, max(1000, x.shape[0]))
    with torch.no_grad():
        predicted = model.reconstruct(x)
    return [
        save(curves(run.metrics), directory / "curves.png"),
        save(marginals(schema, x, drawn), directory / "marginals.png"),
        save(correlations(schema, x, drawn), directory / "correlations.png"),
        save(reconstruction_scatter(schema, x, predicted), directory / "reconstructions.png"),
        save(embedding_by_column(model, x, schema, default_color(schema)), directory / "embedding.png"),
    ]
