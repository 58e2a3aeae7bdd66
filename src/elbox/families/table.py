"""The one table of variational families, name -> class, and what derives from it: the name check,
the factory and the help text. A new family is a ``Family`` subclass and one line here."""

from functools import partial

from torch import nn

from ..catalogue import describe, parse
from ..networks import mlp
from .base import Family
from .discrete import CategoricalDiscrete, Discrete
from .flow import Flow
from .gaussian import DiagonalGaussian, FullRankGaussian, LowRankGaussian
from .mixture import Mixture
from .sinharcsinh import SinhArcsinh

__all__ = ["DISCRETE", "FAMILIES", "FAMILY_NAMES", "check_family_name", "make_family"]

FAMILIES: dict[str, type[Family]] = {
    "diagonal": DiagonalGaussian,
    "fullrank": FullRankGaussian,
    "lowrank": LowRankGaussian,
    "sinharcsinh": SinhArcsinh,
    "iaf": Flow,
    "maf": Flow,
    "nsf": Flow,
    "realnvp": Flow,
    "mixture": Mixture,
    "bernoulli": Discrete,
    "categorical": CategoricalDiscrete,
}

# the names of discrete latents (a uniform prior, hard draws in evaluation); read at call time, so
# a family registered later counts
DISCRETE = tuple(name for name, cls in FAMILIES.items() if issubclass(cls, Discrete))


def family_names() -> str:
    """Every family name with its option, for help text and error messages (from ``FAMILIES``)."""
    return describe(FAMILIES)


FAMILY_NAMES = family_names()  # the built-in table's, for docstrings and CLI help


def check_family_name(name: str) -> tuple[str, str]:
    """Split ``lowrank:R``, ``iaf:L`` or ``mixture:K`` into its kind and option (``""`` when absent);
    refuse names that are no family of ``FAMILIES`` (``ValueError``, listing them)."""
    kind, number = parse(name, FAMILIES, "family")
    return kind, "" if number is None else str(number)


def make_family(
    name: str, dim: int, encoder_sizes: list[int] | None = None, *, activation: str = "tanh", min_scale: float = 1e-4,
    body: nn.Module | None = None, temperature: float = 0.5, straight_through: bool = False,
) -> Family:  # fmt: skip
    """A family by name (``check_family_name``, ``FAMILIES``): ``diagonal``, ``fullrank``,
    ``lowrank[:R]``, ``iaf|maf|nsf|realnvp[:L]`` (default 4 steps), ``mixture[:K]`` (default 4
    components), or the discrete ``bernoulli`` and ``categorical[:C]`` (default 10 categories;
    ``temperature`` and ``straight_through`` are their relaxation's, ``Discrete``).

    With ``encoder_sizes`` ``[X, *hidden]`` it is amortized by an MLP whose output layer has
    the family's number of raw parameters; without, it is global. A ``body`` (a convolutional
    trunk, say) runs before that MLP, and ``encoder_sizes[0]`` is then its output width.
    """
    kind, number = parse(name, FAMILIES, "family")
    cls = FAMILIES[kind]
    settings = {"temperature": temperature, "straight_through": straight_through}
    options = {**cls.keywords(kind, number), **{key: settings[key] for key in cls.settings}}
    build = partial(cls, dim, min_scale=min_scale, **options)
    if encoder_sizes is None:
        return build(None)
    size = build(nn.Identity()).num_params()  # a placeholder encoder: nothing is initialised
    head = mlp([*encoder_sizes, size], activation)
    return build(head if body is None else nn.Sequential(body, head))
