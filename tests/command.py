"""Running the ``elbox`` command line in-process, as the CLI tests do."""

import re

import pytest

from elbox.cli import main


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``elbox ARGS``; returns (exit code, stdout, stderr).

    The command wraps an error paragraph at 100 columns, where a line breaks depending on the
    paths in it (pytest's temporary folders grow longer run after run): stderr comes back with
    each paragraph on one line, so tests can look for any phrase in it.
    """
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, re.sub(r"(?<=\S)\n(?=\S)", " ", out.err)
