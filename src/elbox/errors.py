"""The one exception type for problems with what the user gave us, and what the command line says of it."""

import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ElboxError", "ElboxWarning", "StoppedError", "exit_message", "show_warning", "user_warnings"]


class ElboxError(Exception):
    """A problem with the user's input (data, options, files), not a bug in elbox.

    The message is one paragraph that names what is wrong and how to fix it; the command
    line prints it without a traceback and exits with status 2.
    """


class StoppedError(ElboxError):
    """A run stopped by SIGINT or SIGTERM after writing a checkpoint where it stood.

    The command line exits with 128 + the signal's number, as a shell does for a killed program.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class ElboxWarning(UserWarning):
    """Something the user asked for that runs, but not as they may think (a warm-up longer than the run).

    The command line prints it as one paragraph, ``elbox: warning: ...``, and goes on.
    """


INTERRUPTED = ("interrupted at once. Checkpoints are written whole (never half), so the last one stands; continue a "
               "training run with `elbox train --resume RUN`.")  # fmt: skip


def exit_message(e: BaseException) -> tuple[str, int]:
    """What the command line prints for ``e`` (an ``ElboxError`` or a ``KeyboardInterrupt``) and its exit status:
    one paragraph and 2 for a user error; 128 + the signal's number for a stopped run; 130 for Ctrl-C."""
    if isinstance(e, KeyboardInterrupt):
        return f"\nelbox: {INTERRUPTED}", 130
    message = textwrap.fill(str(e), width=100, break_long_words=False, break_on_hyphens=False)
    if isinstance(e, StoppedError):
        return f"\nelbox: {message}", 128 + e.signum
    return f"elbox: error: {message}", 2


def show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """An ``ElboxWarning`` as one paragraph, ``elbox: warning: ...`` on stderr (no file and line: it is about
    the user's input); other warnings as Python shows them. For ``warnings.showwarning`` in the CLI."""
    if not issubclass(category, ElboxWarning):
        return _show_python_warning(message, category, *args, **kwargs)
    import sys

    text = textwrap.fill(str(message), width=100, break_long_words=False, break_on_hyphens=False)
    print(f"elbox: warning: {text}", file=sys.stderr)
    return None


_show_python_warning = warnings.showwarning


@contextmanager
def user_warnings() -> Iterator[None]:
    """Within it, every ``ElboxWarning`` is shown (each time) as one paragraph by ``show_warning``."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", ElboxWarning)
        warnings.showwarning = show_warning
        yield
