"""Config fields that carry their one description: the help of the command-line flag made from them.

``option(200, "Passes over the training data.")`` is a dataclass field whose metadata holds the
help text; ``flags.flags_from`` turns every such field into a flag. A config module (low in the
house) describes its options here, and the CLI (at the top) reads them: nothing is written twice.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["option"]


def option(default: Any, help: str, *, flag: str | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field offered on the command line: ``help`` is its one description; ``flag``
    overrides the flag's declaration (e.g. ``"--analytic-kl/--mc-kl"``)."""
    metadata = {"help": help, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
