"""The data structure every source fills: a Dataset of fixed splits, and the pieces every source shares."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from elbox.errors import ElboxError

__all__ = ["SPLITS", "Dataset", "binarize", "spread", "spread_index"]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is ambiguous
class Dataset:
    """Train, validation and test examples of one data set, as float32 rows.

    ``train`` is [N_train, D], ``valid`` [N_valid, D] and ``test`` [N_test, D]. ``levels``
    says the values lie on the grid k / levels for integer k in 0..levels (1: binary,
    16: the 8x8 digits, 255: 8-bit images), which a discrete likelihood or a
    dequantisation needs; None when the values are continuous. ``image_shape`` is (H, W)
    when each row is a flattened H x W image, else None. ``labels`` maps a split name to
    its int64 [N] class labels where they are known. ``name`` is what was given to
    :func:`load_dataset`, so ``load_dataset(ds.name)`` loads it again. ``schema`` is the
    ``tables.Schema`` of a table (one column per value of a row, NaN where missing), else None.
    For a user's file, ``sources`` names the array each split came from (``x.npy``,
    ``x.npz['valid']``) and ``rows`` its rows there (int64 ``[N_split]``), so a message names the
    row the user can find.

    Example:
        >>> from elbox.data import load_dataset
        >>> ds = load_dataset("digits")
        >>> ds.dim, ds.levels, ds.image_shape, tuple(ds.train.shape)
        (64, 16, (8, 8), (1437, 64))
    """

    name: str
    train: Tensor = field(repr=False)
    valid: Tensor = field(repr=False)
    test: Tensor = field(repr=False)
    image_shape: tuple[int, int] | None
    levels: int | None
    labels: dict[str, Tensor] = field(default_factory=dict, repr=False)
    schema: Any = field(default=None, repr=False)  # a tables.Schema for a table: its columns and transforms
    sources: dict[str, str] = field(default_factory=dict, repr=False)
    rows: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        """D, the length of one example."""
        return int(self.train.shape[1])


def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw each value from Bernoulli(x): dynamic binarisation of intensities in [0, 1].

    The result has the shape and dtype of ``x``, values in {0, 1} and mean ``x``. Drawing
    afresh every epoch is the dynamic binarisation of Salakhutdinov & Murray (2008); the
    ``"binarized-mnist"`` set is the static one, drawn once.

    Example:
        >>> binarize(torch.tensor([0.0, 1.0, 1.0]), torch.Generator().manual_seed(0))
        tensor([0., 1., 1.])
    """
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ElboxError(
            "binarize draws each value as a probability in [0, 1], but these values range from "
            f"{x.min().item():.4g} to {x.max().item():.4g}; scale the data to [0, 1] first."
        )
    return torch.bernoulli(x, generator=generator)


def _holdout(n: int, k: int, where: str) -> list[np.ndarray]:
    """Row indices of a fixed split of ``n`` rows: train, then ``k`` held-out blocks.

    Each block is 10% of the rows (at least one). The permutation comes from
    np.random.default_rng(0), independent of any training seed, so every run and every
    model is scored on the same held-out rows.
    """
    size = max(1, round(n / 10))
    n_train = n - k * size
    if n_train < 1:
        raise ElboxError(
            f"{where} has {n} rows, too few to cut {k} held-out split(s) of 10% (at least one "
            f"row each) and keep a training row; it needs at least {k + 1} rows. Add examples "
            "or give the valid and test splits explicitly in an .npz file."
        )
    cuts = [n_train + i * size for i in range(k)]
    return np.split(np.random.default_rng(0).permutation(n), cuts)


def _tensor(x: np.ndarray) -> Tensor:
    # np.array copies: the result owns writable memory, which torch.from_numpy wants.
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _labels_tensor(y: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(y, dtype=np.int64))


def spread_index(size: int, n: int) -> Tensor:
    """min(n, size) indices of range(size), evenly spaced, both ends included: ``[n]``."""
    return torch.linspace(0, size - 1, min(n, size)).round().long()


def spread(x: Tensor, n: int) -> Tensor:
    """n rows of ``x`` ``[N, ...]`` evenly spaced through it: data sets sorted by class (the
    binarized MNIST test split is) then show every class, not n copies of the first."""
    return x[spread_index(x.shape[0], n)]
