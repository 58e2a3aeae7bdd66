"""L-BFGS with a strong-Wolfe line search, over one flat parameter vector.

Minimises f: R^P -> R given f and its gradient (Nocedal & Wright 2006, algorithms 7.4 and 7.5):
from the last ``history`` steps s_i = x_{i+1} - x_i and gradient changes y_i = g_{i+1} - g_i,
the two-loop recursion gives the quasi-Newton direction d = -H g without forming H [P, P],
with H_0 = (s^T y / y^T y) I; a step length t satisfying the strong Wolfe conditions
(``torch.optim.lbfgs._strong_wolfe``, cubic interpolation) moves x to x + t d.

This is ``torch.optim.LBFGS``'s algorithm, iteration for iteration (the same memory update,
first step, line search and stopping tests; ``tests/test_lbfgs.py`` checks that both give the same
iterates), without ``torch.optim.Optimizer``: constructing any torch optimiser imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped by ``torch._disable_dynamo``), which
costs 0.6-0.8 s, a quarter of a whole ``elbox fit`` on a small model. The line search is torch's own.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim.lbfgs import _strong_wolfe

__all__ = ["Minimum", "minimize"]

Objective = Callable[[Tensor], tuple[float, Tensor]]  # x [P] -> (f(x), grad f(x) [P])


@dataclass
class Minimum:
    """Where ``minimize`` stopped: x ``[P]``, f(x), grad f(x) ``[P]``, its iterations, its evaluations
    of f (line-search trials included) and why it stopped."""

    x: Tensor
    f: float
    grad: Tensor
    iterations: int
    evaluations: int
    reason: str

    @property
    def at_once(self) -> bool:
        """Whether the start already met the gradient test (no iteration ran)."""
        return self.evaluations == 1


@torch.no_grad()
def minimize(
    fun: Objective, x0: Tensor, *, max_iter: int = 100, history: int = 100, lr: float = 1.0,
    tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, max_eval: int | None = None,
) -> Minimum:  # fmt: skip
    """Minimise ``fun`` from ``x0`` ``[P]`` (not modified); the arguments mean what they mean for
    ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``, whose defaults they share but for ``history``.
    ``fun`` is called with gradients enabled and must not keep ``x``."""
    max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
    x = x0.detach().clone()

    def evaluate(at: Tensor) -> tuple[float, Tensor]:
        with torch.enable_grad():
            f, g = fun(at)
        return float(f), g.detach()

    loss, grad = evaluate(x)
    evals = 1
    if grad.abs().max() <= tolerance_grad:
        return Minimum(x, loss, grad, 0, evals, f"every gradient entry is below {tolerance_grad}")
    old_y: list[Tensor] = []
    old_s: list[Tensor] = []
    rho: list[Tensor] = []
    d, t, h_diag = -grad, 1.0, 1.0
    prev_grad = grad.clone()
    reason, n_iter = f"the iteration cap ({max_iter}) was reached", 0
    while n_iter < max_iter:
        n_iter += 1
        if n_iter == 1:
            d = -grad
        else:
            y, s = grad - prev_grad, d * t
            ys = y.dot(s)
            if ys > 1e-10:  # curvature condition: the pair keeps H positive definite
                if len(old_y) == history:  # forget the oldest pair
                    del old_y[0], old_s[0], rho[0]
                old_y.append(y)
                old_s.append(s)
                rho.append(1.0 / ys)
                h_diag = ys / y.dot(y)
            q, alpha = -grad, [None] * len(old_y)
            for i in range(len(old_y) - 1, -1, -1):
                alpha[i] = old_s[i].dot(q) * rho[i]
                q = q - alpha[i] * old_y[i]
            d = q * h_diag
            for i in range(len(old_y)):
                beta = old_y[i].dot(d) * rho[i]
                d = d + (alpha[i] - beta) * old_s[i]
        prev_grad, prev_loss = grad.clone(), loss
        t = min(1.0, 1.0 / float(grad.abs().sum())) * lr if n_iter == 1 else lr
        gtd = grad.dot(d)
        if gtd > -tolerance_change:
            reason = "no descent direction is left (directional derivative above -tolerance_change)"
            break
        loss, grad, t, ls_evals = _strong_wolfe(lambda x_, t_, d_: evaluate(x_ + t_ * d_), x, t, d, loss, grad, gtd,
                                                max_ls=max_eval - evals)  # fmt: skip
        x = x + t * d
        evals += ls_evals
        if n_iter == max_iter:
            break
        if evals >= max_eval:
            reason = f"the evaluation cap ({max_eval}) was reached"
            break
        if grad.abs().max() <= tolerance_grad:
            reason = f"every gradient entry is below {tolerance_grad}"
            break
        if (d * t).abs().max() <= tolerance_change:
            reason = "the step is below tolerance_change"
            break
        if abs(loss - prev_loss) < tolerance_change:
            reason = "the objective changed by less than tolerance_change"
            break
    return Minimum(x, loss, grad, n_iter, evals, reason)
