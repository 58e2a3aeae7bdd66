"""Discrete latents (families.Discrete, GumbelDiscrete): against exact answers by enumerating every state.

A tiny VAE with 3 binary latents (8 states) or 2 three-way categorical latents (9 states) has
log p(x) = logsumexp_z [log p(z) + log p(x | z)] and the ELBO sum_z q(z | x) log w(z) exactly.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO, iwae
from elbox.errors import ElboxError
from elbox.families import Discrete, GumbelDiscrete, UniformDiscrete
from elbox.runs import load_run
from elbox.training import TrainConfig, train


def tiny(family: str = "bernoulli", dim: int = 3, **options: object) -> VAE:
    config = VAEConfig(data_dim=4, latent_dim=dim, hidden=(), likelihood="bernoulli", family=family, **options)
    model = VAE(config).double()
    with torch.no_grad():  # a peaked posterior and a broad q that covers every state: a gap worth measuring
        for p in model.decoder.parameters():
            p.copy_(2 * torch.randn_like(p))
        for p in model.encoder.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return model


def states(model: VAE) -> torch.Tensor:
    """Every code z of the model's latents, ``[S, W]``."""
    d, c = model.config.latent_dim, model.encoder.categories
    if c == 2:
        return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    index = torch.tensor(list(itertools.product(range(c), repeat=d)))
    return F.one_hot(index, c).double().flatten(-2)


def exact(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(x) ``[B]``, the ELBO ``[B]`` and log q of every state ``[S, B]``, by enumeration."""
    z = states(model)[:, None]  # [S, 1, W]
    log_q = model.encode(x).log_prob(z)  # [S, B]
    log_joint = model.prior().log_prob(z) + model.decode(z).log_prob(x)  # [S, B]
    return torch.logsumexp(log_joint, 0), (log_q.exp() * (log_joint - log_q)).sum(0), log_q


X = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("family", ["bernoulli", "categorical:3"])
def test_q_sums_to_one_over_every_state_and_its_kl_is_the_enumerated_one(family):
    model = tiny(family, dim=3 if family == "bernoulli" else 2)
    q = model.encode(X)
    log_q = q.log_prob(states(model)[:, None])  # [S, B]
    assert torch.allclose(log_q.exp().sum(0), torch.ones(2, dtype=torch.float64))
    prior = model.prior()
    enumerated = (log_q.exp() * (log_q - prior.log_prob(states(model))[:, None])).sum(0)
    assert torch.allclose(torch.distributions.kl_divergence(q, prior), enumerated)
    assert torch.allclose(prior.log_prob(states(model)).exp().sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("categories", [2, 3])
def test_hard_draws_follow_q(categories):
    """Each state's frequency over N draws is within 4 binomial standard errors of q(z)."""
    logits = torch.tensor([[0.5, -1.0]] if categories == 2 else [[[0.5, -1.0, 0.2], [0.0, 1.0, -0.3]]])
    q = GumbelDiscrete(logits.double(), categories)
    n, codes = 40_000, q.sample((40_000,))[:, 0]  # [N, W]
    every = torch.unique(codes, dim=0)
    probs = q.log_prob(every[:, None]).exp()[:, 0]
    assert torch.allclose(probs.sum(), torch.tensor(1.0, dtype=torch.float64))  # every state was drawn
    freq = torch.stack([(codes == s).all(-1).double().mean() for s in every])
    assert ((freq - probs).abs() < 4 * (probs * (1 - probs) / n).sqrt()).all()


@pytest.mark.parametrize("categories", [2, 4])
def test_relaxed_and_straight_through_draws(categories):
    logits = torch.randn(5, 3) if categories == 2 else torch.randn(5, 3, categories)
    logits.requires_grad_(True)
    relaxed = GumbelDiscrete(logits, categories, temperature=0.5).rsample((7,))
    assert ((relaxed > 0) & (relaxed < 1)).all()
    if categories > 2:  # each latent's relaxed one-hot sums to one
        assert torch.allclose(relaxed.unflatten(-1, (3, categories)).sum(-1), torch.ones(7, 5, 3))
    torch.manual_seed(1)
    straight = GumbelDiscrete(logits, categories, straight_through=True).rsample((7,))
    torch.manual_seed(1)
    hard = GumbelDiscrete(logits, categories).sample((7,))
    assert torch.equal(straight.detach(), hard)  # forward: the hard draw of the same noise
    straight.sum().backward(torch.ones(()))
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # backward: the relaxed draw's gradient
    evaluating = GumbelDiscrete(logits, categories, hard=True).rsample((7,))
    assert not evaluating.requires_grad and set(evaluating.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("family", ["bernoulli", "categorical:3"])
def test_in_evaluation_mode_log_weights_are_the_discrete_models(family):
    """Hard draws, discrete log-probs: each log-weight is the enumerated one for its state, the mean
    of K log-weights is within 4 standard errors of the exact ELBO, which sits below log p(x), and
    IWAE_K (K = 4000) is within 4 standard errors (delta method: sd(w / p(x)) / sqrt(K)) of
    log p(x), far closer than the ELBO."""
    model = tiny(family, dim=3 if family == "bernoulli" else 2).eval()
    log_px, elbo, _ = exact(model, X)
    p = model(X, 4000)
    assert set(p.z.unique().tolist()) <= {0.0, 1.0}
    by_state = model.prior().log_prob(p.z) + model.decode(p.z).log_prob(X) - model.encode(X).log_prob(p.z)
    assert torch.allclose(p.log_w, by_state)
    se = p.log_w.std(0) / math.sqrt(4000)
    assert ((p.log_w.mean(0) - elbo).abs() < 4 * se).all()
    assert (elbo < log_px).all()
    bound, ratio_se = iwae(p.log_w), (p.log_w - log_px).exp().std(0) / math.sqrt(4000)
    assert ((bound - log_px).abs() < 4 * ratio_se).all()
    assert (4 * ratio_se < 0.25 * (log_px - elbo)).all()


def test_score_function_gradients_are_unbiased():
    """The score-function estimator's gradient (one particle, the baseline fixed beforehand so it
    does not depend on the draws), averaged over 20 000 draws per data point in 20 groups, is within
    4 standard errors (from the spread of the group means) of the exact gradient of the enumerated
    ELBO, for every parameter, encoder and decoder."""
    model = tiny("bernoulli")
    params = list(model.parameters())
    exact_elbo = exact(model, X)[1]
    truth = torch.cat([g.flatten() for g in torch.autograd.grad(-exact_elbo.mean(), params)])
    objective, many = ELBO(estimator="score"), X.repeat(500, 1)  # [1000, X]: 500 draws per point
    groups = []
    for _ in range(20):
        objective.baseline = exact_elbo.mean().item()
        loss = objective(model(many, 1, reparameterize=False)).loss
        groups.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    estimates = torch.stack(groups)  # [20, P]
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(len(groups))
    assert ((mean - truth).abs() <= 4 * se).all()
    assert se.max() < 0.1 * truth.abs().max()  # the test has power: a bias of that size would show


@pytest.mark.parametrize("options", [{}, {"straight_through": True}])
def test_gradients_reach_every_parameter(options):
    model = tiny("categorical:4", dim=2, **options).train()
    ELBO()(model(X, 3)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_relaxed_draws_train_only_the_closed_form_elbo():
    """A relaxed draw has no discrete log q: Monte Carlo objectives need hard or straight-through draws."""
    for options in ({"objective": "iwae"}, {"analytic_kl": False}, {"estimator": "stl"}):
        with pytest.raises(ElboxError, match="relaxed"):
            TrainConfig.from_dict({"family": "bernoulli", **options})
    TrainConfig.from_dict({"family": "bernoulli", "objective": "iwae", "straight_through": True})
    TrainConfig.from_dict({"family": "bernoulli", "objective": "iwae", "estimator": "score"})


def test_names_and_options_are_checked():
    with pytest.raises(ElboxError, match="categorical"):
        VAEConfig(family="categorical:1")
    with pytest.raises(ElboxError, match="temperature"):
        VAEConfig(family="bernoulli", temperature=0.0)
    assert Discrete(3, categories=5).width == 15 and UniformDiscrete(3, 5).event_shape == (15,)


def test_a_discrete_run_trains_loads_and_samples(tmp_path):
    run = train(data="digits", family="categorical:4", latent_dim=3, straight_through=True, hidden=(16,),
                epochs=1, out=tmp_path / "run", progress=False)  # fmt: skip
    loaded = load_run(tmp_path / "run")
    x = run.model.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(loaded.model.sample(5, torch.Generator().manual_seed(0)), x)
    z = loaded.model(x.round(), 3).z  # evaluation mode: hard one-hot codes
    assert torch.equal(z.unflatten(-1, (3, 4)).sum(-1), torch.ones(3, 5, 3))
    assert math.isfinite(run.summary["test"]["elbo"])


def test_discrete_latents_under_a_conv_network():
    config = VAEConfig(data_dim=64, latent_dim=3, hidden=(8,), likelihood="bernoulli", family="categorical:4",
                       network="conv", channels=(4,), image_shape=(8, 8))  # fmt: skip
    model = VAE(config)
    x = torch.bernoulli(torch.full((5, 64), 0.5))
    p = model(x, 2)
    ELBO()(p).loss.backward()
    assert p.log_w.shape == (2, 5) and all(q.grad is not None for q in model.parameters())
