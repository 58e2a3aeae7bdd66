"""large and control: minibatched fits of a conjugate model at N = 10^5 recover the exact posterior."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from elbox import bayes
from elbox.bayes.control import with_control_variate
from elbox.bayes.large import find_start_at_scale, fit_at_scale

N, D, B = 100_000, 2, 500


def _conjugate() -> bayes.Model:
    return bayes.Model(
        {"beta": bayes.Param(D)}, lambda p: Normal(0.0, 10.0).log_prob(p["beta"]).sum(-1),
        lambda p, d: Normal(p["beta"] @ d["x"].T, 1.0).log_prob(d["y"]), observed=("y", "x"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def problem() -> tuple[bayes.Model, dict, np.ndarray, np.ndarray]:
    """y_i ~ N(x_i . beta, 1), beta ~ N(0, 10^2 I): the posterior is N(P^-1 X'y, P^-1), P = X'X + I/100."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D))
    y = x @ np.array([0.5, -1.0]) + rng.standard_normal(N)
    precision = x.T @ x + np.eye(D) / 100
    mean, sd = np.linalg.solve(precision, x.T @ y), np.sqrt(np.diag(np.linalg.inv(precision)))
    return _conjugate(), {"x": x, "y": y}, mean, sd


def test_a_minibatched_fit_recovers_the_conjugate_posterior(problem):
    """Tolerance from the minibatch noise: without the control variate the gradient's noise is sqrt(N / B) = 14
    posterior sds and the fit ends 0.1-0.25 sd off (measured over seeds); with it the noise is second order in
    the distance to the mode, and the fit ends within 0.003 sd and 0.3% (3 seeds): 0.05 and 5% leave a margin
    of 15x that can still not hide the plain minibatch's error."""
    model, data, mean, sd = problem
    posterior = fit_at_scale(model, data, batch_size=B, family="diagonal", seed=0, progress=False)
    q = posterior.q()
    assert posterior.options["batch_size"] == B and posterior.model is model
    np.testing.assert_array_less(np.abs((q.mean.numpy() - mean) / sd), 0.05)
    np.testing.assert_array_less(np.abs(q.stddev.numpy() / sd - 1), 0.05)


def test_the_natural_gradient_fit_checks_its_arguments_as_fit_does(problem):
    """The diagonal family's path does not go through ``fit``: a batch of no rows (a division by zero in the
    minibatch's N / B) and a single draw (no spread to estimate curvature from) are refused by name."""
    from elbox.errors import ElboxError

    model, data, _, _ = problem
    with pytest.raises(ElboxError, match="batch_size"):
        fit_at_scale(model, data, batch_size=0, family="diagonal", rows=2000, progress=False)
    with pytest.raises(ElboxError, match="particles"):
        fit_at_scale(model, data, batch_size=B, family="diagonal", rows=2000, particles=1, progress=False)


def test_the_start_finds_the_full_data_mode_from_a_subsample(problem):
    model, data, mean, sd = problem
    start = find_start_at_scale(model, data, rows=2000)
    assert start.method == "mode"
    np.testing.assert_allclose(start.shift.numpy(), mean, atol=0.01 * sd.min())
    laplace_sd = torch.linalg.inv(start.hessian).diagonal().sqrt().numpy()  # from 2,000 rows x N/m: within ~5%
    np.testing.assert_allclose(laplace_sd, sd, rtol=0.1)


def test_the_start_spends_fewer_passes_over_all_rows_as_n_grows(problem, monkeypatch):
    """``FULL_ROWS`` row evaluations for the full-data L-BFGS: 100 iterations up to N = 10^6, 10 at 10^7 (the fit
    re-anchors after it). Here N = 10^5 with the budget scaled down 100x: 10 iterations, and still the mode."""
    from elbox.bayes import large

    model, data, mean, sd = problem
    asked = []
    monkeypatch.setattr(large, "_lbfgs", lambda f, u, max_iter, _run=large._lbfgs: asked.append(max_iter)
                        or _run(f, u, max_iter))  # fmt: skip
    find_start_at_scale(model, data, rows=2000)
    monkeypatch.setattr(large, "FULL_ROWS", 10**6)
    start = find_start_at_scale(model, data, rows=2000)
    assert asked == [500, 100, 500, 10]  # (subsample, all rows) twice
    np.testing.assert_allclose(start.shift.numpy(), mean, atol=0.01 * sd.min())


def test_the_control_variate_keeps_the_full_data_density_and_quiets_minibatches(problem):
    model, data, _, _ = problem
    start = find_start_at_scale(model, data, rows=2000)
    quiet, quiet_data = with_control_variate(model, data, start.shift)
    prepared, _ = model.prepare(data)
    u = start.shift + 0.003 * torch.randn(8, D, dtype=torch.float64)  # about one posterior sd away
    torch.testing.assert_close(quiet.log_density(u, quiet_data), model.log_density(u, prepared), rtol=1e-10, atol=1e-6)
    index = torch.randint(N, (B,))
    plain = model.log_density(u, {k: v[index] for k, v in prepared.items()}, scale=N / B)
    quieter = quiet.log_density(u, {k: v[index] for k, v in quiet_data.items()}, scale=N / B)
    exact = model.log_density(u, prepared)
    assert (quieter - exact).abs().max() < 0.01 * (plain - exact).abs().max()



def _hierarchical_logistic(groups: int = 200, rows: int = 5, d: int = 3) -> tuple[bayes.Model, dict]:
    """bench/bayes_scale.py in small: y ~ Bernoulli(logit^-1(x . beta + a0 + sigma z_g)), non-centered, few rows
    per group, so that the joint mode (the start) is far from the posterior: sigma ~ 4.8 there, 0.73 in q."""
    from torch.distributions import Bernoulli, HalfNormal

    rng = np.random.default_rng(1)
    beta, z = rng.normal(0, 0.5, d), rng.normal(0, 1, groups)
    x, g = rng.standard_normal((groups * rows, d)), np.repeat(np.arange(groups), rows)
    y = (rng.random(groups * rows) < 1 / (1 + np.exp(-(x @ beta - 0.5 + 0.8 * z[g])))).astype(np.float64)

    def prior(p: dict) -> torch.Tensor:
        return (Normal(0.0, 1.0).log_prob(p["beta"]).sum(-1) + Normal(0.0, 2.0).log_prob(p["a0"])
                + HalfNormal(1.0).log_prob(p["sigma"]) + Normal(0.0, 1.0).log_prob(p["z"]).sum(-1))  # fmt: skip

    def likelihood(p: dict, data: dict) -> torch.Tensor:
        intercepts = p["a0"][:, None] + p["sigma"][:, None] * p["z"]
        return Bernoulli(logits=p["beta"] @ data["x"].T + intercepts[:, data["g"]]).log_prob(data["y"])

    params = {"beta": bayes.Param(d), "a0": bayes.Param(), "z": bayes.Param(groups),
              "sigma": bayes.Param(support=torch.distributions.constraints.positive)}  # fmt: skip
    return bayes.Model(params, prior, likelihood, observed=("y", "x", "g")), {"x": x, "g": g, "y": y}


def test_a_minibatched_fit_far_from_its_anchor_is_re_anchored_and_reaches_the_full_batch_optimum():
    """Issue 20's N = 10^4 figure in small (N = 1,000, B = 100): anchored only at the joint mode, the control
    variate's noise grew as q left it and the window test stopped the fit halfway (sigma 1.18 where the
    full-batch mean-field fit has 0.73; a fixed effect 0.57 of its sds off, the incidental-parameter inflation
    of the mode half kept). Re-anchored at q's mean it ends within 0.02 sd of the full-batch L-BFGS fit
    (measured); 0.2 sd leaves 10x of that and still fails the single-anchor fit. The natural-gradient steps
    (``natural``, re-anchored inside one schedule) stop after 2,000 steps (seeds 0, 1) where Adam's re-anchored
    restarts (``optimizer="adam"``) took 4,800 and 3,800: at most 2,600 steps fails the Adam path."""
    model, data = _hierarchical_logistic()
    full = bayes.fit(model, data, family="diagonal", progress=False).summary(4000)
    posterior = fit_at_scale(model, data, batch_size=100, family="diagonal", seed=0, progress=False)
    s = posterior.summary(4000)
    assert "re-anchored" in posterior.options["control_variate"] and posterior.converged
    assert posterior.options["optimizer"] == "natural" and len(posterior.elbo_trace) <= 2600
    np.testing.assert_array_less(np.abs(s.mean[:3] - full.mean[:3]) / full.sd[:3], 0.2)
    sigma = s.names.index("sigma")
    assert abs(s.mean[sigma] - full.mean[sigma]) < 2 * full.sd[sigma]

def test_a_folder_of_npy_files_is_memory_mapped_and_fitted_without_a_copy(tmp_path):
    from elbox.bayes.files import load_data_file
    from elbox.errors import ElboxError

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((1000, D)))
    np.save(tmp_path / "y.npy", rng.standard_normal(1000))
    data = load_data_file(tmp_path)
    assert all(isinstance(a, np.memmap) for a in data.values())
    prepared, n = _conjugate().prepare(data)
    assert n == 1000 and prepared["x"].data_ptr() == data["x"].ctypes.data  # the tensor is the mapped file
    np.save(tmp_path / "y.npy", rng.standard_normal(1000).astype(np.float32))
    with pytest.raises(ElboxError, match="float64 or int64"):
        load_data_file(tmp_path)


def test_elbox_fit_batch_size_fits_a_model_file_on_minibatches(capsys):
    from command import run_cli

    example = Path(__file__).resolve().parents[1] / "examples" / "logistic"
    code, out, err = run_cli(capsys, "fit", example / "model.py", "--data", example / "data.csv",
                             "--batch-size", "50", "--no-progress")  # fmt: skip
    assert code == 0, err
    # mean-field on this posterior has beta[1]'s sd 0.92 of the full-rank and flow fits' (both trusted): within
    # the benchmark's 10%, beyond the verdict's 7.5%; q's own weights put it at 0.935, the defensive check at 0.918
    assert "Fitted logistic" in out and "verdict: DO NOT TRUST" in out and "sd of beta[1] is 0.9" in out
    assert "fit diagonal (natural)" in out and "auto on minibatches" in out  # the default family, auto, at scale
    assert "-0.36" in out.split("alpha", 1)[1][:20]  # the full-batch fit's posterior mean of alpha, -0.361
