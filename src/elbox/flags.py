"""Command-line flags derived from config dataclasses: each option is described once, in its field.

A config field that the command line should offer carries its help in the field's metadata,

    epochs: int = option(200, "Passes over the training data.")

and ``flags_from(TrainConfig, VAEConfig)`` adds one ``--epochs`` flag per such field to a
typer command: its type from the field's annotation, its help and default from the field.
Every generated flag defaults to ``None`` (not given), so a config file's value stands
unless a flag overrides it; the command receives only the flags that were given.

>>> from dataclasses import dataclass
>>> @dataclass
... class Config:
...     epochs: int = option(200, "Passes over the data.")
...     hidden: tuple[int, ...] = option((200, 200), "Hidden widths, e.g. 200,200.")
...     data_dim: int | None = None  # no help: filled in from the data, not a flag
>>> [p.name for p in parameters(Config)]
['epochs', 'hidden']
"""

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .fields import option

__all__ = ["flags_from", "option", "parameters"]  # option re-exported from fields


def _cli_type(hint: Any) -> type:
    """The type typer parses: sequences arrive as comma-separated text (``200,200``), checked by the config."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (bool, int, float, str) else str


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def parameters(*configs: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field with help, of each dataclass in ``configs`` (the first wins a name)."""
    out: dict[str, inspect.Parameter] = {}
    for cls in configs:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata or f.name in out or f.name in skip:
                continue
            kind = _cli_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            text = f.metadata["help"] + ("" if default is None else f" \\[default: {_shown(default)}]")
            decl = f.metadata.get("flag") or (
                f"--{f.name.replace('_', '-')}/--no-{f.name.replace('_', '-')}" if kind is bool else None
            )
            info = typer.Option(*([decl] if decl else []), help=text, show_default=False)
            out[f.name] = inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
            )
    return list(out.values())


def flags_from(*configs: type, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every flag of ``configs``; it receives them in ``**options``, only those given."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
        generated = parameters(*configs, skip=tuple(p.name for p in own) + skip)
        names = {p.name for p in generated}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {k: v for k, v in kwargs.items() if k in names and v is not None}
            return command(**{k: v for k, v in kwargs.items() if k not in names}, **given)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=p.KEYWORD_ONLY) for p in own] + generated
        )
        return wrapper

    return decorate
