"""User arrays: ``.npy`` ([N, D] or [N, H, W]) and ``.npz`` (train, optional valid, test and labels) files."""

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from elbox.errors import ElboxError

from .base import SPLITS as _SPLITS
from .base import Dataset, _holdout, _labels_tensor, _tensor
from .named import DATASETS

__all__ = ["load_arrays"]

_NPZ_KEYS = (*_SPLITS, *(f"{split}_labels" for split in _SPLITS))


def load_arrays(name: str) -> Dataset:
    """The arrays of the ``.npy`` or ``.npz`` file at path ``name`` (``load_dataset`` says the rules)."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise ElboxError(f"the data file {path} is a folder, not a file; give the path of a .npy or .npz file "
                         "(a folder named like one cannot be read as an array).")  # fmt: skip
    if not path.is_file():
        raise ElboxError(
            f"The data file {path} does not exist; give the path of an existing .npy or .npz "
            f"file, or one of the named data sets {', '.join(DATASETS)}."
        )
    arrays = _read_npz(path) if path.suffix.lower() == ".npz" else {"train": _read_npy(path)}
    return _dataset_from_arrays(name, arrays, path)


def _read_npy(path: Path) -> np.ndarray:
    loaded = _np_load(path)
    if not isinstance(loaded, np.ndarray):
        raise ElboxError(f"{path} is an .npz archive, not a .npy array; rename it to end in .npz.")
    return loaded


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    archive = _np_load(path)
    if isinstance(archive, np.ndarray):
        raise ElboxError(f"{path} is a .npy array, not an .npz archive; rename it to end in .npy.")
    with archive:
        _check_npz_keys(path, archive.files)
        try:
            return {key: archive[key] for key in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise _unreadable(path, err) from err


def _np_load(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    # allow_pickle=False: a data file must never run code when it is read.
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> ElboxError:
    return ElboxError(
        f"Could not read {path} as a NumPy {path.suffix} file ({err}). It is corrupt, or "
        "holds Python objects, which elbox refuses to unpickle; save numeric arrays with "
        "np.save(path, x) or np.savez(path, train=x), e.g. x.astype(np.float32)."
    )


def _check_npz_keys(path: Path, keys: list[str]) -> None:
    unknown = sorted(set(keys) - set(_NPZ_KEYS))
    orphans = [k for k in keys if k.endswith("_labels") and k.removesuffix("_labels") not in keys]
    if "train" not in keys or unknown or orphans:
        raise ElboxError(
            f"{path} has the arrays {sorted(keys)}; an .npz data file needs 'train' and may "
            f"have 'valid', 'test' and labels '<split>_labels' for a split it holds, nothing "
            "else (check the names). Save it with np.savez(path, train=x_train, valid=x_valid)."
        )


def _dataset_from_arrays(name: str, arrays: dict[str, np.ndarray], path: Path) -> Dataset:
    npy = path.suffix.lower() == ".npy"
    where = {key: str(path) if npy else f"{path}['{key}']" for key in arrays}
    x = {s: _as_matrix(arrays[s], where[s]) for s in _SPLITS if s in arrays}
    y = {s: _as_labels(arrays[k], len(x[s]), where[k]) for s in x if (k := f"{s}_labels") in arrays}
    _check_same_dim(x, where)
    rows = {s: np.arange(len(xi)) for s, xi in x.items()}
    sources = {s: where[s] for s in x}
    missing = [s for s in _SPLITS if s not in x]
    if missing:
        x, y, rows = _split_off(x, y, missing, where["train"])
        sources |= {s: where["train"] for s in missing}
    binary = all(((xi == 0) | (xi == 1)).all() for xi in x.values())
    image_shape = _image_shape(arrays["train"])
    tensors = [_tensor(x[s].reshape(len(x[s]), -1)) for s in _SPLITS]
    labels = {s: _labels_tensor(y[s]) for s in _SPLITS if s in y}
    return Dataset(name, *tensors, image_shape, levels=1 if binary else None, labels=labels, sources=sources,
                   rows={s: torch.from_numpy(r.astype(np.int64)) for s, r in rows.items()})  # fmt: skip


def _split_off(
    x: dict[str, np.ndarray], y: dict[str, np.ndarray], missing: list[str], where: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cut the ``missing`` splits (and their labels, when train has some) from train; and each split's rows there."""
    train_idx, *held = _holdout(len(x["train"]), len(missing), where)
    x, y = dict(x), dict(y)
    rows = {s: np.arange(len(xi)) for s, xi in x.items()} | dict(zip(missing, held, strict=True))
    rows["train"] = train_idx
    for split, idx in zip(missing, held, strict=True):
        x[split] = x["train"][idx]
        if "train" in y:
            y[split] = y["train"][idx]
    x["train"] = x["train"][train_idx]
    if "train" in y:
        y["train"] = y["train"][train_idx]
    return x, y, rows


def _as_matrix(x: np.ndarray, where: str) -> np.ndarray:
    """Check one user array: real, [N, D] or [N, H, W], non-empty, finite."""
    if x.dtype.kind not in "biuf":
        raise ElboxError(
            f"{where} has dtype {x.dtype}; elbox needs real numbers (bool, int or float). "
            "Convert it with x.astype(np.float32) before saving."
        )
    if x.ndim not in (2, 3):
        raise ElboxError(
            f"{where} has shape {x.shape}; the accepted shapes are [N, D] (one example per "
            "row) and [N, H, W] (images, flattened to H*W). Reshape it, e.g. with "
            "x.reshape(len(x), -1)."
        )
    if x.size == 0:
        raise ElboxError(f"{where} is empty (shape {x.shape}); it needs at least one example.")
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else None
    if bad is not None and bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ElboxError(
            f"{where} has {int(bad.sum())} non-finite values (NaN or inf), the first at index "
            f"{first}; drop or impute those examples before saving."
        )
    if x.dtype.kind == "f" and x.dtype.itemsize > 4 and (big := np.abs(x).max()) > np.finfo(np.float32).max:
        first = tuple(int(i) for i in np.argwhere(np.abs(x) > np.finfo(np.float32).max)[0])
        raise ElboxError(
            f"{where} holds values beyond float32's range (largest magnitude {big:.3g} at index {first}; float32 "
            f"ends at {np.finfo(np.float32).max:.3g}), and elbox trains in float32. Rescale the data before saving, "
            "e.g. standardise each column: (x - x.mean(0)) / x.std(0), or take logarithms of positive values."
        )
    return x


def _as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Check class labels: integer, [n]."""
    if y.dtype.kind not in "biu" or y.shape != (n,):
        raise ElboxError(
            f"{where} has dtype {y.dtype} and shape {y.shape}; labels must be integers of "
            f"shape ({n},), one per example of the split."
        )
    return y


def _check_same_dim(x: dict[str, np.ndarray], where: dict[str, str]) -> None:
    dims = {s: math.prod(xi.shape[1:]) for s, xi in x.items()}
    if len(set(dims.values())) > 1:
        shapes = ", ".join(f"{where[s]}: {x[s].shape}" for s in x)
        raise ElboxError(
            f"The splits have different numbers of features per example ({shapes}); "
            "train, valid and test must all have the same D (or H*W)."
        )


def _image_shape(x: np.ndarray) -> tuple[int, int] | None:
    return (int(x.shape[1]), int(x.shape[2])) if x.ndim == 3 else None
