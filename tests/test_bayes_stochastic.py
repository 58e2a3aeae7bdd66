"""bayes.stochastic: the sticking-the-landing gradient of a coupling flow from the score carried along its
draws (``families.draw_stopped``) is the one through the stopped flow's inverse pass."""

import pytest
import torch

from elbox.bayes import eight_schools
from elbox.bayes.affine import AffineFlowNormal, place
from elbox.bayes.references import EIGHT_SCHOOLS
from elbox.bayes.stochastic import Stepper, default_objective
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
    """The step's value and gradient, with the score along the draw or, without it, the frozen inverse pass."""
    monkeypatch.setattr(stepper.family.flow, "scores", scored)
    stepper.family.zero_grad()
    torch.manual_seed(1)
    bound = stepper(16, data, 1.0)
    bound.loss.backward()
    return bound.value.item(), torch.cat([p.grad.reshape(-1) for p in stepper.family.parameters()])


def test_a_flows_sticking_the_landing_gradient_from_its_score_is_the_one_through_its_inverse(monkeypatch):
    """The same draws, the same objective value, the same gradient to 1e-10 of its largest entry; and the
    gradient is not the plain reparameterization one (which the score would give if it were left out)."""
    stepper, data = _flow_stepper()
    assert isinstance(stepper.q(), AffineFlowNormal) and stepper.q().scores
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
        assert q.scores is expected, name


def test_a_warmup_raises_the_learning_rate_linearly_then_leaves_it_to_the_decays(monkeypatch):
    """Convergence(warmup=W): the rate at step s < W is lr (s + 1) / W, then lr until a window test decays it."""
    from elbox.bayes import Convergence, fit, fitting
    from elbox.errors import ElboxError

    rates = []

    class Recording(fitting.Adam):
        def step(self) -> None:
            rates.append(self.param_groups[0]["lr"])
            super().step()

    monkeypatch.setattr(fitting, "Adam", Recording)
    convergence = Convergence(window=10, warmup=4)
    fit(eight_schools(), EIGHT_SCHOOLS, family="diagonal", optimizer="adam", lr=0.02, steps=12, convergence=convergence,
        progress=False)  # fmt: skip
    assert rates == pytest.approx([0.005, 0.01, 0.015, 0.02] + [0.02] * 8)
    for bad in (dict(warmup=-1), dict(window=10, warmup=20)):
        with pytest.raises(ElboxError, match="warmup"):
            Convergence(**bad)
