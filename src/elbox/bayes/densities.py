"""Log densities as plain tensor expressions: the hot path of the built-in models, without Distribution objects.

``torch.distributions`` builds an object per call (broadcasting its parameters to tensors,
validating them and the value): tens of microseconds each, more than the arithmetic at K = 16
particles. These functions are the formulas of torch's ``log_prob`` (the same numbers to rounding; ``normal``
in fewer operations), with constant parameters kept as Python floats:
they then enter in the value's dtype (float64 in a fit) rather than as float32 tensors. No
validation: the model's transforms already keep every value in its support.

>>> import torch
>>> x = torch.tensor([0.3, 1.7], dtype=torch.float64)
>>> torch.allclose(normal(x, 0.5, 2.0), torch.distributions.Normal(0.5, 2.0).log_prob(x))
True
>>> torch.allclose(half_cauchy(x, 5.0), torch.distributions.HalfCauchy(5.0).log_prob(x).double())
True
"""

import math
import weakref
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["beta", "half_cauchy", "half_normal", "half_student_t", "normal", "student_t"]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # as torch writes it, for the same rounding
_LOG_2, _LOG_PI = math.log(2), math.log(math.pi)


def normal(x: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """log N(x; loc, scale^2) = -z^2 / 2 - log scale - log sqrt(2 pi), z = (x - loc) / scale, elementwise (broadcast).

    One ``addcmul`` takes the square, its factor and the constant at once, after x - loc (skipped at
    loc = 0) and, for a tensor scale, the division: one to three operations on the graph where torch's
    ``Normal.log_prob`` takes nine. At K = 16 particles each operation costs its dispatch (a few
    microseconds, forward and backward), not its arithmetic."""
    d = x if isinstance(loc, float | int) and loc == 0 else x - loc
    if isinstance(scale, float | int):
        constant = _constant(-(math.log(scale) + _LOG_SQRT_2PI), d.dtype, d.device)
        return torch.addcmul(constant, d, d, value=-0.5 / scale**2)
    z = d / scale
    return torch.addcmul(_scale_term(scale), z, z, value=-0.5)


_SCALE_TERMS: dict[int, tuple[weakref.ref, int, Tensor]] = {}  # id(scale) -> (the scale, its version, the term)


def _scale_term(scale: Tensor) -> Tensor:
    """-log scale - log sqrt(2 pi) for a tensor ``scale``. A scale that is data (no gradient: eight schools'
    sigma) gives the same term at every evaluation: it is computed once per tensor and in-place version and
    kept while the tensor lives (two operations, 3% of an evaluation at K = 16). A scale with a gradient,
    or one seen in inference mode, is computed every call."""
    if scale.requires_grad or torch.is_inference_mode_enabled():
        return -_LOG_SQRT_2PI - scale.log()
    key = id(scale)
    hit = _SCALE_TERMS.get(key)
    if hit is not None and hit[0]() is scale and hit[1] == scale._version:
        return hit[2]
    term = -_LOG_SQRT_2PI - scale.log()
    _SCALE_TERMS[key] = (weakref.ref(scale, lambda _, key=key: _SCALE_TERMS.pop(key, None)), scale._version, term)
    return term


@lru_cache(maxsize=1024)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d tensor of ``value``, made once per value, dtype and device: ``new_full`` at every call costs
    three dispatches (a few microseconds, a few % of an evaluation at K = 16); the result is only read."""
    return torch.tensor(value, dtype=dtype, device=device)


def half_normal(x: Tensor, scale: float) -> Tensor:
    """log of the half-normal on x >= 0: log N(x; 0, scale^2) + log 2."""
    return normal(x, 0.0, scale) + _LOG_2


def half_cauchy(x: Tensor, scale: float) -> Tensor:
    """log of the half-Cauchy on x >= 0: log 2 - log pi - log scale - log(1 + (x / scale)^2),
    written -log(a + a x^2 / scale^2) with a = pi scale / 2: two operations (``xlogy(-1, v)`` is -log v)."""
    a = 0.5 * math.pi * scale
    return torch.xlogy(-1.0, torch.addcmul(_constant(a, x.dtype, x.device), x, x, value=a / scale**2))


def student_t(x: Tensor, df: float, loc: Tensor | float, scale: float) -> Tensor:
    """log t_df(x; loc, scale) = -(df + 1)/2 log(1 + y^2 / df) - log Z, y = (x - loc) / scale,
    log Z = log scale + log(df pi) / 2 + lgamma(df / 2) - lgamma((df + 1) / 2)."""
    y = (x - loc) / scale
    log_z = math.log(scale) + 0.5 * math.log(df) + 0.5 * _LOG_PI + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1))
    return -0.5 * (df + 1.0) * (y**2.0 / df).log1p() - log_z


def half_student_t(x: Tensor, df: float, scale: float) -> Tensor:
    """log of the half-t on x >= 0: log t_df(x; 0, scale) + log 2."""
    return student_t(x, df, 0.0, scale) + _LOG_2


def beta(x: Tensor, a: float, b: float) -> Tensor:
    """log Beta(x; a, b) = (a - 1) log x + (b - 1) log(1 - x) - log B(a, b), for x in (0, 1)."""
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1) * x.log() + (b - 1) * (-x).log1p() - log_b
