"""A Bayesian model whose observations are sharded over ``torchrun`` processes: each sums its own rows.

Under ``torchrun --nproc_per_node=P`` (gloo on CPU, NCCL on GPUs; ``elbox.distributed.init``),
rank r holds the contiguous block of rows [r N / P, (r + 1) N / P) of the observed arrays
(``shard_data``; a memory-mapped file is read only there). ``ShardedModel`` wraps a model so that
every log density it returns is the full-data one,

    log p(theta) + sum_r log p(x_r | theta)        # the sum over ranks by an all-reduce, [K]

and the gradient too: the parameters enter the likelihood through an identity whose backward
all-reduces their gradient, so each rank's graph gets sum_r d log p(x_r | theta) / d theta plus
the prior's gradient, counted once. Every rank draws the same particles (the same seed, and a
minibatch draw that takes as many random numbers whatever the shard's size), computes the same
objective and takes the same step: the fit, its start (L-BFGS, the Hessian) and its verdict run
unchanged in every process, in lock step, and rank 0 writes. With ``batch_size`` B each rank
draws B rows of its shard and scales them by its shard's size, so a step sees P x B rows.

Multi-node: the same command on every node, ``torchrun --nnodes=M --nproc_per_node=P
--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT -m elbox fit ...``; nothing assumes one machine.
"""

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import World, world
from .model import Model

__all__ = ["ShardedModel", "shard_data", "shard_rows"]


def shard_rows(n: int, w: World) -> slice:
    """Rank ``w.rank``'s contiguous block of n rows (sizes differ by at most one)."""
    return slice(w.rank * n // w.size, (w.rank + 1) * n // w.size)


def shard_data(model: Model, data: Mapping[str, Any], w: World | None = None) -> dict[str, Any]:
    """This rank's rows of the model's observed arrays (the rest of the data whole); unchanged in a world of one."""
    w = w or world()
    if w.size == 1 or not model.observed:
        return dict(data)
    n = len(data[model.observed[0]])
    rows = shard_rows(n, w)
    return dict(data) | {key: data[key][rows] for key in model.observed}


class _SumGradients(torch.autograd.Function):
    """Identity forward; backward all-reduces (sums) the gradients over ranks, in one call."""

    @staticmethod
    def forward(ctx: Any, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.shapes = [t.shape for t in tensors]
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, ...]:
        flat = _sum_values(torch.cat([g.reshape(-1) for g in grads]))  # differentiable: Hessians come out right
        return tuple(part.view(shape) for part, shape in zip(flat.split([s.numel() for s in ctx.shapes]),
                                                               ctx.shapes, strict=True))  # fmt: skip


def _sum_values(local: Tensor) -> Tensor:
    """sum_r local_r on every rank; its gradient flows to this rank's own term only (``_SumGradients``
    carries the other ranks' to the parameters). Inside ``_SumGradients.backward`` the same form keeps
    second derivatives right: the Hessian's columns are summed over ranks by the same identity."""
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total - local.detach())


class ShardedModel(Model):
    """``model`` with its likelihood summed over the ranks' shards: the full-data log density on every rank.

    N (``prepare``) is this rank's rows; ``log_parts`` returns the prior and the likelihood of all
    the ranks' rows (each rank's shard scaled by the ``scale`` its own minibatch asks for).
    """

    def __init__(self, model: Model) -> None:
        super().__init__(model.params, model.prior, model.likelihood, observed=model.observed,
                         transformed=model.transformed, name=model.name)  # fmt: skip
        self.base = model

    def log_parts(self, params: dict[str, Tensor], data: dict, *, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        if world().size == 1 or self.likelihood is None:
            return super().log_parts(params, data, scale=scale)
        names = list(params)
        synced = dict(zip(names, _SumGradients.apply(*(params[k] for k in names)), strict=True))
        k = next(iter(params.values())).shape[0]
        log_prior = self._checked(self.prior(params), k, "prior")
        local = self._checked(self.likelihood(synced, data), k, "likelihood", per_observation=True)
        return log_prior, _sum_values(scale * local.reshape(k, -1).sum(-1))
