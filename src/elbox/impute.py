"""Missing values filled by a trained VAE (MIWAE), and a run's numbers out as tables in the user's units.

Imputation (Mattei & Frellsen 2019, "MIWAE", section 3): for a row with observed part x_o and
missing part x_m, K draws z_k ~ q(z | x_o) with self-normalised weights

    w_k = p(x_o | z_k) p(z_k) / q(z_k | x_o),   w~_k = w_k / sum_j w_j,

give the single imputation E[x_m | x_o] ~ sum_k w~_k E[x_m | z_k] (for a binary or categorical
column, the most probable level of the mixture sum_k w~_k p(x_m | z_k)), and multiple imputations
by sampling-importance-resampling: k ~ Categorical(w~), then x_m ~ p(x_m | z_k). Observed values
are never changed.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .aggregate import LATENTS, aggregate_posterior, aggregate_sample
from .data import Schema
from .data.tables import read_table
from .distributions import TableDistribution
from .errors import ElboxError

__all__ = [
    "embed_table",
    "embedding_rows",
    "impute",
    "impute_table",
    "reconstruct_table",
    "reconstruction_by_kind",
    "sample_table",
    "table_draws",
]


def _table_model(run: Any) -> Schema:
    schema = run.schema
    if schema is None:
        raise ElboxError(f"the run {run.path} was not trained on a table (.csv or .parquet): imputation and "
                         "tables out need a run trained with --data FILE.csv.")  # fmt: skip
    return schema


def _expected(p: TableDistribution, w: Tensor, x: Tensor) -> Tensor:
    """sum_k w_k E[x | x_o, z_k] per column, a categorical's or binary's most probable level of the mixture:
    p's batch ``[K, B]``, ``w`` ``[K, B]``, rows ``x`` ``[B, C]`` (NaN: missing) -> ``[B, C]``. Given z only
    correlated columns' means depend on x_o (``TableDistribution.mean_given``)."""
    means = p.mean_given(x)  # [K, B, C]; a categorical's entry unused

    def one(kind: str, idx: list[int], dist: Any) -> Tensor:
        if kind == "categorical":
            return (w.unsqueeze(-1) * dist.probs).sum(0).argmax(-1, keepdim=True).float()
        mixed = (w.unsqueeze(-1) * means[..., idx]).sum(0)
        return (mixed > 0.5).float() if kind == "bernoulli" else mixed

    return p._per_column(one)


@torch.no_grad()
def impute(
    model: Any, x: Tensor, k: int = 1000, *, draws: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Fill the NaN entries of table rows ``x`` ``[B, C]`` (encoded units) from ``model`` (a table VAE).

    ``draws=None``: the single imputation ``[B, C]``, the importance-weighted conditional mean over
    ``k`` draws of q. ``draws=M``: M multiple imputations by sampling-importance-resampling,
    ``[M, B, C]``. Observed entries are returned as given. Draws of q use torch's global generator
    (``torch.manual_seed``); ``generator`` drives the resampling.
    """
    missing = torch.isnan(x)
    z = model.encode(x).sample((k,))  # [K, B, D]
    p = model.decode(z)
    log_w = p.log_prob(x) + model.prior_given().log_prob(z) - model.encode(x).log_prob(z)  # [K, B]
    w = torch.softmax(log_w, 0)
    if draws is None:
        return torch.where(missing, _expected(p, w, x), x)
    pick = torch.multinomial(w.T, draws, replacement=True, generator=generator).T  # [M, B]
    chosen = z.gather(0, pick.unsqueeze(-1).expand(-1, -1, z.shape[-1]))  # [M, B, D]
    return torch.where(missing, model.decode(chosen).sample_given(x), x)


def _frame_rows(run: Any, frame: Any, where: str) -> Tensor:
    return torch.from_numpy(_table_model(run).encode(frame, where))


def impute_table(
    run: Any, data: str | Any, *, k: int = 1000, draws: int | None = None, seed: int = 0, batch: int = 256
) -> Any:
    """The table ``data`` (a path or a DataFrame) with its missing cells filled by ``run``'s model, in the
    user's units; with ``draws=M``, M filled copies stacked, with a leading column ``imputation`` (0..M-1).

    Columns outside the run's schema are kept as they are; observed cells are never changed.
    """
    schema = _table_model(run)
    frame = read_table(data, schema.header) if not hasattr(data, "columns") else data
    x = _frame_rows(run, frame, str(data) if isinstance(data, str) else "the table")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    parts = [impute(run.model, xb, k, draws=draws, generator=g) for xb in x.split(batch)]
    filled = torch.cat(parts, -2).numpy()
    if draws is None:
        return _merge(frame, schema, filled)
    import pandas as pd

    copies = [_merge(frame, schema, filled[m]).assign(imputation=m) for m in range(draws)]
    out = pd.concat(copies, ignore_index=True)
    return out[["imputation", *frame.columns]]


def _merge(frame: Any, schema: Schema, filled: np.ndarray) -> Any:
    """``frame`` with the schema's columns replaced where they were missing."""
    decoded = schema.decode(filled)
    out = frame.copy()
    for name in schema.names:
        was = out[name].isna().to_numpy()
        column = out[name].astype(object) if decoded[name].dtype == object else out[name]
        column = column.where(~was, decoded[name].to_numpy())
        out[name] = column
    return out


@torch.no_grad()
def sample_table(run: Any, n: int, seed: int = 0, latent: str = "prior") -> Any:
    """n rows drawn from the model, x ~ p(x | z), in the user's units and column names (``table_draws``)."""
    return _table_model(run).decode(table_draws(run, n, seed, latent).numpy())


@torch.no_grad()
def table_draws(run: Any, n: int, seed: int = 0, latent: str = "prior") -> Tensor:
    """n rows x ~ p(x | z) ``[n, C]`` in encoded units, from a generator seeded ``seed`` (torch's global
    state is left as it was).

    ``latent`` says where z comes from: ``prior``, z ~ p(z); ``aggregate``, the aggregate posterior
    (1/N) sum_i q(z | x_i) of the N rows the run trained on (a row, then its posterior, the rows stratified:
    ``aggregate.aggregate_sample``; every row of the file under ``all_rows``), the latents the
    decoder was trained on; ``gmm``, a Gaussian mixture fit to draws of those posteriors
    (``aggregate.aggregate_posterior``: smoother, further from the training rows). Both read the
    run's data file again. Each column is then drawn from its own likelihood given z: a
    Gaussian's learned noise, a count's negative binomial, a level's softmax.
    """
    _table_model(run)
    if latent not in LATENTS:
        raise ElboxError(f"--latent must be one of {', '.join(LATENTS)}, got {latent!r}: prior draws z ~ p(z), "
                         "aggregate from the training rows' posteriors, gmm from a mixture fit to them.")  # fmt: skip
    rows = _trained_rows(run) if latent != "prior" else None
    q = aggregate_posterior(run.model, rows, seed=seed) if latent == "gmm" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if latent == "aggregate":
            z = aggregate_sample(run.model, rows, n)
        else:
            z = run.model.prior_given().sample((n,)) if q is None else q.sample((n,))  # [n, D]
        return run.model.decode(z).sample()


def _trained_rows(run: Any) -> Tensor:
    """The rows ``run`` was trained on ``[N, C]``: its training split, or under ``all_rows`` every split's rows."""
    names = ("train", "valid", "test") if run.config.all_rows else ("train",)
    return torch.cat([run.split(name)[0] for name in names])


@torch.no_grad()
def reconstruct_table(run: Any, x: Tensor) -> Any:
    """The rows ``x`` ``[B, C]`` (encoded) decoded at the center of q(z | x): means, a level's most probable."""
    return _table_model(run).decode(run.model.reconstruct(x).numpy())


@torch.no_grad()
def embed_table(model: Any, x: Tensor, index: Any = None) -> Any:
    """The posterior means E_q[z | x] of rows ``x`` ``[B, C]`` as a DataFrame ``z0 .. z{D-1}`` with the rows'
    ``index``."""
    import pandas as pd

    from .families import center

    z = center(model.encode(x)).numpy()
    return pd.DataFrame(z, columns=[f"z{d}" for d in range(z.shape[1])], index=index)


@torch.no_grad()
def reconstruction_by_kind(model: Any, x: Tensor, *, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """E_q log p(x | z) per column kind and in ``total``, in nats per row, for table rows ``x`` ``[N, C]``.

    One draw z ~ q(z | x) per row (as the run's ``reconstruction``), from a generator seeded
    ``seed`` (torch's global one is left as it was); each row's log p(x | z) is split over the
    kinds of its columns (``TableDistribution.log_prob_kinds``; missing entries count 0), and the
    kinds add up to ``total`` (``log_prob``, computed apart), up to rounding. Only the kinds the
    table has are keys.
    """
    sums: dict[str, float] = {}
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for xb in x.split(batch_size):
            xb = xb.to(device)
            p = model.decode(model.encode(xb).rsample())
            parts = p.log_prob_kinds(xb) | {"total": p.log_prob(xb)}  # each [B]
            for kind, value in parts.items():
                sums[kind] = sums.get(kind, 0.0) + value.double().sum().item()
    return {kind: total / x.shape[0] for kind, total in sums.items()}


def embedding_rows(run: Any, split: str) -> Any:
    """The posterior means of every row of a split, ``z0 .. z{D-1}``, with a column ``row``: the row's number in
    the user's table (its position in the split for other data)."""
    from .data.tables import split_rows

    x = run.split(split)[0]
    rows = split_rows(sum(run.info["dataset"]["sizes"].values()), run.config.data)[split] if run.schema else None
    return embed_table(run.model, x, index=rows).rename_axis("row").reset_index()
