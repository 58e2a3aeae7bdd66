"""families, priors, networks and models: shapes, gradients, reparameterization, checks."""

import pytest
import torch
from torch import nn

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO
from elbox.errors import ElboxError
from elbox.families import DiagonalGaussian
from elbox.networks import mlp
from elbox.priors import StandardNormal


def _vae(latent_dim=3, likelihood="bernoulli", **kw):
    return VAE(VAEConfig(data_dim=6, latent_dim=latent_dim, hidden=(8, 8), likelihood=likelihood, levels=4, **kw))


def test_particles_have_shapes_k_b_d():
    vae, x = _vae(), torch.randint(0, 2, (5, 6)).float()
    p = vae(x, k=7)
    assert p.z.shape == (7, 5, 3) and p.log_lik.shape == (7, 5)
    assert p.q.batch_shape == (5,) and p.q.event_shape == (3,)
    assert vae.log_weights(x, 7).shape == (7, 5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "binomial", "gaussian"])
def test_the_elbo_gradient_reaches_every_parameter(likelihood):
    vae = _vae(likelihood=likelihood)
    x = torch.randint(0, 2, (5, 6)).float()
    ELBO()(vae(x, 3)).loss.backward()
    for name, parameter in vae.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_draws_are_reparameterized_location_plus_scale_times_noise():
    q = DiagonalGaussian(2, nn.Linear(2, 4))(torch.randn(3, 2))
    torch.manual_seed(1)
    z = q.rsample((2,))
    torch.manual_seed(1)
    eps = torch.randn(2, 3, 2)
    assert torch.allclose(z, q.mean + q.stddev * eps)


def test_scales_stay_above_the_floor():
    encoder = nn.Linear(2, 4)
    with torch.no_grad():
        encoder.bias[2:] = -1e4  # an encoder that drives the scale to zero
    q = DiagonalGaussian(2, encoder, min_scale=1e-3)(torch.zeros(1, 2))
    assert torch.all(q.stddev >= 1e-3) and torch.isfinite(q.log_prob(q.mean)).all()


def test_prior_is_standard_normal_and_follows_dtype():
    p = StandardNormal(3).double()()
    assert p.mean.dtype == torch.float64 and torch.equal(p.mean, torch.zeros(3))
    assert torch.equal(p.stddev, torch.ones(3)) and p.event_shape == (3,)


def test_mlp_mirrors_sizes():
    net = mlp([4, 8, 8, 2], "relu")
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 8, 2]
    assert isinstance(net[-1], nn.Linear)


def test_generation_and_latent_space_shapes():
    vae = _vae(latent_dim=2)
    x = torch.randint(0, 2, (4, 6)).float()
    assert vae.sample(9).shape == (9, 6)
    assert vae.reconstruct(x).shape == (4, 6)
    assert vae.interpolate(x[0], x[1], steps=5).shape == (5, 6)
    grid = vae.manifold(4)
    assert grid.shape == (4, 4, 6)
    assert ((grid >= 0) & (grid <= 1)).all()


def test_interpolation_starts_and_ends_at_the_encoded_inputs():
    vae = _vae()
    x = torch.randint(0, 2, (2, 6)).float()
    line = vae.interpolate(x[0], x[1], steps=4)
    assert torch.allclose(line[[0, -1]], vae.reconstruct(x))


def test_manifold_needs_two_latent_dimensions():
    with pytest.raises(ElboxError, match="interpolate"):
        _vae(latent_dim=3).manifold()


def test_data_of_the_wrong_width_is_refused():
    with pytest.raises(ElboxError, match=r"shape \[4, 5\]"):
        _vae().check(torch.zeros(4, 5))


def test_invalid_model_options_are_named():
    with pytest.raises(ElboxError, match=r"latent_dim.*activation"):
        VAEConfig(latent_dim=0, activation="sigmoidal")


def test_the_registered_kl_to_the_standard_normal_equals_torchs_general_formula():
    from torch.distributions import Independent, Normal, kl_divergence

    from elbox.families import DiagonalNormal
    from elbox.priors import UnitNormal

    loc, scale = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.1
    general = kl_divergence(Independent(Normal(loc, scale), 1), Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    assert torch.allclose(kl_divergence(DiagonalNormal(loc, scale), UnitNormal(3, torch.float64)), general)


def test_families_and_priors_expand_like_torch_distributions():
    from elbox.families import DiagonalNormal
    from elbox.likelihoods import IndependentBernoulli
    from elbox.priors import UnitNormal

    for d in (DiagonalNormal(torch.zeros(3), torch.ones(3)), UnitNormal(3), IndependentBernoulli(torch.zeros(3))):
        e = d.expand(torch.Size([5]))
        assert e.batch_shape == (5,) and e.event_shape == (3,) and e.sample().shape == (5, 3)
