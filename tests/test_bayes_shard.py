"""shard: two torchrun processes on loopback, each holding half the rows, fit what one process fits."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import elbox
from elbox.distributed import World

WORKER = textwrap.dedent("""
    import atexit, json, os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributions import Bernoulli, Normal
    from elbox import bayes
    from elbox.bayes.shard import ShardedModel, shard_data
    from elbox.distributed import init, world

    def problem():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((301, 3))  # an odd N: shards of 150 and 151 rows
        y = (rng.random(301) < 1 / (1 + np.exp(-x @ np.array([1.0, -0.5, 0.25])))).astype(float)
        model = bayes.Model({"a": bayes.Param(), "beta": bayes.Param(3)},
                            lambda p: Normal(0, 2).log_prob(p["a"]) + Normal(0, 2).log_prob(p["beta"]).sum(-1),
                            lambda p, d: Bernoulli(logits=p["a"][:, None] + p["beta"] @ d["x"].T).log_prob(d["y"]),
                            observed=("y", "x"))
        return model, {"x": x, "y": y}

    def run():
        model, data = problem()
        alive = lambda: open(f"alive{os.environ.get('RANK', '')}", "w").write(str(dist.is_initialized()))
        atexit.register(alive)  # runs after the handler init registers
        w = init(torch.device("cpu"))
        if w.size > 1:
            model = ShardedModel(model)
            data = shard_data(model, data, w)
        full = bayes.fit(model, data, family="fullrank", steps=150, progress=False)  # start: mode and Hessian
        mini = bayes.fit(model, data, family="diagonal", steps=100, batch_size=20, progress=False, seed=1)
        d = full.diagnostics(draws=500, replicates=2)
        out = {"shift": full.shift.tolist(), "mean": full.q().mean.tolist(), "cov": full.q().covariance_matrix.tolist(),
               "khat": d.khat, "elbo": full.elbo_trace.tolist(), "mini": mini.q().mean.tolist()}
        if w.main:
            with open(sys.argv[1], "w") as f:
                json.dump(out, f)

    if __name__ == "__main__":
        run()
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    (root / "worker.py").write_text(WORKER)
    source = str(Path(elbox.__file__).resolve().parents[1])  # this checkout's elbox, whatever the cwd
    path = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    run = dict(cwd=root, env=env, capture_output=True, text=True, timeout=300)
    one = subprocess.run([sys.executable, "worker.py", "one.json"], **run)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*torchrun, "worker.py", "two.json"], **run)
    assert two.returncode == 0, two.stderr
    # each rank left its process group before exit, else gloo may abort it at exit (SIGABRT)
    assert [(root / f"alive{r}").read_text() for r in (0, 1)] == ["False", "False"]
    return json.loads((root / "one.json").read_text()), json.loads((root / "two.json").read_text())


def test_two_processes_fit_what_one_fits_to_float_tolerance(runs):
    """Full batch: the same start (mode, and a Hessian summed over processes), the same particles, the same steps."""
    one, two = runs
    for key in ("shift", "mean", "cov", "elbo", "khat"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-7, atol=1e-9, err_msg=key)


def test_minibatched_sharded_fits_stay_in_step(runs):
    """With minibatches each process draws its own rows (so the fits differ), but the same particles: a fit that
    lost step would mix particles and land far from the full-batch fit."""
    one, two = runs
    sd = np.sqrt(np.diag(one["cov"]))
    assert np.all(np.abs(np.array(two["mini"]) - one["mean"]) < 1.5 * sd)


def test_shards_are_contiguous_blocks_covering_every_row():
    from elbox.bayes.shard import shard_rows

    blocks = [shard_rows(301, World(r, 3)) for r in range(3)]
    rows = torch.arange(301)
    assert torch.cat([rows[b] for b in blocks]).tolist() == rows.tolist()
    assert {b.stop - b.start for b in blocks} <= {100, 101}
