"""train: learning happens, runs are reproducible, resume continues exactly, nothing is lost."""

import json
import math

import numpy as np
import pytest
import torch

import elbox
from elbox.errors import ElboxError
from elbox.runs import load_run, read_metrics
from elbox.training import (
    TrainConfig,
    VariationalLoss,
    compile_loss,
    loop,
    make_optimizer,
    read_config_file,
    train_epoch,
)
from elbox.training import run as train_run  # the module: elbox.training.run is where train() looks up prepare

SMALL = {"hidden": (32,), "latent_dim": 2, "progress": False}


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_training_on_digits_raises_the_validation_elbo(tmp_path):
    run = elbox.train(epochs=8, out=str(tmp_path / "run"), **SMALL)
    valid = [m["valid_elbo"] for m in run.metrics]
    assert len(valid) == 8 and valid[-1] > valid[0] + 20
    s = run.summary
    for split in ("train", "valid", "test"):
        assert s[split]["elbo"] == pytest.approx(s[split]["reconstruction"] - s[split]["kl"], abs=1e-3)
        assert s[split]["kl"] > 0 and s[split]["elbo"] < 0  # a log-probability bound: binomial pmf
    assert {p.name for p in (tmp_path / "run" / "figures").iterdir()} >= {"curves.png", "samples.png", "manifold.png"}


def test_figures_reach_a_run_as_a_hook_which_the_package_installs_by_default(tmp_path):
    from elbox.hooks import DEFAULT_HOOKS
    from elbox.training import Hooks, Setup, default_hooks

    assert callable(elbox.train)  # the package face's train comes with the default hooks installed
    assert default_hooks() is DEFAULT_HOOKS  # what elbox.train and `elbox train` get: the figures above
    checked, finished = [], []

    def refuse(config):
        checked.append(config)
        raise ElboxError("refused by the hook")

    with pytest.raises(ElboxError, match="refused by the hook"):
        elbox.train(epochs=1, out=str(tmp_path / "no"), hooks=Hooks(check=refuse), **SMALL)
    assert isinstance(checked[0], TrainConfig) and not (tmp_path / "no").exists()  # before anything is written

    def on_finish(run, setup):
        assert isinstance(setup, Setup) and (run.path / "run.json").is_file()
        finished.append((run.summary["epochs"], run.summary["test"] == run.info["summary"]["test"]))

    run = elbox.train(epochs=1, out=str(tmp_path / "run"), hooks=Hooks(on_finish=on_finish), **SMALL)
    assert finished == [(1, True)]
    assert run.summary["epochs"] == 1 and not (tmp_path / "run" / "figures").exists()  # the caller's hooks only


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_and_another_seed_does_not(tmp_path):
    a = elbox.train(epochs=2, out=str(tmp_path / "a"), **SMALL)
    b = elbox.train(epochs=2, out=str(tmp_path / "b"), **SMALL)
    c = elbox.train(epochs=2, out=str(tmp_path / "c"), seed=1, **SMALL)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in ms]  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics) != strip(c.metrics)
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_resume_continues_bitwise_as_if_never_stopped(tmp_path):
    whole = elbox.train(epochs=4, out=str(tmp_path / "whole"), **SMALL)
    elbox.train(epochs=2, out=str(tmp_path / "part"), **SMALL)
    resumed = elbox.resume(tmp_path / "part", epochs=4, progress=False)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in ms]  # noqa: E731
    assert strip(resumed.metrics) == strip(whole.metrics)
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert json.loads((tmp_path / "part" / "config.json").read_text())["epochs"] == 4


@pytest.mark.slow
def test_resume_redoes_epochs_logged_after_the_last_checkpoint(tmp_path):
    elbox.train(epochs=2, out=str(tmp_path / "run"), **SMALL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    # a crash between writing epoch 3's metrics and its checkpoint, mid-way through a line
    metrics.write_text("\n".join([*lines, lines[-1].replace('"epoch": 2', '"epoch": 3')]) + '\n{"epo')
    run = elbox.resume(tmp_path / "run", epochs=3, progress=False)
    assert [m["epoch"] for m in run.metrics] == [1, 2, 3] == [m["epoch"] for m in read_metrics(tmp_path / "run")]


@pytest.mark.slow
def test_load_run_gives_the_trained_model_back(tmp_path):
    run = elbox.train(epochs=2, out=str(tmp_path / "run"), **SMALL)
    loaded = load_run(tmp_path / "run")
    assert loaded.config == run.config and loaded.image_shape == (8, 8)
    x = torch.rand(3, 64)
    assert torch.equal(loaded.model.reconstruct(x), run.model.reconstruct(x))
    best = load_run(tmp_path / "run", "best")
    assert best.model.config == run.model.config


@pytest.mark.slow
def test_an_existing_run_is_refused_unless_overwritten(tmp_path):
    elbox.train(epochs=1, out=str(tmp_path / "run"), **SMALL)
    before = _files(tmp_path / "run")
    with pytest.raises(ElboxError, match="already holds a run"):
        elbox.train(epochs=1, out=str(tmp_path / "run"), **SMALL)
    assert _files(tmp_path / "run") == before
    elbox.train(epochs=1, out=str(tmp_path / "run"), overwrite=True, seed=3, **SMALL)
    assert _files(tmp_path / "run") != before


def test_bad_data_is_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "bad.npy"
    x = np.random.rand(50, 4).astype(np.float32)
    x[3, 2] = np.nan
    np.save(bad, x)
    with pytest.raises(ElboxError, match="NaN"):
        elbox.train(data=str(bad), out=str(tmp_path / "run"), **SMALL)
    with pytest.raises(ElboxError, match="Bernoulli"):
        elbox.train(likelihood="bernoulli", out=str(tmp_path / "run"), **SMALL)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_user_arrays_train_with_a_gaussian_or_binarized(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((60, 9)).astype(np.float32))
    run = elbox.train(data=str(path), epochs=1, out=str(tmp_path / "g"), **SMALL)
    assert run.model.config.likelihood == "gaussian" and run.image_shape is None
    run = elbox.train(data=str(path), epochs=1, binarize="dynamic", out=str(tmp_path / "b"), **SMALL)
    assert run.model.config.likelihood == "bernoulli"


def test_config_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(ElboxError, match="epoch"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ElboxError, match="'lr' must be of type float"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(ElboxError, match="'latent_dim' must be of type int"):
        TrainConfig.from_dict({"model": {"latent_dim": 2.5}})
    with pytest.raises(ElboxError, match="batch_size must be at least 1"):
        TrainConfig.from_dict({"batch_size": 0})


def test_config_reads_flat_or_nested_toml_and_round_trips(tmp_path):
    flat = tmp_path / "flat.toml"
    flat.write_text('data = "digits"\nepochs = 3\nlatent_dim = 4\nhidden = [16, 8]\nlr = 1\n')
    nested = tmp_path / "nested.toml"
    nested.write_text('epochs = 3\nlr = 1.0\n[model]\nlatent_dim = 4\nhidden = "16,8"\n')
    a, b = (TrainConfig.from_dict(read_config_file(p)) for p in (flat, nested))
    assert a == b and a.model.hidden == (16, 8) and a.lr == 1.0
    assert TrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3")
    with pytest.raises(ElboxError, match="cannot be read"):
        read_config_file(broken)
    with pytest.raises(ElboxError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")


@pytest.mark.slow
def test_on_epoch_sees_every_epoch_and_its_draws_leave_the_run_unchanged(tmp_path):
    seen = []

    def on_epoch(metrics, model):
        seen.append(metrics["epoch"])
        model.sample(100)  # random draws inside the callback

    plain = elbox.train(epochs=3, out=tmp_path / "a", **SMALL)
    watched = elbox.train(epochs=3, out=tmp_path / "b", on_epoch=on_epoch, **SMALL)  # paths may be Path objects
    assert seen == [1, 2, 3]
    assert [m["valid_elbo"] for m in plain.metrics] == [m["valid_elbo"] for m in watched.metrics]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["iaf:2", "mixture:3"])
def test_a_run_with_a_flow_or_mixture_family_saves_and_loads(tmp_path, family):
    run = elbox.train(epochs=1, out=str(tmp_path / "run"), family=family, **SMALL)
    again = load_run(run.path)
    x = torch.rand(3, 64).round() * 16
    torch.manual_seed(0)
    expected = run.model.log_weights(x, 4)
    torch.manual_seed(0)
    assert torch.equal(again.model.log_weights(x, 4), expected)


def _poison(decoder, bad=None):
    """NaN in the decoder's output at the calls ``bad`` names (counted from 0; ``None``: every call).

    A forward hook: the module and its state dict stay as they are, so checkpoints still load.
    """
    calls = [0]

    def hook(module, inputs, out):
        hit = bad is None or calls[0] in bad
        calls[0] += 1
        if hit:
            out = out.clone()
            out[..., 0] = float("nan")
        return out

    decoder.register_forward_hook(hook)


def _loss(seed=0):
    torch.manual_seed(seed)
    model = elbox.VAE(elbox.VAEConfig(data_dim=16, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    return VariationalLoss(model, elbox.ELBO(), k=1)


def test_a_step_with_a_nan_is_skipped_counted_and_changes_nothing():
    """NaN in batch 2's decoder output: that step is skipped; the other steps are exactly those of a
    run that never saw batch 2 (same order, same updates), and the epoch's means leave it out."""
    x = torch.randint(0, 2, (40, 16)).float()
    clean, poisoned = _loss(), _loss()
    _poison(poisoned.model.decoder, bad={2})
    results = []
    for loss in (clean, poisoned):
        optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
        results.append(train_epoch(loss, optimizer, x, 10, torch.Generator().manual_seed(0)))
    assert results[0]["skipped_steps"] == 0 and results[1]["skipped_steps"] == 1
    assert all(math.isfinite(results[1][k]) for k in ("elbo", "reconstruction", "kl"))
    assert all(torch.isfinite(p).all() for p in poisoned.parameters())  # the NaN never reached the weights


@pytest.mark.slow
def test_nan_at_every_step_stops_the_run_naming_the_tensor_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    elbox.train(epochs=2, hidden=(16,), out=out, progress=False, max_nonfinite=3)
    checkpoint = (out / "checkpoints" / "last.safetensors").read_bytes()
    real_prepare = train_run.prepare

    def poisoned_prepare(config):
        setup = real_prepare(config)
        _poison(setup.model.decoder)
        return setup

    monkeypatch.setattr(train_run, "prepare", poisoned_prepare)
    with pytest.raises(ElboxError) as e:
        elbox.resume(out, epochs=4, progress=False)
    message = str(e.value)
    assert "3 training steps in a row" in message and "reconstruction term" in message
    assert "step 31:" in message  # the first after 2 epochs of 15 steps
    assert "epoch 2" in message and "unchanged" in message
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == checkpoint
    assert [m["epoch"] for m in read_metrics(out)] == [1, 2]


def test_the_nan_guard_names_the_first_non_finite_gradient():
    loss = _loss()
    bound = loss(torch.randint(0, 2, (4, 16)).float())
    bound.loss.backward()
    assert loop._finite(bound, loss)
    next(loss.model.decoder.parameters()).grad[0, 0] = float("inf")
    assert not loop._finite(bound, loss)
    assert loop._first_nonfinite(bound, loss).startswith("the gradient of decoder.")


@pytest.mark.slow
def test_a_nan_in_one_batch_is_skipped_and_reported_by_the_command(tmp_path, monkeypatch, capsys):
    from command import run_cli

    real_prepare = train_run.prepare

    def poisoned_prepare(config):
        setup = real_prepare(config)
        _poison(setup.model.decoder, bad={3})  # the fourth training step of epoch 1
        return setup

    monkeypatch.setattr(train_run, "prepare", poisoned_prepare)
    code, out, err = run_cli(capsys, "train", "--epochs", "2", "--hidden", "16", "--out", tmp_path / "r", "--no-report")
    assert code == 0, err
    assert "warning: 1 training steps had a non-finite loss or gradient and were skipped (epochs 1;" in out
    assert [m["skipped_steps"] for m in read_metrics(tmp_path / "r")] == [1, 0]


# ----------------------------------------------------------------- the fast paths (issue 10)


def _bernoulli_setup(seed=0, data_dim=64):
    torch.manual_seed(seed)
    model = elbox.VAE(elbox.VAEConfig(data_dim=data_dim, latent_dim=4, hidden=(32, 32), likelihood="bernoulli"))
    x = torch.bernoulli(torch.rand(8, data_dim).repeat(25, 1))  # [200, X]: 8 prototypes, noisy copies
    return model, x


def _losses(compile, steps=20):
    """Per-step losses of ``steps`` Adam steps on one model from one seed, eager or compiled."""
    model, x = _bernoulli_setup()
    loss = VariationalLoss(model, elbox.ELBO(analytic_kl=True))
    loss = compile_loss(loss) if compile else loss
    optimizer = make_optimizer(model, 1e-2)
    torch.manual_seed(1)
    values = []
    for i in range(steps):
        bound = loss(x[(20 * i) % 200 : (20 * i) % 200 + 20])
        optimizer.zero_grad(set_to_none=True)
        bound.loss.backward()
        optimizer.step()
        values.append(bound.loss.item())
    return torch.tensor(values)


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses_step_by_step():
    """20 steps here (compiling takes seconds); `bench/train_throughput.py --exactness` checks 100 on MNIST."""
    eager, compiled = _losses(compile=False), _losses(compile=True)
    assert eager[-1] < eager[0] - 1  # it learns: the comparison is over a moving trajectory
    # the same draws (fallback_random) and the same arithmetic up to the order of float sums
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-4), (compiled - eager).abs().max()


def test_bf16_keeps_the_batch_bound_within_0_1_nats_and_refuses_unknown_precisions():
    model, x = _bernoulli_setup()
    fp32 = VariationalLoss(model, elbox.ELBO(analytic_kl=True))
    bf16 = VariationalLoss(model, elbox.ELBO(analytic_kl=True), precision="bf16")
    torch.manual_seed(3)
    exact = fp32(x).value  # [200]
    torch.manual_seed(3)
    rounded = bf16(x).value
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)  # bf16 ran, float32 came out
    assert abs((rounded - exact).mean().item()) < 0.1, (rounded - exact).mean()
    with pytest.raises(ElboxError, match="precision must be one of fp32, bf16"):
        VariationalLoss(model, elbox.ELBO(), precision="fp16")
    with pytest.raises(ElboxError, match="precision must be one of"):
        TrainConfig(precision="half")


def test_threads_are_pinned_for_the_run_and_refused_below_one(tmp_path):
    before = torch.get_num_threads()
    try:
        run = elbox.train(epochs=1, threads=1, out=str(tmp_path / "r"), **SMALL)
        assert torch.get_num_threads() == 1 and run.config.threads == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ElboxError, match="threads must be at least 1"):
        TrainConfig(threads=0)
