"""distributed: N processes under torchrun take the steps one process takes, and write the run once.

Each rank draws its own particles, so for the comparison the particles' noise is made the same
constant in every run (a ``sitecustomize`` that fixes ``Normal.rsample``'s standard normals):
what remains is what DDP must get right, the global batch split across ranks, the gradients
averaged with each rank's share, the metrics summed over ranks, and the files written once.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from command import run_cli
from safetensors.torch import load_file

from elbox.runs import read_metrics

pytestmark = pytest.mark.slow  # real processes, trained runs: minutes in all

FIXED_NOISE = textwrap.dedent("""
    import torch.distributions.normal as normal
    normal._standard_normal = lambda shape, dtype, device: normal.torch.full(shape, 0.3, dtype=dtype, device=device)
""")
OPTIONS = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--checkpoint-every", "7", "--no-progress",
           "--no-report"]  # fmt: skip


def _elbox(cwd, *args, env):
    return subprocess.run([sys.executable, "-m", "elbox", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(FIXED_NOISE)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(root / "site"), os.environ.get("PYTHONPATH", "")])}
    one = _elbox(root, "train", "--out", "one", *OPTIONS, env=env)
    assert one.returncode == 0, one.stderr
    two = _elbox(root, "train", "--nproc", "2", *OPTIONS, env=env)  # no --out: rank 0 names the folder
    assert two.returncode == 0, two.stderr
    (folder,) = (root / "runs").iterdir()
    return root / "one", folder, two


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(runs):
    one, two, _ = runs
    a = load_file(one / "checkpoints" / "last.safetensors")
    b = load_file(two / "checkpoints" / "last.safetensors")
    weights = [k for k in a if k.startswith("model.")]
    assert weights and set(weights) == {k for k in b if k.startswith("model.")}
    for k in weights:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    m1, m2 = read_metrics(one), read_metrics(two)
    for r1, r2 in zip(m1, m2, strict=True):  # sums over ranks: the means over the whole data set
        for key in ("train_elbo", "train_kl", "valid_elbo", "valid_reconstruction"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4), key
        assert r2["step"] == r1["step"]


def test_the_run_folder_is_written_once_by_rank_0(runs):
    one, two, proc = runs
    assert [m["epoch"] for m in read_metrics(two)] == [1, 2]  # one line per epoch, not one per rank
    info = json.loads((two / "run.json").read_text())
    assert info["status"] == "finished" and info["processes"] == 2
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}
    assert proc.stdout.count("Trained a VAE") == 1  # rank 0 alone reports


def test_nproc_must_be_positive(capsys):
    code, _, err = run_cli(capsys, "train", "--nproc", "0")
    assert code == 2 and "--nproc" in err


def test_labels_are_split_with_their_rows(tmp_path, capsys, monkeypatch):
    """A VIB (labels beside the inputs) under two processes takes the steps of one: each rank's
    labels are the rows of its inputs, and the accuracy counts are summed over ranks."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FIXED_NOISE)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    options = ["--model", "vib", "--beta", "0.01", "--epochs", "1", "--hidden", "16", "--no-progress", "--no-report"]
    done = _elbox(tmp_path, "train", "--out", "two", "--nproc", "2", *options, env=env)
    assert done.returncode == 0, done.stderr
    import torch.distributions.normal as normal  # the one-process run here, with the same fixed noise

    fixed = lambda shape, dtype, device: torch.full(shape, 0.3, dtype=dtype, device=device)  # noqa: E731
    monkeypatch.setattr(normal, "_standard_normal", fixed)
    code, _, _ = run_cli(capsys, "train", "--out", tmp_path / "one", *options)
    assert code == 0
    a, b = (load_file(tmp_path / out / "checkpoints" / "last.safetensors") for out in ("one", "two"))
    for k in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    (m1,), (m2,) = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert m2["train_reconstruction"] == pytest.approx(m1["train_reconstruction"], rel=1e-4)
    # predictions average 12 draws of q that the fixed noise does not fix: equal up to a few of 180 labels
    assert m2["valid_accuracy"] == pytest.approx(m1["valid_accuracy"], abs=0.03)


def test_evaluate_under_two_processes_gives_the_numbers_of_one(runs, tmp_path):
    one, _, _ = runs
    common = ["--k", "64", "--batch-size", "40", "--gap-points", "0", "--mi-points", "100", "--no-compile"]
    single = _elbox(tmp_path, "evaluate", one, "-o", tmp_path / "one.json", *common, env=os.environ)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "elbox", "evaluate", str(one), "-o", str(tmp_path / "two.json"), *common],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert double.returncode == 0, double.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    # 180 test images in 5 batches of 40 (the last 20): rank 0 takes batches 0, 2, 4 and rank 1 batches 1, 3
    assert a["points"] == b["points"] == 180
    for key in ("log_px", "mc_se", "ess"):
        assert b["per_point"][key] == pytest.approx(a["per_point"][key], rel=1e-5, abs=1e-5), key
    assert double.stdout.count("Evaluation of") == 1  # rank 0 alone reports


def test_each_launched_worker_gets_its_share_of_the_cores_unless_the_user_set_it(monkeypatch):
    from elbox.distributed import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert worker_threads(2) == {"OMP_NUM_THREADS": "8"} and worker_threads(32) == {"OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2) == {}
