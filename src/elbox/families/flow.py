"""Normalizing-flow families: zuko's autoregressive and coupling steps between N(0, I) and a diagonal
affine map. zuko is imported only when a flow is built, with torch's global defaults kept (``_zuko``)."""

import math
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..catalogue import Option
from .base import _SCALAR, Family, _inverse_positive, _positive, _standard_normal_log_prob

if TYPE_CHECKING:
    from types import ModuleType

    from zuko.lazy import LazyTransform

__all__ = ["FLOWS", "Flow", "FlowNormal", "FlowTransform"]


def _zuko() -> "ModuleType":
    """zuko, imported with torch's ``Distribution._validate_args`` and ``Distribution.arg_constraints``
    as they were: zuko's ``distributions`` module sets them to False and ``{}`` for every
    distribution of the program when it is first imported, which would switch off torch's
    argument checks for the user's own code. elbox's flows need neither change: their
    distributions pass ``validate_args=False`` and name their ``arg_constraints``."""
    validate = Distribution.__dict__["_validate_args"]
    arg_constraints = Distribution.__dict__["arg_constraints"]  # a property that raises, in torch itself
    try:
        import zuko
    finally:
        Distribution._validate_args = validate
        Distribution.arg_constraints = arg_constraints
    return zuko


class FlowNormal(Distribution):
    """A normalizing flow on a standard normal, placed by a diagonal affine map:

        eps ~ N(0, I),   u = f(eps; h),   z = loc + scale * u,
        log q(z) = log N(eps; 0, I) - log |det df/deps| - sum_d log scale_d.

    f is a stack of zuko transforms conditioned on the context h (``None`` for a global q).
    The flow works in standardised coordinates, where splines (defined on [-5, 5]) act, and
    the affine map alone is the diagonal Gaussian family: a flow starting near the identity
    starts there. ``rsample_and_log_prob`` computes log q along the draw, in the flow's fast
    direction; ``log_prob`` at an arbitrary z runs f backward, which for an IAF or NSF takes
    D sequential passes (Kingma et al. 2016), for a MAF is one pass.

    Shapes: ``loc``, ``scale`` ``[*B, D]``; ``context`` ``[*B, C]``; draws ``[*S, *B, D]``.
    """

    arg_constraints: dict = {}  # noqa: RUF012 -- torch's attribute; the parameters live in a network
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, flow: "FlowTransform", loc: Tensor, scale: Tensor, context: Tensor | None) -> None:
        self.flow, self.loc, self.scale, self.context = flow, loc, scale, context
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _flow(self, x: Tensor, sampling: bool) -> tuple[Tensor, Tensor]:
        return self.flow(x, self.context, sampling)

    def rsample_and_log_prob(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor]:
        """Reparameterized draws ``[*S, *B, D]`` and their log q ``[*S, *B]``, in one pass."""
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        u, ladj = self._flow(eps, sampling=True)
        log_q = _standard_normal_log_prob(eps) - ladj - self.scale.log().sum(-1)
        return self.loc + self.scale * u, log_q

    @property
    def scores(self) -> bool:
        """Whether ``rsample_with_score`` is available (``FlowTransform.scores``: the realnvp flows)."""
        return self.flow.scores

    def rsample_with_score(self, sample_shape: torch.Size = _SCALAR) -> tuple[Tensor, Tensor, Tensor]:
        """Draws ``[*S, *B, D]``, their log q ``[*S, *B]``, and grad_z log q(z) ``[*S, *B, D]`` (detached), in one
        pass: what the sticking-the-landing gradient needs (``base.draw_stopped``), where ``scores``."""
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        u, ladj, score = self.flow.sample_with_score(eps, self.context)
        log_q = _standard_normal_log_prob(eps) - ladj - self.scale.log().sum(-1)
        return self.loc + self.scale * u, log_q, score / self.scale.detach()

    def rsample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        eps, ladj = self._flow((z - self.loc) / self.scale, sampling=False)
        return _standard_normal_log_prob(eps) + ladj - self.scale.log().sum(-1)

    def center(self) -> Tensor:
        """loc + scale * f(0): the image of the base's center, ``[*B, D]`` (the median when D = 1)."""
        u, _ = self._flow(torch.zeros_like(self.loc), sampling=True)
        return self.loc + self.scale * u

    def stopped(self) -> "FlowNormal":
        """The same q with every parameter, the flow's included, cut from the graph: the flow's frozen
        copy (``FlowTransform.frozen``), which takes gradients to its input only."""
        context = None if self.context is None else self.context.detach()
        return FlowNormal(self.flow.frozen(), self.loc.detach(), self.scale.detach(), context)


class FlowTransform(nn.Module):
    """f(eps; h) of a flow family: zuko's lazy transforms, run toward samples or toward the base.

    zuko's transforms map data to noise. ``fast_sampling`` inverts them, so that drawing (and
    log q along a draw) is one parallel pass: the inverse autoregressive flow (Kingma et al.
    2016). Returns the output and log |det| of the Jacobian of the map that was run, ``[...]``.
    """

    def __init__(self, steps: "LazyTransform", fast_sampling: bool) -> None:
        super().__init__()
        self.steps, self.fast_sampling = steps, fast_sampling
        self.couplings = _checkered_affine_couplings(steps)  # realnvp's steps, run without zuko's objects
        if self.couplings is not None:  # the coordinates in the order (evens, odds), and back; not state
            d = self.couplings[0].mask.numel()
            order = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
            self.register_buffer("order", order, persistent=False)
            self.register_buffer("unorder", torch.argsort(order), persistent=False)
        linear = (nn.Linear, _zuko().nn.Linear)
        self.plain = self.couplings is not None and all(  # realnvp steps whose networks are linear layers and ELUs
            isinstance(m, nn.ELU) or (isinstance(m, linear) and m.weight.dim() == 2)
            for step in self.couplings for m in step.hyper
        )  # fmt: skip
        self.scores = self.plain and fast_sampling  # whether ``sample_with_score`` is available
        self._frozen: tuple[FlowTransform, list[Tensor], list[Tensor]] | None = None  # not a submodule: no state

    def frozen(self) -> "FlowTransform":
        """This flow with its parameters' current values and no gradient to them: a copy kept beside the
        flow (not a submodule, so not in its parameters or state) and refreshed in one ``_foreach_copy_``.

        What the sticking-the-landing gradient evaluates log q with, every step. Swapping detached tensors
        into the flow itself (``torch.func.functional_call``) walks its modules twice per call: about 0.5 ms
        a step for realnvp:4, some 8% of the step."""
        live = list(self.parameters())
        if self._frozen is None or any(a.dtype != b.dtype or a.device != b.device
                                       for a, b in zip(live, self._frozen[2], strict=True)):  # fmt: skip
            self._frozen = None  # not deep-copied along
            copy = deepcopy(self).requires_grad_(False)
            self._frozen = (copy, live, list(copy.parameters()))
        copy, _, mirror = self._frozen
        with torch.no_grad():
            torch._foreach_copy_(mirror, live)
        return copy

    def forward(self, x: Tensor, context: Tensor | None, sampling: bool) -> tuple[Tensor, Tensor]:
        if self.couplings is not None:
            orders, inverse = (self.order, self.unorder), sampling != self.fast_sampling
            float32 = (self.plain and x.dtype == torch.float64 and not torch.is_grad_enabled()
                       and x[..., 0].numel() >= FLOAT32_ROWS)  # fmt: skip
            return _couplings(self.couplings, orders, x, context, inverse, float32=float32)
        t = self.steps(context)
        return t.call_and_ladj(x) if sampling == self.fast_sampling else t.inv.call_and_ladj(x)

    def sample_with_score(self, eps: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """f(eps), log |det df/deps| and the score of the draw's density, grad_u log q_u(u) at u = f(eps) with
        q_u the density of f(eps), eps ~ N(0, I); ``[..., D] -> [..., D], [...], [..., D]``, the score detached
        (``_couplings``, ``score=True``)."""
        return _couplings(self.couplings, (self.order, self.unorder), eps, context, inverse=False, score=True)


def _checkered_affine_couplings(steps: nn.Module) -> "list[nn.Module] | None":
    """The steps of a ``realnvp`` flow as zuko builds it, or None for any other flow: affine coupling steps
    (zuko's ``GeneralCouplingTransform`` with ``MonotonicAffineTransform``) whose masks alternate between the
    even and the odd coordinates, starting with the even ones."""
    zuko = _zuko()
    layers = list(getattr(steps, "transforms", ()))
    checkered = [torch.arange(getattr(t, "mask", torch.empty(0)).numel()) % 2 == i % 2 for i, t in enumerate(layers)]
    ok = layers and all(
        isinstance(t, zuko.flows.coupling.GeneralCouplingTransform)
        and t.univariate is zuko.transforms.MonotonicAffineTransform and tuple(t.shapes) == ((), ())
        and torch.equal(t.mask.cpu(), c)
        for t, c in zip(layers, checkered, strict=True)
    )  # fmt: skip
    return layers if ok else None


_LOG_SLOPE = math.log(1e-3)  # zuko's MonotonicAffineTransform: log scale a / (1 + |a / log(slope)|), slope 1e-3


def _couplings(
    layers: list[nn.Module], orders: tuple[Tensor, Tensor], x: Tensor, context: Tensor | None, inverse: bool,
    score: bool = False, float32: bool = False,
) -> tuple[Tensor, ...]:  # fmt: skip
    """zuko's realnvp steps (``_checkered_affine_couplings``) run as plain tensor operations, ``[..., D] ->
    [..., D], [...]``: the output and log |det| of the Jacobian of the map run (zuko's direction, or its inverse).

    Step i keeps x_a and moves x_b, a the even coordinates for even i and the odd ones for odd i:

        (shift, a) = net_i(x_a [, h]),  s = a / (1 + |a / log 1e-3|),  y_b = x_b exp(s) + shift,  log |det| = sum s.

    Working in the order (evens, odds), the split is two views and the merge one ``cat``; the inverse is
    x_b = (y_b - shift) exp(-s), one network evaluation per step (zuko's generic inverse evaluates it twice).
    The numbers are zuko's; the transform objects zuko builds at each call and its index writes, about a
    third of a realnvp:4 fit's step at 64 draws (the step is dispatch-bound), are gone.

    ``score`` (zuko's direction from eps ~ N(0, I)) also returns G = grad_y log q(y), detached, where q is
    the density of the output: what the sticking-the-landing gradient needs of log q, computed along the
    draw (``_path_score``) instead of by a second, inverse pass and its backward. ``float32`` runs the networks
    in float32 (``_network``)."""
    order, unorder = orders  # [D]: the evens then the odds, and its inverse permutation
    half = (x.shape[-1] + 1) // 2  # the even coordinates
    v = x[..., order]
    parts = [v[..., :half], v[..., half:]]  # evens, odds
    logs, saved = [], []
    for i in reversed(range(len(layers))) if inverse else range(len(layers)):
        a, b = i % 2, 1 - i % 2  # which part is kept, which moved
        h = parts[a] if context is None else _with_context(parts[a], context)
        if score or float32:
            phi, activations = _network(layers[i].hyper, h, float32)
        else:
            phi, activations = layers[i].hyper(h), None
        shift, raw = phi[..., 0::2], phi[..., 1::2]
        bend = 1 + (raw / _LOG_SLOPE).abs()
        log_scale = raw / bend
        if inverse:
            parts[b] = (parts[b] - shift) / log_scale.exp()
        else:
            scale = log_scale.exp()
            if score:
                saved.append((activations, parts[b], scale, bend))
            parts[b] = parts[b] * scale + shift
        logs.append(log_scale)
    ladj = torch.cat(logs, dim=-1).sum(-1)
    y = torch.cat(parts, dim=-1)[..., unorder]
    if score:
        return y, ladj, _path_score(layers, saved, v, half)[..., unorder]
    return y, -ladj if inverse else ladj


@torch.no_grad()
def _path_score(layers: list[nn.Module], saved: list, eps: Tensor, half: int) -> Tensor:
    """grad_y log q(y) at the end of the coupling steps, carried along the draw from grad_eps log N(eps) = -eps.

    Through a step x -> y (x_a kept, x_b moved; G = grad_x log q(x), G' = grad_y log q(y)), as
    log q'(y) = log q(x(y)) - sum s(y_a) with x_b = (y_b - t(y_a)) exp(-s(y_a)):

        G'_b = G_b exp(-s),    G'_a = G_a - J_t^T G'_b - J_s^T (G_b x_b + 1),

    J_t, J_s the Jacobians of the step's shift and log scale in y_a: one product of a vector with the network's
    transposed Jacobian (``_network_vjp``), from the activations of the draw. ``[..., D]`` in the order (evens,
    odds); detached: the sticking-the-landing gradient holds it fixed."""
    g = -eps.detach()
    grad = [g[..., :half], g[..., half:]]
    for i, (activations, x_b, scale, bend) in enumerate(saved):
        a, b = i % 2, 1 - i % 2
        moved = grad[b] / scale
        d_raw = -torch.addcmul(torch.ones_like(x_b), grad[b], x_b) / bend.square()  # ds/da = 1 / bend^2
        d_phi = torch.stack([-moved, d_raw], dim=-1).flatten(-2)  # (shift, a) interleaved, as the network writes them
        grad[a] = grad[a] + _network_vjp(layers[i].hyper, activations, d_phi)[..., : grad[a].shape[-1]]
        grad[b] = moved
    return torch.cat(grad, dim=-1)


FLOAT32_ROWS = 1024  # draws from which a float64 flow without gradients runs its networks in float32


def _network(net: nn.Sequential, h: Tensor, float32: bool = False) -> tuple[Tensor, list[Tensor]]:
    """A coupling step's network (linear layers and ELUs) on h, with each ELU's output, which its derivative
    needs (``_network_vjp``): ``[..., in] -> [..., out]``.

    ``float32``: in float32 on a float64 input, the output back in float64. What a float64 flow's large passes
    without gradients use (a verdict's 5,000 draws, ``FLOAT32_ROWS``): 3.3x faster there, float64 ELUs and
    matrix products being most of a flow's verdict. The flow stays exact: a coupling step's Jacobian is
    triangular with diagonal exp(s) however s(x_a) is computed, so draws, log q and the inverse are those of one
    flow whose networks round to float32 (about 1e-7 of s and shift), consistent with each other to float64
    precision. Gradients (a fit's steps) keep float64."""
    x, activations = (h.float() if float32 else h), []
    for m in net:
        if isinstance(m, nn.ELU):
            x = nn.functional.elu(x, m.alpha)
            activations.append(x)
        elif float32:
            x = nn.functional.linear(x, m.weight.float(), None if m.bias is None else m.bias.float())
        else:
            x = nn.functional.linear(x, m.weight, m.bias)
    return (x.double() if float32 else x), activations


def _network_vjp(net: nn.Sequential, activations: list[Tensor], v: Tensor) -> Tensor:
    """v^T d net / d h at the point ``_network`` ran at, from its ELU outputs: ``[..., out] -> [..., in]``."""
    outputs = iter(reversed([a.detach() for a in activations]))
    for m in reversed(list(net)):  # a list: reversing the Sequential itself indexes it, module by module
        if isinstance(m, nn.ELU):  # d elu / dh from the output: 1 where it is positive, elu + alpha elsewhere
            v = torch.ops.aten.elu_backward(v, m.alpha, 1, 1, True, next(outputs))
        else:
            v = v @ m.weight.detach()
    return v


def _with_context(x: Tensor, context: Tensor) -> Tensor:
    """[x, h] along the last dimension, their other dimensions broadcast: ``[..., A], [..., C] -> [..., A + C]``."""
    shape = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return torch.cat([x.expand(*shape, x.shape[-1]), context.expand(*shape, context.shape[-1])], dim=-1)


def _near_identity(steps: nn.Module) -> None:
    """Scale each step's last layer to about zero, so the flow starts at about the identity.

    The family then starts as the diagonal Gaussian (as Kingma et al. 2016 initialise IAF);
    the weights stay non-zero so that every layer receives a gradient from the first step.
    """
    for module in steps.modules():
        if isinstance(getattr(module, "hyper", None), nn.Sequential):
            last = module.hyper[-1]
            with torch.no_grad():
                last.weight.mul_(1e-2)
                last.bias.zero_()
        for phi in getattr(module, "phi", ()):  # zuko's global one-dimensional steps
            with torch.no_grad():
                phi.zero_()


FLOWS = ("iaf", "maf", "nsf", "realnvp")


class Flow(Family):
    """A normalizing-flow family (``FlowNormal``): L zuko steps between N(0, I) and a diagonal
    affine map. Raw parameters: loc and scale (D each), then the context h (C) that conditions
    every step; a global flow has no context and its steps hold all its freedom.

    Kinds:
        ``iaf``: affine autoregressive steps sampled in one pass (Kingma et al. 2016);
        ``maf``: the same steps the other way, density in one pass (Papamakarios et al. 2017);
        ``nsf``: rational-quadratic spline autoregressive steps, sampled in one pass (Durkan et al. 2019);
        ``realnvp``: affine coupling steps, both ways in one pass (Dinh et al. 2017); D >= 2.

    >>> q = Flow(3, nn.Linear(4, 6 + 16), kind="iaf", transforms=2)(torch.zeros(5, 4))
    >>> z, log_q = q.rsample_and_log_prob((7,))
    >>> z.shape, log_q.shape, bool(torch.allclose(q.log_prob(z), log_q, atol=1e-4))
    (torch.Size([7, 5, 3]), torch.Size([7, 5]), True)
    """

    option = Option("L", "transforms", "L flow steps", default=4)

    def __init__(
        self, dim: int, encoder: nn.Module | None = None, *, kind: str = "iaf", transforms: int = 4,
        context: int | None = None, hidden: int | None = None, min_scale: float = 1e-4,
    ) -> None:  # fmt: skip
        if kind not in FLOWS:
            raise ValueError(f"kind must be one of {FLOWS}, got {kind!r}")
        if kind == "realnvp" and dim < 2:
            raise ValueError("coupling (realnvp) needs at least 2 dimensions to split; use iaf or nsf in 1-D")
        if transforms < 1:
            raise ValueError(f"a flow needs at least one transform, got {transforms}")
        self.kind, self.transforms = kind, transforms
        self.context = 0 if encoder is None else (context if context is not None else max(16, 2 * dim))
        super().__init__(dim, encoder, min_scale=min_scale)
        options = dict(transforms=transforms, hidden_features=[hidden or max(64, 2 * dim)] * 2, activation=nn.ELU)
        zuko = _zuko()
        build = {"iaf": zuko.flows.MAF, "maf": zuko.flows.MAF, "nsf": zuko.flows.NSF, "realnvp": zuko.flows.RealNVP}
        steps = build[kind](dim, self.context, **options).transform  # zuko's base is ours: dropped
        _near_identity(steps)
        self.flow = FlowTransform(steps, fast_sampling=kind != "maf")

    @classmethod
    def keywords(cls, name: str, number: int | None) -> dict[str, Any]:
        """The table's flow names are the kinds: ``nsf:3`` is ``kind="nsf", transforms=3``."""
        return {"kind": name, **super().keywords(name, number)}

    def num_params(self) -> int:
        return 2 * self.dim + self.context

    def initial(self) -> Tensor:
        return torch.cat([torch.zeros(self.dim), torch.full((self.dim,), _inverse_positive(1.0, self.min_scale))])

    def distribution(self, raw: Tensor) -> Distribution:
        loc, raw_scale, context = raw.split([self.dim, self.dim, self.context], dim=-1)
        return FlowNormal(self.flow, loc, _positive(raw_scale, self.min_scale), context if self.context else None)

    def raw_start(self, loc: Tensor, covariance: Tensor) -> Tensor:
        """loc and the marginal scales; the steps stay near the identity."""
        return torch.cat([loc, self._raw_scale(covariance.diagonal().sqrt())])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind!r}, transforms={self.transforms}, context={self.context}"
