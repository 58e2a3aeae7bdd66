"""Figures of an ``Evaluation``: KL per dimension, bound tightness, the gap decomposition, rate and distortion."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..evaluation import ACTIVE_THRESHOLD, Estimate, Evaluation
from .base import save

__all__ = ["bound_tightness", "gaps", "kl_per_dimension", "rate_distortion", "write_evaluation_figures"]


def kl_per_dimension(evaluation: Evaluation) -> Figure:
    """Bars of the mean over points of KL(q(z_d | x) || p(z_d)) per latent dimension d, in order,
    the active units (Cov_x E_q[z_d | x] > ``ACTIVE_THRESHOLD``) in a second colour.

    Raises ValueError when ``evaluation.kl_per_dimension`` is ``None`` (a q or p that does not
    factorize over dimensions has no per-dimension KL): plot nothing rather than a stand-in.
    """
    if evaluation.kl_per_dimension is None:
        raise ValueError(
            "this evaluation has no KL per latent dimension: its q(z | x) or p(z) does not factorize over "
            "dimensions (a full-rank, low-rank, flow or mixture family); use a diagonal family, or read "
            "evaluation.unit_variances for the active units"
        )
    kl = evaluation.kl_per_dimension.detach().double().mean(0).cpu().numpy()  # [N, D] -> [D]
    active = (evaluation.unit_variances > ACTIVE_THRESHOLD).cpu().numpy()
    d = np.arange(len(kl))
    fig = Figure(figsize=(max(4.0, 0.35 * len(kl) + 1.5), 3.4), layout="constrained")
    ax = fig.add_subplot()
    colours = np.where(active, "tab:blue", "tab:gray")
    ax.bar(d, kl, color=colours)
    # the legend from patches: a bar call with no bars would draw its entry in the default colour
    ax.legend(handles=[Patch(color="tab:blue", label=f"active, Cov_x E_q[z_d|x] > {ACTIVE_THRESHOLD} ({active.sum()})"),
                       Patch(color="tab:gray", label=f"inactive ({(~active).sum()})")], fontsize=8)  # fmt: skip
    ax.set_xticks(d if len(d) <= 32 else d[:: math.ceil(len(d) / 32)])
    ax.set_xlabel("latent dimension d")
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)), nats")
    ax.set_title("rate per latent dimension, mean over points", fontsize=10)
    return fig


def bound_tightness(evaluation: Evaluation) -> Figure:
    """IWAE_k against k (log axis), mean over points ± SE, with the ELBO (a line at IWAE_1's
    level), CUBO_2 from the K particles above and the log p(x) estimate (IWAE_K) as a band of
    ± SE; nats per data point. The SEs are over data points, so they say how well the mean
    over this data set is known, not how far apart two bounds are."""
    ks = sorted(evaluation.iwae)
    curve = [Estimate.of(evaluation.iwae[k]) for k in ks]
    elbo, cubo, log_px = (Estimate.of(v) for v in (evaluation.elbo, evaluation.cubo, evaluation.log_px))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(log_px.mean - log_px.se, log_px.mean + log_px.se, color="tab:green", alpha=0.2,
               label=f"log p(x) ≈ {log_px:.2f}")  # fmt: skip
    ax.axhline(log_px.mean, color="tab:green", lw=1)
    ax.errorbar(ks, [e.mean for e in curve], yerr=[e.se for e in curve], marker="o", capsize=3, label="IWAE_k")
    ax.axhline(elbo.mean, color="tab:gray", ls="--", label=f"ELBO = {elbo:.2f}")
    ax.axhline(cubo.mean, color="tab:red", ls=":", label=f"CUBO_2 = {cubo:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("k (particles)")
    ax.set_ylabel("nats per data point")
    ax.set_title(f"bound tightness on {evaluation.points} points")
    ax.legend(fontsize=8)
    return fig


def gaps(evaluation: Evaluation) -> Figure:
    """The inference gap log p(x) - L[q_enc] as a stacked bar: the approximation gap
    log p(x) - L[q*] below, the amortization gap L[q*] - L[q_enc] on top (Cremer, Li & Duvenaud
    2018), each the mean over the gap points with its SE as an error bar; nats per data point.

    Raises ValueError when the evaluation has no gap decomposition (``gap_points = 0``).
    """
    if evaluation.gaps is None:
        raise ValueError(
            "this evaluation has no gap decomposition (it ran with gap_points = 0); "
            "evaluate with gap_points > 0 (elbox evaluate --gap-points N) to draw the gaps"
        )
    approximation, amortization = Estimate.of(evaluation.gaps.approximation), Estimate.of(evaluation.gaps.amortization)
    fig = Figure(figsize=(5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar([0], [approximation.mean], width=0.5, color="tab:blue", label=f"approximation {approximation:.2f}")
    ax.bar([0], [amortization.mean], width=0.5, bottom=[approximation.mean], color="tab:orange",
           label=f"amortization {amortization:.2f}")  # fmt: skip
    # each error bar sits at the top of its own segment, where that segment's mean ends
    tops = [approximation.mean, approximation.mean + amortization.mean]
    ax.errorbar([0.08, -0.08], tops, yerr=[approximation.se, amortization.se], fmt="none", color="black", capsize=4)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks([0], [f"{evaluation.gaps.log_px.shape[0]} points"])
    ax.set_xlim(-0.5, 1.6)  # room on the right for the legend
    ax.set_ylabel("nats per data point")
    ax.set_title("inference gap  log p(x) - L[q_enc]", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def rate_distortion(evaluations: Evaluation | Sequence[Evaluation], labels: Sequence[str] | None = None,
                    *, iso_elbo: bool = True) -> Figure:  # fmt: skip
    """Rate R = mean KL(q(z | x) || p(z)) against distortion D = mean -E_q log p(x | z) (Alemi et al.
    2018), one point ± SE per evaluation; with ``iso_elbo``, the line R + D = -ELBO through each."""
    evaluations = [evaluations] if isinstance(evaluations, Evaluation) else list(evaluations)
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(evaluations))]
    if len(labels) != len(evaluations):
        raise ValueError(f"labels must name each evaluation: {len(evaluations)} evaluations, {len(labels)} labels")
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for e, label in zip(evaluations, labels, strict=True):
        rate, distortion = Estimate.of(e.kl), Estimate.of(-e.reconstruction)
        ax.errorbar(rate.mean, distortion.mean, xerr=rate.se, yerr=distortion.se, marker="o", capsize=3, label=label)
    if iso_elbo:
        _iso_elbo_lines(ax, [Estimate.of(-e.elbo).mean for e in evaluations])
    ax.set_xlabel("rate  KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion  -E_q log p(x|z), nats")
    ax.set_title("rate and distortion")
    ax.legend(fontsize=8)
    return fig


def _iso_elbo_lines(ax: Any, totals: Sequence[float]) -> None:
    """The lines R + D = c (equal ELBO) for each c, across the axes' current view."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    r = np.linspace(min(x0, 0.0), x1, 2)
    for c in totals:
        ax.plot(r, c - r, color="gray", lw=0.7, ls=":")
    ax.set_xlim(x0, x1)  # the lines must not widen the view
    ax.set_ylim(y0, y1)


def write_evaluation_figures(evaluation: Evaluation, directory: str | Path) -> list[Path]:
    """The figures of an evaluation into ``directory``: bound tightness, rate and distortion, and
    where the evaluation has them, the KL per latent dimension and the gap decomposition."""
    directory = Path(directory)
    written = [
        save(bound_tightness(evaluation), directory / "bound_tightness.png"),
        save(rate_distortion(evaluation), directory / "rate_distortion.png"),
    ]
    if evaluation.kl_per_dimension is not None:
        written.append(save(kl_per_dimension(evaluation), directory / "kl_per_dimension.png"))
    if evaluation.gaps is not None:
        written.append(save(gaps(evaluation), directory / "gaps.png"))
    return written
