"""bayes.diagnostics: PSIS k-hat and ESS, and a verdict that trusts good fits and never bad ones,
checked against exact posteriors and posteriordb's reference draws."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, StudentT

from elbox.bayes import Convergence, Model, Param, compare, fit, linear_regression, load
from elbox.bayes.diagnostics import (
    KHAT_MAX,
    Diagnostics,
    _student_t,
    _student_t_log_prob,
    agreement,
    combine,
    diagnose,
    verdict,
)
from elbox.bayes.references import linear_regression_posterior

FAST = Convergence(window=100)


def _diagnostics(khat=(0.3, 0.4), shift=0.0, ratio=1.0, q_mean=0.0, q_sd=1.0, n=3):
    full = lambda v: np.full(n, v, dtype=float)  # noqa: E731
    d = Diagnostics(
        draws=1000, replicates=len(khat), khat=list(khat), ess=[900.0] * len(khat), elbo=(-1.0, 0.01),
        log_evidence=(-0.9, 0.01), names=[f"x[{i}]" for i in range(n)], q_mean=full(q_mean), q_sd=full(q_sd),
        psis_mean=full(q_mean), psis_sd=full(q_sd), mean_shift=full(shift), mean_shift_se=full(0.005),
        sd_ratio=full(ratio), sd_ratio_se=full(0.005),
    )  # fmt: skip
    d.verdict, d.reasons = verdict(d)
    return d


def test_the_verdict_needs_every_k_hat_and_the_moments_to_agree():
    assert _diagnostics().verdict == "trust"
    high = _diagnostics(khat=(0.3, 0.75))  # one set of four over the line is enough: the upper end decides
    assert high.verdict == "do not trust" and "k-hat reaches 0.75" in high.reasons[0]
    assert "mean of x[0] is +0.080" in _diagnostics(shift=0.08).reasons[0]
    assert "0.930" in _diagnostics(ratio=0.93).reasons[0] and "do not trust" in str(_diagnostics(ratio=0.93))
    assert _diagnostics(shift=0.07).verdict == "do not trust"  # within tolerance, but not with two SEs added


def test_agreement_between_a_gaussian_and_a_flow_rescues_only_moderate_k_hats():
    gaussian, flow = _diagnostics(khat=(0.8, 0.85)), _diagnostics(khat=(0.75, 0.8), q_mean=0.02, q_sd=1.02)
    assert gaussian.verdict == flow.verdict == "do not trust"
    agree, how = agreement(gaussian, flow)
    assert agree and "agree" in how
    assert not agreement(gaussian, _diagnostics(khat=(0.75, 0.8), q_sd=1.1))[0]  # sds 10% apart
    assert not agreement(gaussian, _diagnostics(khat=(0.9, 1.2)))[0]  # importance sampling fails outright
    assert not agreement(gaussian, _diagnostics(khat=(0.75, 0.8), shift=0.2))[0]  # PSIS refutes the flow


def test_every_reliable_importance_estimate_must_confirm_q_and_one_must_exist():
    """``combine``: q's own PSIS (d) and the defensive mixture's (g). A reliable g (k-hats below 0.7)
    decides: it refutes a trusted q, and confirms a q refused for k-hat alone; an unreliable g decides nothing."""
    good, heavy = dict(khat=(0.3, 0.4)), dict(khat=(0.8, 0.9))

    def combined(d_kwargs, g_kwargs):
        d = _diagnostics(**d_kwargs)
        combine(d, _diagnostics(**g_kwargs))
        return d

    assert combined(good, good).trusted  # both confirm
    refuted = combined(good, good | dict(ratio=0.92))  # q's weights confirm, g's (reliable) refute
    assert not refuted.trusted and "refutes q" in refuted.reasons[0] and "0.920" in refuted.reasons[0]
    assert combined(good, heavy | dict(ratio=0.92)).trusted  # an unreliable g cannot refute
    rescued = combined(heavy, good | dict(q_sd=1.0))
    assert rescued.trusted and "heavier than q's" in rescued.notes[-1] and rescued.defensive_khat == [0.3, 0.4]
    assert rescued.reasons == []
    still = combined(heavy, heavy)
    assert not still.trusted and "cannot confirm q either" in still.reasons[-1]
    assert not combined(heavy, good | dict(shift=0.2)).trusted  # g reliable, and it refutes
    assert not combined(good | dict(ratio=0.9), good).trusted  # q's own reliable estimate refuted q: it stands


@pytest.fixture(scope="module")
def good_fit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    data = {"X": x, "y": x @ torch.tensor([1.0, -1.0], dtype=torch.float64) + torch.randn(30, generator=g).double()}
    return fit(linear_regression(2), data, family="fullrank", convergence=FAST, progress=False), data


def test_k_hat_is_low_and_the_fit_trusted_when_q_is_the_exact_posterior(good_fit):
    posterior, data = good_fit
    d = posterior.diagnostics(draws=2000, replicates=4)
    assert d.khat_max < 0.5 and d.trusted and min(d.ess) > 1900
    mean, cov, _ = linear_regression_posterior(data["X"], data["y"])
    assert np.allclose(d.psis_mean[:2], mean.numpy(), atol=0.02 * cov.diagonal().sqrt().max().item())
    assert d.to_dict()["verdict"] == "trust" and "TRUST" in str(d)


def test_a_too_narrow_q_is_not_trusted():
    """q = N(0, 0.6^2) for p = N(0, 1): the weights' tail has shape k = 1 - 0.36 = 0.64 in theory, and the
    PSIS-corrected sd says q's is 40% too small."""
    model = Model({"x": Param()}, lambda p: Normal(0.0, 1.0).log_prob(p["x"]))
    posterior = fit(model, family="diagonal", steps=1, lr=1e-9, init="plain", progress=False)
    with torch.no_grad():
        posterior.family.raw[1] = torch.log(torch.expm1(torch.tensor(0.6 - 1e-4)))  # scale 0.6
    d = posterior.diagnostics(draws=5000, replicates=4)
    assert d.verdict == "do not trust" and any("sd of x" in r for r in d.reasons)
    assert 0.5 < d.sd_ratio[0] < 0.75


def _student_t_posterior(nu: float, sd: float, d: int = 4, q_scale: float | None = None):
    """p = t_nu in each of d coordinates; q = N(0, (sd x p's sd)^2 I), or N(0, q_scale^2 I), placed by hand."""
    model = Model({"x": Param(d)}, lambda p: StudentT(nu).log_prob(p["x"]).sum(-1))
    posterior = fit(model, family="diagonal", steps=1, lr=1e-9, init="plain", progress=False)
    scale = q_scale if q_scale is not None else sd * math.sqrt(nu / (nu - 2))
    with torch.no_grad():
        posterior.family.raw[:d] = 0.0
        posterior.family.raw[d:] = torch.log(torch.expm1(torch.tensor(scale)))
    return posterior


def test_the_student_t_of_the_defensive_check_is_scipys():
    from scipy.stats import f, kstest, multivariate_t

    mean, tril = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor(
        [[1.5, 0.0, 0.0], [0.3, 0.7, 0.0], [-0.2, 0.4, 2.0]], dtype=torch.float64
    )
    u, log_t = _student_t(mean, tril, 20_000, seed=3)
    expected = multivariate_t(mean.numpy(), (tril @ tril.T).numpy(), df=5).logpdf(u.numpy())
    assert np.allclose(log_t.numpy(), expected, atol=1e-10)
    assert np.allclose(_student_t_log_prob(u, mean, tril).numpy(), expected, atol=1e-10)
    z = torch.linalg.solve_triangular(tril, (u - mean).T, upper=False).T  # whitened: |z|^2 / 3 ~ F(3, 5)
    assert kstest((z * z).sum(1).numpy() / 3, f(3, 5).cdf).pvalue > 1e-3
    assert kstest(z[:, 0].numpy(), "t", args=(5,)).pvalue > 1e-3


def test_a_posterior_with_heavier_tails_than_q_is_checked_by_the_defensive_mixture():
    """p = t_8 in 4 coordinates, q the Gaussian with p's means and sds: p / q has an unbounded tail (k-hat
    near 1: the first way refuses, rightly, to use q's own weights), but q's moments are exact, and the
    defensive mixture's weights are bounded: its k-hat is low and its corrected sds are p's (sqrt(8 / 6))."""
    d = _student_t_posterior(8.0, 1.0).diagnostics()
    assert min(d.khat) > 0.7 and max(d.defensive_khat) < 0.5
    assert d.trusted and "defensive check" in d.notes[-1] and "heavier than q's" in d.notes[-1]
    assert np.allclose(d.psis_sd, math.sqrt(8 / 6), rtol=0.03) and np.abs(d.sd_ratio - 1).max() < 0.04


@pytest.mark.parametrize("sd", [0.85, 1.25])
def test_the_defensive_mixture_does_not_rescue_a_q_of_the_wrong_width(sd):
    """The same p with q 15% too narrow (k-hat above 0.7 on some set: the defensive check runs) or 25% too
    wide: refused, by q's sd against the corrected one."""
    d = _student_t_posterior(8.0 if sd < 1 else 5.0, sd).diagnostics(seed=2)
    assert not d.trusted and any("times the PSIS-corrected sd" in r for r in d.reasons), d.reasons
    if sd < 1:
        assert d.khat_max > 0.7 and max(d.defensive_khat) < 0.7 and "defensive check" in d.reasons[-1]


def test_a_verdict_stops_early_only_when_no_set_can_make_it_trust():
    """p = Cauchy in 4 coordinates, q = N(0, 0.5^2 I): p / q and p / g (g's Student-t has 5 degrees of freedom)
    both have unbounded tails. Once one set's k-hats are above 0.7 for both samplers, the verdict cannot be
    'trust' (each estimate is reliable only when all its sets are), and it stops there: the same sets, number
    for number, as the full verdict's, and fewer log-density evaluations."""
    posterior = _student_t_posterior(1.0, math.nan, q_scale=0.5)
    full, early = diagnose(posterior), diagnose(posterior, refuse_early=KHAT_MAX)
    r = early.replicates
    assert full.verdict == early.verdict == "do not trust" and full.replicates == 4 and r < 4
    assert early.khat == full.khat[:r] and early.defensive_khat == full.defensive_khat[:r]
    assert [min(k, g) >= KHAT_MAX for k, g in zip(full.khat, full.defensive_khat, strict=True)].index(True) == r - 1
    assert early.evaluations * 4 == full.evaluations * r and f"stopped after {r} of 4 sets" in early.notes[-1]
    assert diagnose(posterior, refuse_early=5.0).to_dict() == full.to_dict()  # a limit no k-hat reaches: never stops


def test_a_verdict_is_not_stopped_early_where_the_defensive_mixture_can_still_confirm_q():
    """The t_8 posterior with q of its exact moments: q's own k-hats are above 0.7, the defensive mixture's are
    low and confirm q. Stopping on q's k-hat alone would refuse a fit the full verdict trusts."""
    posterior = _student_t_posterior(8.0, 1.0)
    early = diagnose(posterior, refuse_early=KHAT_MAX)
    assert min(early.khat) > KHAT_MAX and early.trusted and early.to_dict() == diagnose(posterior).to_dict()
    with pytest.raises(ValueError, match=r"at least 0\.7"):
        diagnose(posterior, refuse_early=0.5)


def test_mean_field_on_kilpisjarvi_has_a_high_k_hat_and_is_not_trusted(shared_data):
    """corr(alpha, beta) = -0.99999: mean-field sds are hundreds of times too small; k-hat > 0.7."""
    reference = load("kilpisjarvi", shared_data / "posteriordb")
    posterior = fit(reference.model, reference.data, family="diagonal", convergence=FAST, progress=False)
    d = posterior.diagnostics()
    c = compare(posterior.columns(10_000, seed=1), reference.draws)
    assert d.khat_max > 0.7 and min(d.khat) > 0.7 and d.verdict == "do not trust"
    assert c.sd_ratio.min() < 0.05 and not c.passes()


@pytest.mark.parametrize(("name", "family"), [("blr", "lowrank"), ("eight_schools_centered", "fullrank")])
def test_the_verdict_agrees_with_the_reference_draws(name, family, shared_data):
    """Trusted fits meet the targets (means within 0.1 reference sd, sds within 10%); fits that miss
    them are not trusted: a low-rank fit of sblrc-blr is near exact, a full-rank fit of the centered
    eight schools (a funnel) is far too narrow."""
    reference = load(name, shared_data / "posteriordb")
    posterior = fit(reference.model, reference.data, family=family, steps=1500, convergence=FAST, progress=False)
    d = posterior.diagnostics()
    passes = compare(posterior.columns(10_000, seed=1), reference.draws).passes()
    assert passes == d.trusted == (name == "blr"), (d.reasons, d.khat)
