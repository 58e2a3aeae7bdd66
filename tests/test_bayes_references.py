"""bayes.references: each built-in log density equals an independent computation (scipy.stats, a plain
forward recursion) at points of the posterior; loading, naming and comparing with reference draws."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from elbox.bayes import compare, load
from elbox.bayes.references import POSTERIORDB, _zero_based
from elbox.errors import ElboxError


def _schools(p, d, centered):
    y, sigma = np.asarray(d["y"], float), np.asarray(d["sigma"], float)
    out = stats.norm.logpdf(p["mu"], 0, 5) + stats.halfcauchy.logpdf(p["tau"], scale=5)
    if centered:
        return (
            out + stats.norm.logpdf(p["theta"], p["mu"], p["tau"]).sum() + stats.norm.logpdf(y, p["theta"], sigma).sum()
        )
    theta = p["mu"] + p["tau"] * p["theta_trans"]
    return out + stats.norm.logpdf(p["theta_trans"]).sum() + stats.norm.logpdf(y, theta, sigma).sum()


def _kilpisjarvi(p, d):
    x, y = np.asarray(d["x"], float), np.asarray(d["y"], float)
    prior = stats.norm.logpdf(p["alpha"], d["pmualpha"], d["psalpha"]) + stats.norm.logpdf(
        p["beta"], d["pmubeta"], d["psbeta"]
    )
    return (prior + stats.norm.logpdf(y, p["alpha"] + p["beta"] * x, p["sigma"]).sum())  # fmt: skip


def _blr(p, d):
    x, y = np.asarray(d["X"], float), np.asarray(d["y"], float)
    return (stats.norm.logpdf(p["beta"], 0, 10).sum() + stats.halfnorm.logpdf(p["sigma"], scale=10)
            + stats.norm.logpdf(y, x @ p["beta"], p["sigma"]).sum())  # fmt: skip


def _diamonds(p, d):
    x = np.asarray(d["Xc"], float)  # the centered predictors of the Stan program's transformed data
    prior = (stats.norm.logpdf(p["b"], 0, 1).sum() + stats.t.logpdf(p["Intercept"], 3, 8, 10)
             + stats.t.logpdf(p["sigma"], 3, 0, 10) - stats.t.logsf(0, 3, 0, 10))  # fmt: skip
    return prior + stats.norm.logpdf(np.asarray(d["Y"]), p["Intercept"] + x @ p["b"], p["sigma"]).sum()


def _gauss_mix(p, d):
    y, (m1, m2), (s1, s2), theta = np.asarray(d["y"], float), p["mu"], p["sigma"], p["theta"]
    prior = stats.halfnorm.logpdf(p["sigma"], scale=2).sum() + stats.norm.logpdf(p["mu"], 0, 2).sum()
    mix = np.logaddexp(np.log(theta) + stats.norm.logpdf(y, m1, s1), np.log1p(-theta) + stats.norm.logpdf(y, m2, s2))
    return prior + stats.beta.logpdf(theta, 5, 5) + mix.sum()


def _hmm(p, d):
    """Stan's forward algorithm, loop for loop."""
    y, mu, theta = np.asarray(d["y"], float), p["mu"], np.stack([p["theta1"], p["theta2"]])
    gamma = stats.norm.logpdf(y[0], mu, 1)
    for t in range(1, len(y)):
        acc = [[gamma[j] + np.log(theta[j, k]) + stats.norm.logpdf(y[t], mu[k], 1) for j in range(2)] for k in range(2)]
        gamma = np.array([logsumexp(a) for a in acc])
    return stats.norm.logpdf(mu[0], 3, 1) + stats.norm.logpdf(mu[1], 10, 1) + logsumexp(gamma)


INDEPENDENT = {
    "eight_schools_noncentered": lambda p, d: _schools(p, d, False),
    "eight_schools_centered": lambda p, d: _schools(p, d, True),
    "kilpisjarvi": _kilpisjarvi,
    "blr": _blr,
    "diamonds": _diamonds,
    "low_dim_gauss_mix": _gauss_mix,
    "hmm_example": _hmm,
}


def _points(reference, n=3):
    """n reference draws as the model's parameters ``{name: [n, *shape]}`` (theta_trans recovered from theta)."""
    draws = {k: v[:: 10_000 // n][:n] for k, v in reference.draws.items()}
    if reference.name == "eight_schools_noncentered":
        for j in range(8):
            draws[f"theta_trans[{j}]"] = (draws[f"theta[{j}]"] - draws["mu"]) / draws["tau"]
    params = {}
    for name, param in reference.model.params.items():
        columns = [draws[f"{name}[{i}]"] for i in range(param.shape[0])] if param.shape else [draws[name]]
        params[name] = torch.as_tensor(np.stack(columns, -1).reshape(n, *param.shape))
    return params


@pytest.mark.parametrize("name", list(POSTERIORDB))
def test_each_log_density_equals_an_independent_computation(name, shared_data):
    reference = load(name, shared_data / "posteriordb")
    assert set(INDEPENDENT) == set(POSTERIORDB)
    params = _points(reference)
    data, _ = reference.model.prepare(reference.data)
    ours = reference.model.log_joint(params, data).numpy()
    theirs = [INDEPENDENT[name]({k: v[i].numpy() for k, v in params.items()}, reference.data) for i in range(3)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-6)


def test_the_unconstrained_density_adds_the_log_jacobian(shared_data):
    """kilpisjarvi: u = (alpha, beta, log sigma), so log p(u) = log p(theta) + log sigma."""
    reference = load("kilpisjarvi", shared_data / "posteriordb")
    params = _points(reference)
    data, _ = reference.model.prepare(reference.data)
    u = reference.model.unconstrain(params)
    expected = reference.model.log_joint(params, data) + params["sigma"].log()
    assert torch.allclose(reference.model.log_density(u, data), expected, rtol=1e-12)


def test_reference_draws_carry_zero_based_names_and_the_eight_schools_need_no_folder(shared_data, monkeypatch):
    reference = load("sblrc-blr", shared_data / "posteriordb")  # posteriordb's own name works too
    assert reference.name == "blr" and sorted(reference.draws) == [*(f"beta[{i}]" for i in range(5)), "sigma"]
    assert all(v.shape == (10_000,) for v in reference.draws.values())
    monkeypatch.setenv("ELBOX_POSTERIORDB", "/nonexistent")
    schools = load("eight_schools_centered")
    assert schools.draws is None and schools.data["y"][0] == 28
    with pytest.raises(ElboxError, match="posteriordb folder /nonexistent does not exist"):
        load("kilpisjarvi")
    with pytest.raises(ElboxError, match="unknown model 'radon'"):
        load("radon")
    assert _zero_based("theta[1]") == "theta[0]" and _zero_based("L[2,1]") == "L[1,0]" and _zero_based("mu") == "mu"


def test_compare_measures_errors_in_reference_sds():
    g = np.random.default_rng(0)
    ref = {"a": g.normal(0, 2, 20_000), "b": g.normal(5, 1, 20_000)}
    c = compare({"a": g.normal(0.2, 2, 20_000), "b": g.normal(5, 0.5, 20_000), "c": np.zeros(3)}, ref)
    assert c.names == ["a", "b"]
    np.testing.assert_allclose(c.mean_error, [0.1, 0.0], atol=0.03)
    np.testing.assert_allclose(c.sd_ratio, [1.0, 0.5], atol=0.02)
    assert c.wasserstein[0] == pytest.approx(0.1, abs=0.03) and not c.passes() and "sd ratio" in str(c)


def test_wasserstein_1d_is_scipys() -> None:
    """``compare``'s W1 is scipy's, without importing scipy.stats on the fit path; and W1 of a shift is the shift."""
    from elbox.bayes.references import wasserstein_1d

    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (7, 3), (1000, 10_000)]:
        u, v = rng.standard_normal(n), rng.standard_t(3, m)
        assert wasserstein_1d(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12, abs=1e-15)
    u = rng.standard_normal(500)
    assert wasserstein_1d(u, u + 0.25) == pytest.approx(0.25, rel=1e-12)
