"""``Evaluation``: what ``evaluate`` measured, as a table for a terminal and as JSON."""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..checkpoints import write_json
from ..importance import KHAT_THRESHOLD
from .config import EvaluationConfig
from .estimate import Estimate, floats
from .gaps import Gaps
from .information import ACTIVE_THRESHOLD, COLLAPSE_MI, unit_activity

__all__ = ["SHORTFALL", "Evaluation"]

SHORTFALL = 0.1  # nats: a log p(x) estimate this far below a better proposal's is worth a warning


def _json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON has no such numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _share(values: Tensor, above: float) -> float:
    """The share of the finite values above ``above``; NaN when none is finite (never a false 0%)."""
    finite = values[values.isfinite()]
    return (finite > above).double().mean().item() if finite.numel() else math.nan


@dataclass(eq=False)
class Evaluation:
    """What ``evaluate`` measured on N data points; per-point tensors are ``[N]``, nats per data point.

    Attributes:
        config: the options it ran with.
        source: where the model and data came from (run folder, split, checkpoint), if a run.
        log_px: log p(x) estimates, IWAE_K (``log_likelihood``); ``mc_se``, ``ess``: their
            Monte Carlo standard errors and importance ESS; ``khat``: PSIS k-hat (or ``None``).
        iwae: the IWAE_k curve ``{k: [N]}`` (``iwae_curve``; ``iwae[K]`` is ``log_px``).
        cubo: CUBO_2 from the same K particles: an upper bound on log p(x) only as K -> infinity;
            with finite K its estimate is biased low (and it is never below ``log_px``).
        reconstruction: E_q log p(x | z), the negative distortion (Alemi et al. 2018), from the K particles.
        kl: the rate KL(q(z | x) || p(z)), closed form where there is one, else Monte Carlo.
        kl_per_dimension: ``[N, D]`` for a q and p that factorize over dimensions, else ``None``.
        means: E_q[z | x] ``[N, D]`` (closed form, else the mean of the K particles).
        mutual_information: ``[M]`` (``mutual_information``) on ``config.mi_points`` points.
        gaps: the approximation/amortization split on ``config.gap_points`` points, or ``None``.
        gap_log_px: ``log_px`` (the encoder as the only proposal) on the gap points ``[G]``, to
            compare with ``gaps.log_px`` (q* mixed in): see ``proposal_shortfall``.
        seconds: wall time.
    """

    config: EvaluationConfig
    source: dict[str, Any]
    log_px: Tensor
    mc_se: Tensor
    ess: Tensor
    khat: Tensor | None
    iwae: dict[int, Tensor]
    cubo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_per_dimension: Tensor | None
    means: Tensor
    mutual_information: Tensor
    gaps: Gaps | None
    gap_log_px: Tensor | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for message in (self.collapse_warning, self.proposal_warning):
            if message:
                self.warnings.append(message)

    @property
    def proposal_shortfall(self) -> Estimate | None:
        """How far the encoder-only log p(x) estimate falls below the one with q* mixed in, on the gap points.

        Both are IWAE estimates, lower bounds in expectation; the mixture's proposal holds the
        per-point optimum q*, so where the encoder is a poor proposal (k-hat above 0.7) the
        mixture finds mass the encoder's K particles miss. A shortfall well above zero says the
        headline log p(x) is biased low by about that much: a bound read as an estimate.
        """
        if self.gaps is None or self.gap_log_px is None:
            return None
        return Estimate.of(self.gaps.log_px - self.gap_log_px)

    @property
    def proposal_warning(self) -> str | None:
        """A message when ``proposal_shortfall`` exceeds ``SHORTFALL`` nats by more than 3 standard errors."""
        short = self.proposal_shortfall
        if short is None or not short.mean - 3 * (0.0 if math.isnan(short.se) else short.se) > SHORTFALL:
            return None
        return (
            f"the encoder is a poor importance-sampling proposal: on the {self.gap_log_px.shape[0]} gap points, "
            f"with the per-point optimum q* mixed into the proposal, log p(x) comes out {short:.2f} nats higher "
            f"than with the encoder alone. The log p(x) above is biased low by about that much (it is a "
            "stochastic lower bound, not the value); raise K, or read the gap table's log p(x)."
        )

    @property
    def points(self) -> int:
        return int(self.log_px.shape[0])

    @property
    def elbo(self) -> Tensor:
        """The ELBO per point, reconstruction - KL ``[N]``."""
        return self.reconstruction - self.kl

    @property
    def unit_variances(self) -> Tensor:
        """Cov_x(E_q[z_d | x]) per latent dimension ``[D]`` (``unit_activity``)."""
        return unit_activity(self.means)

    @property
    def active_units(self) -> int:
        return int((self.unit_variances > ACTIVE_THRESHOLD).sum())

    @property
    def collapse_warning(self) -> str | None:
        """A message when the posterior has collapsed: no active unit, or I(x; z) below ``COLLAPSE_MI``."""
        mi, d = self.mutual_information.mean().item(), self.means.shape[1]
        if self.active_units > 0 and mi >= COLLAPSE_MI:
            return None
        return (
            f"posterior collapse: {self.active_units} of {d} latent dimensions are active (Cov_x E_q[z_d | x] > "
            f"{ACTIVE_THRESHOLD}) and I(x; z) = {mi:.3f} nats (threshold {COLLAPSE_MI}). q(z | x) barely depends "
            "on x: the decoder models the data without the latent code, and the ELBO's KL term says nothing. "
            "Try KL warm-up or free bits (--kl-warmup, --free-bits), or a weaker decoder."
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able data: the summary, and per-point log p(x), its error, ESS and k-hat."""
        k = self.config.k
        log_px = Estimate.of(self.log_px)
        summary = {
            "source": self.source,
            "config": self.config.to_dict(),
            "units": "nats per data point; se is the standard error over data points",
            "points": self.points,
            "log_px": log_px.to_dict() | {"k": k, "mc_se_median": self.mc_se.median().item()},
            "ess": {"median": self.ess.median().item(), "min": self.ess.min().item(), "k": k},
            "psis_khat": None if self.khat is None else {
                "median": self.khat.nanmedian().item(), "max": self.khat.nan_to_num(-math.inf).max().item(),
                f"share_above_{KHAT_THRESHOLD}": _share(self.khat, KHAT_THRESHOLD), "threshold": KHAT_THRESHOLD,
            },
            "bounds": {
                "elbo": self._bound(self.elbo),
                **{f"iwae_{j}": self._bound(v) for j, v in self.iwae.items()},
                "cubo_2": self._bound(self.cubo) | {"note": "an upper bound as K -> infinity; finite K: biased low"},
            },
            "rate": Estimate.of(self.kl).to_dict(),
            "distortion": Estimate.of(-self.reconstruction).to_dict(),
            "kl_per_dimension": None if self.kl_per_dimension is None else floats(self.kl_per_dimension.mean(0)),
            "active_units": {
                "count": self.active_units, "dimensions": int(self.means.shape[1]), "threshold": ACTIVE_THRESHOLD,
                "variances": floats(self.unit_variances),
            },
            "mutual_information": Estimate.of(self.mutual_information).to_dict() | {
                "points": int(self.mutual_information.shape[0]), "ceiling": math.log(self.mutual_information.shape[0]),
            },
            "gaps": None if self.gaps is None else self.gaps.to_dict() | {
                "log_px_encoder_proposal": Estimate.of(self.gap_log_px).to_dict(),
                "proposal_shortfall": self.proposal_shortfall._asdict(),
            },
            "warnings": self.warnings,
            "seconds": self.seconds,
            "per_point": {
                "log_px": floats(self.log_px), "mc_se": floats(self.mc_se), "ess": floats(self.ess, 2),
                "psis_khat": None if self.khat is None else floats(self.khat, 4),
            },
        }  # fmt: skip
        return _json_safe(summary)

    def _bound(self, values: Tensor) -> dict[str, Any]:
        """A bound's mean and SE, with log p(x) - bound (paired over points: a smaller SE than either)."""
        return Estimate.of(values).to_dict() | {"log_px_minus_bound": Estimate.of(self.log_px - values).to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as JSON, atomically (a crash leaves the old file or the new one)."""
        write_json(path, self.to_dict())
        return Path(path)

    def table(self) -> str:
        """The evaluation as a table for a terminal, every figure with its unit and uncertainty."""
        return "\n".join(_table(self))

    def __str__(self) -> str:
        return self.table()


def _row(label: str, value: str, note: str = "") -> str:
    return f"  {label:<44}{value:>22}  {note}".rstrip()


def _table(e: Evaluation) -> Iterator[str]:
    c, s = e.config, e.source
    where = f"{s['run']} ({s['checkpoint']} checkpoint), {s['split']} split" if s.get("run") else "the data given"
    yield f"Evaluation of {where}: {e.points:,} points, K = {c.k:,} particles each, seed {c.seed}."
    yield "Nats per data point; ± is the standard error over data points."
    yield ""
    yield _row(f"log p(x), importance sampling (K = {c.k:,})", f"{Estimate.of(e.log_px):.3f}")
    yield _row("Monte Carlo error of each point's estimate", f"median {e.mc_se.median():.3f}",
               f"max {e.mc_se.max():.3f} (delta method)")  # fmt: skip
    yield _row("importance ESS per point", f"median {e.ess.median():,.1f}", f"of {c.k:,}; min {e.ess.min():.1f}")
    if e.khat is not None and not e.khat.isfinite().any():
        yield _row("PSIS k-hat per point", "not computed", "no point's weights have a tail to fit (more --k)")
    elif e.khat is not None:
        yield _row("PSIS k-hat per point", f"median {e.khat.nanmedian():.2f}",
                   f"{100 * _share(e.khat, KHAT_THRESHOLD):.1f}% of points above {KHAT_THRESHOLD}")  # fmt: skip
    yield ""
    yield _row("bound", "value", f"{'log p(x) - bound':>20}")
    rows = {"ELBO = reconstruction - KL": e.elbo, **{f"IWAE_{j}": v for j, v in e.iwae.items()}, "CUBO_2": e.cubo}
    for label, v in rows.items():
        yield _row(label, f"{Estimate.of(v):.3f}", f"{Estimate.of(e.log_px - v):.3f}".rjust(20))
    yield "  IWAE_k: the mean over disjoint groups of k of the K particles; IWAE_K is the log p(x) estimate."
    yield "  CUBO_2 bounds log p(x) from above only as K -> infinity; its K-particle estimate is biased low."
    yield ""
    yield "rate and distortion (Alemi et al. 2018)"
    yield _row("rate: KL(q(z | x) || p(z))", f"{Estimate.of(e.kl):.3f}")
    yield _row("distortion: -E_q log p(x | z)", f"{Estimate.of(-e.reconstruction):.3f}")
    if e.kl_per_dimension is not None:
        per_dim = e.kl_per_dimension.mean(0).sort(descending=True).values
        shown = " ".join(f"{v:.2f}" for v in per_dim[:8].tolist()) + (" ..." if per_dim.numel() > 8 else "")
        yield _row("KL per dimension, largest first", shown)
    d = e.means.shape[1]
    yield _row(f"active units (Cov_x E_q[z_d | x] > {ACTIVE_THRESHOLD})", f"{e.active_units} of {d}")
    m = e.mutual_information.shape[0]
    ceiling = f"log {m:,} = {math.log(m):.2f}"
    # near the estimator's ceiling it says "at least"
    note = (
        f"(at the ceiling {ceiling}: at least this)"
        if e.mutual_information.mean() > math.log(m) - 0.1
        else f"(at most {ceiling})"
    )
    yield _row(f"I(x; z), aggregate posterior of {m:,} points", f"{Estimate.of(e.mutual_information):.3f}", note)
    if e.gaps is not None:
        yield from _gap_rows(e.gaps)
        yield _row("log p(x) here, encoder alone as proposal", f"{Estimate.of(e.gap_log_px):.3f}")
        yield _row("log p(x) here, encoder and q* as proposal", f"{Estimate.of(e.gaps.log_px):.3f}",
                   f"higher by {e.proposal_shortfall:.3f}")  # fmt: skip
    for message in e.warnings:
        yield ""
        yield f"warning: {message}"


def _gap_rows(g: Gaps) -> Iterator[str]:
    yield ""
    yield (
        f"inference gaps (Cremer, Li & Duvenaud 2018) on {g.log_px.shape[0]:,} points: q* = q optimised per point "
        f"in the same family ({g.steps} Adam steps, lr {g.lr:g}, {g.particles} particles)"
    )
    yield _row("total: log p(x) - ELBO(q_encoder)", f"{Estimate.of(g.total):.3f}")
    yield _row("approximation: log p(x) - ELBO(q*)", f"{Estimate.of(g.approximation):.3f}")
    yield _row("amortization: ELBO(q*) - ELBO(q_encoder)", f"{Estimate.of(g.amortization):.3f}")
    yield f"  the last 10% of the steps raised the mean ELBO(q*) by {g.last_gain:.4f} nats"
