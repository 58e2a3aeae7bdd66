"""A table's columns as named arrays: ``X[0]``, ``X[1]``, ... -> ``X`` ``[N, D]``; integers int64, floats float64.

The rules that ``files`` applies to a table read into memory and ``parquet`` to each streamed batch,
so that both give the same arrays.
"""

import re
from pathlib import Path

import numpy as np

from ..errors import ElboxError

__all__ = ["gather_columns", "numeric_array"]

_COLUMN = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")  # X[3]: column 3 of the matrix X


def gather_columns(path: Path, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns ``X[0]``, ``X[1]``, ... -> one matrix ``X`` ``[N, D]``; other columns stay as they are."""
    arrays: dict[str, np.ndarray] = {}
    groups: dict[str, dict[int, np.ndarray]] = {}
    for name, column in columns.items():
        match = _COLUMN.match(name)
        if match:
            groups.setdefault(match["name"], {})[int(match["index"])] = column
        else:
            arrays[name] = column
    for name, parts in groups.items():
        if name in arrays or sorted(parts) != list(range(len(parts))):
            raise ElboxError(f"the table {path} has the columns {[f'{name}[{i}]' for i in sorted(parts)]}"
                             f"{f' and {name!r}' if name in arrays else ''}: the columns of a matrix {name!r} "
                             f"are {name}[0], {name}[1], ... with no gap, and none is named {name!r} itself")
        arrays[name] = np.stack([parts[i] for i in range(len(parts))], axis=1)
    return arrays


def numeric_array(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    """``array``, the data item ``name`` of the file ``path``, as int64 (integers, booleans) or float64 (floats);
    anything else, NaN or inf refused."""
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind not in "iuf":
        raise ElboxError(f"the data item {name!r} of {path} is of type {array.dtype}, not numbers: code categories "
                         "as integers 0..C-1 and give numbers only")  # fmt: skip
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ElboxError(f"the data item {name!r} of {path} has {int((~np.isfinite(array)).sum())} missing or "
                         "infinite values (NaN, inf, an empty cell): the likelihood would be NaN; drop those rows "
                         "or fill them in before fitting")  # fmt: skip
    return array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(np.float64)
