"""hierarchical: the two-layer VAE's particles, its bounds against an exact linear-Gaussian
oracle, its gradient estimators, and its runs."""

import math

import pytest
import torch
from command import run_cli
from test_priors import assert_bounds_below

import elbox
from elbox import VAEConfig
from elbox.bounds import ELBO, IWAE, RenyiBound
from elbox.errors import ElboxError
from elbox.evaluation import evaluate, inference_gaps, log_likelihood
from elbox.families import DiagonalNormal
from elbox.likelihoods import LIKELIHOODS, UNBOUNDED
from elbox.models import build_model
from elbox.models.hierarchical import Chain, HierarchicalVAE
from elbox.runs import load_run


def _hvae(prior="standard", **kw):
    options = {"data_dim": 6, "latent_dim": 3, "hidden": (8,), "likelihood": "bernoulli", "model": "hvae"}
    return build_model(VAEConfig(**(options | {"prior": prior} | kw)))


# ----------------------------------------------------------------- an exact oracle
#
# With no hidden layers, a Gaussian likelihood of fixed scale and the scale outputs' weights
# set to zero, the hvae is the linear-Gaussian chain
#
#     z2 ~ N(0, 1),  z1 | z2 ~ N(a z2 + c, t^2),  x | z1 ~ N(w z1 + b, s^2 I)      (1-D z1, z2),
#
# so x ~ N(w c + b, (a^2 + t^2) w w^T + s^2 I), and the posterior q(z1 | x) q(z2 | z1) with
# q(z1 | x) = p(z1 | x), q(z2 | z1) = p(z2 | z1) (x and z2 are independent given z1) is a
# member of the model's family: linear means, constant scales.


def _set(family, weight, bias, scale):
    """A diagonal Gaussian family with loc = weight @ input + bias and a constant scale (1-D output)."""
    layer = family.encoder[-1]
    layer.weight.zero_()
    layer.weight[0] = torch.as_tensor(weight, dtype=torch.float64)
    layer.bias[0] = bias
    layer.bias[1] = math.log(math.expm1(scale - family.min_scale))  # softplus(raw) + floor = scale


def _linear_gaussian_hvae(x_dim=3, s=0.5):  # s exact in float32, where the buffer starts
    config = VAEConfig(data_dim=x_dim, latent_dim=1, hidden=(), likelihood="gaussian", gaussian_scale=s,
                       model="hvae", top_latent_dim=1, top_hidden=())  # fmt: skip
    hvae = HierarchicalVAE(config).double()
    a, c, t = 1.3, 0.4, 0.6
    with torch.no_grad():
        _set(hvae.prior.conditional, a, c, t)  # p(z1 | z2)
        hvae.decoder[0].weight.copy_(torch.randn(x_dim, 1))
        hvae.decoder[0].bias.copy_(torch.randn(x_dim))
    return hvae, (a, c, t, s)


def _exact_log_px(hvae, params, x):
    a, c, t, s = params
    w, b = hvae.decoder[0].weight[:, 0], hvae.decoder[0].bias
    cov = (a**2 + t**2) * torch.outer(w, w) + s**2 * torch.eye(w.shape[0], dtype=w.dtype)
    return torch.distributions.MultivariateNormal(w * c + b, cov).log_prob(x)


def _set_to_posterior(hvae, params, shift=0.0, widen=1.0):
    """q(z1 | x) = p(z1 | x) and q(z2 | z1) = p(z2 | z1), in closed form; or with the means moved by
    ``shift`` and the scales multiplied by ``widen`` (> 1: the importance weights stay bounded)."""
    a, c, t, s = params
    w, b = hvae.decoder[0].weight[:, 0].detach(), hvae.decoder[0].bias.detach()
    m1, v1 = c, a**2 + t**2  # z1's marginal
    v = 1 / (1 / v1 + w @ w / s**2)  # p(z1 | x): variance v, mean v (m1 / v1 + w^T (x - b) / s^2)
    v2 = 1 / (1 + a**2 / t**2)  # p(z2 | z1): variance v2, mean v2 a (z1 - c) / t^2
    with torch.no_grad():
        _set(hvae.bottom_up, v * w / s**2, v * (m1 / v1 - w @ b / s**2) + shift, widen * math.sqrt(v))
        _set(hvae.top_up, v2 * a / t**2, -v2 * a * c / t**2 + shift, widen * math.sqrt(v2))


def test_at_the_exact_posterior_every_log_weight_is_log_px():
    hvae, params = _linear_gaussian_hvae()
    _set_to_posterior(hvae, params)
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        log_w = hvae.log_weights(x, 50)
    assert torch.allclose(log_w, _exact_log_px(hvae, params, x).expand(50, 5), atol=1e-10)


@pytest.mark.slow
def test_bounds_sit_below_the_exact_log_px_and_iwae_reaches_it():
    """A q off the posterior: ELBO <= IWAE_10 <= IWAE_100 <= log p(x) (4 SE), and K = 5000 within 4 Monte Carlo SE."""
    hvae, params = _linear_gaussian_hvae()
    _set_to_posterior(hvae, params, shift=0.3, widen=1.5)
    x = torch.randn(6, 3, dtype=torch.float64)
    exact = _exact_log_px(hvae, params, x).detach()
    assert_bounds_below(hvae, x, exact)
    ll = log_likelihood(hvae, x, k=5000, seed=0)
    assert ((ll.values - exact).abs() < 4 * ll.mc_se + 1e-4).all()


def test_sticking_the_landing_gives_a_zero_encoder_gradient_at_the_exact_posterior():
    """With log q's parameters stopped, both encoders' weights included, the gradient vanishes at p(z | x)
    (Roeder et al. 2017); the plain reparameterized gradient does not, one draw at a time."""
    hvae, params = _linear_gaussian_hvae()
    _set_to_posterior(hvae, params)
    x = torch.randn(4, 3, dtype=torch.float64)
    encoders = [*hvae.bottom_up.parameters(), *hvae.top_up.parameters()]
    for estimator, vanishes in (("stl", True), ("dreg", True), ("reparam", False)):
        objective = (IWAE if estimator == "dreg" else ELBO)(estimator=estimator)
        if estimator == "reparam":
            objective.analytic_kl = False
        hvae.zero_grad()
        objective(hvae(x, 3, stop_q=objective.stop_q)).loss.backward()
        largest = max(p.grad.abs().max().item() for p in encoders)
        assert (largest < 1e-10) == vanishes, (estimator, largest)


# ----------------------------------------------------------------- the contract


def test_particles_are_both_layers_and_log_weights_are_k_by_b():
    hvae, x = _hvae(), torch.bernoulli(torch.full((5, 6), 0.5))
    p = hvae(x, k=7)
    d = 3 + 2  # z1 and z2 (half of 3, rounded up)
    assert p.z.shape == (7, 5, d) and p.log_lik.shape == (7, 5) and hvae.log_weights(x, 7).shape == (7, 5)
    assert p.q.batch_shape == (5,) and p.q.event_shape == (d,) and p.prior.event_shape == (d,)


def test_the_chain_density_is_the_product_of_its_conditionals():
    hvae, x = _hvae(), torch.bernoulli(torch.full((4, 6), 0.5))
    q, p = hvae.encode(x), hvae.prior()
    z = torch.randn(3, 4, 5)
    z1, z2 = z[..., :3], z[..., 3:]
    assert torch.allclose(q.log_prob(z), hvae.bottom_up(x).log_prob(z1) + hvae.top_up(z1).log_prob(z2))
    assert torch.allclose(p.log_prob(z), p.root.log_prob(z2) + hvae.prior.conditional(z2).log_prob(z1))
    torch.manual_seed(3)
    drawn, log_q = q.rsample_and_log_prob((2,))
    torch.manual_seed(3)
    assert torch.equal(drawn, q.rsample((2,))) and torch.allclose(log_q, q.log_prob(drawn))


def test_a_chain_broadcasts_like_a_distribution():
    """The mutual information evaluates each q(z | x_m) at all draws: ``[S, B, 1, D]`` against batch ``[M]``."""
    hvae = _hvae()
    q = hvae.encode(torch.bernoulli(torch.full((4, 6), 0.5)))
    z = torch.randn(2, 3, 1, 5)
    each = [Chain(_row(q, m), q.conditional, q.sizes, root_first=True).log_prob(z[:, :, 0]) for m in range(4)]
    assert q.log_prob(z).shape == (2, 3, 4) and torch.allclose(q.log_prob(z), torch.stack(each, -1), atol=1e-6)


def _row(q, m):
    """q(z | x_m) alone, from the chain of a batch."""
    return DiagonalNormal(q.root.base_dist.loc[m], q.root.base_dist.scale[m])


@pytest.mark.parametrize("prior", ["standard", "mog:3", "vamp:3"])
@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg", "score"])
def test_every_estimator_reaches_every_parameter(prior, estimator):
    hvae, x = _hvae(prior), torch.bernoulli(torch.full((5, 6), 0.5))
    objective = IWAE(estimator=estimator)
    objective(hvae(x, 3, reparameterize=objective.reparameterize, stop_q=objective.stop_q)).loss.backward()
    for name, parameter in hvae.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_every_bound_takes_its_particles():
    hvae, x = _hvae("vamp:4"), torch.bernoulli(torch.full((5, 6), 0.5))
    p = hvae(x, 6)
    for objective in (ELBO(), IWAE(), RenyiBound(0.5)):
        assert objective(p).value.shape == (5,)
    assert torch.allclose(ELBO(analytic_kl=True)(p).kl, (p.log_q - p.log_prior).mean(0))


def test_generation_and_reconstruction_shapes_and_reproducible_samples():
    hvae, x = _hvae("mog:3", latent_dim=2), torch.bernoulli(torch.full((4, 6), 0.5))
    a = hvae.sample(9, torch.Generator().manual_seed(0))
    assert a.shape == (9, 6) and torch.equal(a, hvae.sample(9, torch.Generator().manual_seed(0)))
    assert hvae.reconstruct(x).shape == (4, 6) and hvae.interpolate(x[0], x[1], steps=5).shape == (5, 6)
    assert hvae.manifold(3).shape == (3, 3, 6)
    with pytest.raises(ElboxError, match="2-D z1"):
        _hvae().manifold(3)


def test_the_default_top_layer_is_half_the_bottom_as_in_burda():
    config = VAEConfig(data_dim=784, latent_dim=100, hidden=(200, 200), model="hvae", likelihood="bernoulli")
    assert config.top_latent_dim == 50 and config.top_hidden == (100, 100)
    hvae = build_model(config)
    widths = lambda net: [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert widths(hvae.bottom_up) == [200, 200, 2 * 100]  # q(z1 | x): a location and a scale each
    assert widths(hvae.top_up) == [100, 100, 2 * 50]  # q(z2 | z1)
    assert widths(hvae.prior.conditional) == [100, 100, 2 * 100]  # p(z1 | z2)
    assert widths(hvae.decoder) == [200, 200, 784]  # p(x | z1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "ladder"}, "model must be one of"),
        ({"model": "hvae", "family": "iaf"}, "--family diagonal"),
        ({"top_latent_dim": 5}, "--model hvae"),
        ({"model": "hvae", "top_latent_dim": 0}, "positive"),
    ],
)
def test_bad_hvae_options_are_refused(options, message):
    with pytest.raises(ElboxError, match=message):
        VAEConfig(**options)


def test_free_bits_are_refused_for_the_hvae_and_learned_priors():
    from elbox.train import TrainConfig

    for model in ({"model": "hvae"}, {"prior": "mog"}):
        with pytest.raises(ElboxError, match="free bits"):
            TrainConfig.from_dict({"free_bits": 0.5, "model": model})


# ----------------------------------------------------------------- runs


@pytest.mark.slow
def test_a_trained_hvae_with_a_vamp_prior_loads_back_the_same(tmp_path):
    run = elbox.train(data="digits", epochs=2, hidden=(16,), latent_dim=4, model="hvae", prior="vamp:5",
                      out=str(tmp_path / "run"), progress=False)  # fmt: skip
    assert run.summary["epochs"] == 2 and math.isfinite(run.summary["test"]["elbo"])
    again = load_run(run.path)
    assert isinstance(again.model, HierarchicalVAE) and again.model.config == run.model.config
    assert again.config.model.model == "hvae" and again.config.model.prior == "vamp:5"
    x = run.model.reconstruct(torch.zeros(1, 64)).new_full((3, 64), 0.5)
    torch.manual_seed(1)
    expected = run.model.log_weights(x, 4)
    torch.manual_seed(1)
    assert torch.equal(again.model.log_weights(x, 4), expected)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    assert torch.equal(again.model.sample(5, g()), run.model.sample(5, g()))
    assert (run.path / "figures" / "samples.png").is_file()
    e = evaluate(again, k=20, gap_points=0, mi_points=30, khat=False)
    assert math.isfinite(e.to_dict()["log_px"]["mean"])


def test_the_evaluation_explains_that_the_gap_split_needs_one_family():
    hvae, x = _hvae(), torch.bernoulli(torch.full((6, 6), 0.5))
    assert evaluate(hvae, x, k=10, gap_points=0, mi_points=6, khat=False).active_units <= 5
    with pytest.raises(ElboxError, match=r"HierarchicalVAE is not one\. Use gap_points=0"):
        inference_gaps(hvae, x, gap_points=2)
    e = evaluate(hvae, x, k=10, gap_points=2, mi_points=6, khat=False)  # the rest is evaluated, and the skip said
    assert e.gaps is None and any("gap split was skipped" in w and "HierarchicalVAE" in w for w in e.warnings)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "hvae", "--family", "iaf"], "--family diagonal"),
        (["--top-latent-dim", "3"], "--model hvae"),
        (["--prior", "vamp:x"], "must be a whole number of at least 1, got 'x'"),
    ],
)
def test_the_command_line_reaches_the_options(tmp_path, capsys, flags, message):
    code, _, err = run_cli(capsys, "train", *flags, "--out", tmp_path / "r", "--no-progress")
    assert code == 2 and message in " ".join(err.split()) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_the_hvae_takes_every_likelihood(likelihood):
    """The decoder is sized by the likelihood's outputs per dimension; VampPrior inputs follow the data's range."""
    hvae = _hvae("vamp:3", likelihood=likelihood, levels=4)
    x = torch.randint(0, 5, (5, 6)).float() / 4  # grey levels k / 4: in every likelihood's support
    assert hvae.log_weights(x, 3).shape == (3, 5) and hvae.sample(2).shape == (2, 6)
    assert hvae.prior.top.bounded == (likelihood not in UNBOUNDED)
