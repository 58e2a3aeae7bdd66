"""What every figure of elbox shares: matplotlib's Agg canvas, image grids, and ``save``.

Matplotlib's object-oriented API on the Agg canvas: no pyplot, no global state, no window.
Each figure function returns a ``Figure``; ``save`` writes it atomically and frees it.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from ..checkpoints import write_atomic
from ..data import spread  # re-exported: figures of a sorted split take its rows evenly spread

__all__ = ["as_images", "is_image", "picture", "save", "spread", "square_grid", "tile"]


def as_images(x: Tensor, image_shape: tuple[int, int] | None) -> np.ndarray:
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


def picture(grid: np.ndarray, title: str, inches: float = 6.0) -> Figure:
    """A grey picture ``[H, W]`` (values in [0, 1]) with a title and no axes, ``inches`` wide."""
    fig = Figure(figsize=(inches, inches * grid.shape[0] / grid.shape[1] + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def square_grid(x: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` -> ``[R, C, H, W]`` with R about sqrt(N), padding with blank images."""
    n = x.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    padded = np.ones((rows * cols, *x.shape[1:]), dtype=x.dtype)
    padded[:n] = x
    return padded.reshape(rows, cols, *x.shape[1:])


def is_image(data_dim: int, image_shape: tuple[int, int] | None) -> bool:
    """Whether rows of ``data_dim`` values are drawn as pictures: a given shape, or a square."""
    return image_shape is not None or (data_dim > 1 and math.isqrt(data_dim) ** 2 == data_dim)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG, atomically, and release it."""
    path = Path(path)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    fig.clear()
    return path
