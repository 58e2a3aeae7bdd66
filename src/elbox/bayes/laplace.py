"""Where a fit starts: the mode of log p(u, x) on R^d and the Hessian there (a Laplace approximation).

L-BFGS (``elbox.lbfgs``, with a strong-Wolfe line search) climbs to the mode of the
unconstrained log density; the negative Hessian H there gives the starting scale: H^-1 is
the Laplace covariance. A few Newton steps polish the mode, and the Newton decrement
sqrt(g^T H^-1 g), the distance to the mode in posterior standard deviations, says whether
there is one: when H is not positive definite, or the decrement stays above 1 (the density
keeps rising, as down the funnel of the centered eight-schools model, where log p grows
without bound as tau -> 0), there is no mode and the fit starts plainly at u = 0, scale 1.

N(mode, H^-1) is itself an answer (``fit(..., family="laplace")``, and the first one
``family="auto"`` puts through the verdict), and evidence about the VI families. Its best
mean-field approximation, argmin over diagonal Gaussians q of KL(q || N(m, H^-1)), is
q = N(m, diag(1 / H_ii)) (the diagonal of the precision, not of the covariance: Bishop,
PRML 10.1.2), at

    KL = 1/2 [tr(H D) - d + log det H^-1 - log det D] = 1/2 (sum_i log H_ii - log det H),   D = diag(1/H_ii),

and its sds are those of the Laplace Gaussian times r_i = (H_ii Sigma_ii)^(-1/2) <= 1, Sigma = H^-1
(``mean_field_sd_ratio``). When some r_i is below 1 - ``diagnostics.SD_TOL``, mean-field cannot pass
the verdict's sd check (if the posterior is near the Laplace Gaussian), and ``auto`` skips it.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..lbfgs import minimize
from .model import Model

__all__ = ["Start", "find_start", "mean_field_kl", "mean_field_sd_ratio"]

MAX_HESSIAN_DIM = 2000  # above it, d backward passes for the Hessian cost more than they save


@dataclass
class Start:
    """The starting point of a fit: ``shift`` ``[d]`` and the Hessian of -log p(u, x) ``[d, d]``
    there (``None`` for a plain start), how it was found, and why not when it was not."""

    shift: Tensor
    hessian: Tensor | None
    method: str  # "mode" or "plain"
    reason: str = ""
    evaluations: int = 0  # points where log p(u, x) was evaluated (gradients, Hessian columns included)

    def scale(self, full: bool) -> Tensor:
        """S of u = shift + S v: the Cholesky factor of H^-1 (``full``), else the mean-field
        Laplace scales H_ii^-1/2; ones (and the identity) for a plain start."""
        d = self.shift.shape[0]
        if self.hessian is None:
            return torch.eye(d, dtype=self.shift.dtype) if full else torch.ones(d, dtype=self.shift.dtype)
        if full:
            return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(self.hessian)))
        return self.hessian.diagonal().rsqrt()

    def whitened_covariance(self) -> Tensor:
        """The Laplace covariance H^-1 in the coordinates v of the diagonal scale: D^1/2 H^-1 D^1/2, D = diag(H)."""
        root = self.hessian.diagonal().sqrt()
        return root[:, None] * torch.cholesky_inverse(torch.linalg.cholesky(self.hessian)) * root

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "evaluations": self.evaluations}


def plain(dim: int, dtype: torch.dtype, reason: str) -> Start:
    return Start(torch.zeros(dim, dtype=dtype), None, "plain", reason)


def find_start(model: Model, data: dict, *, dtype: torch.dtype = torch.float64, max_iter: int = 1000) -> Start:
    """The mode and Hessian of log p(u, x) (on all the data), or a plain start with the reason."""
    if model.dim > MAX_HESSIAN_DIM:
        return plain(model.dim, dtype, f"{model.dim} dimensions: the Hessian would cost too much")

    calls = [0]

    def f(u: Tensor) -> Tensor:
        calls[0] += 1
        return -model.log_density(u[None], data)[0]

    u = torch.zeros(model.dim, dtype=dtype)
    with torch.no_grad():
        if not torch.isfinite(f(u)):
            return plain(model.dim, dtype, "log p(u, x) is not finite at u = 0")
    try:
        u = _lbfgs(f, u, max_iter)
        start = _polish(f, u, model.dim, calls)
    except (RuntimeError, ValueError) as e:  # a non-finite density on the way, a failed factorisation
        start = plain(model.dim, dtype, f"the search for a mode failed ({str(e).splitlines()[0][:80]})")
    start.evaluations = calls[0]
    return start


def _lbfgs(f: Any, u: Tensor, max_iter: int) -> Tensor:
    def value_and_grad(x: Tensor) -> tuple[float, Tensor]:
        x = x.detach().requires_grad_()
        loss = f(x)
        if not torch.isfinite(loss):
            raise ValueError("log p(u, x) is not finite on the way to the mode")
        return loss.item(), torch.autograd.grad(loss, x)[0]

    return minimize(value_and_grad, u, max_iter=max_iter, history=50, tolerance_grad=1e-10,
                    tolerance_change=1e-14).x  # fmt: skip


def _gradient(f: Any, u: Tensor) -> Tensor:
    u = u.detach().requires_grad_()
    return torch.autograd.grad(f(u), u)[0]


def _polish(f: Any, u: Tensor, dim: int, calls: list[int], steps: int = 5) -> Start:
    """Newton steps from u; a Start at the mode, or a plain one when there is none."""
    for _ in range(steps + 1):
        g = _gradient(f, u)
        h = torch.autograd.functional.hessian(f, u)
        calls[0] += dim  # its d backward passes: as many gradients
        h = (h + h.T) / 2
        chol, info = torch.linalg.cholesky_ex(h)
        if info != 0 or not torch.isfinite(g).all():
            return plain(u.shape[0], u.dtype, "the Hessian at the end of the search is not positive definite: no mode")
        step = torch.cholesky_solve(g[:, None], chol)[:, 0]
        decrement = math.sqrt(max(float(g @ step), 0.0))  # distance to the mode, in posterior sds
        if decrement < 1e-6:
            break
        u = u - step
    if decrement > 1:
        return plain(u.shape[0], u.dtype, f"no mode: the density keeps rising ({decrement:.1f} sds from a mode)")
    return Start(u, h, "mode")


def mean_field_sd_ratio(hessian: Tensor) -> Tensor:
    """r_i = (H_ii Sigma_ii)^(-1/2), Sigma = H^-1: the sds of the best mean-field approximation of
    N(m, H^-1) over its own sds ``[d]`` (this module's docstring); all 1 when H is diagonal.

    >>> mean_field_sd_ratio(torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64))
    tensor([0.4359, 0.4359], dtype=torch.float64)
    """
    sigma = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    return (hessian.diagonal() * sigma.diagonal()).rsqrt()


def mean_field_kl(hessian: Tensor) -> float:
    """KL(q* || N(m, H^-1)) of the best mean-field q*: 1/2 (sum_i log H_ii - log det H), in nats.

    >>> round(mean_field_kl(torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)), 4)  # -1/2 log(1 - 0.81)
    0.8304
    """
    return 0.5 * float(hessian.diagonal().log().sum() - torch.linalg.slogdet(hessian)[1])
