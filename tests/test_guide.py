"""docs/guide.md: each `elbox` line of its bash blocks runs, in order, and exits 0; it names the five failure modes."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from elbox.cli import main

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
NO_FOLDER = ("eight_schools_noncentered", "eight_schools_centered")  # built-in data: no posteriordb folder
FAILURE_MODES = (
    "the ELBO mistaken for log p(x)",
    "the bias of a too-simple family",
    "the KL read as a regulariser, not a rate",
    "a bound mistaken for an exact answer",
    "an amortization gap nobody measured",
)


def _commands():
    """The lines of the guide's ```bash blocks that start with `elbox `, in order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("elbox ")]


def _needs_posteriordb(args):
    if args[0] != "fit" or args[1] in NO_FOLDER or args[1].endswith(".py"):  # a model file: its data beside it
        return False
    return not any(a.startswith("--posteriordb") for a in args)


def test_the_guide_names_the_five_failure_modes():
    headings = [h.lower() for h in re.findall(r"^#+ (.*)$", GUIDE.read_text(), flags=re.M)]
    for mode in FAILURE_MODES:
        assert any(mode.lower() in h for h in headings), mode


@pytest.mark.slow
def test_every_command_of_the_guide_runs(tmp_path, monkeypatch, capsys):
    commands = _commands()
    assert len(commands) >= 8
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(GUIDE.parents[1] / "examples")  # the guide's paths are the repository's
    posteriordb = SHARED_DATA / "posteriordb"
    skipped = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is as fast, and far faster on a machine shared with others
    try:
        _run(commands, posteriordb, skipped, monkeypatch, capsys)
    finally:
        torch.set_num_threads(threads)
    if skipped:
        pytest.skip(f"posteriordb folder {posteriordb} is missing (set ELBOX_SHARED_DATA): did not run {skipped}")


def _run(commands, posteriordb, skipped, monkeypatch, capsys):
    for line in commands:
        args = shlex.split(line)[1:]
        if _needs_posteriordb(args):
            if not posteriordb.is_dir():
                skipped.append(line)
                continue
            monkeypatch.setenv("ELBOX_POSTERIORDB", str(posteriordb))
        with pytest.raises(SystemExit) as e:
            main(args)
        out = capsys.readouterr()
        assert e.value.code == 0, f"{line}\n{out.out}\n{out.err}"
