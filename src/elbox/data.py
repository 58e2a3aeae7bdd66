"""Data sets with fixed splits: digits, binarized MNIST, MNIST, Fashion-MNIST and user arrays."""

import gzip
import hashlib
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from elbox.errors import ElboxError

__all__ = [
    "DATASETS",
    "Dataset",
    "binarize",
    "default_data_dir",
    "load_dataset",
    "read_amat",
    "read_idx",
    "spread",
    "spread_index",
]

DATASETS: tuple[str, ...] = ("digits", "binarized-mnist", "mnist", "fashion-mnist")

_SPLITS = ("train", "valid", "test")

# (algorithm, hex digest) of every published file, per data set. Sources:
# - binarized_mnist_*.mat: SHA256SUMS of the copy kept in mingzhang-yin/ARM-gradient.
# - binarized_mnist_*.amat: tensorflow/datasets, tensorflow_datasets/url_checksums/
#   binarized_mnist.txt. Cross-checked: writing the .mat arrays out as .amat text
#   ("0 1 ... 0\n" per image) reproduces these three digests exactly.
# - MNIST and Fashion-MNIST .gz: pytorch/vision, torchvision/datasets/mnist.py; the
#   Fashion-MNIST ones also in zalandoresearch/fashion-mnist README.md. MD5 is what the
#   authors publish; it catches corruption and wrong versions, not a forger.
# Uncompressed IDX files have no published digest: they get the format checks only.
_CHECKSUMS: dict[str, dict[str, tuple[str, str]]] = {
    "binarized-mnist": {
        "binarized_mnist_train.mat": (
            "sha256",
            "79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e",
        ),
        "binarized_mnist_valid.mat": (
            "sha256",
            "7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68",
        ),
        "binarized_mnist_test.mat": (
            "sha256",
            "5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38",
        ),
        "binarized_mnist_train.amat": (
            "sha256",
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
        ),
        "binarized_mnist_valid.amat": (
            "sha256",
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
        ),
        "binarized_mnist_test.amat": (
            "sha256",
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
        ),
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}

# Base URLs tried in order; a file's URL is base + file name. yann.lecun.com often refuses
# scripted downloads, so torchvision's S3 mirror of MNIST comes first.
_MIRRORS: dict[str, tuple[str, ...]] = {
    "binarized-mnist": ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

_BMNIST_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
_BMNIST_DIM = 784

_IDX_IMAGES = 2051  # 0x00000803: unsigned bytes, 3 dimensions [N, H, W]
_IDX_LABELS = 2049  # 0x00000801: unsigned bytes, 1 dimension [N]
_IDX_KINDS = {_IDX_IMAGES: "images", _IDX_LABELS: "labels"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_VALID = 10_000  # the last 10,000 training images, as in the VAE literature

_NPZ_KEYS = (*_SPLITS, *(f"{split}_labels" for split in _SPLITS))


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is ambiguous
class Dataset:
    """Train, validation and test examples of one data set, as float32 rows.

    ``train`` is [N_train, D], ``valid`` [N_valid, D] and ``test`` [N_test, D]. ``levels``
    says the values lie on the grid k / levels for integer k in 0..levels (1: binary,
    16: the 8x8 digits, 255: 8-bit images), which a discrete likelihood or a
    dequantisation needs; None when the values are continuous. ``image_shape`` is (H, W)
    when each row is a flattened H x W image, else None. ``labels`` maps a split name to
    its int64 [N] class labels where they are known. ``name`` is what was given to
    :func:`load_dataset`, so ``load_dataset(ds.name)`` loads it again. For a user's file,
    ``sources`` names the array each split came from (``x.npy``, ``x.npz['valid']``) and
    ``rows`` its rows there (int64 ``[N_split]``), so a message names the row the user can find.

    Example:
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
    sources: dict[str, str] = field(default_factory=dict, repr=False)
    rows: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        """D, the length of one example."""
        return int(self.train.shape[1])


def default_data_dir(name: str) -> Path:
    """The folder of data set ``name``: $ELBOX_DATA_DIR/<name>, else ~/.cache/elbox/<name>."""
    root = os.environ.get("ELBOX_DATA_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "elbox"
    return base / name


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


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False) -> Dataset:
    """Load a data set by name, or user arrays from a ``.npy`` / ``.npz`` path.

    - ``"digits"``: scikit-learn's 1,797 8x8 digits (UCI optical digits), /16, levels 16.
    - ``"binarized-mnist"``: the static binarisation of Larochelle & Murray (2011),
      50,000 / 10,000 / 10,000 x 784, levels 1, read from ``binarized_mnist_<split>.mat``
      or ``.amat`` in ``data_dir``.
    - ``"mnist"`` (LeCun et al., 1998) and ``"fashion-mnist"`` (Xiao, Rasul & Vollgraf,
      2017): the IDX files in ``data_dir``; the first 50,000 training images train, the
      last 10,000 validate, t10k tests; /255, levels 255.
    - A path ending in ``.npy`` ([N, D] or [N, H, W]) or ``.npz`` (``train``, optional
      ``valid``, ``test`` and ``<split>_labels``); missing splits are cut from train.

    Splits that are not given are cut by a fixed permutation (``np.random.default_rng(0)``,
    10% each to valid and test), independent of any training seed. Files with published
    checksums are verified on every load. ``data_dir`` defaults to
    :func:`default_data_dir`; it is not used for ``.npy`` / ``.npz`` paths.
    ``download=True`` fetches missing files into ``data_dir``.
    """
    if name == "digits":
        return _load_digits()
    if name in DATASETS:
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
        if name == "binarized-mnist":
            return _load_binarized_mnist(root, download)
        return _load_idx_dataset(name, root, download)
    if Path(name).suffix.lower() in (".npy", ".npz"):
        return _load_arrays(name)
    raise ElboxError(
        f"Unknown data set {name!r}: choose one of {', '.join(DATASETS)}, or give the path of "
        "a .npy file (an [N, D] or [N, H, W] array) or of an .npz file with a 'train' array "
        "(and optionally 'valid', 'test' and '<split>_labels')."
    )


# ----------------------------------------------------------------------------- digits


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # sklearn takes ~1 s to import

    bunch = load_digits()
    parts = _holdout(len(bunch.data), 2, "digits")
    x = [bunch.data[idx] / 16 for idx in parts]
    labels = {split: _labels_tensor(bunch.target[idx]) for split, idx in zip(_SPLITS, parts, strict=True)}
    return Dataset("digits", *map(_tensor, x), image_shape=(8, 8), levels=16, labels=labels)


# -------------------------------------------------------------------- binarized MNIST


def _load_binarized_mnist(root: Path, download: bool) -> Dataset:
    # .amat first: it is the published file that download fetches; .mat is the same data.
    wanted = {s: (f"binarized_mnist_{s}.amat", f"binarized_mnist_{s}.mat") for s in _SPLITS}
    paths = _locate("binarized-mnist", root, wanted, download)
    x = [_read_bmnist_split(paths[split], split) for split in _SPLITS]
    return Dataset("binarized-mnist", *map(_tensor, x), image_shape=(28, 28), levels=1)


def _read_bmnist_split(path: Path, split: str) -> np.ndarray:
    """Verify, read and check one split: uint8 [N_split, 784] of 0/1."""
    _verify("binarized-mnist", path)
    x = _read_mat(path) if path.suffix == ".mat" else read_amat(path)
    _check_bmnist(x, split, path)
    return x


def read_amat(path: str | Path) -> np.ndarray:
    """Parse an ``.amat`` text file of 0/1 values, one example per line: uint8 [N, D].

    This is the format of Larochelle's original binarized MNIST files. It works on the
    raw bytes (np.loadtxt takes tens of seconds on the 50,000-line training file).
    """
    path = Path(path)
    # Dropping the separators leaves one run of digit characters per line.
    rows = [row for row in path.read_bytes().translate(None, b" \t\r").split(b"\n") if row]
    widths = sorted({len(row) for row in rows})
    if len(widths) != 1:
        raise ElboxError(
            f"{path} is not a well-formed .amat file: expected one line of D space-separated "
            f"0/1 values per example, with the same D on every line, but found {len(rows)} "
            f"lines of widths {widths[:5]}. The file is truncated, corrupt or of another kind."
        )
    # uint8 arithmetic wraps, so any character other than '0' or '1' ends up above 1.
    x = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), widths[0]) - ord("0")
    if (x > 1).any():
        row = int(np.argwhere(x > 1)[0, 0])
        raise ElboxError(
            f"{path} holds a value other than 0 or 1 (first on data line {row + 1}); an .amat "
            "file of binarized images must contain only 0/1 separated by spaces."
        )
    return x


def _read_mat(path: Path) -> np.ndarray:
    """The array ``X`` of a MATLAB file."""
    from scipy.io import loadmat  # scipy.io is slow to import
    from scipy.io.matlab import MatReadError

    try:
        contents = loadmat(path)
    except (MatReadError, OSError, ValueError) as err:
        raise ElboxError(f"Could not read {path} as a MATLAB file ({err}); replace it with a good copy.") from err
    if "X" not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise ElboxError(
            f"{path} has no variable 'X' (it has {found}); binarized MNIST .mat files hold "
            "the images as X, an N x 784 array of 0/1."
        )
    return np.asarray(contents["X"])


def _check_bmnist(x: np.ndarray, split: str, path: Path) -> None:
    """Refuse anything but the 0/1 [N_split, 784] array of binarized MNIST's ``split``."""
    expected = (_BMNIST_ROWS[split], _BMNIST_DIM)
    if x.shape != expected:
        raise ElboxError(
            f"{path} holds an array of shape {x.shape}, but binarized MNIST's {split} split "
            f"is {expected}; the file is truncated or not the Larochelle & Murray data. "
            "Replace it with the published file."
        )
    if ((x != 0) & (x != 1)).any():
        raise ElboxError(
            f"{path} holds values other than 0 and 1; binarized MNIST is binary. Replace it with the published file."
        )


# ----------------------------------------------------------------- MNIST (IDX files)


def _load_idx_dataset(name: str, root: Path, download: bool) -> Dataset:
    wanted = {key: (f"{stem}.gz", stem) for key, stem in _IDX_FILES.items()}
    paths = _locate(name, root, wanted, download)
    for path in paths.values():
        _verify(name, path)
    train_x, train_y = _read_idx_pair(paths["train_images"], paths["train_labels"])
    test_x, test_y = _read_idx_pair(paths["test_images"], paths["test_labels"])
    if len(train_x) <= _IDX_VALID:
        raise ElboxError(
            f"{paths['train_images']} holds {len(train_x)} images, but the last {_IDX_VALID} "
            f"training images form the validation split, so it needs more; {name}'s has 60000."
        )
    cut = len(train_x) - _IDX_VALID
    x = [train_x[:cut], train_x[cut:], test_x]
    y = {"train": train_y[:cut], "valid": train_y[cut:], "test": test_y}
    image_shape = (int(test_x.shape[1]), int(test_x.shape[2]))
    flat = [xi.reshape(len(xi), -1) / 255 for xi in x]
    labels = {split: _labels_tensor(yi) for split, yi in y.items()}
    return Dataset(name, *map(_tensor, flat), image_shape=image_shape, levels=255, labels=labels)


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W] and their labels uint8 [N]."""
    images = read_idx(images_path, _IDX_IMAGES)
    labels = read_idx(labels_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise ElboxError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; the two files come from different versions. Replace both."
        )
    return images, labels


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (the MNIST format), plain or gzipped.

    The file is a big-endian int32 magic number 0x0000080K for K unsigned-byte dimensions
    (2051: images [N, H, W]; 2049: labels [N]), K big-endian int32 sizes, then the data in
    row-major order (LeCun et al., http://yann.lecun.com/exdb/mnist/). Returns uint8 with
    the K dimensions; a wrong magic number, a short or a long file raises ElboxError.
    """
    path = Path(path)
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big")
    if found != magic or len(raw) < header:
        raise ElboxError(
            f"{path} is not the IDX file expected: it starts with magic number {found}, "
            f"expected {magic} ({_IDX_KINDS.get(magic, 'unsigned bytes')}). The file is "
            "corrupt or another file under this name; replace it with the published file."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != math.prod(dims):
        raise ElboxError(
            f"{path} is truncated or padded: its header announces {dims} = {math.prod(dims)} "
            f"bytes of data, but {len(raw) - header} follow. Replace it with the published file."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when it ends in .gz."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise ElboxError(
            f"{path} is not a valid gzip file ({err}); it is truncated or corrupt. Delete it and fetch it again."
        ) from err


# ------------------------------------------------------- finding, fetching, verifying


def _locate(name: str, root: Path, wanted: dict[str, tuple[str, ...]], download: bool) -> dict[str, Path]:
    """The first existing file of each ``wanted`` tuple in ``root``.

    The first name of each tuple is the published file: with ``download`` it is fetched
    when none of the tuple exists; without, a missing file raises ElboxError.
    """
    found = {key: _first_file(root, names) for key, names in wanted.items()}
    missing = [names for key, names in wanted.items() if found[key] is None]
    if missing and not download:
        raise ElboxError(_missing_message(name, root, missing))
    for key, names in wanted.items():
        if found[key] is None:
            found[key] = _download(name, names[0], root)
    return {key: path for key, path in found.items() if path is not None}


def _first_file(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def _missing_message(name: str, root: Path, missing: list[tuple[str, ...]]) -> str:
    where = f"{root} does not exist" if not root.is_dir() else f"{root} lacks them"
    urls = " or ".join(_MIRRORS[name])
    files = ", ".join(" or ".join(names) for names in missing)
    return (
        f"The {name} data set needs the files {files}, but {where}. Download "
        f"them from {urls} (e.g. {_MIRRORS[name][0]}{missing[0][0]}) into {root}, or run with "
        "--download (download=True in Python) to fetch and verify them when online. "
        "Pass data_dir or set ELBOX_DATA_DIR to use another folder."
    )


def _fetch(url: str, dest: Path) -> None:
    """Write the body of ``url`` to ``dest`` (the one place that touches the network)."""
    import shutil
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out)


def _download(name: str, filename: str, root: Path) -> Path:
    """Fetch ``filename`` into ``root`` from the first mirror that serves it intact.

    The bytes land in a temporary file beside the target and are renamed over it only
    once their checksum matches, so an interrupted or bad download never leaves a file
    that a later load would trust.
    """
    from http.client import HTTPException

    root.mkdir(parents=True, exist_ok=True)
    dest = root / filename
    problems = []
    for url in (base + filename for base in _MIRRORS[name]):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _fetch(url, tmp)
            mismatch = _mismatch(name, tmp, filename)
            if mismatch is None:
                os.replace(tmp, dest)
                return dest
            problems.append(f"{url}: {mismatch}")
        except (OSError, HTTPException) as err:  # URLError and timeouts are OSErrors
            problems.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise ElboxError(
        f"Could not download {filename} for {name} ({'; '.join(problems)}). If this machine "
        f"is offline, fetch the file elsewhere from {_MIRRORS[name][0]}{filename} and copy it "
        f"to {dest} by hand; elbox verifies its checksum when it loads it."
    )


def _verify(name: str, path: Path) -> None:
    """Raise ElboxError when ``path`` is a published file whose checksum does not match."""
    mismatch = _mismatch(name, path, path.name)
    if mismatch is not None:
        raise ElboxError(
            f"{path} {mismatch}: the file is corrupt, truncated or another version. Delete "
            f"it and fetch it again (--download, or from {_MIRRORS[name][0]})."
        )


def _mismatch(name: str, path: Path, filename: str) -> str | None:
    """None when ``path`` matches the known checksum of ``filename`` (or none is known)."""
    known = _CHECKSUMS.get(name, {}).get(filename)
    if known is None:
        return None
    algorithm, expected = known
    with path.open("rb") as f:
        actual = hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=False))
    if actual.hexdigest() == expected:
        return None
    return f"fails its checksum: {algorithm} is {actual.hexdigest()}, expected {expected}"


# ------------------------------------------------------------------ user arrays


def _load_arrays(name: str) -> Dataset:
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


# -------------------------------------------------------------------- shared pieces


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
