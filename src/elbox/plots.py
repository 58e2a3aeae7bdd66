"""Figures of a run: training curves, prior samples, reconstructions, the latent manifold, interpolations.

Matplotlib's object-oriented API on the Agg canvas: no pyplot, no global state, no window.
Each function returns a ``Figure``; ``save`` writes it atomically and frees it.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .checkpoints import write_atomic
from .models import VAE
from .runs import Run

__all__ = [
    "curves",
    "interpolation",
    "manifold",
    "reconstructions",
    "samples",
    "save",
    "spread",
    "tile",
    "write_figures",
]


def _as_images(x: Tensor, image_shape: tuple[int, int] | None) -> np.ndarray:
    """``[..., X]`` -> ``[..., H, W]``: the data's image shape, a square, or one row per point."""
    if image_shape is None:
        side = math.isqrt(x.shape[-1])
        image_shape = (side, side) if side * side == x.shape[-1] else (1, x.shape[-1])
    return x.detach().cpu().float().reshape(*x.shape[:-1], *image_shape).numpy()


def spread(x: Tensor, n: int) -> Tensor:
    """n rows of ``x`` ``[N, X]`` evenly spaced through it: data sets sorted by class (the
    binarized MNIST test split is) then show every class, not n copies of the first."""
    index = torch.linspace(0, x.shape[0] - 1, min(n, x.shape[0])).round().long()
    return x[index]


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


def samples(model: VAE, n: int = 64, image_shape: tuple[int, int] | None = None, seed: int = 0) -> Figure:
    """The means of p(x | z) for n draws z ~ p(z), in a square grid."""
    x = model.sample(n, torch.Generator().manual_seed(seed))
    return _picture(tile(_grid(_as_images(x, image_shape))), f"{n} samples from the prior")


def reconstructions(model: VAE, x: Tensor, image_shape: tuple[int, int] | None = None) -> Figure:
    """Inputs ``[N, X]`` (odd rows) above their reconstructions (even rows)."""
    cols = min(x.shape[0], 10)
    rows = math.ceil(x.shape[0] / cols)
    pairs = torch.stack([x, model.reconstruct(x)])  # [2, N, X]
    padded = torch.ones(2, rows * cols, x.shape[-1])  # blank images fill the last row
    padded[:, : x.shape[0]] = pairs
    # [2, R, C, X] -> [R, 2, C, X] -> [2R, C, X]: each row of inputs above its reconstructions
    grid = padded.reshape(2, rows, cols, -1).transpose(0, 1).reshape(2 * rows, cols, -1)
    return _picture(tile(_as_images(grid, image_shape)), "inputs (odd rows) and reconstructions (even rows)")


def manifold(model: VAE, n: int = 20, image_shape: tuple[int, int] | None = None) -> Figure:
    """The decoded n x n grid over a 2-D latent space (Kingma & Welling 2014, Figure 4)."""
    grid = _as_images(model.manifold(n), image_shape)
    return _picture(tile(grid), "decoded latent space, z = Φ⁻¹(u) on a grid")


def interpolation(model: VAE, x: Tensor, steps: int = 10, image_shape: tuple[int, int] | None = None) -> Figure:
    """Each row decodes the line between the posterior means of two inputs; x is ``[2R, X]``."""
    rows = [model.interpolate(x[i], x[i + 1], steps) for i in range(0, x.shape[0] - 1, 2)]
    grid = _as_images(torch.stack(rows), image_shape)
    return _picture(tile(grid), "interpolations between encoded inputs", inches=8.0)


def curves(metrics: list[dict[str, Any]]) -> Figure:
    """ELBO, reconstruction and KL per epoch, training and validation, in nats per data point."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    epochs = [m["epoch"] for m in metrics]
    for ax, (key, label) in zip(
        fig.subplots(1, 3),
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


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG, atomically, and release it."""
    path = Path(path)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    fig.clear()
    return path


def write_figures(run: Run, x: Tensor, directory: str | Path | None = None) -> list[Path]:
    """The figures of a run into ``RUN/figures``: curves, samples, reconstructions of ``x``,
    interpolations and, for a 2-D latent space, the manifold."""
    directory = Path(directory or run.path / "figures")
    shape, model = run.image_shape, run.model
    written = [
        save(curves(run.metrics), directory / "curves.png"),
        save(samples(model, 64, shape), directory / "samples.png"),
        save(reconstructions(model, x[:20], shape), directory / "reconstructions.png"),
    ]
    if x.shape[0] >= 2:
        written.append(
            save(
                interpolation(model, x[: min(10, x.shape[0] // 2 * 2)], 10, shape),
                directory / "interpolation.png",
            )
        )
    if model.config.latent_dim == 2:
        written.append(save(manifold(model, 20, shape), directory / "manifold.png"))
    return written
