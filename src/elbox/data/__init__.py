"""Data sets with fixed splits: named sets (digits, MNIST forms), user arrays and tables."""

from .arrays import load_arrays
from .base import SPLITS, Dataset, binarize, spread, spread_index
from .load import load_dataset
from .named import DATASETS, default_data_dir, load_named, read_amat, read_idx
from .tables import Column, Schema, infer_schema, load_table, read_table, write_table

# The named module's private tables, which tests and tools patch; the same objects.
from .named import _CHECKSUMS, _MIRRORS  # noqa: F401  isort: skip

__all__ = [
    "DATASETS",
    "SPLITS",
    "Column",
    "Dataset",
    "Schema",
    "binarize",
    "default_data_dir",
    "infer_schema",
    "load_arrays",
    "load_dataset",
    "load_named",
    "load_table",
    "read_amat",
    "read_idx",
    "read_table",
    "spread",
    "spread_index",
    "write_table",
]
