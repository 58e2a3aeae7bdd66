"""families: the contract every family keeps, its closed-form KL, and the bias each family carries."""

import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from elbox import VAE, TrainConfig, VAEConfig
from elbox.bayes import Model, Param, fit
from elbox.bayes.affine import PLACES
from elbox.bounds import ELBO, IWAE
from elbox.errors import ElboxError
from elbox.families import (
    FAMILIES,
    DiagonalNormal,
    Family,
    StoppedAtDraws,
    _inverse_positive,
    _positive,
    center,
    check_family_name,
    family_names,
    make_family,
    stop_gradient,
)
from elbox.priors import UnitNormal

NAMES = ["diagonal", "fullrank", "lowrank", "lowrank:2", "iaf:2", "maf:2", "nsf:2", "realnvp:2", "mixture:3"]
FLOWS = ["iaf:2", "maf:2", "nsf:2", "realnvp:2"]


@pytest.mark.parametrize("name", NAMES)
def test_amortized_and_global_forms_have_the_contracted_shapes(name):
    amortized = make_family(name, 3, [5, 8])
    q = amortized(torch.randn(4, 5))
    z = q.rsample((7,))
    assert q.batch_shape == (4,) and q.event_shape == (3,) and z.shape == (7, 4, 3)
    assert torch.isfinite(q.log_prob(z)).all()
    g = make_family(name, 3)()
    assert g.batch_shape == () and g.rsample((6,)).shape == (6, 3) and torch.isfinite(g.log_prob(g.rsample((6,)))).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_of_every_family_receives_a_gradient(name):
    for family, args in ((make_family(name, 3, [5, 8]), (torch.randn(4, 5),)), (make_family(name, 3), ())):
        q = family(*args)
        z = q.rsample((5,))
        (q.log_prob(z) + z.pow(2).sum(-1)).sum().backward()
        for n, p in family.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, n)


@pytest.mark.parametrize("name", NAMES)
def test_a_family_survives_a_state_dict_round_trip(name):
    a, b = make_family(name, 3, [5, 8]), make_family(name, 3, [5, 8])
    b.load_state_dict(a.state_dict())
    x, z = torch.randn(2, 5), torch.randn(4, 2, 3)
    assert torch.equal(a(x).log_prob(z), b(x).log_prob(z))


@pytest.mark.parametrize("name", NAMES)
def test_stop_gradient_keeps_the_density_and_passes_gradients_to_the_point_only(name):
    family = make_family(name, 3)
    q = family()
    z = q.rsample((4,)).detach().requires_grad_()
    stopped = stop_gradient(q).log_prob(z)
    assert torch.allclose(stopped, q.log_prob(z))
    stopped.sum().backward()
    assert z.grad is not None and all(p.grad is None for p in family.parameters())


def test_a_stopped_flow_follows_every_change_of_the_live_one():
    """The STL gradient's log q runs through a frozen copy of the flow: it must equal the live flow after
    each optimiser step and a change of dtype, and stay out of the family's parameters and state."""
    family = make_family("realnvp:2", 3)
    keys = set(family.state_dict())
    for _ in range(2):
        q = family()
        z = q.rsample((5,)).detach()
        torch.testing.assert_close(stop_gradient(q).log_prob(z), q.log_prob(z), rtol=0, atol=0)
        with torch.no_grad():
            for p in family.parameters():
                p.add_(0.1 * torch.randn_like(p))
    family = family.double()
    q = family()
    z = q.rsample((5,)).detach()
    torch.testing.assert_close(stop_gradient(q).log_prob(z), q.log_prob(z), rtol=0, atol=0)
    assert set(family.state_dict()) == keys and len(list(family.parameters())) == len(list(make_family(
        "realnvp:2", 3).parameters()))


@pytest.mark.parametrize("name", ["fullrank", "lowrank:2"])
def test_the_registered_kl_to_the_prior_equals_torchs_gaussian_formula(name):
    q = make_family(name, 4, [3, 8])(torch.randn(5, 3))
    general = kl_divergence(
        MultivariateNormal(q.mean, q.covariance_matrix), MultivariateNormal(torch.zeros(4), torch.eye(4))
    )
    assert torch.allclose(kl_divergence(q, UnitNormal(4)), general, atol=1e-5)


def _fit(name, target, steps=1500, k=256, lr=0.05, seed=0):
    """Maximise E_q[log target(z)] + H(q) over a global family: KL(q || target) down.

    STL gradients for closed-form families; a flow uses its fused log q along the draw (the
    plain reparameterization gradient), which avoids running an IAF backward.
    """
    torch.manual_seed(seed)
    family = make_family(name, target.event_shape[0])
    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / steps)
    for _ in range(steps):
        q = family()
        if hasattr(q, "rsample_and_log_prob"):
            z, log_q = q.rsample_and_log_prob((k,))
        else:
            z = q.rsample((k,))
            log_q = stop_gradient(q).log_prob(z)
        loss = -(target.log_prob(z) - log_q).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return family()


def _correlated_target():
    m = torch.tensor([1.0, -2.0, 0.5])
    s = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 2.0]])
    return MultivariateNormal(m, s), m, s


def test_the_full_rank_family_recovers_a_correlated_gaussian_exactly():
    target, m, s = _correlated_target()
    q = _fit("fullrank", target)
    assert torch.allclose(q.mean, m, atol=0.02) and torch.allclose(q.covariance_matrix, s, atol=0.03)


def test_the_diagonal_family_finds_the_mean_field_solution_and_underestimates_variances():
    """Mean-field VI on N(m, S) gives the exact mean and variances 1 / Lambda_ii, Lambda = S^-1,
    below the marginal variances S_ii whenever there is correlation (e.g. Bishop, PRML 10.1.2)."""
    target, m, s = _correlated_target()
    q = _fit("diagonal", target)
    mean_field = 1 / torch.linalg.inv(s).diagonal()
    assert torch.allclose(q.mean, m, atol=0.02)
    assert torch.allclose(q.variance, mean_field, rtol=0.03)
    assert (q.variance < s.diagonal()).all()  # every marginal variance underestimated


def test_richer_families_attain_a_tighter_elbo_on_the_correlated_target():
    target, _, _ = _correlated_target()
    gaps = {}
    for name in ("diagonal", "lowrank:1", "fullrank"):
        q = _fit(name, target, steps=800)
        cov = getattr(q, "covariance_matrix", None)
        cov = torch.diag_embed(q.variance) if cov is None else cov
        gaps[name] = kl_divergence(MultivariateNormal(q.mean, cov), target).item()  # exact
    assert gaps["fullrank"] < 1e-3 < gaps["lowrank:1"] < gaps["diagonal"]


@pytest.mark.parametrize("name", ["fullrank", "lowrank", "iaf:2", "nsf:2", "mixture:2"])
def test_a_vae_trains_with_each_family_and_estimator(name):
    vae = VAE(VAEConfig(data_dim=6, latent_dim=3, hidden=(8,), likelihood="bernoulli", family=name))
    x = torch.randint(0, 2, (4, 6)).float()
    for objective in (ELBO(), ELBO(estimator="stl"), ELBO(estimator="dreg"), ELBO(estimator="score")):
        o = objective
        bound = o(vae(x, 3, reparameterize=o.reparameterize, stop_q=o.stop_q))
        vae.zero_grad()
        bound.loss.backward()
        assert all(p.grad is not None for p in vae.encoder.parameters())
        assert torch.isfinite(bound.value).all()


def test_family_names_and_ranks_are_checked():
    with pytest.raises(ElboxError, match="unknown family"):
        VAEConfig(family="flowy")
    with pytest.raises(ValueError, match="rank"):
        make_family("lowrank:9", 3)
    with pytest.raises(ElboxError, match="must be a whole number of at least 1, got 'two'"):
        VAEConfig(family="lowrank:two")  # the family is known: its option is the problem
    with pytest.raises(ElboxError, match="must be a whole number of at least 1, got '0'"):
        VAEConfig(family="iaf:0")
    with pytest.raises(ValueError, match="2 dimensions"):
        make_family("realnvp", 1)
    with pytest.raises(ElboxError, match="factorizes over dimensions"):
        TrainConfig(free_bits=0.5, model=VAEConfig(family="iaf"))
    assert make_family("nsf:3", 2).transforms == 3 and make_family("mixture", 2).components == 4
    assert make_family("lowrank", 16).rank == 4 == round(math.sqrt(16))
    with pytest.raises(ValueError, match="global"):
        make_family("diagonal", 2)(torch.zeros(1, 2))


def _randomize(family):
    """Move every parameter off its near-identity start, so a flow is far from a Gaussian
    (yet keeps its mass within a few units of the origin)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in family.parameters():
            p.add_(0.15 * torch.randn_like(p))
    return family


@pytest.mark.parametrize("name", FLOWS)
def test_a_flow_starts_as_the_diagonal_gaussian(name):
    q, gaussian = make_family(name, 3)(), make_family("diagonal", 3)()
    z = torch.randn(10, 3)
    assert torch.allclose(q.log_prob(z), gaussian.log_prob(z), atol=0.05)


@pytest.mark.parametrize("name", FLOWS)
def test_a_flows_fused_log_density_equals_its_density_at_the_draw(name):
    q = _randomize(make_family(name, 3, [5, 8]).double())(torch.randn(4, 5, dtype=torch.float64))
    z, log_q = q.rsample_and_log_prob((6,))
    assert z.shape == (6, 4, 3) and log_q.shape == (6, 4)
    assert torch.allclose(q.log_prob(z), log_q, atol=1e-8)


@pytest.mark.parametrize("dim", [5, 6])
@pytest.mark.parametrize("context", [False, True])
def test_a_coupling_flow_is_zukos_both_ways_with_one_network_evaluation_per_step(dim, context):
    """realnvp's steps run as plain tensor operations (``flow._couplings``): zuko's numbers in both directions,
    with and without a context, odd and even D; backward (log q at a given point, which the sticking-the-landing
    gradient needs every step) with one evaluation of each step's network, where zuko's generic inverse takes two."""
    torch.manual_seed(0)
    family = _randomize(make_family("realnvp:4", dim, [3, 8] if context else None).double())
    flow, x = family.flow, torch.randn(7, dim, dtype=torch.float64)
    assert flow.couplings is not None
    h = family.encoder(torch.randn(7, 3, dtype=torch.float64))[:, 2 * dim :] if context else None
    calls = []
    networks = [m.hyper for m in flow.modules() if isinstance(getattr(m, "hyper", None), nn.Sequential)]
    hooks = [net.register_forward_hook(lambda *_: calls.append(1)) for net in networks]
    y, ladj = flow(x, h, True)
    back, ladj_back = flow(y, h, False)
    ours = len(calls)
    calls.clear()
    y_zuko, ladj_zuko = flow.steps(h).call_and_ladj(x)
    back_zuko, ladj_back_zuko = flow.steps(h).inv.call_and_ladj(y)
    for hook in hooks:
        hook.remove()
    assert torch.equal(y, y_zuko) and torch.equal(back, back_zuko)
    assert torch.allclose(ladj, ladj_zuko, rtol=0, atol=1e-12)
    assert torch.allclose(ladj_back, ladj_back_zuko, rtol=0, atol=1e-12)
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(ladj_back, -ladj, atol=1e-10)
    assert ours == 2 * len(networks) == 8 and len(calls) == 3 * len(networks)


@pytest.mark.parametrize("dim", [5, 6])
@pytest.mark.parametrize("context", [False, True])
def test_a_coupling_flows_score_along_the_draw_is_the_gradient_of_its_log_density(dim, context):
    """``rsample_with_score``: the draw, its log q, and grad_z log q(z) carried along the draw (no inverse pass),
    equal to autograd's gradient of ``log_prob`` at the draw, with and without a context, odd and even D."""
    torch.manual_seed(1)
    family = _randomize(make_family("realnvp:4", dim, [3, 8] if context else None).double())
    q = family(torch.randn(4, 3, dtype=torch.float64)) if context else family()
    assert family.flow.scores
    z, log_q, score = q.rsample_with_score((7,))
    at = z.detach().requires_grad_()
    expected = torch.autograd.grad(q.log_prob(at).sum(), at)[0]
    assert not score.requires_grad and score.shape == z.shape
    assert torch.allclose(score, expected, rtol=1e-9, atol=1e-9)
    assert torch.allclose(log_q, q.log_prob(z), atol=1e-10)


@pytest.mark.parametrize("name", ["diagonal", "fullrank", "sinharcsinh"])
def test_a_family_moved_by_given_base_draws_matches_its_draws_and_density(name):
    """``from_base(eps)`` (the fixed-draw fit's draws, ``bayes.saa``) is ``rsample`` with those random numbers,
    and its log q is ``log_prob`` at the draw."""
    q = _randomize(make_family(name, 3).double())()  # a correlated, shifted q
    torch.manual_seed(3)
    drawn = q.rsample((6,))
    torch.manual_seed(3)
    eps = torch.randn(6, 3, dtype=torch.float64)
    z, log_q = q.from_base(eps)
    assert torch.allclose(z, drawn, atol=1e-12)
    assert torch.allclose(log_q, q.log_prob(z), atol=1e-10)


def test_a_float64_flows_large_passes_without_gradients_run_its_networks_in_float32():
    """From ``FLOAT32_ROWS`` draws without gradients (a verdict's sets) the coupling networks run in float32: the
    numbers move by about float32's precision, and draws, log q and the inverse stay one flow, consistent to
    float64's; smaller or differentiated passes are float64 throughout."""
    from elbox.families.flow import FLOAT32_ROWS

    torch.manual_seed(2)
    flow = _randomize(make_family("realnvp:4", 5).double()).flow
    eps = torch.randn(FLOAT32_ROWS, 5, dtype=torch.float64)
    exact, exact_ladj = (t.detach() for t in flow(eps, None, True))
    with torch.no_grad():
        y, ladj = flow(eps, None, True)
        back, back_ladj = flow(y, None, False)
        small, _ = flow(eps[:10], None, True)
    assert (y - exact).abs().max() > 1e-9 and torch.allclose(small, exact[:10], rtol=0, atol=1e-12)
    assert torch.allclose(y, exact, rtol=1e-5, atol=1e-5) and torch.allclose(ladj, exact_ladj, rtol=1e-5, atol=1e-5)
    assert torch.allclose(back, eps, rtol=0, atol=1e-10) and torch.allclose(back_ladj, -ladj, rtol=0, atol=1e-10)


def test_the_stopped_q_at_its_draws_has_the_value_and_the_score_and_no_other_point():
    """``StoppedAtDraws``: log q's value, gradient the score to the draws (or a view of them), none elsewhere."""
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    value, score = torch.randn(5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    stopped = StoppedAtDraws(z, value, score)
    for at in (z, z[:, None]):
        log_q = stopped.log_prob(at)
        assert torch.equal(log_q.detach().reshape(-1), value)
        (grad,) = torch.autograd.grad(log_q.sum(), z)
        assert torch.equal(grad, score)
    with pytest.raises(ValueError, match="its own draws"):
        stopped.log_prob(z.detach().clone())


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_a_vae_with_a_coupling_flow_takes_its_stopped_log_q_from_the_score(estimator, monkeypatch):
    """A VAE with a realnvp encoder (a context per row): the STL and DReG gradients from the score along the draw
    (``draw_stopped``) are the ones through the frozen inverse pass, to 1e-10 of the largest entry."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_dim=6, latent_dim=4, hidden=(8,), likelihood="bernoulli", family="realnvp:2")).double()
    x = torch.randint(0, 2, (5, 6)).double()
    objective = ELBO(estimator=estimator) if estimator == "stl" else IWAE(estimator="dreg")
    grads = []
    for scored in (True, False):
        monkeypatch.setattr(vae.encoder.flow, "scores", scored)
        vae.zero_grad()
        torch.manual_seed(1)
        particles = vae(x, 3, stop_q=True)
        assert isinstance(particles.q_stopped, StoppedAtDraws) is scored
        objective(particles).loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in vae.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-10 * grads[1].abs().max().item())


@pytest.mark.parametrize("name", FLOWS)
def test_a_flows_log_determinant_is_that_of_its_autograd_jacobian(name):
    """log q(T(eps)) = log N(eps) - log |det dT/deps| for the whole map T: eps -> z."""
    q = _randomize(make_family(name, 3).double())()
    for eps in torch.randn(5, 3, dtype=torch.float64):

        def transform(e):
            return q.loc + q.scale * q.flow(e, q.context, True)[0]

        jacobian = torch.autograd.functional.jacobian(transform, eps)
        log_det = torch.linalg.slogdet(jacobian).logabsdet
        expected = Normal(0.0, 1.0).log_prob(eps).sum() - log_det
        assert torch.allclose(q.log_prob(transform(eps)), expected, atol=1e-8)
        _, ladj = q.flow(eps, q.context, True)
        assert torch.allclose(ladj + q.scale.log().sum(), log_det, atol=1e-8)


@pytest.mark.parametrize("name", [*FLOWS, "mixture:3"])
@pytest.mark.parametrize("dim", [1, 2])
def test_a_density_integrates_to_one(name, dim):
    """A Riemann sum over [-12, 12]^D on a grid of 2e-2 (1-D) or 6e-2 (2-D) spacing."""
    if name.startswith("realnvp") and dim == 1:
        pytest.skip("coupling needs two dimensions")
    q = _randomize(make_family(name, dim).double())()
    axis = torch.linspace(-12, 12, 1201 if dim == 1 else 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    with torch.no_grad():
        mass = q.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** dim
    assert abs(mass.item() - 1) < 0.01, mass


def test_mixture_draws_are_marginally_draws_from_the_mixture():
    """Systematic component choice with a random offset: one draw per element, or K stratified
    draws, both have the mixture's mean and variance (5 standard errors)."""
    torch.manual_seed(0)
    q = make_family("mixture:3", 2)()
    q_batch = make_family("mixture:3", 2, [1, 4])(torch.zeros(20000, 1))  # one q repeated
    for z, target in ((q.rsample((30000,)), q), (q_batch.rsample((1,))[0], q_batch)):
        mean, var = target.mean.reshape(-1, 2)[0], target.variance.reshape(-1, 2)[0]
        se = (var / z.shape[0]).sqrt()
        assert (z.mean(0) - mean).abs().lt(5 * se).all()
        assert torch.allclose(z.var(0), var, rtol=0.05)


def test_a_mixture_finds_both_modes_of_a_bimodal_target():
    """Target: 1/2 N(-3, 1/4) + 1/2 N(3, 1/4) per axis-1; a Gaussian can cover one mode only,
    which costs KL(q || p) = log 2 at best; a two-component mixture reaches about 0."""
    loc = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
    target = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2)), torch.distributions.Independent(Normal(loc, 0.5), 1)
    )
    gaps = {}
    for name in ("diagonal", "mixture:2"):
        q = _fit(name, target, steps=600)
        z = q.sample((20000,))
        gaps[name] = (q.log_prob(z) - target.log_prob(z)).mean().item()  # KL(q || target)
    assert gaps["mixture:2"] < 0.05 and gaps["diagonal"] > math.log(2) - 0.05


class Banana(torch.distributions.Distribution):
    """z1 ~ N(0, 1), z2 | z1 ~ N(z1^2 - 1 + 2 z1, 0.3^2): curved, and correlated (correlation
    0.81, worth about 0.5 nats to a full-rank Gaussian over a diagonal one); no Gaussian fits the curve. Normalized, so
    E_q[log p - log q] = -KL(q || p)."""

    arg_constraints = {}  # noqa: RUF012
    support = torch.distributions.constraints.real_vector

    def __init__(self):
        super().__init__(torch.Size(), torch.Size([2]), validate_args=False)

    def log_prob(self, z):
        z1, z2 = z[..., 0], z[..., 1]
        return Normal(0.0, 1.0).log_prob(z1) + Normal(z1**2 - 1 + 2 * z1, 0.3).log_prob(z2)


def test_on_a_banana_a_flow_beats_full_rank_which_beats_diagonal():
    """KL(q || banana) from 20,000 draws for three seeds each; the orderings hold with margins."""
    target, kls = Banana(), {}
    for name, lr in (("diagonal", 0.05), ("fullrank", 0.05), ("iaf:2", 0.01)):
        kls[name] = []
        for seed in range(3):
            q = _fit(name, target, steps=500, k=128, lr=lr, seed=seed)
            with torch.no_grad():
                z = q.rsample((20000,))
                kls[name].append((q.log_prob(z) - target.log_prob(z)).mean().item())
    assert max(kls["iaf:2"]) + 0.2 < min(kls["fullrank"]), kls
    assert max(kls["fullrank"]) + 0.2 < min(kls["diagonal"]), kls


@pytest.mark.parametrize("name", ["iaf:2", "mixture:2"])
def test_reconstructions_decode_the_center_of_q(name):
    vae = VAE(VAEConfig(data_dim=6, latent_dim=3, hidden=(8,), likelihood="bernoulli", family=name))
    x = torch.randint(0, 2, (4, 6)).float()
    assert torch.equal(vae.reconstruct(x), vae.decode(center(vae.encode(x))).mean)


# ------------------------------------------- torch's global state, and the tables as extension points

_GLOBAL_STATE_SCRIPT = """
import torch
from torch.distributions import Distribution, Normal
before = (Distribution.__dict__["_validate_args"], Distribution.__dict__["arg_constraints"])
import elbox
import elbox.bayes
from elbox.families import FAMILIES, make_family, stop_gradient
for name in FAMILIES:
    for family, args in ((make_family(name, 3), ()), (make_family(name, 3, [4, 8]), (torch.zeros(5, 4),))):
        q = family(*args)
        z = q.rsample((2,))
        stop_gradient(q).log_prob(z)
after = (Distribution.__dict__["_validate_args"], Distribution.__dict__["arg_constraints"])
assert after[0] is before[0] and after[1] is before[1], (before, after)
try:
    Normal(0.0, -1.0)
except ValueError:
    print("checks on")
"""


def test_elbox_leaves_torchs_argument_checks_as_they_were():
    """zuko switches torch's argument checks off for the whole program when imported; elbox
    imports it where a flow is built and puts them back. A fresh interpreter, so that this
    process's own imports cannot hide a change; warnings are errors there, as in pytest."""
    run = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", _GLOBAL_STATE_SCRIPT],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "checks on", run.stdout


class IsotropicNormal(Independent):
    """N(loc, s^2 I): ``loc`` ``[*B, D]``, ``scale`` ``[*B, 1]``."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Normal(loc, scale.expand_as(loc), validate_args=False), 1, validate_args=False)

    def stopped(self) -> "IsotropicNormal":
        return IsotropicNormal(self.base_dist.loc.detach(), self.base_dist.scale[..., :1].detach())


class ScaledIdentity(Family):
    """A new family in one class: q = N(mu, s^2 I), D + 1 raw parameters."""

    def num_params(self) -> int:
        return self.dim + 1

    def initial(self) -> Tensor:
        return torch.cat([torch.zeros(self.dim), torch.full((1,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> IsotropicNormal:
        loc, raw_scale = raw.split([self.dim, 1], dim=-1)
        return IsotropicNormal(loc, _positive(raw_scale, self.min_scale))


@pytest.fixture
def isotropic(monkeypatch):
    """The new family registered: one line in the family table, one in ``place``'s register."""
    monkeypatch.setitem(FAMILIES, "isotropic", ScaledIdentity)
    monkeypatch.setitem(PLACES, IsotropicNormal, lambda q, shift, scale: DiagonalNormal(
        shift + scale * q.base_dist.loc, scale * q.base_dist.scale))  # a diagonal S makes it diagonal


def test_a_new_family_is_one_class_and_one_table_line_for_a_vae(isotropic):
    assert "isotropic" in family_names() and check_family_name("isotropic") == ("isotropic", "")
    with pytest.raises(ValueError, match="takes no number after a colon"):
        check_family_name("isotropic:2")  # it declares no option
    torch.manual_seed(0)
    x = (torch.rand(64, 6) < 0.3).float()
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=[16], likelihood="bernoulli", family="isotropic"))
    assert isinstance(vae.encoder, ScaledIdentity)
    optimizer = torch.optim.Adam(vae.parameters(), lr=0.01)
    objective = ELBO(estimator="stl")  # log q through IsotropicNormal.stopped
    first = None
    for _ in range(300):
        bound = objective(vae(x, 2, stop_q=True))
        first = bound.value.mean().item() if first is None else first
        optimizer.zero_grad()
        (-bound.surrogate.mean()).backward()
        optimizer.step()
    q = vae.encoder(x)
    assert torch.equal(q.base_dist.scale[:, 0], q.base_dist.scale[:, 1])  # one scale for every axis
    # the ELBO of 64 points rises well beyond its noise (about 0.1 nats per point at this size)
    assert ELBO()(vae(x, 16)).value.mean().item() > first + 0.5


def test_a_new_family_fits_a_bayesian_model_through_one_place_register_line(isotropic):
    """Two independent normal means with the same data size: the posterior is N(m, s^2 I)
    itself, y_ij ~ N(mu_j, 1), mu_j ~ N(0, 10^2): mu_j | y ~ N(sum_i y_ij / (n + 0.01), 1 / (n + 0.01))."""
    y = torch.tensor([[1.3, -0.4], [0.2, -1.1], [2.1, 0.3], [0.9, -0.8], [1.7, -0.2]], dtype=torch.float64)
    model = Model({"mu": Param(2)}, lambda p: Normal(0.0, 10.0).log_prob(p["mu"]).sum(-1),
                  lambda p, d: Normal(p["mu"][:, None], 1.0).log_prob(d["y"]).sum((-2, -1)),
                  observed=("y",))  # fmt: skip
    posterior = fit(model, {"y": y}, family="isotropic", seed=0, progress=False)
    precision = len(y) + 0.01
    q = posterior.q()
    assert isinstance(posterior.family, ScaledIdentity) and isinstance(q, DiagonalNormal)
    sd = 1 / math.sqrt(precision)
    assert torch.allclose(q.mean, y.sum(0) / precision, atol=0.05 * sd)
    assert torch.allclose(q.variance, torch.full((2,), 1 / precision, dtype=torch.float64), rtol=0.03)
