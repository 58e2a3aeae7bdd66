"""bayes.model: the map from named, constrained parameters to R^d, its log |det J|, and the checks on user input."""

import math

import pytest
import torch
from torch.distributions import Gamma, Normal, constraints

from elbox.bayes import Model, Param, ordered, positive_ordered
from elbox.errors import ElboxError

SUPPORTS = [
    (Param(3), lambda x: True),
    (Param(2, support=constraints.positive), lambda x: (x > 0).all()),
    (Param(support=constraints.unit_interval), lambda x: ((x > 0) & (x < 1)).all()),
    (Param(2, support=constraints.interval(-1.0, 3.0)), lambda x: ((x > -1) & (x < 3)).all()),
    (Param(3, support=constraints.simplex), lambda x: torch.allclose(x.sum(-1), torch.ones(()).double())),
    (Param(4, support=ordered), lambda x: (x.diff(dim=-1) > 0).all()),
    (Param(3, support=positive_ordered), lambda x: (x.diff(dim=-1) > 0).all() and (x > 0).all()),
]


def _model(param):
    return Model({"x": param, "m": Param()}, lambda p: p["m"] * 0)


@pytest.mark.parametrize(("param", "inside"), SUPPORTS)
def test_every_point_of_r_d_maps_into_the_support_and_back(param, inside):
    model = _model(param)
    u = 2 * torch.randn(5, model.dim, dtype=torch.float64)
    params, ladj = model.constrain(u)
    assert params["x"].shape == (5, *param.shape) and params["m"].shape == (5,) and ladj.shape == (5,)
    assert inside(params["x"])
    assert torch.allclose(model.unconstrain(params), u, atol=1e-8)


@pytest.mark.parametrize(("param", "inside"), [s for s in SUPPORTS if s[0].free_shape == s[0].shape])
def test_log_det_jacobian_equals_autograds(param, inside):
    """For the square maps, log |det J| from the transforms equals the log-determinant of autograd's Jacobian."""
    model = Model({"x": param}, lambda p: p["x"].sum(-1))
    u = torch.randn(model.dim, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: model.constrain(v[None])[0]["x"].reshape(-1), u)
    assert torch.allclose(model.constrain(u[None])[1][0], torch.linalg.slogdet(jacobian)[1], atol=1e-10)


def test_the_density_of_u_integrates_to_one():
    """With a Gamma prior on a positive parameter, exp(log p(u)) over u = log theta is a density: log |det J| is in.
    Without it the integral is E[1 / theta] = rate / (shape - 1) = 3 for Gamma(2, 3), not 1 (for Gamma(3, 2) it
    would be 1 either way, and the test blind)."""
    model = Model({"s": Param(support=constraints.positive)}, lambda p: Gamma(2.0, 3.0).log_prob(p["s"]))
    u = torch.linspace(-12, 6, 20001, dtype=torch.float64)[:, None]
    density = model.log_density(u, {}).exp()
    assert math.isclose(torch.trapezoid(density, u[:, 0]).item(), 1.0, rel_tol=1e-6)


def test_the_likelihood_sums_per_observation_terms_and_scales_them():
    model = Model({"mu": Param()}, lambda p: Normal(0.0, 1.0).log_prob(p["mu"]),
                  lambda p, d: Normal(p["mu"][:, None], 1.0).log_prob(d["y"]), observed=("y",))  # fmt: skip
    data, n = model.prepare({"y": [0.5, 1.0, -1.0]})
    assert n == 3 and data["y"].dtype == torch.float64
    mu = {"mu": torch.tensor([0.2], dtype=torch.float64)}
    prior, lik = model.log_parts(mu, data, scale=2.0)
    expected = 2 * Normal(0.2, 1.0).log_prob(torch.tensor([0.5, 1.0, -1.0])).sum()
    assert torch.allclose(lik, expected.double()) and torch.allclose(model.log_joint(mu, data, scale=2.0), prior + lik)


def test_names_cover_every_scalar_coordinate_zero_based():
    model = Model({"a": Param(), "b": Param(2, 2)}, lambda p: p["a"])
    assert model.names() == ["a", "b[0,0]", "b[0,1]", "b[1,0]", "b[1,1]"] and model.dim == 5


def test_a_prior_of_the_wrong_shape_is_refused_with_the_fix():
    model = Model({"a": Param(3)}, lambda p: p["a"])  # forgot to sum over the parameter's dimension
    with pytest.raises(ElboxError, match=r"prior returned \(2, 3\) for K = 2 particles.*\[K\]"):
        model.log_density(torch.zeros(2, 3), {})


def test_bad_parameters_and_data_are_refused():
    with pytest.raises(ElboxError, match="Param"):
        Model({"a": 3}, lambda p: p["a"])
    with pytest.raises(ElboxError, match="shape"):
        Param(0)
    model = Model({"a": Param()}, lambda p: p["a"], lambda p, d: p["a"], observed=("x", "y"))
    with pytest.raises(ElboxError, match="lengths differ"):
        model.prepare({"x": [1.0, 2.0], "y": [1.0]})
    with pytest.raises(ElboxError, match=r"\['y'\] are not in the data"):
        model.prepare({"x": [1.0]})
