"""A fit on disk: a run folder with the fit, its diagnostics, q's weights and figures.

    OUT/
      config.json        the model, family and every option of the fit
      posterior.json     summary, diagnostics, the verdict (and the comparison with reference draws)
      metrics.jsonl      the objective, averaged per 100 steps
      checkpoints/q.safetensors   q's raw parameters and the placement u = shift + scale v
      figures/marginals.png       q's marginals (beside the reference draws' where given)
      figures/elbo.png            the objective trace

Matplotlib's object-oriented API on the Agg canvas, as in ``elbox.plots``: no pyplot, no window.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..checkpoints import save_checkpoint, write_atomic, write_json, write_json_lines
from ..errors import ElboxError
from .posterior import Posterior

__all__ = ["describe", "marginals", "trace", "write_run"]

PER_LINE = 100  # steps averaged into one line of metrics.jsonl


def describe(posterior: Posterior, comparison: Any = None) -> str:
    """The text a user reads after a fit: what was fitted, the family chosen and why, the summary,
    the diagnostics with the verdict, and the comparison with reference draws when given."""
    steps = len(posterior.elbo_trace)
    lines = [
        f"Fitted {posterior.model.name} ({posterior.model.dim} unconstrained dimensions) "
        f"with q = {posterior.family_name}: "
        f"{steps} steps ({'converged' if posterior.converged else 'step limit reached, not converged'}), "
        f"{posterior.seconds:.1f} s; start: {posterior.start.method}"
        + (f" ({posterior.start.reason})" if posterior.start.reason else "") + ".",
    ]  # fmt: skip
    for a in posterior.attempts:
        lines.append(f"  {a['family']:<12} {a['verdict']:<13} {'; '.join(a['reasons'])}")
    if posterior.choice:
        lines.append(posterior.choice)
    lines += ["", "Posterior (draws from q, constrained):", str(posterior.summary()), "", str(posterior.diagnostics())]
    if comparison is not None:
        met = "met" if comparison.passes() else "NOT met"
        lines += ["", "Against the reference draws (errors in reference sds):", str(comparison),
                  f"targets (every mean within 0.1 sd, every sd within 10%): {met}"]  # fmt: skip
    return "\n".join(lines)


def marginals(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None = None,
              max_panels: int = 20) -> Figure:  # fmt: skip
    """A histogram of q's draws per scalar quantity (the first ``max_panels``), the reference's over it."""
    names = list(draws)[:max_panels]
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.1 * rows), layout="constrained")
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


def trace(elbo_trace: np.ndarray) -> Figure:
    """The objective per step, and its mean per ``PER_LINE`` steps."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
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


def _window_means(x: np.ndarray) -> np.ndarray:
    n = len(x) // PER_LINE
    return x[: n * PER_LINE].reshape(n, PER_LINE).mean(1) if n else x[None].mean(1)


def _save(fig: Figure, path: Path) -> Path:
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=100))
    fig.clear()
    return path


def write_run(posterior: Posterior, out: str | Path, *, reference: dict[str, np.ndarray] | None = None,
              draws: int = 10_000, overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``posterior`` (and its diagnostics) to the folder ``out``; refuse a non-empty one unless ``overwrite``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ElboxError(f"{out} exists and is not empty: choose another --out, or pass --overwrite to replace it")
    columns = posterior.columns(draws, seed=posterior.seed + 1)
    info = posterior.to_dict()
    write_json(out / "config.json", {k: info[k] for k in ("model", "family", "seed", "options")})
    diagnostics = posterior.diagnostics()
    report = info | {"summary": posterior.summary().to_dict(), "diagnostics": diagnostics.to_dict()} | (extra or {})
    write_json(out / "posterior.json", json.loads(json.dumps(report, default=float)))
    means = _window_means(posterior.elbo_trace)
    write_json_lines(out / "metrics.jsonl",
                     [{"step": (i + 1) * PER_LINE, "objective": float(m)} for i, m in enumerate(means)])  # fmt: skip
    tensors = {f"family.{k}": v for k, v in posterior.family.state_dict().items()}
    tensors |= {"shift": posterior.shift, "scale": posterior.scale}
    save_checkpoint(out / "checkpoints" / "q.safetensors", tensors, {"family": posterior.family_name,
                                                                     "model": posterior.model.name})  # fmt: skip
    _save(marginals(columns, reference), out / "figures" / "marginals.png")
    _save(trace(posterior.elbo_trace), out / "figures" / "elbo.png")
    return out
