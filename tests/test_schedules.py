"""schedules: the KL weight per step, and training that follows it."""

import pytest

import elbox
from elbox.errors import ElboxError
from elbox.schedules import kl_weight
from elbox.training import TrainConfig


def test_warmup_rises_linearly_to_beta_and_stays():
    assert [kl_weight(s, beta=2.0, warmup=4) for s in (0, 2, 4, 100)] == [0.0, 1.0, 2.0, 2.0]


def test_cyclical_annealing_restarts_every_period():
    weights = [kl_weight(s, cycle=10, ratio=0.5) for s in range(20)]
    assert weights[:6] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and weights[10] == 0.0 and weights[9] == 1.0


@pytest.mark.slow
def test_training_logs_every_steps_weight_and_reports_the_true_bound(tmp_path):
    run = elbox.train(epochs=2, kl_warmup=2, hidden=(16,), out=tmp_path / "r", progress=False)
    steps = [w for m in run.metrics for w in m["kl_weight_per_step"]]
    assert len(steps) == 30 and steps[0] == 0.0 and steps == sorted(steps) and steps[-1] < 1.0
    assert [m["kl_weight"] for m in run.metrics] == [run.metrics[0]["kl_weight_per_step"][-1], steps[-1]]
    # the reported value is the ELBO itself, not the down-weighted surrogate
    m = run.metrics[-1]
    assert m["train_elbo"] == pytest.approx(m["train_reconstruction"] - m["train_kl"])


def test_objectives_train_and_report_their_bound_beside_the_elbo(tmp_path):
    run = elbox.train(
        epochs=1, objective="iwae", k=5, estimator="dreg", hidden=(16,), out=tmp_path / "r", progress=False
    )
    m = run.metrics[0]
    assert m["train_iwae"] >= m["train_elbo"]  # IWAE_5 is above the ELBO estimate of the same particles


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"objective": "cubo"}, "upper bound"),
        ({"objective": "renyi", "estimator": "dreg"}, "dreg"),
        ({"free_bits": -0.5}, "free_bits"),
        ({"kl_warmup": 3, "kl_cycles": 2}, "one KL schedule"),
        ({"objective": "renyi", "alpha": 1.0}, "alpha = 1"),
    ],
)
def test_incoherent_objective_options_are_refused(options, words):
    with pytest.raises(ElboxError, match=words):
        TrainConfig.from_dict(options)
