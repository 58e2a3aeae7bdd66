"""Importance weights: the ESS and Monte Carlo error formulas, and PSIS's k-hat against known tails."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from elbox.importance import effective_sample_size, log_px_standard_error, psis, psis_khat

F64 = torch.float64


def test_effective_sample_size_and_standard_error_formulas():
    log_w = torch.randn(1000, 3, dtype=F64)
    w = log_w.exp()
    assert torch.allclose(effective_sample_size(log_w), w.sum(0) ** 2 / w.pow(2).sum(0))
    direct = w.std(0) / math.sqrt(1000) / w.mean(0)  # SE(p^) / p^
    assert torch.allclose(log_px_standard_error(log_w), direct, rtol=1e-9)
    assert effective_sample_size(torch.zeros(50, 1)).item() == pytest.approx(50)


@pytest.mark.parametrize("shape", [0.25, 0.5, 0.9])
def test_psis_khat_recovers_the_tail_shape_of_pareto_weights(shape):
    """log w ~ Exponential(1 / k) makes w Pareto with tail index 1 / k, whose fitted shape is k.

    The fit (Zhang & Stephens 2009, as Vehtari et al. 2024 use it) shrinks k toward 0.5 by a
    prior worth 10 observations, against the M = 3 sqrt(K) = 212 tail draws at K = 5000.
    """
    g = torch.Generator().manual_seed(0)
    log_w = torch.empty(5000, 40, dtype=F64).exponential_(1 / shape, generator=g)
    khat = psis_khat(log_w)
    m = math.ceil(3 * math.sqrt(5000))
    expected = (m * shape + 10 * 0.5) / (m + 10)
    assert abs(khat.mean().item() - expected) < 3 * khat.std().item() / math.sqrt(40), (khat.mean(), expected)
    assert torch.isnan(psis_khat(torch.zeros(100, 2))).all()  # equal weights: no tail to fit


def test_psis_smooths_each_column_into_normalised_weights_and_keeps_a_light_tail():
    log_w = torch.randn(4000, 3, dtype=F64) * 0.5
    smoothed, khat = psis(log_w)
    assert smoothed.shape == log_w.shape and khat.shape == (3,)
    assert torch.allclose(smoothed.exp().sum(0), torch.ones(3, dtype=F64))
    assert (khat < 0.5).all()
    # the bulk keeps its relative weights: only the largest weights are replaced
    bulk = log_w[:, 0] < log_w[:, 0].quantile(0.5)
    shift = (smoothed[:, 0] - log_w[:, 0])[bulk]
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-9)
    one, k1 = psis(log_w[:, 0])  # a single set: no batch dimension
    assert one.shape == (4000,) and k1.shape == () and torch.allclose(one, smoothed[:, 0])


def test_psis_gives_arviz_psislw_numbers_without_importing_arviz():
    """elbox's own PSIS (importing ArviZ cost 1.5 s of an ``elbox fit``) against ArviZ's ``psislw``: light and
    heavy tails, few draws, a few dominant weights."""
    from elbox.importance import arviz

    rng = np.random.default_rng(0)
    dominant = np.concatenate([np.zeros((4990, 1)), np.full((10, 1), 50.0)])
    cases = [rng.standard_normal((5000, 3)), 3 * np.log(np.abs(rng.standard_cauchy((5000, 2)))),
             5 * rng.standard_normal((50, 2)), dominant]  # fmt: skip
    for log_w in cases:
        smoothed, khat = psis(torch.as_tensor(log_w))
        with np.errstate(all="ignore"):
            expected, expected_k = arviz().psislw(log_w.T.copy())
        assert np.allclose(khat.numpy(), expected_k, rtol=1e-10), (khat, expected_k)
        assert np.allclose(smoothed.numpy(), np.asarray(expected).T, atol=1e-10)
    run = subprocess.run([sys.executable, "-c", "import sys, torch; from elbox.importance import psis; "
                          "psis(torch.randn(1000, 1)); print('arviz' in sys.modules)"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.stdout.strip() == "False", run.stderr[-2000:]
