"""subsample: the difference estimator of each draw's log-likelihood, and the verdict read from it."""

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

from elbox import bayes
from elbox.bayes.diagnostics import diagnose
from elbox.bayes.subsample import Subsampled, diagnose_at_scale

N, D = 5000, 3


@pytest.fixture(scope="module")
def posterior() -> bayes.Posterior:
    """A logistic regression's Laplace approximation (one step of fitting): k-hat near 0.3-0.5, a tail to measure."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D))
    y = (rng.random(N) < 1 / (1 + np.exp(-x @ np.array([1.0, -0.5, 0.25])))).astype(float)
    model = bayes.Model(
        {"beta": bayes.Param(D)}, lambda p: Normal(0.0, 2.0).log_prob(p["beta"]).sum(-1),
        lambda p, d: Bernoulli(logits=p["beta"] @ d["x"].T).log_prob(d["y"]), observed=("y", "x"),
    )  # fmt: skip
    torch.manual_seed(0)
    return bayes.fit(model, {"x": x, "y": y}, family="laplace", progress=False)


def test_the_estimate_of_each_draws_log_likelihood_is_within_its_standard_error(posterior):
    estimate = Subsampled(posterior, rows=200, se_tol=0.0, max_rows=200)  # m = 200 of 5,000 rows: se ~ 0.1-0.3
    u, log_w = estimate(400, seed=3)
    _, exact = posterior.log_weights(400, seed=3)  # the same draws, all the rows
    _, se = estimate._estimate(u, 200, torch.Generator().manual_seed(3 + 7919))  # the same subsample again
    z = ((log_w - exact) / se).numpy()
    assert 0 < estimate.se[0] < 1 and estimate.used_rows == [200]
    # standardised errors: mean 0 (unbiased) and sd 1 (the se is right), within their own sampling error
    assert abs(z.mean()) < 4 / np.sqrt(len(z)) + 0.5 * z.std()  # draws share the subsample: errors correlate
    assert 0.5 < z.std() < 1.6


def test_subsampled_khat_agrees_with_the_full_data_khat_within_its_stated_error(posterior):
    full = diagnose(posterior, draws=1000, replicates=3, seed=1)
    estimate = Subsampled(posterior, rows=500)
    sub = diagnose(posterior, draws=1000, replicates=3, seed=1, log_weights=estimate)
    assert all(s <= 0.1 for s in estimate.se)  # rows grown until the log-weights are within 0.1 nats
    for k_full, k_sub, err in zip(full.khat, sub.khat, estimate.khat_se, strict=True):
        assert 0 < err < 0.2
        assert abs(k_sub - k_full) < 3 * err, (k_full, k_sub, err)
    assert sub.verdict == full.verdict


def test_the_verdict_is_exact_within_budget_and_says_so(posterior):
    d = diagnose_at_scale(posterior, draws=500, replicates=2, budget=1e7)
    assert d.notes[0].startswith("exact")
    assert d.khat == diagnose(posterior, draws=500, replicates=2).khat


def test_a_verdict_that_cannot_reach_its_precision_does_not_trust(posterior):
    d = diagnose_at_scale(posterior, draws=500, replicates=2, budget=500 * 100, rows=50, se_tol=0.001)
    assert d.verdict == "do not trust"
    assert any(r.startswith("could not check") for r in d.reasons)
    assert "subsampled" in d.notes[0] and "N = 5,000" in d.notes[0]
