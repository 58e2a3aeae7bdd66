"""likelihoods: proper densities on their support, and refusal of data outside it."""

import pytest
import scipy.stats
import torch

from elbox.errors import ElboxError
from elbox.likelihoods import Bernoulli, Binomial, Gaussian, make_likelihood


def test_binomial_is_the_binomial_pmf_of_the_counts_and_sums_to_one():
    n, logits = 16, torch.randn(3, dtype=torch.float64)
    p = torch.sigmoid(logits)
    grid = torch.arange(n + 1, dtype=torch.float64)[:, None] / n  # [17, 1], x = k / n
    log_pmf = Binomial(n)(logits[None, :, None].expand(n + 1, 3, 1)).log_prob(grid[:, None, :].expand(n + 1, 3, 1))
    expected = scipy.stats.binom.logpmf(torch.arange(n + 1)[:, None].numpy(), n, p.numpy())
    assert torch.allclose(log_pmf, torch.from_numpy(expected))
    assert torch.allclose(log_pmf.exp().sum(0), torch.ones(3, dtype=torch.float64))


def test_binomial_mean_and_samples_live_on_the_grey_level_grid():
    d = Binomial(4)(torch.zeros(2, 5))
    x = d.sample((100,))
    assert torch.equal(x * 4, (x * 4).round()) and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(d.mean, torch.full((2, 5), 0.5))


def test_bernoulli_and_gaussian_match_scipy():
    logits, x = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 2, (4, 6)).double()
    expected = scipy.stats.bernoulli.logpmf(x.numpy(), torch.sigmoid(logits).numpy()).sum(-1)
    assert torch.allclose(Bernoulli()(logits).log_prob(x), torch.from_numpy(expected))
    loc, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    expected = scipy.stats.norm.logpdf(y.numpy(), loc.numpy(), 0.3).sum(-1)
    assert torch.allclose(Gaussian(0.3)(loc).log_prob(y), torch.from_numpy(expected))


def test_gaussian_scale_is_learned_unless_fixed():
    assert [n for n, _ in Gaussian().named_parameters()] == ["raw_scale"]
    assert abs(Gaussian().scale.item() - 1.0) < 1e-3
    assert list(Gaussian(0.5).parameters()) == []


@pytest.mark.parametrize(
    ("likelihood", "data", "message"),
    [
        (Bernoulli(), torch.tensor([[0.0, 0.3]]), "--binarize"),
        (Binomial(16), torch.tensor([[0.0, 0.01]]), "k/16"),
        (Binomial(16), torch.tensor([[0.0, 1.5]]), "k/16"),
        (Gaussian(), torch.tensor([[0.0, float("nan")]]), "NaN"),
        (Bernoulli(), torch.tensor([[float("inf"), 1.0]]), "non-finite"),
    ],
)
def test_data_outside_the_support_is_refused_with_the_fix(likelihood, data, message):
    with pytest.raises(ElboxError, match=message) as e:
        likelihood.check(data, "training")
    assert "row 0" in str(e.value)


def test_data_inside_the_support_passes():
    Bernoulli().check(torch.tensor([[0.0, 1.0]]))
    Binomial(16).check(torch.tensor([[0.0, 3 / 16, 1.0]]))
    Gaussian().check(torch.tensor([[-3.0, 7.0]]))


def test_unknown_or_incomplete_likelihoods_are_refused():
    with pytest.raises(ElboxError, match="unknown likelihood"):
        make_likelihood("poisson")
    with pytest.raises(ElboxError, match="levels"):
        make_likelihood("binomial")


def test_the_fused_bernoulli_equals_torchs_independent_bernoulli():
    from torch.distributions import Bernoulli as TorchBernoulli
    from torch.distributions import Independent

    logits = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    reference = Independent(TorchBernoulli(logits=logits), 1)
    fused = Bernoulli()(logits)
    for x in (torch.randint(0, 2, (4, 6)).double(), torch.randint(0, 2, (3, 4, 6)).double(), torch.ones(6).double()):
        assert torch.allclose(fused.log_prob(x), reference.log_prob(x))
        (g1,) = torch.autograd.grad(fused.log_prob(x).sum(), logits)
        (g2,) = torch.autograd.grad(reference.log_prob(x).sum(), logits)
        assert torch.allclose(g1, g2)
    assert fused.batch_shape == (3, 4) and fused.event_shape == (6,) and torch.equal(fused.mean, reference.mean)
