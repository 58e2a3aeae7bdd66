"""A run's figures chosen by its data kind: image grids for images, per-column figures for tables.

What ``elbox sample``, ``reconstruct`` and ``embed`` draw; each returns a matplotlib ``Figure``
and its default file name in ``RUN/figures``.
"""

from typing import Any

from matplotlib.figure import Figure
from torch import Tensor

from ..errors import ElboxError
from ..runs import Run
from .base import spread
from .model import embedding, reconstructions, samples

__all__ = ["check_color", "embedding_of", "reconstructions_of", "samples_of"]


def samples_of(run: Run, n: int, seed: int, condition: int | None = None, latent: str = "prior") -> tuple[Figure, str]:
    """Decoded draws z ~ p(z) (given a class for a cvae); for a table, each column's marginal against the data's,
    z drawn from ``latent`` (``impute.table_draws``)."""
    if run.schema is None:
        if latent != "prior":
            raise ElboxError(f"--latent {latent} is for runs trained on a table; {run.path} was not: leave --latent "
                             "out.")  # fmt: skip
        return samples(run.model, n, run.image_shape, seed, condition=condition), "samples.png"
    from ..impute import table_draws
    from .table import marginals

    return marginals(run.schema, run.split("test")[0], table_draws(run, n, seed, latent)), "marginals.png"


def reconstructions_of(run: Run, x: Tensor, labels: Tensor | None, n: int) -> tuple[Figure, str]:
    """n inputs spread through ``x`` ``[N, X]`` above their reconstructions; for a table, predicted against true."""
    rows = spread(x, n)
    if run.schema is not None:
        from .table import reconstruction_scatter

        return reconstruction_scatter(run.schema, rows, run.model.reconstruct(rows).detach()), "reconstructions.png"
    given = spread(labels, n) if run.model.needs_labels and labels is not None else None
    return reconstructions(run.model, rows, run.image_shape, labels=given), "reconstructions.png"


def embedding_of(run: Run, x: Tensor, labels: Tensor | None, n: int, color: str | None = None) -> tuple[Figure, str]:
    """The posterior means of n inputs in 2-D, coloured by label, or for a table by the column ``color``."""
    check_color(run, color)
    if run.schema is not None:
        from .table import default_color, embedding_by_column

        return embedding_by_column(run.model, spread(x, n), run.schema, color or default_color(run.schema)), (
            "embedding.png"
        )
    return embedding(run.model, spread(x, n), None if labels is None else spread(labels, n)), "embedding.png"


def check_color(run: Any, color: str | None) -> None:
    """Refuse a ``--color`` that is not a column of the run's table."""
    if color is None:
        return
    if run.schema is None:
        raise ElboxError(f"--color {color} names a table's column, but the run {run.path} was not trained on a "
                         "table; leave --color out (the points are coloured by their labels).")  # fmt: skip
    if color not in run.schema.names:
        raise ElboxError(f"--color {color!r} is not a column of the run's table; give one of "
                         f"{', '.join(run.schema.names)}.")  # fmt: skip
