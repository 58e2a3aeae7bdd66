"""Name tables: a catalogue maps names to classes; name checks, factories and help text derive from it."""

import difflib
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["Option", "describe", "parse", "suggest"]


class Option(NamedTuple):
    """The number a name may carry after a colon (``lowrank:R``, ``mixture:K``), declared by its class.

    Attributes:
        letter: how help text writes it, ``R``.
        keyword: the constructor's keyword that receives it, ``rank``.
        doc: what it means, for help text: ``rank R``.
        least: the smallest value allowed.
        default: the value a bare name gets; ``None`` leaves the constructor's default.
    """

    letter: str
    keyword: str
    doc: str
    least: int = 1
    default: int | None = None


def parse(name: str, table: dict[str, Any], what: str) -> tuple[str, int | None]:
    """Split ``kind[:N]`` into the table's key and N (``None`` when absent); refuse names the table
    does not hold, numbers where the class declares no ``option``, and numbers below its ``least``.
    Raises ``ValueError`` whose message lists every name (``describe``)."""
    kind, colon, number = name.partition(":")
    option = getattr(table.get(kind), "option", None)
    if kind not in table:
        close = difflib.get_close_matches(kind, list(table), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown {what} {name!r}: {hint}choose {describe(table)}")
    if colon and option is None:
        raise ValueError(f"the {what} {kind!r} takes no number after a colon, got {name!r}: give {kind} (the "
                         f"choices: {describe(table)})")  # fmt: skip
    if colon and (not number.isdigit() or int(number) < option.least):
        raise ValueError(f"in the {what} {name!r}, {option.letter} ({option.doc}) must be a whole number of at least "
                         f"{option.least}, got {number!r}: give {kind}:{max(option.least, option.default or 0)} "
                         f"or {kind} (the choices: {describe(table)})")  # fmt: skip
    return kind, int(number) if colon else None


def suggest(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'latent_dim'?)"`` for the known name closest to a misspelt ``name`` (difflib), else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(table: dict[str, Any]) -> str:
    """Every name of ``table`` with its option, for help text: ``diagonal, lowrank[:R] (rank R), ...``;
    neighbouring names of one class share the option's explanation (``iaf[:L], maf[:L] (L flow steps)``)."""
    groups: list[tuple[Any, list[str]]] = []  # (class, names), neighbours of one class together
    for name, cls in table.items():
        if groups and groups[-1][0] is cls:
            groups[-1][1].append(name)
        else:
            groups.append((cls, [name]))
    parts = []
    for cls, names in groups:
        option = getattr(cls, "option", None)
        if option is None:
            parts += names
            continue
        least = f", at least {option.least}" if option.least > 1 else ""
        default = f", default {option.default}" if option.default is not None else ""
        parts.append(", ".join(f"{name}[:{option.letter}]" for name in names) + f" ({option.doc}{least}{default})")
    return ", ".join(parts[:-1]) + f" or {parts[-1]}" if len(parts) > 1 else "".join(parts)
