"""Your own model from files: a Python file defining a ``bayes.Model``, its data from JSON, .npz, CSV or Parquet.

The model file is Python and is executed, as ``python model.py`` would run it: load only files
you trust. It defines, at module level, either

- ``model``: a ``bayes.Model``, or
- ``def model(data)``: a function of the data ``{name: np.ndarray}`` returning one (shapes such as
  the number of groups or predictors then follow the data, as in Stan's ``data`` block), or
  ``def model()`` with no argument.

A data file is never executed nor unpickled. It holds named numeric arrays:

- ``.json``: an object of numbers and (nested, rectangular) lists of numbers, posteriordb's layout
  ``{"N": 8, "y": [28, 8, ...]}``; integers stay integers;
- ``.npz``: ``np.savez(path, y=y, X=X)``, read with ``allow_pickle=False``;
- ``.csv`` and ``.parquet``: a table whose columns become arrays ``[N]``; the columns
  ``X[0]``, ``X[1]``, ... become one matrix ``X`` ``[N, D]`` (the names ``Model.names`` gives).
  A Parquet file whose arrays exceed 1 GiB is streamed a row group at a time into the folder
  ``NAME.parquet.npy/`` beside it, then memory-mapped (``parquet``; ``ELBOX_STREAM_PARQUET``);
- a folder of ``NAME.npy`` files (float64 or int64): memory-mapped, for data larger than memory;
  a minibatch step reads only its rows (see docs/guide.md, "Large data").

``write_data_file`` writes the same arrays in any of these formats; ``load_files`` loads a pair
and runs the model once on the data, so that a missing array or a wrongly shaped one is
refused before any fit, with the names involved.

>>> import tempfile, numpy as np
>>> folder = tempfile.mkdtemp()
>>> arrays = {"y": np.array([1.5, 2.0, 0.5]), "X": np.arange(6.0).reshape(3, 2)}
>>> table = write_data_file(f"{folder}/data.csv", arrays)
>>> back = load_data_file(table)
>>> sorted(back), back["X"].shape, bool((back["X"] == arrays["X"]).all())
(['X', 'y'], (3, 2), True)
"""

import importlib.util
import inspect
import json
import sys
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..errors import ElboxError
from .columns import gather_columns, numeric_array
from .model import Model
from .parquet import stream_parquet, streams
from .references import Reference

__all__ = ["DATA_SUFFIXES", "check_data", "is_model_file", "load_data_file", "load_files", "load_model_file",
           "write_data_file"]  # fmt: skip

DATA_SUFFIXES = (".json", ".npz", ".csv", ".parquet")


# ----------------------------------------------------------------------------- the model file


def is_model_file(name: str | Path) -> bool:
    """Whether ``elbox fit NAME`` means a model file (a path, or a name ending in .py) rather than a built-in model."""
    text = str(name)
    return text.endswith(".py") or "/" in text or "\\" in text or Path(text).exists()


def load_model_file(path: str | Path, data: Mapping[str, Any] | None = None) -> Model:
    """The ``bayes.Model`` that the Python file ``path`` defines as ``model`` (or returns from
    ``model(data)`` / ``model()``). Executes the file: an error in it shows its own traceback.
    A model left with the default name is named after the file (its folder, for ``model.py``)."""
    path = _existing_file(Path(path), "model", "a Python file that defines `model`, such as examples/logistic/model.py")
    if path.suffix != ".py":
        raise ElboxError(f"the model file {path} does not end in .py: a model is a Python file that defines `model` "
                         "(a bayes.Model, or a function returning one); rename it, or give the right file")  # fmt: skip
    module = _execute(path)
    found = getattr(module, "model", None)
    if callable(found) and not isinstance(found, Model):
        found = _build(path, found, dict(data or {}))
    if not isinstance(found, Model):
        raise ElboxError(_no_model_message(path, module, found))
    if found.name == "model":  # Model's default: say which model it is in summaries and run folders
        found.name = path.parent.resolve().name if path.stem == "model" else path.stem
    return found


def _execute(path: Path) -> ModuleType:
    name = f"elbox_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ElboxError(f"Python cannot load {path} as a module: give a .py file that defines `model`")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs, as an import would: dataclasses and pickling look the module up by name;
    # its folder first on sys.path while it runs, as `python model.py` has it, for helpers beside it
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(path.parent.resolve()))
    return module


def _build(path: Path, factory: Any, data: dict[str, Any]) -> Any:
    """``model(data)`` or ``model()``; a data item it reads and the data lack is the user's to fix."""
    if not _takes_an_argument(factory):
        return factory()
    try:
        return factory(data)
    except KeyError as err:
        name = err.args[0] if err.args else err
        if name in data:
            raise
        given = f"the data have {sorted(data)}" if data else "no data were given (pass --data FILE)"
        raise ElboxError(f"`model(data)` in {path} reads the data item {name!r}, but {given}: add {name!r} to "
                         "the data file, or correct the name in the model") from None  # fmt: skip


def _takes_an_argument(f: Any) -> bool:
    try:
        parameters = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional or p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _defined_in(value: Any, module: ModuleType) -> bool:
    """Whether the file made ``value`` rather than imported it (a module, or a class or function from elsewhere)."""
    if isinstance(value, ModuleType):
        return False
    if inspect.isclass(value) or inspect.isroutine(value):
        return getattr(value, "__module__", None) == module.__name__
    return True


def _no_model_message(path: Path, module: ModuleType, found: Any) -> str:
    if found is not None:
        what = f"`model` there is (or returned) an object of type {type(found).__name__}, not an elbox.bayes.Model"
    else:
        public = {k: v for k, v in vars(module).items() if not k.startswith("_") and _defined_in(v, module)}
        models = [k for k, v in public.items() if isinstance(v, Model)]
        listed = ", ".join(f"{k} ({type(v).__name__})" for k, v in list(public.items())[:12]) or "nothing"
        what = (f"it defines a Model named {', '.join(models)} but none named `model`" if models
                else f"it defines no `model`; it defines {listed}")  # fmt: skip
    return (f"the model file {path} defines no model: {what}. Define at module level `model = bayes.Model(...)`, "
            "or `def model(data): ... return bayes.Model(...)` (see examples/ and the README's 'Your own model')")


# ----------------------------------------------------------------------------- data files


def load_data_file(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of a ``.json``, ``.npz``, ``.csv`` or ``.parquet`` file, or of a folder of ``NAME.npy``
    files (see the module's docstring); never executes nor unpickles anything. Integer arrays stay integer
    (int64), the rest float64. A large Parquet file comes back memory-mapped, from its cache (``parquet``)."""
    if Path(path).is_dir() and any(Path(path).glob("*.npy")):
        return _read_npy_folder(Path(path))
    path = _existing_file(Path(path), "data", f"a data file ending in {', '.join(DATA_SUFFIXES)}")
    suffix = path.suffix.lower()
    if suffix == ".parquet" and streams(path):  # large: streamed into a cached folder of .npy files, then mapped
        return _read_npy_folder(stream_parquet(path))
    readers = {".json": _read_json, ".npz": _read_npz, ".csv": _read_table, ".parquet": _read_table}
    if suffix not in readers:
        raise ElboxError(f"the data file {path} ends in {suffix or 'no suffix'}: give a .json file (posteriordb's "
                         "layout), an .npz archive or a table (.csv, .parquet) of named arrays")  # fmt: skip
    arrays = readers[suffix](path)
    if not arrays:
        raise ElboxError(f"the data file {path} holds no arrays: it needs one named array (or column) per data item")
    return {name: numeric_array(path, name, a) for name, a in arrays.items()}


def _existing_file(path: Path, what: str, expected: str) -> Path:
    if path.is_dir():
        inside = " (it holds model.py: give that file)" if what == "model" and (path / "model.py").is_file() else ""
        raise ElboxError(f"the {what} file {path} is a directory{inside}: give {expected}")
    if not path.is_file():
        raise ElboxError(f"the {what} file {path} does not exist: check the path; give {expected}")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ElboxError(f"the data file {path} is not valid JSON ({err}): write it as an object of named arrays, "
                         'e.g. {"N": 3, "y": [1.5, 2.0, 0.5]}') from None  # fmt: skip
    if not isinstance(loaded, dict):
        raise ElboxError(f"the data file {path} holds a JSON {type(loaded).__name__}, not an object of named arrays: "
                         'write it as {"N": 3, "y": [1.5, 2.0, 0.5]}')  # fmt: skip
    return {name: _json_array(path, name, value) for name, value in loaded.items()}


def _json_array(path: Path, name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # ragged lists
        array = np.asarray(None, dtype=object)
    if array.dtype.kind not in "biuf":
        raise ElboxError(f"the data file {path} gives {name!r} as {json.dumps(value)[:60]}: every item must be "
                         "a number or a rectangular (nested) list of numbers; code categories as integers 0..C-1")
    return array


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    refused = (f"the data file {path} is not an .npz archive of numeric arrays, or holds Python objects, which elbox "
               "never unpickles (a data file must not run code): save it with np.savez(path, y=y, X=X) "
               "from numeric arrays")  # fmt: skip
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ElboxError(_with_cause(refused, err)) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ElboxError(f"the data file {path} holds one unnamed .npy array: save named arrays with "
                         "np.savez(path, y=y, X=X)")  # fmt: skip
    with archive:
        try:
            return {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise ElboxError(_with_cause(refused, err)) from None


def _with_cause(message: str, err: Exception) -> str:
    # NumPy's own words on a pickle suggest loading it unsafely: advice that elbox does not give
    return message if "pickle" in str(err).lower() else f"{message} ({err})"


def _read_table(path: Path) -> dict[str, np.ndarray]:
    import pandas as pd  # deferred: only tables need it

    try:
        if path.suffix.lower() == ".csv":  # floats come back bit for bit: pandas 3 parses them so by default
            precise = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
            frame = pd.read_csv(path, **precise)
        else:
            frame = pd.read_parquet(path)
    except ImportError as err:
        raise ElboxError(f"reading {path} needs a Parquet engine ({err}): pip install pyarrow, or save the table "
                         "as .csv") from None  # fmt: skip
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ElboxError(f"the data file {path} could not be read as a table ({err}): write one named column per "
                         "array, one row per observation") from None  # fmt: skip
    return gather_columns(path, {str(c): frame[c].to_numpy() for c in frame.columns})


def _read_npy_folder(folder: Path) -> dict[str, np.ndarray]:
    """A folder of ``NAME.npy`` files, memory-mapped: the rows stay on disk until a step reads them.

    Only float64 and int64 files are mapped as they are (any other type would be converted, in memory); each is
    checked for NaN and inf a block of rows at a time."""
    arrays = {}
    for file in sorted(folder.glob("*.npy")):
        array = np.load(file, mmap_mode="c", allow_pickle=False)  # copy-on-write: torch may wrap it, nothing writes
        if array.dtype not in (np.float64, np.int64):
            raise ElboxError(f"the data file {file} holds {array.dtype}; a memory-mapped folder needs float64 or "
                             "int64 arrays (read as they are, without a copy): save it with .astype('float64') or "
                             ".astype('int64')")  # fmt: skip
        for start in range(0, max(len(array), 1), 2**20):
            if array.dtype == np.float64 and not np.isfinite(array[start : start + 2**20]).all():
                raise ElboxError(f"the data file {file} has missing or infinite values (NaN, inf) near row {start}: "
                                 "drop those rows or fill them in before fitting")  # fmt: skip
        arrays[file.stem] = array
    return arrays


def write_data_file(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` ``{name: array}`` as ``path``'s suffix says, so that ``load_data_file`` reads them
    back equal. A table (.csv, .parquet) needs arrays of one length N, each ``[N]`` or ``[N, D]``."""
    path = Path(path)
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps({k: a.tolist() for k, a in arrays.items()}) + "\n")
    elif suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix in (".csv", ".parquet"):
        frame = _frame(arrays)
        try:
            frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
        except ImportError as err:
            message = f"writing {path} needs a Parquet engine ({err}): pip install pyarrow, or write .csv"
            raise ElboxError(message) from None
    else:
        raise ElboxError(f"cannot write {path}: give a path ending in {', '.join(DATA_SUFFIXES)}")
    return path


def _frame(arrays: dict[str, np.ndarray]) -> Any:
    import pandas as pd

    columns: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if a.ndim == 1:
            columns[name] = a
        elif a.ndim == 2:
            columns |= {f"{name}[{j}]": a[:, j] for j in range(a.shape[1])}
        else:
            raise ElboxError(f"a table holds arrays [N] or [N, D], but {name!r} is {list(a.shape)}: use .npz or .json")
    if len({len(c) for c in columns.values()}) > 1:
        raise ElboxError(f"a table's columns have one length, but these differ: "
                         f"{ {n: len(c) for n, c in columns.items()} }; use .npz or .json")  # fmt: skip
    return pd.DataFrame(columns)


# ----------------------------------------------------------------------------- the model on its data


def check_data(model: Model, data: Mapping[str, Any], source: str = "the data") -> None:
    """Run ``model`` once on ``data`` (its prior and likelihood at one point, u = 0) and turn what goes
    wrong with the data into one ``ElboxError`` paragraph: an ``observed`` array missing, observed
    arrays of different lengths, an array that the likelihood reads and the data lack (the
    ``KeyError`` naming it), a shape mismatch, a value outside a distribution's support.
    Other errors are the model's own and are raised as they are."""
    keys = sorted(data)
    missing = [name for name in model.observed if name not in data]
    if missing:
        raise ElboxError(f"the model {model.name!r} observes {missing}, which {source} lacks (it has {keys}): add "
                         "them to the data file, or correct the names in the model's `observed`")  # fmt: skip
    lengths = {name: len(np.asarray(data[name])) if np.ndim(data[name]) else None for name in model.observed}
    if len(set(lengths.values())) > 1:
        raise ElboxError(f"the model {model.name!r} observes arrays with one row per observation, but their first "
                         f"dimensions in {source} differ: {lengths}; fix the data, or the model's `observed`")
    prepared, _ = model.prepare(data)
    params, _ = model.constrain(torch.zeros(1, model.dim, dtype=torch.float64))
    try:
        model.log_parts(params, prepared)
    except KeyError as err:
        name = err.args[0] if err.args else err
        if name in params:
            raise
        raise ElboxError(f"the model {model.name!r} reads the data item {name!r}, which {source} lacks (it has {keys}; "
                         f"the parameters are {list(model.params)}): add {name!r} to the data file, or correct "
                         "the name in the model") from None  # fmt: skip
    except (RuntimeError, IndexError, ValueError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        shapes = {k: list(np.shape(v)) for k, v in data.items()}
        if isinstance(err, ValueError) and "Expected value argument" not in text:
            raise
        what = ("a value outside the support of one of its distributions" if isinstance(err, ValueError)
                else "arrays whose shapes do not fit together")  # fmt: skip
        raise ElboxError(f"the model {model.name!r} fails on {source}: {what} ({text}). The data's shapes are {shapes} "
                         "and each parameter arrives as [K, *shape] with K particles first; fix the data file "
                         "(or the model)") from None  # fmt: skip


def load_files(model_path: str | Path, data_path: str | Path | None = None) -> Reference:
    """A model file and its data file, loaded and checked against each other (``check_data``), as a
    ``Reference`` without reference draws: what ``elbox fit model.py --data data.csv`` fits."""
    data = {} if data_path is None else load_data_file(data_path)
    model = load_model_file(model_path, data)
    source = "the data (none given: pass --data FILE)" if data_path is None else f"the data file {data_path}"
    check_data(model, data, source)
    return Reference(model.name, model, data)
