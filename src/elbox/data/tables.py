"""Tables (CSV, Parquet): a schema of column kinds, and the transforms to and from the user's units.

A table becomes a float32 matrix ``[N, C]``, one column per kept column of the file, NaN where
a value is missing:

    continuous   (x - loc) / scale, loc and scale the training split's mean and standard deviation;
                 with ``power="yeo-johnson"`` (opt-in) (t(x) - loc) / scale, t(x) Yeo-Johnson's power
                 transform of the standardised (x - power_loc) / power_scale, its lambda fitted to
                 the training rows and kept in [0, 2] (``transforms``)
    binary       0 / 1, the code of the column's two levels (in sorted order)
    categorical  0 .. K - 1, the code of its K levels (in sorted order)
    count        the count itself, a whole number >= 0

``Schema`` holds the columns, their kinds, levels and transforms; it is plain JSON (``to_dict``)
written in the run folder, so a reloaded run reads and writes the user's units and names.
"""

import csv
import json
import math
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from elbox.errors import ElboxError

from .base import SPLITS, Dataset, _holdout, _tensor
from .transforms import POWERS, fit_continuous, from_standard, to_standard

__all__ = [
    "COUNT_LIKELIHOODS",
    "KINDS",
    "MAX_LEVELS",
    "TABLE_SUFFIXES",
    "Column",
    "Schema",
    "infer_schema",
    "load_table",
    "read_schema_file",
    "read_table",
    "split_rows",
    "write_table",
]

KINDS = ("continuous", "binary", "categorical", "count")
COUNT_LIKELIHOODS = ("negative-binomial", "poisson", "zinb", "beta-binomial")  # beta-binomial[:N]: at most N
TABLE_SUFFIXES = (".csv", ".parquet")
MAX_LEVELS = 50  # a text column with more distinct values is an identifier or free text, not a category
_CODES = 10  # whole numbers >= 1 with at most this many distinct values read as category codes
# a count column whose largest value holds at least this share of the values has a ceiling (days a week, a score
# out of N, pixels on in a block): bounded counts, the beta-binomial up to that value; unbounded counts reach
# their largest value once or a few times
CEILING = 0.05


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, kind, levels (binary, categorical) and transform (continuous).

    ``levels`` are the column's values in code order, as JSON values (str, int, float, bool).
    ``likelihood`` is a count column's: ``negative-binomial`` (default), ``poisson``, ``zinb`` or
    ``beta-binomial:N`` (bounded counts, at most N). A continuous column's encoded value is
    ``(x - loc) / scale``, or with ``power == "yeo-johnson"`` ``(t - loc) / scale`` with
    ``t = yeo_johnson((x - power_loc) / power_scale, lmbda)``.
    """

    name: str
    kind: str
    levels: tuple[Any, ...] = ()
    loc: float = 0.0
    scale: float = 1.0
    likelihood: str | None = None
    power: str | None = None  # None: standardised as it is; "yeo-johnson": power-transformed first
    lmbda: float = 1.0  # Yeo-Johnson's lambda (1: the identity)
    power_loc: float = 0.0  # the values are standardised before the power transform: its lambda is then
    power_scale: float = 1.0  # the same whatever the column's units (a raw 0.05 and a raw 500 differ)

    @property
    def spec(self) -> str:
        """The decoder's likelihood for this column (``likelihoods.ColumnLikelihood``)."""
        if self.kind == "continuous":
            return "gaussian"
        if self.kind == "binary":
            return "bernoulli"
        if self.kind == "categorical":
            return f"categorical:{len(self.levels)}"
        return self.likelihood or "negative-binomial"

    def describe(self) -> str:
        if self.kind == "continuous" and self.power:
            power = f"{self.power}, lambda {self.lmbda:.3g}"
            return f"continuous (mean {self.power_loc:.4g}, sd {self.power_scale:.4g}; {power})"
        if self.kind == "continuous":
            return f"continuous (mean {self.loc:.4g}, sd {self.scale:.4g})"
        if self.kind == "count":
            return f"count ({self.spec})"
        shown = ", ".join(map(str, self.levels[:6])) + (", ..." if len(self.levels) > 6 else "")
        return f"{self.kind} ({shown})"


@dataclass(frozen=True)
class Schema:
    """The kept columns of a table, in file order; ``dropped`` names those declared ``drop``.

    ``encode`` maps a DataFrame in the user's units to ``[N, C]`` float32 (NaN: missing);
    ``decode`` maps such a matrix back to a DataFrame with the user's names, levels and units.
    """

    columns: tuple[Column, ...]
    dropped: tuple[str, ...] = ()
    header: bool = True

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def specs(self) -> tuple[str, ...]:
        return tuple(c.spec for c in self.columns)

    def describe(self) -> str:
        """One line per column, for the user to check what was inferred."""
        width = max(len(c.name) for c in self.columns)
        lines = [f"  {c.name:<{width}}  {c.describe()}" for c in self.columns]
        lines += [f"  {name:<{width}}  dropped" for name in self.dropped]
        return "\n".join(lines)

    def encode(self, frame: Any, where: str = "the table") -> np.ndarray:
        """``[N, C]`` float32 of a DataFrame holding (at least) the schema's columns."""
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise ElboxError(f"{where} lacks the column(s) {missing} of the run's schema (columns {self.names}); "
                             "give a table with the same columns as the one the run was trained on.")  # fmt: skip
        return np.stack([_encode_column(frame[c.name], c, where) for c in self.columns], 1).astype(np.float32)

    def decode(self, x: np.ndarray) -> Any:
        """A DataFrame in the user's units from ``[N, C]`` values in the encoded scale."""
        import pandas as pd

        out = {}
        for j, c in enumerate(self.columns):
            v = np.asarray(x[:, j], dtype=np.float64)
            if c.kind == "continuous":
                out[c.name] = from_standard(v, c)
            elif c.kind == "count":
                out[c.name] = v
            else:
                codes = np.clip(np.nan_to_num(np.round(v), nan=-1), -1, len(c.levels) - 1).astype(int)
                labels = np.array([*c.levels, None], dtype=object)
                out[c.name] = pd.Series(labels[codes]).where(~np.isnan(v), None).to_numpy()
        return pd.DataFrame(out)

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "dropped": list(self.dropped),
                "columns": [_column_dict(c) for c in self.columns]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schema":
        columns = tuple(Column(**(c | {"levels": tuple(c.get("levels", ()))})) for c in d["columns"])
        return cls(columns, tuple(d.get("dropped", ())), bool(d.get("header", True)))


def _column_dict(c: Column) -> dict[str, Any]:
    d = asdict(c) | {"levels": list(c.levels)}
    if c.power is None:  # a column without a power transform is written as before the option existed
        del d["power"], d["lmbda"], d["power_loc"], d["power_scale"]
    return d


# ----------------------------------------------------------------------------- reading and writing


def read_table(path: str | Path, header: bool | None = None) -> Any:
    """A CSV or Parquet file as a pandas DataFrame, every column as read (missing values NaN / None).

    A CSV's header row is detected (``csv.Sniffer``) unless ``header`` says; without one the
    columns are named ``column_0``, ``column_1``, ... Parquet files always name their columns.
    """
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise ElboxError(f"The table {path} does not exist; give the path of an existing .csv or .parquet file.")
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    if header is None:
        header = _has_header(path)
    try:
        frame = pd.read_csv(path, header=0 if header else None)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise ElboxError(f"Could not read {path} as a CSV table ({e}); save it as comma-separated values with "
                         "one row per line.") from None  # fmt: skip
    if not header:
        frame.columns = [f"column_{i}" for i in range(frame.shape[1])]
    if frame.empty:
        raise ElboxError(f"The table {path} has no rows; it needs at least one row of data.")
    return frame


def _has_header(path: Path) -> bool:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(64 * 1024)
    rows = list(csv.reader(sample.splitlines()[:50]))
    # csv.Sniffer drops every column holding an empty cell from its vote, so a table missing values in
    # each column would read as headless: a first row of names only, above rows with numbers, is a header
    names = len(rows) > 1 and rows[0] and not any(_is_number(c) or not c.strip() for c in rows[0])
    if names and any(_is_number(c) for row in rows[1:] for c in row):
        return True
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:  # a single column: headed when its first cell is not a number
        first = sample.splitlines()[0] if sample else ""
        return not _is_number(first)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except ImportError:
        raise ElboxError(f"Reading the Parquet file {path} needs the pyarrow package: install it with "
                         "`pip install 'elbox[parquet]'` (or `pip install pyarrow`), or save the table as "
                         ".csv.") from None  # fmt: skip
    except (OSError, ValueError) as e:
        raise ElboxError(f"Could not read {path} as a Parquet table ({e}); it is corrupt or not Parquet.") from None


def write_table(frame: Any, path: str | Path) -> Path:
    """Write a DataFrame as ``.csv``, ``.parquet`` or ``.npy`` (numbers only), as the suffix says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        try:
            frame.to_parquet(path, index=False)
        except ImportError:
            raise ElboxError("Writing Parquet needs pyarrow: `pip install 'elbox[parquet]'`, or write .csv.") from None
    elif suffix == ".npy":
        try:
            np.save(path, frame.to_numpy(dtype=np.float64), allow_pickle=False)
        except (ValueError, TypeError):
            raise ElboxError(f"{path}: a .npy file holds numbers only, but the table has text columns; write .csv "
                             "or .parquet instead.") from None  # fmt: skip
    else:
        raise ElboxError(f"Cannot write {path}: the output's suffix must be .csv, .parquet or .npy.")
    return path


# ----------------------------------------------------------------------------- schema: declared and inferred


def read_schema_file(path: str | Path) -> dict[str, Any]:
    """Read a schema file (JSON or TOML): ``header`` (optional) and ``columns``, a table from a column's
    name to its kind: ``continuous`` (``continuous:yeo-johnson`` power-transformed first, ``continuous:none``
    not, whatever ``--power`` says), ``binary``, ``categorical``, ``count`` (or ``count:poisson``,
    ``count:zinb``, ``count:beta-binomial`` for counts bounded by the column's largest value,
    ``count:beta-binomial:N`` for counts of at most N) or ``drop``. Columns it does not name are inferred.
    A run's stored schema (``Schema.to_dict``) is accepted as well."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ElboxError(f"The schema file {path} does not exist; give a JSON or TOML file of column kinds.")
    try:
        text = path.read_text(encoding="utf-8")
        d = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ElboxError(f"The schema file {path} cannot be read: {e}. Fix its syntax.") from None
    if not isinstance(d, dict) or not isinstance(d.get("columns", {}), dict | list):
        raise ElboxError(f"The schema file {path} must hold a table 'columns' from column names to kinds, "
                         'e.g. {"columns": {"age": "continuous", "smoker": "binary"}}.')  # fmt: skip
    return d


def _declared(d: dict[str, Any], where: str) -> dict[str, str]:
    """Column name -> kind spec from a schema file's ``columns``."""
    columns = d.get("columns", {})
    if isinstance(columns, list):  # a stored schema: its kinds and count likelihoods
        return {c["name"]: _stored_spec(c) for c in columns}
    allowed = (*KINDS, "drop", *(f"count:{lik}" for lik in COUNT_LIKELIHOODS), *(f"continuous:{p}" for p in POWERS))
    bad = {name: kind for name, kind in columns.items() if kind not in allowed and not _beta_binomial_n(kind)}
    if bad:
        raise ElboxError(f"{where} declares unknown column kinds {bad}; a kind is one of {', '.join(allowed)}.")
    return dict(columns)


def _stored_spec(c: dict[str, Any]) -> str:
    """A stored column's kind spec: ``count:zinb``, ``continuous:yeo-johnson``, ``continuous``, ..."""
    detail = c.get("likelihood") or c.get("power")
    return c["kind"] + (f":{detail}" if detail else "")


def infer_schema(
    frame: Any, declared: dict[str, str] | None = None, *, header: bool = True, power: str = "none"
) -> Schema:
    """The kind of every column: declared (``declared``: name -> kind spec), else inferred.

    Inference, on the non-missing values: bool or two distinct values -> binary; text with at
    most ``MAX_LEVELS`` levels -> categorical; whole numbers >= 1 with at most 10 distinct
    values -> categorical (codes such as 1..5 of a survey); other whole numbers >= 0 -> count,
    bounded by its largest value (beta-binomial) when that value holds at least ``CEILING`` of
    the values, else negative binomial; any other number -> continuous. A column with no value, or a
    single value, is refused with its name (declare it ``drop`` to leave it out). ``power`` (one of
    ``POWERS``) is every continuous column's transform unless declared (``continuous:yeo-johnson``,
    ``continuous:none``). Transforms are left at identity: ``fit_transforms`` sets them from the training rows.
    """
    if power not in POWERS:
        raise ElboxError(f"the power transform {power!r} is not one of {', '.join(POWERS)}; give --power "
                         "yeo-johnson (skewed continuous columns), or none (the default).")  # fmt: skip
    declared = dict(declared or {})
    if unknown := sorted(set(declared) - set(map(str, frame.columns))):
        raise ElboxError(f"the schema declares column(s) {unknown} that the table does not have (its columns: "
                         f"{list(map(str, frame.columns))}); fix the names.")  # fmt: skip
    columns, dropped = [], []
    for name in frame.columns:
        spec = declared.get(str(name))
        if spec == "drop":
            dropped.append(str(name))
            continue
        columns.append(_column(str(name), frame[name], spec, power))
    if not columns:
        raise ElboxError("every column of the table is dropped; keep at least one.")
    return Schema(tuple(columns), tuple(dropped), header)


def _column(name: str, values: Any, spec: str | None, power: str = "none") -> Column:
    present = values.dropna()
    if present.empty:
        raise ElboxError(f"the column {name!r} has no values (all missing): a model can learn nothing about it. "
                         f"Remove it from the table, or declare it \"drop\" in a schema file (--schema).")  # fmt: skip
    distinct = sorted(present.unique(), key=_sort_key)
    if len(distinct) == 1:
        raise ElboxError(f"the column {name!r} holds one value only ({distinct[0]!r}): it carries no information "
                         "and cannot be standardised. Remove it, or declare it \"drop\" in a schema file "
                         "(--schema).")  # fmt: skip
    kind, _, likelihood = (spec or _infer_kind(name, present, distinct)).partition(":")
    numeric = present.dtype.kind in "biuf"
    if kind == "continuous" and not numeric:
        raise ElboxError(f"the column {name!r} is declared continuous but holds text (e.g. {distinct[0]!r}); "
                         "declare it categorical, or fix the values.")  # fmt: skip
    if kind == "count":
        v = present.to_numpy(dtype=np.float64) if numeric else None
        if v is None or (v < 0).any() or (v != np.round(v)).any():
            raise ElboxError(f"the column {name!r} is a count, but holds values that are not whole numbers >= 0 "
                             f"(e.g. {distinct[0]!r}); declare it continuous or categorical.")  # fmt: skip
        if likelihood.startswith("beta-binomial"):  # the bound: declared (beta-binomial:N), else the largest seen
            n = int(likelihood.partition(":")[2] or v.max())
            if v.max() > n:
                raise ElboxError(f"the column {name!r} is declared a count of at most {n} (beta-binomial:{n}) but "
                                 f"holds {v.max():g}; raise the bound, or declare it count.")  # fmt: skip
            likelihood = f"beta-binomial:{max(n, 1)}"
        return Column(name, "count", likelihood=likelihood or "negative-binomial")
    if kind == "binary" and len(distinct) != 2:
        raise ElboxError(f"the column {name!r} is declared binary but has {len(distinct)} distinct values; declare "
                         "it categorical.")  # fmt: skip
    if kind in ("binary", "categorical"):
        return Column(name, kind, levels=tuple(_json_value(v) for v in distinct))
    chosen = likelihood if kind == "continuous" and likelihood else power  # declared per column, else --power
    return Column(name, "continuous", power=None if chosen == "none" else chosen)


def _beta_binomial_n(spec: str) -> bool:
    """Whether ``spec`` is ``count:beta-binomial:N`` with N a whole number >= 1."""
    head, _, n = spec.rpartition(":")
    return head == "count:beta-binomial" and n.isdigit() and int(n) >= 1


def _infer_kind(name: str, present: Any, distinct: list[Any]) -> str:
    if len(distinct) == 2:
        return "binary"
    if present.dtype.kind not in "iuf":
        if len(distinct) > MAX_LEVELS:
            raise ElboxError(f"the column {name!r} holds text with {len(distinct)} distinct values (more than "
                             f"{MAX_LEVELS}): an identifier or free text rather than a category. Remove it, "
                             "declare it \"drop\" in a schema file (--schema), or encode it as numbers.")  # fmt: skip
        return "categorical"
    v = present.to_numpy(dtype=np.float64)
    if (v == np.round(v)).all() and v.min() >= 0:
        if v.min() >= 1 and len(distinct) <= _CODES:
            return "categorical"
        return "count:beta-binomial" if (v == v.max()).mean() >= CEILING else "count"
    return "continuous"


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float | np.number | bool | np.bool_) else (1, str(v))


def _json_value(v: Any) -> Any:
    """A level as plain JSON: numpy scalars become Python's, whole floats stay floats."""
    return v.item() if isinstance(v, np.generic) else v


def fit_transforms(schema: Schema, frame: Any) -> Schema:
    """The schema with each continuous column's transform fitted to ``frame``'s observed values
    (``transforms.fit_continuous``: mean and sd, and Yeo-Johnson's lambda where it has ``power``)."""
    columns = [fit_continuous(c, frame[c.name].dropna().to_numpy(dtype=np.float64)) if c.kind == "continuous"
               else c for c in schema.columns]  # fmt: skip
    return replace(schema, columns=tuple(columns))


def _encode_column(values: Any, c: Column, where: str) -> np.ndarray:
    if c.kind == "continuous":
        try:
            v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError):
            raise ElboxError(f"the column {c.name!r} of {where} is continuous but holds text.") from None
        if np.isinf(v).any():
            raise ElboxError(f"the column {c.name!r} of {where} holds infinite values; replace them, or leave the "
                             "cells empty (missing).")  # fmt: skip
        return to_standard(v, c)
    if c.kind == "count":
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(v) & ((v < 0) | (v != np.round(v)))
        if bad.any():
            raise ElboxError(f"the count column {c.name!r} of {where} holds {v[bad][0]!r}, not a whole number >= 0.")
        n = int(c.likelihood.partition(":")[2]) if (c.likelihood or "").startswith("beta-binomial") else None
        if n is not None and (v[~np.isnan(v)] > n).any():
            raise ElboxError(f"the count column {c.name!r} of {where} holds {np.nanmax(v):g}, above its bound {n} "
                             f"(beta-binomial:{n}, the run's schema): a run trained on counts of at most {n} cannot "
                             "read it.")  # fmt: skip
        return v
    index = {_level_key(level): i for i, level in enumerate(c.levels)}
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        code = index.get(_level_key(v))
        if code is None:
            raise ElboxError(f"the column {c.name!r} of {where} holds the value {v!r}, which is not one of its levels "
                             f"{list(c.levels)} (the schema the run was trained with).")  # fmt: skip
        out[i] = code
    return out


def _level_key(v: Any) -> Any:
    """Levels compare as read: 1 and 1.0 are the same level, '1' is another."""
    v = _json_value(v)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


# ----------------------------------------------------------------------------- the data set


def load_table(
    path: str | Path, schema: "str | Path | Schema | None" = None, *, all_rows: bool = False, power: str = "none"
) -> Dataset:
    """A table file as a ``Dataset``: rows cut into train / valid / test (10% each held out, fixed).

    ``schema`` is a schema file (declared kinds; the rest inferred), a ``Schema`` to apply as it
    is (a trained run's: its levels and transforms), or None to infer every kind. Continuous
    columns are standardised with the training rows' mean and sd, or with every row's when
    ``all_rows`` (a run that trains on every row: nothing is held out, so the whole table's
    statistics are the ones its model sees). ``power="yeo-johnson"`` power-transforms every
    continuous column (not declared otherwise) first, its lambda fitted to the same rows, so a
    skewed column reaches the decoder's Gaussian nearer a normal shape; ``Schema.decode`` undoes
    it. The inference is in ``dataset.schema.describe()``.
    """
    path = Path(path).expanduser()
    if isinstance(schema, Schema):
        frame = read_table(path, schema.header)
        fitted = schema
    else:
        d = read_schema_file(schema) if schema is not None else {}
        frame = read_table(path, d.get("header"))
        parts = _holdout(len(frame), 2, str(path))
        header = d.get("header", path.suffix.lower() == ".parquet" or not frame.columns[0].startswith("column_"))
        inferred = infer_schema(frame, _declared(d, str(schema)), header=bool(header), power=power)
        fitted = fit_transforms(inferred, frame if all_rows else frame.iloc[parts[0]])
    x = fitted.encode(frame, str(path))
    parts = _holdout(len(x), 2, str(path))
    splits = [_tensor(x[idx]) for idx in parts]
    return Dataset(str(path), *splits, image_shape=None, levels=None, schema=fitted)


def split_rows(n: int, where: str) -> dict[str, np.ndarray]:
    """The row indices of each split of an n-row table, as ``load_table`` cuts them."""
    return dict(zip(SPLITS, _holdout(n, 2, where), strict=True))
