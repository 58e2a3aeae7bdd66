"""Where a fit on large data starts: the mode and Hessian found on a subsample, the mode polished on all rows.

``laplace.find_start`` climbs on all N rows and takes d backward passes over them for the
Hessian: at N = 10^6 and d = 1,022 (a thousand group intercepts) that is minutes. Here, with
m rows J drawn at random and the likelihood scaled by N/m,

    f_J(u) = -log p(u) - (N/m) sum_{j in J} log p(x_j | theta(u)),     u_J = argmin f_J,  H = hess f_J(u_J)

(L-BFGS and the Hessian on m rows), then Newton steps u <- u - H^-1 grad f(u) with the gradient
of all N rows (one pass each) until the Newton decrement sqrt(g H^-1 g), the distance to the
full-data mode in posterior sds, is below 0.01 (or 10 steps). H is off by O(1/sqrt(rows per
parameter)); it only sets the fit's coordinates (``affine``), whose optimum does not depend on
them, and the Newton steps still converge to the full-data mode, only linearly. Under ``shard``
every process takes m rows of its own rows (N/m its shard's) and the sums are over processes.
"""

import math

import torch
from torch import Tensor

from ..distributed import world
from .laplace import Start, _lbfgs, plain
from .model import Model

__all__ = ["HESSIAN_ROWS", "find_start_at_scale"]

HESSIAN_ROWS = 20_000  # rows for the subsample's mode and Hessian: seconds for d ~ 1,000


def find_start_at_scale(
    model: Model, data: dict, *, rows: int = HESSIAN_ROWS, seed: int = 0, dtype: torch.dtype = torch.float64,
    max_iter: int = 500, newton_steps: int = 10,
) -> Start:  # fmt: skip
    """The mode of log p(u, x) on all rows and the Hessian there estimated from ``rows`` of them (or a plain start)."""
    data, n = model.prepare(data, dtype)
    if n is None or rows >= n:
        from .laplace import find_start

        return find_start(model, data, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=generator)[:rows] if n < 20 * rows else torch.randint(n, (rows,),
                                                                                              generator=generator)
    sub = data | {key: data[key][index] for key in model.observed}

    def f_sub(u: Tensor) -> Tensor:
        return -model.log_density(u[None], sub, scale=n / rows)[0]

    def f_all(u: Tensor) -> Tensor:
        return -model.log_density(u[None], data)[0]

    try:
        u = _lbfgs(f_sub, torch.zeros(model.dim, dtype=dtype), max_iter)
        # vmap over a collective (``shard``'s all-reduce in the backward) is not supported: column by column there
        h = torch.autograd.functional.hessian(f_sub, u, vectorize=world().size == 1)
        h = (h + h.T) / 2
        chol = torch.linalg.cholesky(h)
        decrement = math.inf
        for _ in range(newton_steps):
            x = u.detach().requires_grad_()
            g = torch.autograd.grad(f_all(x), x)[0]
            step = torch.cholesky_solve(g[:, None], chol)[:, 0]
            decrement = math.sqrt(max(float(g @ step), 0.0))
            u = u - step
            if decrement < 0.01:
                break
    except (RuntimeError, ValueError) as e:  # no mode on the subsample, a Hessian that is not positive definite
        return plain(model.dim, dtype, f"the subsampled search for a mode failed ({str(e).splitlines()[0][:80]})")
    return Start(u.detach(), h.detach(), "mode", f"mode on all {n} rows ({decrement:.3f} sds after Newton steps); "
                 f"Hessian from {rows} of them")  # fmt: skip
