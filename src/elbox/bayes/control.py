"""Minibatch log-likelihoods with a control variate: the difference estimator inside the fit.

A minibatch of B of N rows scaled by N/B estimates sum_i l_i(theta) with a standard error of
about sqrt(N/B) posterior sds in its gradient (14 at N = 10^5, B = 500): Adam then takes
thousands of steps to average it away, and stops with means 0.25 sd off (measured). With an
anchor theta* (the mode, from the start) and one pass over all rows for L* = sum_i l_i(theta*)
and G = sum_i grad l_i(theta*), each row's term becomes

    t_j(theta) = [l_j(theta) - l_j(theta*) - g_j . (theta - theta*)] + (L* + G . (theta - theta*)) / N

whose sum over all rows is exactly sum_i l_i(theta), and whose scaled minibatch sum keeps only
the noise of the bracket, second order in theta - theta* (Baker, Fearnhead, Fox & Nemeth 2019,
control variates for stochastic gradients; the same estimator as ``subsample``'s verdict).
g_j . (theta - theta*) is a forward difference along theta - theta* from the stored l_j(theta*),
a step of sqrt(eps) of it (1.5e-8 in float64: the supports are convex, so the point lies in them).
Its error, h (theta - theta*)' H_j (theta - theta*) / 2 per row, pulls the optimum towards the
anchor by a fraction h of the distance, and the rounding error is about sqrt(eps) |l_j| a row; a
central difference (two evaluations, as before) cost a third more time per step for nothing a
float64 fit can see. A step costs two likelihood evaluations on the minibatch instead of one.
Under ``shard`` each process anchors its own rows.
"""

from typing import Any

import torch
from torch import Tensor

from .model import Model

__all__ = ["ANCHOR", "with_control_variate"]

ANCHOR = "_elbox_anchor_loglik"  # the data item holding l_i(theta*) per row (drawn with the minibatch)
ROW_CHUNK = 2**18


def _anchor(model: Model, data: dict, n: int, u_star: Tensor) -> tuple[dict[str, Tensor], Tensor, float, dict]:
    """theta* ``{name: [1, *shape]}``, l_i(theta*) ``[N]``, L* and G ``{name: [1, *shape]}``, in chunks of rows."""
    params = {k: v.detach() for k, v in model.constrain(u_star[None].detach())[0].items()}
    per_row, total, grad = [], 0.0, {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, n, ROW_CHUNK):
        chunk = data | {key: data[key][start : start + ROW_CHUNK] for key in model.observed}
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        values = model.likelihood(leaves, chunk).reshape(-1)  # [rows]
        for k, g in zip(leaves, torch.autograd.grad(values.sum(), list(leaves.values())), strict=True):
            grad[k] += g
        per_row.append(values.detach())
        total += float(values.detach().sum())
    return params, torch.cat(per_row), total, grad


def with_control_variate(model: Model, data: dict, u_star: Tensor) -> tuple[Model, dict]:
    """``model`` with the module's per-row terms t_j and ``data`` with l_j(theta*) beside the rows; the
    same log density on all rows (up to rounding), a quieter one on minibatches."""
    data, n = model.prepare(data, u_star.dtype)
    star, per_row, total, grad = _anchor(model, data, n, u_star)
    base = model.likelihood
    step = torch.finfo(u_star.dtype).eps ** 0.5

    def likelihood(p: dict[str, Tensor], d: dict[str, Any]) -> Tensor:
        delta = {k: p[k] - star[k] for k in star}  # [K, *shape]
        ahead = base({k: star[k] + step * delta[k] for k in star}, d)
        slope = (ahead - d[ANCHOR]) / step  # g_j . (theta - theta*): [K, B]
        linear = total + sum((grad[k] * delta[k]).reshape(delta[k].shape[0], -1).sum(-1) for k in star)  # [K]
        return base(p, d) - d[ANCHOR] - slope + linear[:, None] / n

    wrapped = Model(model.params, model.prior, likelihood, observed=(*model.observed, ANCHOR),
                    transformed=model.transformed, name=model.name)  # fmt: skip
    return wrapped, data | {ANCHOR: per_row}
