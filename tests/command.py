"""Running the ``elbox`` command line in-process, as the CLI tests do."""

import pytest

from elbox.cli import main


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``elbox ARGS``; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
