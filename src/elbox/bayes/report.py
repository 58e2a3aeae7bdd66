"""A fit on disk: a run folder with the fit, its diagnostics, q's weights and figures.

    OUT/
      config.json        the model, family and every option of the fit
      posterior.json     summary, diagnostics, the verdict, the phases (seconds and log-density
                         evaluations of the start, each fit and each verdict), and the comparison
                         with reference draws when given
      metrics.jsonl      the objective, averaged per 100 steps (L-BFGS: the fresh-draw ELBO per set of draws)
      checkpoints/q.safetensors   q's raw parameters and the placement u = shift + scale v
      figures/marginals.png       q's marginals (beside the reference draws' where given)
      figures/elbo.png            the objective trace (none for the Laplace approximation: no steps)

Further figures of a fit, not written by ``write_run``: ``pairs`` (the most correlated pairs of
quantities) and ``khat`` (the PSIS k-hat of each replicate set).

Matplotlib's object-oriented API on the Agg canvas, as in ``elbox.plots.base``: no pyplot, no window.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoints import save_checkpoint, write_json, write_json_lines
from ..errors import ElboxError
from ..runs import LOCK, owned, run_folder_problem
from .diagnostics import KHAT_MAX, Diagnostics
from .posterior import Posterior

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: `elbox fit` without --out draws none
    from matplotlib.figure import Figure

__all__ = ["correlated_pairs", "describe", "khat", "marginals", "pairs", "phases", "trace", "write_run"]

PER_LINE = 100  # steps averaged into one line of metrics.jsonl


def _work(posterior: Posterior) -> str:
    """How q was reached: no steps (Laplace), L-BFGS iterations, or Adam steps."""
    state = "converged" if posterior.converged else "step limit reached, not converged"
    if posterior.options.get("optimizer") == "lbfgs":
        return f"{posterior.options['iterations']} L-BFGS iterations ({state})"
    if posterior.options.get("optimizer") is None and not len(posterior.elbo_trace):
        return "no VI steps (the mode and the Hessian there)"
    return f"{len(posterior.elbo_trace)} steps ({state})"


def phases(posterior: Posterior) -> str:
    """What the time went to: a table of the fit's phases, their wall seconds and log-density evaluations."""
    rows = posterior.phases
    if not rows:
        return ""
    width = max(len(r["phase"]) for r in rows)
    lines = [f"{'phase':<{width}} {'seconds':>8} {'log p evals':>12}"]
    lines += [f"{r['phase']:<{width}} {r['seconds']:>8.2f} {r['evaluations']:>12,}" for r in rows]
    total = sum(r["seconds"] for r in rows), sum(r["evaluations"] for r in rows)
    lines.append(f"{'total':<{width}} {total[0]:>8.2f} {total[1]:>12,}")
    return "\n".join(lines)


def _figure(**options: Any) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(**options)


def describe(posterior: Posterior, comparison: Any = None) -> str:
    """The text a user reads after a fit: what was fitted, the family chosen and why, the summary,
    the diagnostics with the verdict, the phases (time and log-density evaluations), and the
    comparison with reference draws when given."""
    lines = [
        f"Fitted {posterior.model.name} ({posterior.model.dim} unconstrained dimensions) "
        f"with q = {posterior.family_name}: {_work(posterior)}, "
        f"{posterior.seconds:.1f} s; start: {posterior.start.method}"
        + (f" ({posterior.start.reason})" if posterior.start.reason else "") + ".",
    ]  # fmt: skip
    for a in posterior.attempts:
        lines.append(f"  {a['family']:<12} {a['verdict']:<13} {'; '.join(a['reasons'])}")
    if posterior.choice:
        lines.append(posterior.choice)
    lines += ["", "Posterior (draws from q, constrained):", str(posterior.summary()), "", str(posterior.diagnostics())]
    lines += ["", "Where the time went (log p evals: points where log p(u, x) was computed):", phases(posterior)]
    if comparison is not None:
        met = "met" if comparison.passes() else "NOT met"
        lines += ["", "Against the reference draws (errors in reference sds):", str(comparison),
                  f"targets (every mean within 0.1 sd, every sd within 10%): {met}"]  # fmt: skip
    return "\n".join(lines)


def marginals(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None = None,
              max_panels: int = 20) -> "Figure":  # fmt: skip
    """A histogram of q's draws per scalar quantity (the first ``max_panels``), the reference's over it."""
    names = list(draws)[:max_panels]
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig = _figure(figsize=(2.6 * cols, 2.1 * rows), layout="constrained")
    legend = None
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        ref = None if reference is None else reference.get(name)
        legend = legend or (ax if ref is not None else None)
        both = draws[name] if ref is None else np.concatenate([draws[name], ref])
        bins = np.linspace(*np.quantile(both, [0.001, 0.999]), 50)
        ax.hist(draws[name], bins=bins, density=True, alpha=0.6, label="q")
        if ref is not None:
            ax.hist(ref, bins=bins, density=True, histtype="step", color="black", label="reference")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    if legend is not None:
        legend.legend(fontsize=7)
    return fig


def trace(elbo_trace: np.ndarray) -> "Figure":
    """The objective per step, and its mean per ``PER_LINE`` steps."""
    fig = _figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(elbo_trace, lw=0.5, alpha=0.4, label="per step")
    means = _window_means(elbo_trace)
    ax.plot((np.arange(len(means)) + 0.5) * PER_LINE, means, lw=1.5, label=f"mean per {PER_LINE} steps")
    low, high = np.quantile(elbo_trace[len(elbo_trace) // 10 :], [0.01, 1.0]) if len(elbo_trace) > 10 else (None, None)
    if low is not None and high > low:
        ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    ax.set_xlabel("step")
    ax.set_ylabel("objective (nats)")
    ax.legend(fontsize=8)
    return fig


KHAT_GOOD = 0.5  # Vehtari et al. (2024): below it PSIS estimates converge fast; up to KHAT_MAX they are usable
PAIR_POINTS = 2000  # draws shown per panel of ``pairs``: more only hide each other


def correlated_pairs(draws: dict[str, np.ndarray], n_pairs: int = 4) -> list[tuple[str, str, float]]:
    """The ``n_pairs`` pairs of quantities whose draws ``[S]`` correlate most (largest |r|), with r.

    >>> x = np.arange(10.0)
    >>> correlated_pairs({"a": x, "b": -x, "c": np.tile([0.0, 1.0], 5)}, 1)
    [('a', 'b', -1.0)]
    """
    names = list(draws)
    if len(names) < 2:
        raise ValueError(f"pairs needs at least two quantities, got {names}")
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant quantity has no correlation: r = nan
        r = np.corrcoef(np.stack([np.asarray(draws[n], dtype=float) for n in names]))
    i, j = np.triu_indices(len(names), k=1)
    strength = np.nan_to_num(np.abs(r[i, j]), nan=-1.0)
    order = np.argsort(-strength, kind="stable")[:n_pairs]
    return [(names[i[o]], names[j[o]], round(float(r[i[o], j[o]]), 6)) for o in order]


def pairs(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None = None, n_pairs: int = 4) -> "Figure":
    """Scatter plots of q's draws for the ``n_pairs`` most correlated pairs of scalar quantities
    (``correlated_pairs``, at most ``PAIR_POINTS`` draws each), the reference draws over them in
    black when given. A mean-field q cannot show a correlation the posterior has: these panels
    are where that shows."""
    chosen = correlated_pairs(draws, n_pairs)
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    fig = _figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
    for k, (a, b, r) in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.scatter(_thin(draws[a]), _thin(draws[b]), s=3, alpha=0.3, label="q")
        if reference is not None and a in reference and b in reference:
            ax.scatter(_thin(reference[a]), _thin(reference[b]), s=2, alpha=0.2, color="black", label="reference")
        ax.set_xlabel(a, fontsize=8)
        ax.set_ylabel(b, fontsize=8)
        ax.set_title(f"r = {r:.2f} under q", fontsize=9)
        ax.tick_params(labelsize=7)
        if k == 0 and reference is not None:
            ax.legend(fontsize=7, markerscale=3)
    return fig


def _thin(x: np.ndarray) -> np.ndarray:
    """At most ``PAIR_POINTS`` evenly spaced entries of ``x``: the same ones for every quantity, so pairs stay pairs."""
    return np.asarray(x)[:: max(1, -(-len(x) // PAIR_POINTS))]


def khat(diagnostics: Diagnostics) -> "Figure":
    """The PSIS k-hat of each replicate set of draws, against the thresholds of Yao et al. (2018)
    and Vehtari et al. (2024): below 0.5 good, 0.5 to 0.7 usable, above 0.7 do not trust q."""
    values = np.asarray(diagnostics.khat, dtype=float)
    fig = _figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    top = max(1.0, float(np.nanmax(values)) + 0.1) if len(values) else 1.0
    bottom = min(0.0, float(np.nanmin(values)) - 0.1) if len(values) else 0.0
    regions = [(bottom, KHAT_GOOD, "tab:green", "good"), (KHAT_GOOD, KHAT_MAX, "gold", "usable"),
               (KHAT_MAX, top, "tab:red", "do not trust")]  # fmt: skip
    for low, high, colour, label in regions:
        ax.axhspan(low, high, color=colour, alpha=0.12)
        ax.text(1.01, (low + high) / 2, label, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    for level in (KHAT_GOOD, KHAT_MAX):
        ax.axhline(level, color="gray", lw=0.8, ls="--")
    replicate = np.arange(1, len(values) + 1)
    ax.plot(replicate, values, "o", color="black")
    ax.set_ylim(bottom, top)
    ax.set_xlim(0.5, len(values) + 0.5)
    ax.set_xticks(replicate)
    ax.set_xlabel(f"replicate set ({diagnostics.draws} draws each)")
    ax.set_ylabel("PSIS k-hat")
    ax.set_title(f"Pareto k-hat of q's importance weights (max {diagnostics.khat_max:.2f})", fontsize=10)
    return fig


def _window_means(x: np.ndarray) -> np.ndarray:
    n = len(x) // PER_LINE
    return x[: n * PER_LINE].reshape(n, PER_LINE).mean(1) if n else x[None].mean(1)


def write_run(posterior: Posterior, out: str | Path, *, reference: dict[str, np.ndarray] | None = None,
              draws: int = 10_000, overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``posterior`` (and its diagnostics) to the folder ``out``; refuse a non-empty one unless ``overwrite``."""

    out = Path(out)
    with owned(out, create=True):  # a folder another process is writing is refused
        if any(p.name != LOCK for p in out.iterdir()) and not overwrite:
            raise ElboxError(f"{out} exists and is not empty: choose another --out, or pass --overwrite to replace it")
        try:
            return _write_run(posterior, out, reference, draws, extra)
        except OSError as e:
            raise run_folder_problem(out, e) from None


def _write_run(posterior: Posterior, out: Path, reference: dict[str, np.ndarray] | None, draws: int,
               extra: dict[str, Any] | None) -> Path:  # fmt: skip
    columns = posterior.columns(draws, seed=posterior.seed + 1)
    info = posterior.to_dict()
    write_json(out / "config.json", {k: info[k] for k in ("model", "family", "seed", "options")})
    diagnostics = posterior.diagnostics()
    report = info | {"summary": posterior.summary().to_dict(), "diagnostics": diagnostics.to_dict()} | (extra or {})
    write_json(out / "posterior.json", json.loads(json.dumps(report, default=float)))
    means = _window_means(posterior.elbo_trace) if len(posterior.elbo_trace) else []
    write_json_lines(out / "metrics.jsonl",
                     [{"step": (i + 1) * PER_LINE, "objective": float(m)} for i, m in enumerate(means)])  # fmt: skip
    tensors = {f"family.{k}": v for k, v in posterior.family.state_dict().items()}
    tensors |= {"shift": posterior.shift, "scale": posterior.scale}
    save_checkpoint(out / "checkpoints" / "q.safetensors", tensors, {"family": posterior.family_name,
                                                                     "model": posterior.model.name})  # fmt: skip
    from ..plots.base import save  # matplotlib only where figures are drawn

    save(marginals(columns, reference), out / "figures" / "marginals.png")
    if len(posterior.elbo_trace):
        save(trace(posterior.elbo_trace), out / "figures" / "elbo.png")
    if len(columns) >= 2:
        save(pairs(columns, reference), out / "figures" / "pairs.png")
    save(khat(diagnostics), out / "figures" / "khat.png")
    return out
