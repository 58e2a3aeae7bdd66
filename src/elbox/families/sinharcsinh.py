"""The sinh-arcsinh family: a full-rank Gaussian's draws bent coordinate by coordinate, skew and tails per axis.

Each standard-normal coordinate z_i goes through the sinh-arcsinh map of Jones & Pewsey (2009),

    s_i(z) = sinh((asinh(z) + eps_i) / delta_i),      eps_i in R (skew),  delta_i > 0 (tails: < 1 heavier),

and then through a full-rank affine map: v = loc + L s(z), L lower triangular with a positive diagonal. With
eps = 0 and delta = 1 it is the full-rank Gaussian N(loc, L L^T), so it starts where a full-rank fit ends; its
2D extra parameters capture what a Gaussian misses most often in a posterior over unconstrained parameters
(a skewed log scale, a heavier tail) at the cost of a full-rank Gaussian: draws and log q in one pass each,
both ways in closed form, and smooth in the parameters, so L-BFGS on fixed draws (``bayes.saa``) fits it
deterministically. It cannot bend one coordinate's spread by another's value (a funnel): that needs a flow.

    log q(v) = log N(z; 0, I) - sum_i log s_i'(z_i) - sum_i log L_ii,    z = s^-1(L^-1 (v - loc))
    log s_i'(z) = log cosh(w) - log delta_i - log(1 + z^2) / 2,          w = (asinh(z) + eps_i) / delta_i
"""

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from .base import Family, _inverse_positive, _positive

__all__ = ["MIN_TAIL", "SinhArcsinh", "SinhArcsinhNormal"]

_SCALAR = torch.Size()
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
MIN_TAIL = 0.1  # delta's floor: tails at most about as heavy as z^10, so that draws and log q stay finite


def _log_cosh(w: Tensor) -> Tensor:
    """log cosh(w) without overflow: |w| + log1p(exp(-2|w|)) - log 2."""
    a = w.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2)


class SinhArcsinhNormal(Distribution):
    """v = loc + L s(z), z ~ N(0, I), s the per-coordinate sinh-arcsinh map (the module docstring).
    ``loc`` ``[*B, D]``, ``scale_tril`` ``[*B, D, D]``, ``skew`` and ``tail`` (eps, delta) ``[*B, D]``;
    draws ``[*S, *B, D]``, log q ``[*S, *B]``."""

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute; the parameters are checked by the family
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale_tril: Tensor, skew: Tensor, tail: Tensor) -> None:
        self.loc, self.scale_tril, self.skew, self.tail = loc, scale_tril, skew, tail
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _bend(self, z: Tensor) -> Tensor:
        """w = (asinh(z) + eps) / delta, so that s(z) = sinh(w): ``[*S, D]``."""
        return (torch.asinh(z) + self.skew) / self.tail

    def _log_q(self, z: Tensor, w: Tensor) -> Tensor:
        """log q at v(z), from z and its bend w ``[*S, D]`` -> ``[*S]``: log N(z) - log |d v / d z|."""
        log_ds = _log_cosh(w) - self.tail.log() - 0.5 * torch.log1p(z * z)
        log_det = log_ds.sum(-1) + self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (z * z).sum(-1) - z.shape[-1] * _HALF_LOG_2PI - log_det

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        return self.from_base(torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                                          device=self.loc.device))  # fmt: skip

    def from_base(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """v = loc + L s(z) and log q(v) for standard-normal base draws z ``[*S, *B, D]``."""
        w = self._bend(z)  # once for the draw and its density: asinh is slow in float64
        return self.loc + (self.scale_tril @ torch.sinh(w).unsqueeze(-1)).squeeze(-1), self._log_q(z, w)

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, v: Tensor) -> Tensor:
        s = torch.linalg.solve_triangular(self.scale_tril, (v - self.loc).unsqueeze(-1), upper=False).squeeze(-1)
        w = torch.asinh(s)  # s = sinh(w): w is the bend of z
        return self._log_q(torch.sinh(self.tail * w - self.skew), w)

    def stopped(self) -> "SinhArcsinhNormal":
        return SinhArcsinhNormal(self.loc.detach(), self.scale_tril.detach(), self.skew.detach(), self.tail.detach())


class SinhArcsinh(Family):
    """q = loc + L s(z): a full-rank Gaussian with a sinh-arcsinh bend per coordinate (the module docstring).
    Raw parameters: loc (D), L's lower triangle (D(D+1)/2, positive diagonal), skew (D), raw tail (D).

    >>> q = SinhArcsinh(3)()
    >>> v, log_q = q.rsample_and_log_prob((5,))
    >>> v.shape, bool(torch.allclose(q.log_prob(v), log_q, atol=1e-5))
    (torch.Size([5, 3]), True)
    """

    def num_params(self) -> int:
        return self.dim + self.dim * (self.dim + 1) // 2 + 2 * self.dim

    def initial(self) -> Tensor:
        d = self.dim
        raw = torch.zeros(self.num_params())
        rows, cols = torch.tril_indices(d, d)
        tri = raw[d : d + d * (d + 1) // 2]
        tri[rows == cols] = _inverse_positive(1.0, self.min_scale)
        raw[-d:] = _inverse_positive(1.0, MIN_TAIL)  # delta = 1: no bend
        return raw

    def distribution(self, raw: Tensor) -> SinhArcsinhNormal:
        d = self.dim
        loc, entries, skew, raw_tail = raw.split([d, d * (d + 1) // 2, d, d], dim=-1)
        rows, cols = torch.tril_indices(d, d, device=raw.device)
        entries = torch.where(rows == cols, _positive(entries, self.min_scale), entries)
        tril = raw.new_zeros(*raw.shape[:-1], d, d)
        tril[..., rows, cols] = entries
        return SinhArcsinhNormal(loc, tril, skew, _positive(raw_tail, MIN_TAIL))
