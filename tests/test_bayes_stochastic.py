"""bayes.stochastic: the sticking-the-landing gradient of a coupling flow from the score carried along its
draws is the one through the stopped flow's inverse pass, and the stopped q it stands on answers at its draws only."""

import pytest
import torch

from elbox.bayes import eight_schools
from elbox.bayes import stochastic as st
from elbox.bayes.affine import AffineFlowNormal, place
from elbox.bayes.references import EIGHT_SCHOOLS
from elbox.bayes.stochastic import Stepper, StoppedAtDraws, default_objective
from elbox.families import make_family


def _flow_stepper(family="realnvp:4"):
    torch.manual_seed(0)
    model = eight_schools()
    data, _ = model.prepare(EIGHT_SCHOOLS, torch.float64)
    flow = make_family(family, model.dim).double()
    with torch.no_grad():  # away from the identity, where the score's every term matters
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    shift = torch.randn(model.dim, dtype=torch.float64)
    tril = torch.linalg.cholesky(0.5 * torch.eye(model.dim, dtype=torch.float64) + 0.1)
    return Stepper(model, flow, shift, tril, default_objective(family)), data


def _gradient(stepper, data, scored, monkeypatch):
    monkeypatch.setattr(st, "_scores", st._scores if scored else lambda q: False)
    stepper.family.zero_grad()
    torch.manual_seed(1)
    bound = stepper(16, data, 1.0)
    bound.loss.backward()
    return bound.value.item(), torch.cat([p.grad.reshape(-1) for p in stepper.family.parameters()])


def test_a_flows_sticking_the_landing_gradient_from_its_score_is_the_one_through_its_inverse(monkeypatch):
    """The same draws, the same objective value, the same gradient to 1e-10 of its largest entry; and the
    gradient is not the plain reparameterization one (which the score would give if it were left out)."""
    stepper, data = _flow_stepper()
    assert isinstance(stepper.q(), AffineFlowNormal) and st._scores(stepper.q())
    value, scored = _gradient(stepper, data, True, monkeypatch)
    value_inverse, inverse = _gradient(stepper, data, False, monkeypatch)
    assert value == pytest.approx(value_inverse, abs=1e-10)
    assert torch.allclose(scored, inverse, rtol=0, atol=1e-10 * inverse.abs().max().item())
    stepper.objective = default_objective("iaf")  # the plain reparameterization gradient
    _, plain = _gradient(stepper, data, False, monkeypatch)
    assert not torch.allclose(plain, inverse, rtol=0, atol=1e-3 * inverse.abs().max().item())


def test_only_realnvp_draws_with_a_score():
    """The other flows keep the inverse pass (an IAF's would take D passes)."""
    for name, expected in (("realnvp:2", True), ("maf:2", False), ("iaf:2", False)):
        q = place(make_family(name, 4).double()(), torch.zeros(4, dtype=torch.float64), torch.eye(4).double())
        assert st._scores(q) is expected, name


def test_the_stopped_q_at_its_draws_has_the_value_and_the_score_and_no_other_point():
    z = torch.randn(5, 1, 3, dtype=torch.float64, requires_grad=True)
    value, score = torch.randn(5, 1, dtype=torch.float64), torch.randn(5, 1, 3, dtype=torch.float64)
    stopped = StoppedAtDraws(z, value, score)
    log_q = stopped.log_prob(z)
    assert torch.equal(log_q.detach(), value)
    (grad,) = torch.autograd.grad(log_q.sum(), z)
    assert torch.equal(grad, score)
    with pytest.raises(ValueError, match="its own draws"):
        stopped.log_prob(z.detach().clone())
