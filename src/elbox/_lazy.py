"""A lazy package face (PEP 562): each public name is imported from its module on first use."""

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(
    package: str, modules: dict[str, str], public: list[str], on_import: Callable[[str], None] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: a name of ``modules`` (name -> submodule) is imported
    from its submodule, any other name as a submodule; ``on_import(name)`` runs after a name is imported.
    The value is cached in the package's namespace, so later lookups skip ``__getattr__``."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        if name in modules:
            value = getattr(importlib.import_module(f".{modules[name]}", package), name)
            if on_import is not None:
                on_import(name)
        else:
            try:
                value = importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":  # the submodule exists but an import inside it failed
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(public))

    return getattr_, dir_
