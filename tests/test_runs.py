"""Run folders: one owner at a time (a lock two real processes contend for), OSErrors told as the user's errors,
and a diverged or finished run described as it is (issue 18)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elbox.cli import main
from elbox.errors import ElboxError
from elbox.runs import LOCK, owned

TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-report"]
HOLD = """
import sys, time
from elbox.runs import owned
with owned(sys.argv[1], create=True):
    print("held", flush=True)
    time.sleep(60)
"""


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, " ".join(out.err.split())


@pytest.fixture
def holder(tmp_path):
    """A second real process holding tmp_path/run, killed at the end (the kernel then frees the lock)."""
    folder = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                         env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    yield folder, p.pid
    p.kill()
    p.wait()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_with_the_holders_pid_and_nothing_changes(holder, capsys):
    folder, pid = holder
    before = _files(folder)
    for args in (["train", *TINY, "--out", folder], ["train", *TINY, "--out", folder, "--overwrite"],
                 ["train", "--resume", folder], ["evaluate", folder, "--k", "4", "--gap-points", "0"],
                 ["report", folder]):  # fmt: skip
        code, _, err = _cli(capsys, *args)
        assert code == 2, (args, err)
        assert f"being written by process {pid}" in err and "python" in err, err
    assert _files(folder) == before


@pytest.mark.slow
def test_the_lock_is_freed_by_the_kernel_when_its_holder_is_killed(tmp_path, capsys):
    folder = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                         env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait()
    assert (folder / LOCK).exists()  # a stale file, but no stale lock
    code, _, err = _cli(capsys, "train", *TINY, "--out", folder)
    assert code is None or code == 0, err
    assert (folder / "checkpoints" / "last.safetensors").exists()


@pytest.mark.slow
def test_two_trainings_into_one_folder_leave_one_whole_run(tmp_path):
    out = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    # long enough (seconds) that the first still holds the folder when the second has started
    args = [sys.executable, "-m", "elbox", "train", "--epochs", "25", "--latent-dim", "2", "--hidden", "8",
            "--no-report", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, env=env)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 2 and f"process {first.pid}" in second.stderr, second.stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 26))


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with owned(tmp_path / "r", create=True), owned(tmp_path / "r"):
        pass
    with owned(tmp_path / "r"):  # released: taken again
        pass


@pytest.mark.parametrize("where", ["/proc/elbox-x", "/sys/elbox-x", "afile", "afile/below"])
def test_an_out_that_cannot_be_written_is_one_paragraph_and_the_file_survives(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    code, _, err = _cli(capsys, "train", *TINY, "--out", where)
    assert code == 2 and where in err and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.slow
def test_a_run_diverged_before_any_checkpoint_says_so_and_resume_refuses(tmp_path, capsys):
    data = tmp_path / "huge.npy"
    np.save(data, (np.full((200, 4), 1e30) * np.random.default_rng(0).random((200, 4))).astype(np.float32))
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "train", *TINY, "--data", data, "--out", out)
    assert code == 2 and "No checkpoint was written yet" in err and "checkpoints" not in err, err
    assert not (out / "checkpoints").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"
    code, _, err = _cli(capsys, "train", "--resume", out)
    assert code == 2 and "nothing to resume" in err, err


@pytest.mark.slow
def test_resuming_a_finished_run_warns_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, "train", "--epochs", "2", "--latent-dim", "2", "--hidden", "8", "--no-report",
                "--out", out)[0] in (None, 0)  # fmt: skip
    before = _files(out)
    code, stdout, err = _cli(capsys, "train", "--resume", out, "--no-report")
    assert code in (None, 0) and "warning" in err and "already complete" in err and "Trained a" not in stdout, err
    code, _, err = _cli(capsys, "train", "--resume", out, "--epochs", "1")
    assert code == 2 and "--epochs 1" in err and "trained 2 epochs" in err, err
    after = _files(out)
    assert {k: v for k, v in after.items() if k != LOCK} == {k: v for k, v in before.items() if k != LOCK}


def test_resume_of_a_missing_folder_is_refused_plainly(tmp_path):
    from elbox.training import resume

    with pytest.raises(ElboxError, match="does not exist"):
        resume(tmp_path / "nowhere")
