"""lbfgs: torch.optim.LBFGS's iterates (strong-Wolfe line search) on a flat vector, without torch.optim.Optimizer."""

import pytest
import torch

from elbox.lbfgs import minimize


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_()
    f = rosenbrock(x)
    return f.item(), torch.autograd.grad(f, x)[0]


def torch_lbfgs(x0: torch.Tensor, **options) -> tuple[torch.Tensor, int, int]:
    x = x0.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([x], line_search_fn="strong_wolfe", **options)

    def closure():
        optimizer.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    state = optimizer.state[x]
    return x.detach(), state["n_iter"], state["func_evals"]


@pytest.mark.parametrize("max_iter, history", [(5, 100), (40, 3), (500, 10)])
def test_the_same_iterates_as_torch_optim_lbfgs(max_iter, history):
    """Same memory update, first step, line search and stopping tests: the same point, iterations and evaluations."""
    x0 = torch.tensor([-1.2, 1.0, -0.5, 0.8, 2.0], dtype=torch.float64)
    options = dict(max_iter=max_iter, history_size=history, tolerance_grad=1e-10, tolerance_change=1e-14)
    expected, iterations, evaluations = torch_lbfgs(x0, **options)
    found = minimize(value_and_grad, x0, max_iter=max_iter, history=history, tolerance_grad=1e-10,
                     tolerance_change=1e-14)  # fmt: skip
    assert torch.allclose(found.x, expected, rtol=0, atol=1e-12)
    assert (found.iterations, found.evaluations) == (iterations, evaluations)
    assert found.x is not x0 and x0[0] == -1.2  # the start is left alone


def test_it_reaches_the_minimum_and_says_why_it_stopped():
    found = minimize(value_and_grad, torch.zeros(4, dtype=torch.float64), max_iter=1000, tolerance_grad=1e-9)
    assert torch.allclose(found.x, torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert found.f < 1e-10 and found.reason
    at_min = minimize(value_and_grad, torch.ones(3, dtype=torch.float64))
    assert at_min.at_once and at_min.iterations == 0
