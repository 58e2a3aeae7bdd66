"""Large Parquet data files streamed, a row group at a time, into a cached folder of memory-mapped ``NAME.npy`` files.

``elbox fit model.py --data big.parquet`` reads a Parquet file into memory (``files``) unless its arrays
would be large: rows x columns x 8 bytes (every array is float64 or int64 once read) above
``STREAM_BYTES`` = 1 GiB. The decoded size decides, not the size on disk, since Parquet's compression
ratio varies tenfold with the data, and memory is what runs out: at 1 GiB of arrays the in-memory
read peaks near 3 GiB (the frame, the float64 arrays and one pass's temporaries), while streaming
costs one sequential write of that 1 GiB to disk and nothing the next time. The environment
variable ``ELBOX_STREAM_PARQUET`` = ``always`` / ``never`` / ``auto`` (the default) overrides.

Streaming reads the file a row group at a time with ``pyarrow.parquet.ParquetFile.iter_batches`` (at
most 65,536 rows a batch), turns each batch into arrays by the in-memory reader's own rules
(``X[0]``, ``X[1]``, ... -> ``X`` ``[N, D]``; integers and booleans -> int64, floats -> float64; NaN
refused), so that both paths give the same arrays bit for bit, and appends them to ``NAME.npy``
files. Memory stays bounded by one row group (as read from disk) and one batch. The files are
written sequentially, not through a memory map: a write to a mapped sparse file on a full disk
kills the process (SIGBUS) where ``write`` raises, and written mapped pages count in the
process's resident memory.

The cache is the folder ``big.parquet.npy/`` beside the file (``--data big.parquet.npy`` then works
too), with ``stamp.json`` holding the Parquet file's size and modification time: it is reused while
they match and rebuilt, atomically (written to a temporary folder, then renamed), when they do not.
A folder of that name that elbox did not write is never touched. Nothing is unpickled.
"""

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ElboxError
from .columns import gather_columns, numeric_array

__all__ = ["STREAM_BYTES", "STREAM_VARIABLE", "cache_folder", "stream_parquet", "streams"]

STREAM_BYTES = 2**30  # decoded arrays above this are streamed (the module's docstring says why)
STREAM_VARIABLE = "ELBOX_STREAM_PARQUET"  # always / never / auto
BATCH_ROWS = 2**16  # rows decoded at a time: 65,536 rows x 100 columns = 52 MB
STAMP = "stamp.json"
_VERSION = 1  # of the cache's layout: a cache of another version is rebuilt


def streams(path: str | Path) -> bool:
    """Whether ``load_data_file`` streams the Parquet file ``path``: ``ELBOX_STREAM_PARQUET``, else its arrays' size."""
    choice = os.environ.get(STREAM_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in ("auto", "always", "never"):
        raise ElboxError(f"{STREAM_VARIABLE}={choice!r} is not a choice: set it to `always` (stream every Parquet "
                         "data file into a cached .npy folder), `never` (read it into memory) or `auto` (stream "
                         f"above {STREAM_BYTES // 2**30} GiB of arrays), or unset it")  # fmt: skip
    if choice != "auto":
        return choice == "always"
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the in-memory reader says what to install
        return False
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError):  # not Parquet (pyarrow.ArrowInvalid): the in-memory reader words the refusal
        return False
    return metadata.num_rows * metadata.num_columns * 8 > STREAM_BYTES


def cache_folder(path: str | Path) -> Path:
    """Where ``stream_parquet`` keeps ``path``'s arrays: ``big.parquet`` -> ``big.parquet.npy/`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".npy")


def stream_parquet(path: str | Path) -> Path:
    """The cache folder of the Parquet file ``path`` (``cache_folder``), written now unless its stamp matches the
    file: one ``NAME.npy`` per array, ``[N]`` or ``[N, D]``, float64 or int64, equal to ``load_data_file``'s."""
    path = Path(path)
    folder = cache_folder(path)
    stamp = _stamp(path)
    if _reusable(folder, stamp):
        return folder
    if folder.exists() and not (folder / STAMP).is_file():
        raise ElboxError(f"{folder} exists and is not elbox's cache of {path} (it has no {STAMP}), so elbox will not "
                         f"overwrite it: move it away, or pass it as --data {folder} if it holds the arrays")
    pq = _pyarrow(path)
    source = pq.ParquetFile(path)
    layout, columns = _layout(path, source)
    needed = source.metadata.num_rows * sum(int(np.prod(shape)) * 8 for _, shape in layout.values())
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    if needed > free:
        raise ElboxError(_no_room(path, folder, f"it needs {needed / 2**30:.2f} GiB and {free / 2**30:.2f} GiB are "
                                                "free there"))  # fmt: skip
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=path.parent))
    except OSError as err:
        raise ElboxError(_no_room(path, folder, str(err))) from None
    try:
        _write(path, source, layout, columns, temporary)
        arrays = {name: [dtype, list(shape)] for name, (dtype, shape) in layout.items()}
        (temporary / STAMP).write_text(json.dumps(stamp | {"arrays": arrays}) + "\n")  # last: it marks the cache whole
        _replace(folder, temporary, stamp)
    except OSError as err:
        shutil.rmtree(temporary, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise ElboxError(_no_room(path, folder, str(err))) from None
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def _pyarrow(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ElboxError(f"reading {path} needs a Parquet engine ({err}): pip install pyarrow, or save the table "
                         "as .csv") from None  # fmt: skip
    return pq


def _stamp(path: Path) -> dict[str, Any]:
    info = path.stat()
    return {"version": _VERSION, "source": path.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _reusable(folder: Path, stamp: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete cache written from the file that ``stamp`` describes."""
    try:
        written = json.loads((folder / STAMP).read_text())
        arrays = set(written.pop("arrays"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return written == stamp and {f.stem for f in folder.glob("*.npy")} == arrays


def _layout(path: Path, source: Any) -> tuple[dict[str, tuple[str, tuple[int, ...]]], list[str]]:
    """``{array: (dtype, shape after N)}`` and the columns to read, from the in-memory reader's rules applied to
    zero rows: a column that it would refuse (text, dates, a gap in ``X[0]``, ``X[2]``) is refused before any
    write. Columns that hold a pandas index (``__index_level_0__``) are left out, as pandas leaves them."""
    schema = source.schema_arrow
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    columns = [name for name in schema.names if name not in index]
    empty = _arrays(path, schema.empty_table(), columns)
    if not empty:
        raise ElboxError(f"the data file {path} holds no arrays: it needs one named array (or column) per data item")
    for name in empty:  # each becomes a file name
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            raise ElboxError(f"the data file {path} has a column named {name!r}, which cannot name the file "
                             f"{name}.npy of its streamed cache: rename the column (letters, digits, _)")
    return {name: (a.dtype.str, a.shape[1:]) for name, a in empty.items()}, columns


def _arrays(path: Path, table: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """A table's (or batch's) arrays as ``files._read_table`` makes them, through pandas as it does."""
    frame = table.select(columns).replace_schema_metadata(None).to_pandas()
    gathered = gather_columns(path, {str(c): frame[c].to_numpy() for c in frame.columns})
    return {name: numeric_array(path, name, a) for name, a in gathered.items()}


def _write(path: Path, source: Any, layout: dict[str, tuple[str, tuple[int, ...]]], columns: list[str],
           folder: Path) -> None:  # fmt: skip
    """Append each batch's rows to ``folder/NAME.npy`` (a .npy header for all N rows, then C-order rows)."""
    import pyarrow as pa

    n = source.metadata.num_rows
    files = {name: open(folder / f"{name}.npy", "wb") for name in layout}  # noqa: SIM115 - closed below
    try:
        for name, (dtype, shape) in layout.items():
            header = {"descr": dtype, "fortran_order": False, "shape": (n, *shape)}
            np.lib.format.write_array_header_1_0(files[name], header)
        rows = 0
        for batch in _batches(source, columns):
            for name, a in _arrays(path, pa.Table.from_batches([batch]), columns).items():
                files[name].write(np.ascontiguousarray(a, dtype=layout[name][0]).data)
            rows += batch.num_rows
    finally:
        for file in files.values():
            file.close()
    if rows != n:  # a truncated file whose footer promises more rows
        raise ElboxError(f"the data file {path} gave {rows} rows where its metadata says {n}: it is damaged; "
                         "write it again")  # fmt: skip


def _batches(source: Any, columns: list[str]) -> Iterator[Any]:
    """The file's rows, at most ``BATCH_ROWS`` at a time, one row group after another: asked for all row groups
    at once, ``iter_batches`` buffers the whole file first (pyarrow 26: a 400 MB peak for a 400 MB file)."""
    for group in range(source.num_row_groups):
        yield from source.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=columns,
                                       use_pandas_metadata=False)  # fmt: skip


def _replace(folder: Path, temporary: Path, stamp: dict[str, Any]) -> None:
    """Rename ``temporary`` to ``folder``, moving a stale cache out of the way first (each rename is atomic: a
    reader never sees part of a cache). Another process may have written the same cache meanwhile (torchrun
    starts several): then its cache is kept and this one dropped."""
    if _reusable(folder, stamp):  # another process finished first: readers may already map its files
        shutil.rmtree(temporary, ignore_errors=True)
        return
    stale = None
    if folder.exists():
        stale = folder.with_name(f".{folder.name}.stale.{os.getpid()}")
        os.rename(folder, stale)
    try:
        os.rename(temporary, folder)
    except OSError:
        if not _reusable(folder, stamp):
            raise
        shutil.rmtree(temporary, ignore_errors=True)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _no_room(path: Path, folder: Path, why: str) -> str:
    return (f"the Parquet file {path} is streamed into the folder {folder} beside it (its arrays are too large for "
            f"memory, or {STREAM_VARIABLE}=always), but that folder cannot be written ({why}): free space or make "
            f"{path.parent} writable, or copy the Parquet file to a folder with room, or set {STREAM_VARIABLE}=never "
            "to read it into memory")
