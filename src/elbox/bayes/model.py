"""A Bayesian model: named parameters with supports, a log prior and a log-likelihood, seen on R^d.

Each parameter has a shape and a support (a ``torch.distributions.constraints`` object).
``torch.distributions.biject_to(support)`` maps R^(d_i) onto the support; the model stacks
the parameters' unconstrained coordinates into one vector u in R^d, so that every
variational family acts on R^d, and adds the log |det J| of the maps:

    log p(u, x) = log p(theta(u)) + log p(x | theta(u)) + log |det d theta / d u|      # [K]

Parameters reach the user's functions with a leading particle dimension ``[K, *shape]``;
the prior returns ``[K]``, the likelihood ``[K]`` or one term per observation ``[K, N]``
(needed for data subsampling).

>>> import torch
>>> from torch.distributions import HalfCauchy, Normal, constraints
>>> def prior(p):
...     mu, tau = Normal(0, 5).log_prob(p["mu"]), HalfCauchy(5).log_prob(p["tau"])
...     return mu + tau + Normal(0, 1).log_prob(p["eta"]).sum(-1)
>>> def likelihood(p, data):  # one term per school: [K, 8]
...     theta = p["mu"][:, None] + p["tau"][:, None] * p["eta"]
...     return Normal(theta, data["sigma"]).log_prob(data["y"])
>>> model = Model({"mu": Param(), "tau": Param(support=constraints.positive), "eta": Param(8)}, prior, likelihood)
>>> model.dim, model.names()[:3]
(10, ['mu', 'tau', 'eta[0]'])
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import AffineTransform, ComposeTransform, Transform

from ..errors import ElboxError

__all__ = ["Model", "Param", "flatten", "ordered", "positive_ordered"]

Params = dict[str, Tensor]
Data = dict[str, Any]


class _Ordered(constraints.Constraint):
    """Vectors with strictly increasing entries (Stan's ``ordered``)."""

    event_dim = 1

    def check(self, value: Tensor) -> Tensor:
        return (value[..., 1:] > value[..., :-1]).all(-1)


class _PositiveOrdered(_Ordered):
    """Positive vectors with strictly increasing entries (Stan's ``positive_ordered``)."""

    def check(self, value: Tensor) -> Tensor:
        return super().check(value) & (value[..., 0] > 0)


ordered = _Ordered()
positive_ordered = _PositiveOrdered()


class _OrderedTransform(Transform):
    """R^n -> ordered (or positive ordered) vectors, as Stan does it:
    x_1 = y_1 (or exp y_1), x_i = x_(i-1) + exp(y_i); log |det J| = sum of the exponentiated y."""

    domain = constraints.real_vector
    bijective = True

    def __init__(self, positive: bool) -> None:
        super().__init__()
        self.positive = positive
        self.codomain = positive_ordered if positive else ordered

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OrderedTransform) and other.positive == self.positive

    def _call(self, y: Tensor) -> Tensor:
        steps = y.exp() if self.positive else torch.cat([y[..., :1], y[..., 1:].exp()], -1)
        return steps.cumsum(-1)

    def _inverse(self, x: Tensor) -> Tensor:
        steps = torch.cat([x[..., :1], x[..., 1:] - x[..., :-1]], -1)
        return steps.log() if self.positive else torch.cat([steps[..., :1], steps[..., 1:].log()], -1)

    def log_abs_det_jacobian(self, y: Tensor, x: Tensor) -> Tensor:
        return (y if self.positive else y[..., 1:]).sum(-1)


def _bijection(support: constraints.Constraint) -> Transform:
    """The map from unconstrained space onto ``support``: torch's ``biject_to``, plus the ordered
    supports (looked up here rather than registered, so that torch's registry stays untouched)."""
    if isinstance(support, _Ordered):
        return _OrderedTransform(positive=isinstance(support, _PositiveOrdered))
    try:
        return biject_to(support)
    except NotImplementedError:
        raise ElboxError(f"no bijection onto the support {support}: choose a support from "
                         "torch.distributions.constraints that biject_to knows") from None  # fmt: skip


def _lean(transform: Transform) -> Transform | None:
    """The same map with less per-call overhead: ``None`` for the identity, a composition without its
    identity steps (``biject_to(positive)`` is exp followed by x -> 0 + 1 x), a one-step composition as
    that step. Exact: 0 + 1 x is x, and the dropped log |det J| terms are zeros."""
    if not isinstance(transform, ComposeTransform):
        return transform
    parts = [t for t in transform.parts if not _is_unit_affine(t)]
    return None if not parts else parts[0] if len(parts) == 1 else ComposeTransform(parts)


def _is_unit_affine(t: Transform) -> bool:
    return (isinstance(t, AffineTransform) and t.event_dim == 0 and isinstance(t.loc, int | float)
            and isinstance(t.scale, int | float) and t.loc == 0 and t.scale == 1)  # fmt: skip


class Param:
    """A named model parameter: its shape and support.

    ``Param()`` is a real scalar, ``Param(8)`` a real vector of 8, ``Param(2, support=ordered)``
    an ordered pair, ``Param(3, support=constraints.simplex)`` a point of the 2-simplex.
    """

    def __init__(self, *shape: int, support: constraints.Constraint = constraints.real) -> None:
        if not all(isinstance(n, int) and n >= 1 for n in shape):
            raise ElboxError(f"a parameter's shape is positive integers, got {shape}")
        self.shape, self.support = tuple(shape), support
        self.transform = _bijection(support)
        # through the lean map: an AffineTransform's shape map calls torch.broadcast_shapes, whose first call
        # imports sympy (0.5-0.9 s of every ``elbox fit`` with a positive parameter)
        lean = _lean(self.transform)
        self.free_shape = self.shape if lean is None else tuple(lean.inverse_shape(torch.Size(self.shape)))
        self.free_dim = math.prod(self.free_shape)

    def __repr__(self) -> str:
        return f"Param({', '.join(map(str, self.shape))}{', ' if self.shape else ''}support={self.support})"


def scalar_names(name: str, shape: Sequence[int]) -> list[str]:
    """``theta[0]``, ``theta[1]``, ... for each entry of a parameter (row-major); ``mu`` for a scalar."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


class Model:
    """A Bayesian model p(theta, x) = p(theta) p(x | theta) over named, constrained parameters.

    Args:
        params: name -> ``Param`` (shape and support), in the order of the unconstrained vector.
        prior: log p(theta) of a dict of parameters ``[K, *shape]``: ``[K]``.
        likelihood: log p(x | theta) of (parameters, data): ``[K]``, or ``[K, N]`` with one term
            per observation (what data subsampling needs). ``None``: all in the prior.
        observed: the data arrays that hold one row per observation (all of first dimension N).
            Data subsampling draws rows of these; N is read from them.
        transformed: derived quantities (Stan's transformed parameters / generated quantities),
            a function of the parameters returning a dict of ``[K, ...]`` tensors. They appear
            in draws and summaries beside the parameters.
        name: for summaries and run folders.
    """

    def __init__(
        self, params: Mapping[str, Param], prior: Callable[[Params], Tensor],
        likelihood: Callable[[Params, Data], Tensor] | None = None, *, observed: Sequence[str] = (),
        transformed: Callable[[Params], Params] | None = None, name: str = "model",
    ) -> None:  # fmt: skip
        if not params or not all(isinstance(p, Param) for p in params.values()):
            raise ElboxError(
                "a model needs at least one parameter, each given as elbox.bayes.Param(*shape, support=...)"
            )
        self.params, self.prior, self.likelihood = dict(params), prior, likelihood
        self.observed, self.transformed, self.name = tuple(observed), transformed, name
        self.dim = sum(p.free_dim for p in self.params.values())
        # what constrain does per parameter, worked out once: (name, free shape, the map or None for the identity)
        self._plan = [(n, p.free_shape, _lean(p.transform)) for n, p in self.params.items()]
        self._split = self._sizes()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, params={self.params}, dim={self.dim})"

    # ------------------------------------------------------------ the map to R^d and back

    def constrain(self, u: Tensor) -> tuple[Params, Tensor]:
        """Parameters ``{name: [K, *shape]}`` of unconstrained points u ``[K, d]``, and the summed
        log |det J| of the maps ``[K]``."""
        k, params, ladj = u.shape[0], {}, None
        for (name, shape, transform), free in zip(self._plan, torch.split_with_sizes(u, self._split, -1), strict=True):
            # no-op reshapes skipped: at K = 16 every operation costs its dispatch, forward and backward
            y = free if free.shape[1:] == shape else free.squeeze(-1) if not shape else free.reshape(k, *shape)
            if transform is None:  # the identity map, log |det J| = 0: skipped on the hot path
                params[name] = y
                continue
            params[name] = x = transform(y)
            term = transform.log_abs_det_jacobian(y, x)
            term = term if term.dim() == 1 else term.reshape(k, -1).sum(-1)
            ladj = term if ladj is None else ladj + term
        return params, u.new_zeros(k) if ladj is None else ladj

    def unconstrain(self, params: Mapping[str, Tensor]) -> Tensor:
        """The inverse of ``constrain``: ``{name: [K, *shape]}`` -> u ``[K, d]``."""
        parts = []
        for name, p in self.params.items():
            x = torch.as_tensor(params[name])
            parts.append(p.transform.inv(x).reshape(x.shape[0], -1))
        return torch.cat(parts, -1)

    def _sizes(self) -> list[int]:
        return [p.free_dim for p in self.params.values()]

    # ------------------------------------------------------------ densities

    def log_parts(self, params: Params, data: Data, *, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        """log p(theta) and scale * log p(x | theta), in the constrained space: ``[K]`` each.

        ``scale`` is N / batch size when ``data`` holds a minibatch of the observations.
        """
        k = next(iter(params.values())).shape[0]
        log_prior = self._checked(self.prior(params), k, "prior")
        if self.likelihood is None:
            return log_prior, torch.zeros_like(log_prior)
        log_lik = self._checked(self.likelihood(params, data), k, "likelihood", per_observation=True)
        log_lik = log_lik if log_lik.dim() == 1 else (log_lik if log_lik.dim() == 2 else log_lik.reshape(k, -1)).sum(-1)
        return log_prior, log_lik if scale == 1 else scale * log_lik

    def log_joint(self, params: Params, data: Data, *, scale: float = 1.0) -> Tensor:
        """log p(theta) + scale * log p(x | theta), in the constrained space: ``[K]``."""
        log_prior, log_lik = self.log_parts(params, data, scale=scale)
        return log_prior + log_lik

    def log_density(self, u: Tensor, data: Data, *, scale: float = 1.0) -> Tensor:
        """log p(theta(u), x) + log |det J| at unconstrained points u ``[K, d]``: ``[K]``.

        The density of u that every family is fitted to; its integral over R^d is p(x).
        """
        params, ladj = self.constrain(u)
        return self.log_joint(params, data, scale=scale) + ladj

    def _checked(self, value: Any, k: int, what: str, per_observation: bool = False) -> Tensor:
        if (
            not isinstance(value, Tensor)
            or value.ndim < 1
            or value.shape[0] != k
            or (value.ndim > 1 and not per_observation)
        ):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            allowed = "[K] or [K, N] (one term per observation)" if per_observation else "[K]"
            raise ElboxError(
                f"the model's {what} returned {shape} for K = {k} particles; it must return {allowed}. "
                "Parameters arrive with a leading particle dimension: sum over every other dimension."
            )
        return value

    # ------------------------------------------------------------ names and draws

    def quantities(self, params: Params) -> Params:
        """The parameters and the transformed quantities, ``{name: [K, ...]}``."""
        if self.transformed is None:
            return dict(params)
        return dict(params) | dict(self.transformed(params))

    def names(self, params: Params | None = None) -> list[str]:
        """One name per scalar coordinate of the parameters (and of the quantities in ``params``)."""
        shapes = {n: p.shape for n, p in self.params.items()}
        if params is not None:
            shapes |= {n: tuple(v.shape[1:]) for n, v in params.items()}
        return [s for n, shape in shapes.items() for s in scalar_names(n, shape)]

    # ------------------------------------------------------------ data

    def prepare(self, data: Mapping[str, Any] | None, dtype: torch.dtype = torch.float64) -> tuple[Data, int | None]:
        """Data as tensors (floating arrays in ``dtype``, integers as int64, other values as given)
        and the number of observations N (``None`` when the model names no observed arrays)."""
        data = dict(data or {})
        for key, value in data.items():
            if isinstance(value, np.ndarray | list | tuple | Tensor):
                t = torch.as_tensor(np.asarray(value) if isinstance(value, list | tuple) else value)
                data[key] = t.to(dtype) if t.is_floating_point() else t
        missing = [key for key in self.observed if key not in data]
        if missing:
            raise ElboxError(f"the model's observed arrays {missing} are not in the data (keys: {sorted(data)})")
        if not self.observed:
            return data, None
        lengths = {key: len(data[key]) for key in self.observed}
        if len(set(lengths.values())) != 1:
            raise ElboxError(
                f"the observed arrays must have one row per observation, but their lengths differ: {lengths}"
            )
        return data, next(iter(lengths.values()))


def flatten(quantities: dict[str, Tensor]) -> np.ndarray:
    """``{name: [n, *shape]}`` -> ``[n, P]``, the columns in the order of ``Model.names``."""
    n = next(iter(quantities.values())).shape[0]
    return torch.cat([v.detach().reshape(n, -1) for v in quantities.values()], -1).double().cpu().numpy()
