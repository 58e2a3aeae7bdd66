"""families, priors, networks and models: shapes, gradients, reparameterization, checks, and the
models' typed contract (``LatentVariableModel``) for every kind of ``MODEL_KINDS``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO, Particles
from elbox.errors import ElboxError
from elbox.families import DiagonalGaussian
from elbox.models import MODEL_KINDS, MODELS, LatentVariableModel, build_model
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


def _kind(kind: str) -> LatentVariableModel:
    labelled = kind in ("cvae", "vib")
    return build_model(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", model=kind,
                                 classes=3 if labelled else None))  # fmt: skip


X, Y = torch.tensor([[0.0, 1, 1, 0, 1, 0]] * 4), torch.tensor([0, 1, 2, 1])  # B = 4 inputs, their labels


def test_the_table_of_model_kinds_holds_every_kind_the_config_accepts():
    assert set(MODEL_KINDS) == set(MODELS)
    for kind, cls in MODEL_KINDS.items():
        assert type(_kind(kind)) is cls


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_kind_meets_the_contract_and_draws_particles_k_by_b(kind):
    model = _kind(kind)
    assert isinstance(model, LatentVariableModel)
    y = Y if model.needs_labels else None
    p = model(X, 5, y=y)
    assert isinstance(p, Particles) and p.log_w.shape == (5, 4) and p.log_lik.shape == (5, 4)
    assert p.z.shape[:2] == (5, 4) and torch.isfinite(p.log_w).all()
    torch.manual_seed(0)
    again = model.log_weights(X, 5, y)
    torch.manual_seed(0)
    assert torch.equal(again, model(X, 5, y=y).log_w)  # the contract's default: the particles' log-weights


@pytest.mark.parametrize("kind", MODELS)
def test_needs_labels_says_whether_a_pass_takes_labels(kind):
    model = _kind(kind)
    with pytest.raises(ElboxError, match="class label" if model.needs_labels else "not conditional"):
        model(X, 2, y=None if model.needs_labels else Y)


@pytest.mark.parametrize("kind", MODELS)
def test_a_classifier_predicts_and_a_generative_model_refuses_to(kind):
    model = _kind(kind)
    if model.classifier:
        probs = model.predict(X)
        assert probs.shape == (4, 3) and torch.allclose(probs.sum(-1), torch.ones(4))
    else:
        with pytest.raises(ElboxError, match="predicts no class labels"):
            model.predict(X)


@pytest.mark.parametrize("kind", MODELS)
def test_the_amortized_family_is_the_encoder_of_q(kind):
    model = _kind(kind)
    family = model.amortized_family()
    if kind == "hvae":  # q(z1 | x) q(z2 | z1): two encoders, no one family for the gap split
        assert family is None
        return
    inputs = torch.cat([X, F.one_hot(Y, 3).float()], -1) if kind == "cvae" else X
    q = model.encode(X, Y if kind == "cvae" else None)
    assert torch.equal(family(inputs).mean, q.mean)


def test_an_object_without_the_contracts_members_is_not_a_model():
    assert not isinstance(nn.Linear(2, 2), LatentVariableModel)


def test_checkpoint_tensor_names_stay_those_old_runs_were_written_with():
    layers = [f"{net}.{i}.{p}" for net in ("encoder.encoder", "decoder") for i in (0, 2) for p in ("bias", "weight")]
    vae = {*layers, "prior.loc"}
    assert set(_kind("vae").state_dict()) == set(_kind("cvae").state_dict()) == vae
    assert set(_kind("vib").state_dict()) == vae - {"decoder.2.bias", "decoder.2.weight"}
    hvae = {f"{net}.{i}.{p}" for net in ("bottom_up.encoder", "decoder", "prior.conditional.encoder", "top_up.encoder")
            for i in (0, 2) for p in ("bias", "weight")} | {"prior.top.loc"}  # fmt: skip
    assert set(_kind("hvae").state_dict()) == hvae
