"""The one exception type for problems with what the user gave us."""

__all__ = ["ElboxError", "ElboxWarning", "StoppedError"]


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
