"""train, under fire: a run killed anywhere (SIGKILL), or stopped (SIGINT / SIGTERM), resumes bitwise.

Each killed run is a real subprocess that kills itself at a chosen point: after optimiser step
N, inside a checkpoint's write before its rename, or between an epoch's metrics line and its
checkpoint. Resumed in this process, it must end with the same parameters, the same metrics
(wall-clock fields aside) and the same checkpoints as a run that was never stopped.
"""

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import pytest
import torch

import elbox
from elbox.runs import load_run, read_metrics

pytestmark = pytest.mark.slow  # real processes, trained runs: minutes in all

# digits: 1,437 training images in batches of 100 = 15 steps an epoch, 45 in the run
OPTIONS = {"hidden": [16], "latent_dim": 2, "epochs": 3, "checkpoint_every": 4, "binarize": "dynamic",
           "kl_warmup": 1}  # fmt: skip
STEPS = 45
CLOCK = ("seconds", "images_per_second")

CHILD = textwrap.dedent("""
    import os, signal, sys
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from elbox.training import run
    from elbox.cli import main
    out, how, at, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
    counts = {"steps": 0, "writes": 0}

    def after_step(optimizer, args, kwargs):
        counts["steps"] += 1
        if how != "rename" and how != "metrics" and counts["steps"] == at:
            os.kill(os.getpid(), signal.SIGKILL if how == "step" else getattr(signal, how))

    def replace(src, dst, real=os.replace):  # the at-th checkpoint complete on disk, not yet in place
        counts["writes"] += str(dst).endswith(".safetensors")
        if how == "rename" and counts["writes"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    def append(path, record, real=run.append_json_line):  # epoch at's metrics, not its checkpoint
        real(path, record)
        if how == "metrics" and record["epoch"] == at:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(after_step)
    os.replace, run.append_json_line = replace, append
    main(["train", "--out", out, "--no-progress", "--no-report", *flags])
""")


def _flags(options):
    flags = []
    for key, value in options.items():
        flags += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return flags


def _run_child(out, how, at):
    return subprocess.run([sys.executable, "-c", CHILD, str(out), how, str(at), repr(_flags(OPTIONS))],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_clock(metrics):
    return [{k: v for k, v in m.items() if k not in CLOCK} for m in metrics]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return elbox.train(out=str(tmp_path_factory.mktemp("whole") / "run"), progress=False, **OPTIONS)


def _assert_same_run(resumed, whole):
    assert _without_clock(resumed.metrics) == _without_clock(whole.metrics)
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for which in ("last", "best"):
        a, b = load_run(whole.path, which).model.state_dict(), load_run(resumed.path, which).model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), which
    assert resumed.summary["test"] == whole.summary["test"]
    for which in ("last", "best"):  # the files themselves, byte for byte (no process entropy in them)
        name = f"checkpoints/{which}.safetensors"
        assert _digest(resumed.path / name) == _digest(whole.path / name), which
    assert resumed.info["status"] == "finished"
    assert not list((resumed.path / "checkpoints").glob(".*.tmp"))  # the killed write's temporary is gone


KILLS = [("step", s) for s in sorted(random.Random(8).sample(range(1, STEPS), 3))] + [  # steps 15, 24, 25
    ("step", 29),  # a step after a mid-epoch checkpoint (step 28), none since
    ("rename", 2),  # mid-way through writing the second checkpoint
    ("metrics", 2),  # epoch 2's metrics written, its checkpoint not
]


@pytest.mark.parametrize(("how", "at"), KILLS, ids=[f"{h}-{a}" for h, a in KILLS])
def test_a_run_killed_anywhere_resumes_bitwise_as_if_never_stopped(tmp_path, whole, how, at):
    out = tmp_path / "run"
    child = _run_child(out, how, at)
    assert child.returncode == -9, child.stderr  # SIGKILL: no handler ran, nothing was tidied up
    resumed = elbox.resume(out, progress=False)
    _assert_same_run(resumed, whole)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_at_the_step_with_a_checkpoint_and_resume_bitwise(tmp_path, whole, name):
    out = tmp_path / "run"
    child = _run_child(out, name, 22)
    signum = getattr(__import__("signal"), name)
    assert child.returncode == 128 + signum, child.stderr
    assert f"stopped by {name} at step 22 (epoch 2, 7 of 15 steps)" in child.stderr
    assert "elbox train --resume" in child.stderr and "Traceback" not in child.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert [m["epoch"] for m in read_metrics(out)] == [1]
    _assert_same_run(elbox.resume(out, progress=False), whole)


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, whole):
    out = tmp_path / "run"
    assert _run_child(out, "step", 2).returncode == -9
    assert not (out / "checkpoints" / "last.safetensors").exists()
    _assert_same_run(elbox.resume(out, progress=False), whole)


def test_a_corrupt_last_checkpoint_is_refused_and_left_as_it_is(tmp_path):
    out = tmp_path / "run"
    elbox.train(out=str(out), progress=False, **OPTIONS | {"epochs": 1})
    last = out / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[: os.path.getsize(last) // 2])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(elbox.ElboxError, match="corrupt or not an elbox checkpoint"):
        elbox.resume(out, epochs=2, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_of_another_shape_or_a_pickle_is_refused_nothing_run_nothing_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, other = tmp_path / "run", tmp_path / "other"
    elbox.train(out=str(run), progress=False, **OPTIONS | {"epochs": 1})
    elbox.train(out=str(other), progress=False, **OPTIONS | {"epochs": 1, "hidden": [8]})
    last = run / "checkpoints" / "last.safetensors"
    for planted in ((other / "checkpoints" / "last.safetensors").read_bytes(), pickle.dumps(Exploit())):
        last.write_bytes(planted)
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        with pytest.raises(elbox.ElboxError, match=r"does not fit the model|corrupt or not an elbox checkpoint"):
            elbox.resume(run, epochs=2, progress=False)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "pwned").exists()


def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_says_so(tmp_path):
    from elbox.training import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot be shown")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(elbox.ElboxError, match=r"torch sees no CUDA GPU.*--device cpu"):
        elbox.train(out=str(tmp_path / "run"), device="cuda", progress=False, **OPTIONS)
    assert not (tmp_path / "run").exists()
    with pytest.raises(elbox.ElboxError, match="device must be cpu, cuda, cuda:N or auto"):
        elbox.train(out=str(tmp_path / "run"), device="gpu", progress=False, **OPTIONS)
    run = elbox.train(out=str(tmp_path / "run"), device="auto", progress=False, **OPTIONS | {"epochs": 1})
    assert run.config.device == "auto" and run.summary["epochs"] == 1


def test_two_runs_of_one_config_and_seed_write_byte_identical_checkpoints(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:  # two processes: each starts with its own entropy in NumPy's and Python's global states
        child = subprocess.run([sys.executable, "-m", "elbox", "train", "--out", str(out), "--no-progress",
                                "--no-report", "--epochs", "1", "--hidden", "8", "--checkpoint-every", "5"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert child.returncode == 0, child.stderr
    for name in ("last", "best"):
        a, b = (_digest(run / f"checkpoints/{name}.safetensors") for run in runs)
        assert a == b, name
