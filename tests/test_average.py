"""training.average: the weights' moving average is the hand-computed EMA, resumes exactly, is what a run gives."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from command import run_cli
from torch import nn

import elbox
from elbox.checkpoints import load_checkpoint
from elbox.errors import ElboxError
from elbox.impute import impute_table
from elbox.runs import load_run
from elbox.training import TrainConfig, WeightAverage

SMALL = {"hidden": (16,), "latent_dim": 2, "progress": False}
STRIP = ("seconds", "images_per_second")


def _tensors(path, prefix):
    tensors, _ = load_checkpoint(path)
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def test_the_average_is_the_hand_computed_ema_and_counters_are_copied():
    net = nn.BatchNorm1d(2)  # float weights and running stats, and an integer counter
    avg = WeightAverage(decay=0.8)
    expected = None
    for t in range(4):
        with torch.no_grad():
            net.weight.copy_(torch.tensor([float(t), -2.0 * t]))
            net.running_mean.copy_(torch.tensor([t**2, 1.0]))
        net.num_batches_tracked.fill_(10 * t)
        avg.update(net)
        live = {k: v.clone() for k, v in net.state_dict().items()}
        if expected is None:  # the first update copies the weights
            expected = live
        else:
            expected = {k: 0.8 * expected[k] + 0.2 * v if v.is_floating_point() else v for k, v in live.items()}
    for k, v in expected.items():
        assert torch.allclose(avg.state[k], v, rtol=0, atol=1e-6), k
    assert avg.state["weight"].tolist() == pytest.approx([0.8 * 0.8 * 0.2 * 1 + 0.8 * 0.2 * 2 + 0.2 * 3] * 1 + [
        -2 * (0.8 * 0.8 * 0.2 * 1 + 0.8 * 0.2 * 2 + 0.2 * 3)])  # fmt: skip
    assert avg.state["num_batches_tracked"].item() == 30


def test_applied_puts_the_average_in_and_the_live_weights_back_bitwise():
    net = nn.Linear(3, 2)
    avg = WeightAverage(decay=0.5)
    avg.update(net)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    after = {k: v.clone() for k, v in net.state_dict().items()}
    with avg.applied(net):
        assert torch.equal(net.weight, live["weight"])
    assert all(torch.equal(net.state_dict()[k], v) for k, v in after.items())


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1])
def test_a_decay_outside_zero_one_is_refused(bad):
    with pytest.raises(ElboxError, match="ema is a decay strictly between 0 and 1"):
        TrainConfig(ema=bad)
    with pytest.raises(ElboxError, match="ema_start must be at least 0"):
        TrainConfig(ema=0.9, ema_start=-1)
    with pytest.raises(ElboxError, match="which needs --ema DECAY"):
        TrainConfig(ema_start=5)


@pytest.mark.slow
def test_averaging_leaves_the_live_training_bitwise_unchanged_and_the_checkpoint_gives_the_average(tmp_path):
    plain = elbox.train(epochs=2, out=str(tmp_path / "plain"), **SMALL)
    averaged = elbox.train(epochs=2, out=str(tmp_path / "ema"), ema=0.9, **SMALL)
    assert plain.config.ema is None  # the default: off
    last = "checkpoints/last.safetensors"
    assert not _tensors(tmp_path / "plain" / last, "live.")  # a run without an average keeps the old layout
    live, model = _tensors(tmp_path / "ema" / last, "live.model."), _tensors(tmp_path / "ema" / last, "model.")
    for k, v in _tensors(tmp_path / "plain" / last, "model.").items():
        assert torch.equal(live[k], v), k  # the optimiser's weights: exactly those of the run without it
    train = lambda ms: [{k: v for k, v in m.items() if k.startswith("train_")} for m in ms]  # noqa: E731
    assert train(averaged.metrics) == train(plain.metrics)
    assert averaged.metrics[-1]["valid_elbo"] != plain.metrics[-1]["valid_elbo"]  # validation scores the average
    assert all(not torch.equal(live[k], model[k]) for k in live if k.endswith("weight"))
    for k, v in averaged.model.state_dict().items():  # what load_run (evaluate, sample, impute) reads
        assert torch.equal(v, model[k]), k


@pytest.mark.slow
def test_resume_with_an_average_continues_bitwise(tmp_path):
    options = SMALL | {"ema": 0.95, "ema_start": 1, "checkpoint_every": 4}
    whole = elbox.train(epochs=3, out=str(tmp_path / "whole"), **options)
    elbox.train(epochs=2, out=str(tmp_path / "part"), **options)  # stopped at an epoch's end, average started
    resumed = elbox.resume(tmp_path / "part", epochs=3, progress=False)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in STRIP} for m in ms]  # noqa: E731
    assert strip(resumed.metrics) == strip(whole.metrics)
    for name in ("last", "best"):
        a, b = (load_checkpoint(tmp_path / p / "checkpoints" / f"{name}.safetensors")[0] for p in ("whole", "part"))
        weights = [k for k in a if k.startswith(("model.", "live."))]
        assert weights and all(torch.equal(a[k], b[k]) for k in weights), name


@pytest.mark.slow
def test_an_averaged_table_run_imputes_with_the_averaged_weights(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 1))
    frame = pd.DataFrame(z @ rng.normal(size=(1, 4)) + 0.1 * rng.normal(size=(200, 4)), columns=list("abcd"))
    frame = frame.mask(rng.random(frame.shape) < 0.2)
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = elbox.train(data=str(tmp_path / "t.csv"), epochs=3, out=str(tmp_path / "run"), ema=0.9, all_rows=True,
                      **SMALL)  # fmt: skip
    ckpt = tmp_path / "run" / "checkpoints" / "last.safetensors"
    live_model = load_run(tmp_path / "run").model
    live_model.load_state_dict(_tensors(ckpt, "live.model."))
    filled = impute_table(load_run(tmp_path / "run"), frame, k=50)
    again = impute_table(replace(run, model=load_run(tmp_path / "run").model), frame, k=50)
    with_live = impute_table(replace(run, model=live_model), frame, k=50)
    gone = frame.isna().to_numpy()
    assert np.array_equal(filled.to_numpy()[gone], again.to_numpy()[gone])
    assert not np.allclose(filled.to_numpy()[gone], with_live.to_numpy()[gone])  # the average, not the live weights


@pytest.mark.slow
def test_the_cli_takes_ema_and_ema_start(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "train", "--epochs", "2", "--hidden", "16", "--ema", "0.99", "--ema-start", "1",
                         "--out", tmp_path / "r", "--no-progress")  # fmt: skip
    assert code == 0
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (resolved["ema"], resolved["ema_start"]) == (0.99, 1)
    tensors = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.safetensors")[0]
    assert any(k.startswith("live.model.") for k in tensors)
