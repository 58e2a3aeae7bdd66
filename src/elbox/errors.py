"""The one exception type for problems with what the user gave us."""

__all__ = ["ElboxError"]


class ElboxError(Exception):
    """A problem with the user's input (data, options, files), not a bug in elbox.

    The message is one paragraph that names what is wrong and how to fix it; the command
    line prints it without a traceback and exits with status 2.
    """
