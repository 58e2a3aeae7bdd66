"""A table's continuous column to and from the encoded scale: standardised, after an opt-in power transform.

The encoded value of x (user's units) is

    (x - loc) / scale                                     power None (the default)
    (t - loc) / scale,  t = yeo_johnson(z, lmbda),        power "yeo-johnson"
                        z = (x - power_loc) / power_scale

every number fitted to the training rows' observed values (``fit_continuous``), so a skewed
column reaches the decoder's Gaussian nearer a normal shape, and ``from_standard`` takes a
decoded value back to the user's units. Standardising before the power transform makes lambda
independent of the column's units (the transform is not scale-invariant: a column of values
near 0.05 and one near 500 would otherwise get lambdas of -280 and -0.2 for the same shape).
"""

import math
from dataclasses import replace
from typing import Protocol, TypeVar

import numpy as np

__all__ = ["POWERS", "Continuous", "fit_continuous", "fit_lambda", "from_standard", "to_standard", "yeo_johnson",
           "yeo_johnson_inverse"]  # fmt: skip

POWERS = ("none", "yeo-johnson")  # a continuous column's transform before standardising
_EPS = 1e-12  # |lambda| (or |2 - lambda|) below which the transform is its logarithmic limit
_TINY = 1e-300  # the smallest base of the inverse's power: a value beyond the transform's bound lands here


class Continuous(Protocol):
    """What the transforms read of a column (``tables.Column``)."""

    loc: float
    scale: float
    power: str | None
    lmbda: float
    power_loc: float
    power_scale: float


C = TypeVar("C", bound=Continuous)


def yeo_johnson(x: np.ndarray, lmbda: float) -> np.ndarray:
    """Yeo & Johnson's (2000) power transform of ``x`` (any shape; NaN stays NaN), float64:

        t(x) = ((x + 1)^l - 1) / l                  x >= 0, l != 0    (log(x + 1) at l = 0)
        t(x) = -((1 - x)^(2 - l) - 1) / (2 - l)     x < 0,  l != 2    (-log(1 - x) at l = 2)

    increasing, t(0) = 0, the identity at l = 1; l < 1 pulls in a long right tail, l > 1 a left one.

        >>> yeo_johnson(np.array([-1.0, 0.0, 3.0, np.nan]), 0.0).round(4).tolist()
        [-1.5, 0.0, 1.3863, nan]
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full_like(x, np.nan)
    pos, neg = x >= 0, x < 0  # NaN is neither: it stays NaN
    out[pos] = np.log1p(x[pos]) if abs(lmbda) < _EPS else np.expm1(lmbda * np.log1p(x[pos])) / lmbda
    m = 2 - lmbda
    out[neg] = -np.log1p(-x[neg]) if abs(m) < _EPS else -np.expm1(m * np.log1p(-x[neg])) / m
    return out


def yeo_johnson_inverse(y: np.ndarray, lmbda: float) -> np.ndarray:
    """The inverse of ``yeo_johnson``: x with t(x) = y (NaN stays NaN), float64.

    For l < 0 the transform's values stay below -1 / l, for l > 2 above -1 / (l - 2): a ``y``
    beyond that bound has no preimage and is taken just inside it, so every value maps to a
    finite number (a very large one there). ``fit_lambda`` keeps l in [0, 2], where no bound is.
    """
    y = np.asarray(y, dtype=np.float64)
    out = np.full_like(y, np.nan)
    with np.errstate(over="ignore"):  # past the bound: inf, replaced by the largest float below
        _inverse_parts(y, lmbda, out, y >= 0, y < 0)
    return np.where(np.isfinite(out) | np.isnan(y), out, np.sign(out) * np.finfo(np.float64).max)


def _inverse_parts(y: np.ndarray, lmbda: float, out: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
    if abs(lmbda) < _EPS:
        out[pos] = np.expm1(y[pos])
    else:  # (1 + l y) > 0 is the image's condition; clipped to stay finite (see the docstring)
        out[pos] = np.expm1(np.log(np.maximum(1 + lmbda * y[pos], _TINY)) / lmbda)
    m = 2 - lmbda
    if abs(m) < _EPS:
        out[neg] = -np.expm1(-y[neg])
    else:
        out[neg] = -np.expm1(np.log(np.maximum(1 - m * y[neg], _TINY)) / m)


def fit_lambda(z: np.ndarray) -> float:
    """Yeo-Johnson's lambda by maximum likelihood (scikit-learn's ``PowerTransformer``) on observed,
    standardised values ``z`` ``[N]``, kept in [0, 2]: only there does the transform map onto the whole
    line, so every draw of the decoder's Gaussian has a preimage. The profile likelihood is unimodal
    in lambda, so the clipped value is the best one within [0, 2]."""
    from sklearn.preprocessing import PowerTransformer

    if len(z) < 2 or np.ptp(z) == 0:  # nothing to fit: the identity
        return 1.0
    fitted = PowerTransformer(method="yeo-johnson", standardize=False).fit(z[:, None]).lambdas_[0]
    return float(np.clip(fitted, 0.0, 2.0))


def fit_continuous(c: C, v: np.ndarray) -> C:
    """``c`` with its transform fitted to observed values ``v`` ``[N]`` (user's units): loc and scale
    their mean and sd; with ``power``, those are power_loc and power_scale, lambda is fitted to the
    values so standardised, and loc and scale are the transformed values' mean and sd."""
    if c.power:
        loc, scale = _mean_sd(v)
        c = replace(c, power_loc=loc, power_scale=scale, lmbda=fit_lambda((v - loc) / scale))
        v = yeo_johnson((v - loc) / scale, c.lmbda)
    loc, scale = _mean_sd(v)
    return replace(c, loc=loc, scale=scale)


def _mean_sd(v: np.ndarray) -> tuple[float, float]:
    """The mean and sd of ``v`` ``[N]``; an sd of 0 (or none, one value) is taken as 1, leaving the scale."""
    sd = float(v.std()) if len(v) > 1 else 0.0
    return float(v.mean()), sd if sd > 0 and math.isfinite(sd) else 1.0


def to_standard(v: np.ndarray, c: Continuous) -> np.ndarray:
    """A column's values ``[N]`` (user's units, NaN missing) in the encoded scale, float64."""
    t = yeo_johnson((v - c.power_loc) / c.power_scale, c.lmbda) if c.power else v
    return (t - c.loc) / c.scale


def from_standard(v: np.ndarray, c: Continuous) -> np.ndarray:
    """The inverse of ``to_standard``: encoded values ``[N]`` back in the user's units, float64."""
    t = v * c.scale + c.loc
    return yeo_johnson_inverse(t, c.lmbda) * c.power_scale + c.power_loc if c.power else t
