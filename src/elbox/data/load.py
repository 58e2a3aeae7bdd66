"""``load_dataset``: a data set by name, or by the kind of file a path names."""

from pathlib import Path

from elbox.errors import ElboxError

from .arrays import load_arrays
from .base import Dataset
from .named import DATASETS, load_named
from .tables import TABLE_SUFFIXES, load_table

__all__ = ["load_dataset"]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    schema: str | Path | None = None,
    all_rows: bool = False,
    power: str = "none",
) -> Dataset:
    """Load a data set by name, or user arrays or a table from a path.

    - ``"digits"``: scikit-learn's 1,797 8x8 digits (UCI optical digits), /16, levels 16.
    - ``"binarized-mnist"``: the static binarisation of Larochelle & Murray (2011),
      50,000 / 10,000 / 10,000 x 784, levels 1, read from ``binarized_mnist_<split>.mat``
      or ``.amat`` in ``data_dir``.
    - ``"mnist"`` (LeCun et al., 1998) and ``"fashion-mnist"`` (Xiao, Rasul & Vollgraf,
      2017): the IDX files in ``data_dir``; the first 50,000 training images train, the
      last 10,000 validate, t10k tests; /255, levels 255.
    - A path ending in ``.npy`` ([N, D] or [N, H, W]) or ``.npz`` (``train``, optional
      ``valid``, ``test`` and ``<split>_labels``); missing splits are cut from train.
    - A path ending in ``.csv`` or ``.parquet``: a table (``tables.load_table``), its column
      kinds inferred or read from the ``schema`` file (JSON or TOML); its continuous columns
      standardised by the training rows' statistics, or every row's with ``all_rows``, after
      Yeo-Johnson's power transform with ``power="yeo-johnson"``.

    Splits that are not given are cut by a fixed permutation (``np.random.default_rng(0)``,
    10% each to valid and test), independent of any training seed. Files with published
    checksums are verified on every load. ``data_dir`` defaults to
    ``named.default_data_dir``; it is not used for paths.
    ``download=True`` fetches missing files into ``data_dir``.
    """
    if name in DATASETS:
        return load_named(name, data_dir, download=download)
    suffix = Path(name).suffix.lower()
    if suffix in (".npy", ".npz"):
        return load_arrays(name)
    if suffix in TABLE_SUFFIXES:
        return load_table(name, schema, all_rows=all_rows, power=power)
    raise ElboxError(
        f"Unknown data set {name!r}: choose one of {', '.join(DATASETS)}, or give the path of "
        "a .npy file (an [N, D] or [N, H, W] array), of an .npz file with a 'train' array "
        "(and optionally 'valid', 'test' and '<split>_labels'), or of a table (.csv, .parquet)."
    )
