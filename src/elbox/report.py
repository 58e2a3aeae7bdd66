"""A run as one self-contained HTML page: ``RUN/report.html``.

The page holds everything it shows: figures are embedded as base64 ``data:`` URIs and the
style sheet is inline, so it opens offline and can be mailed as one file. It reads only what
the run folder already holds (``config.json``, ``metrics.jsonl``, ``run.json``,
``evaluation.json``, ``posterior.json``, ``figures/*.png``) and computes nothing expensive:
no evaluation is run. Every string is escaped by jinja2's autoescaping, so a run name or a
config value cannot inject markup.

A VAE run (written by ``elbox train``) has the sections ``configuration``, ``training``,
``evaluation``, ``generation``, ``latent-space`` and ``diagnostics``. A Bayesian fit (written by
``elbox fit --out``; it holds ``posterior.json``) has ``configuration``, ``training``,
``posterior``, ``diagnostics``, ``comparison`` and ``figures``.

>>> verdicts_of_gaps({"approximation": {"mean": 1.6, "se": 0.2}, "amortization": {"mean": 0.3, "se": 0.1}})[0].text
'approximation gap 1.60 ± 0.20 nats: a richer family could help (--family fullrank or a flow).'
"""

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from .checkpoints import write_atomic
from .errors import ElboxError
from .importance import KHAT_THRESHOLD
from .runs import owned, read_metrics

__all__ = [
    "Figure",
    "Section",
    "Table",
    "Verdict",
    "bayes_sections",
    "config_table",
    "embed_png",
    "figures_of",
    "is_bayesian",
    "render",
    "vae_sections",
    "verdicts_of_evaluation",
    "verdicts_of_gaps",
    "verdicts_of_posterior",
    "write_report",
]

REPORT = "report.html"
TEMPLATE = "report.html.j2"
GAP_MATTERS = 1.0  # nats per data point: a gap below this is not worth a richer family
TRAINING, GENERATION, LATENT, EVALUATION = (
    ("curves", "elbo", "trace", "loss"),
    ("samples", "reconstructions", "interpolation", "marginals", "correlations"),
    ("manifold", "latent", "traversal", "embedding", "kl_per_dimension", "kl-per-dimension"),
    ("bound", "gaps", "rate", "khat", "iwae", "tightness"),
)


@dataclass
class Figure:
    """A PNG of the run, embedded: ``uri`` is a ``data:image/png;base64,...`` URI."""

    name: str
    title: str
    uri: str


@dataclass
class Table:
    """A table: a header and rows of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Verdict:
    """A plain-language finding; ``level`` is ``ok``, ``warn`` or ``bad``."""

    level: str
    text: str


@dataclass
class Section:
    """One section of the page, with its anchor ``id``."""

    id: str
    title: str
    notes: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


# ----------------------------------------------------------------- reading the run folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ElboxError(f"{path} is corrupt ({e}); the report cannot read it. Rewrite or remove the file.") from None


def _optional_json(path: Path) -> Any:
    return _read_json(path) if path.is_file() else None


def _check_run(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise ElboxError(
            f"the run folder {run_dir} does not exist; give a folder written by `elbox train` or `elbox fit --out`."
        )
    if not (run_dir / "config.json").is_file():
        raise ElboxError(
            f"{run_dir} holds no config.json, so it is not a run folder written by `elbox train` or "
            "`elbox fit --out`; give such a folder."
        )


def is_bayesian(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a Bayesian fit (``posterior.json``) rather than a VAE run."""
    return (Path(run_dir) / "posterior.json").is_file()


# ----------------------------------------------------------------- formatting


def _number(x: Any, digits: int = 3) -> str:
    """A cell: floats to ``digits`` decimals (NaN and None as an em dash), everything else as text."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) >= 10**-digits or x == 0 else f"{x:.2e}"
    if isinstance(x, int):
        return str(x)
    return x if isinstance(x, str) else json.dumps(x)


def _pm(estimate: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± se`` of an ``{"mean", "se"}`` dict."""
    if not estimate:
        return "—"
    return f"{_number(estimate.get('mean'), digits)} ± {_number(estimate.get('se'), digits)}"


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys: ``{"model": {"latent_dim": 2}} -> [("model.latent_dim", 2)]``."""
    items: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        items += _flatten(value, f"{name}.") if isinstance(value, dict) and value else [(name, value)]
    return items


def config_table(config: dict[str, Any]) -> Table:
    """``config.json`` as a two-column table, nested keys dotted.

    >>> config_table({"epochs": 3, "model": {"hidden": [8, 8]}}).rows
    [['epochs', '3'], ['model.hidden', '[8, 8]']]
    """
    return Table(["option", "value"], [[k, _number(v)] for k, v in _flatten(config)])


def _title(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").capitalize()


# ----------------------------------------------------------------- figures


def embed_png(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figures_of(run_dir: str | Path) -> dict[str, list[Figure]]:
    """Every ``RUN/figures/*.png``, embedded, grouped by what it shows: ``training``, ``generation``,
    ``latent``, ``evaluation`` or ``other`` (names no group claims, so a figure added later still shows)."""
    groups: dict[str, list[Figure]] = {k: [] for k in ("training", "generation", "latent", "evaluation", "other")}
    for path in sorted((Path(run_dir) / "figures").glob("*.png")):
        groups[_group(path.stem)].append(Figure(path.name, _title(path.stem), embed_png(path)))
    return groups


def _group(stem: str) -> str:
    stem = stem.lower()
    for group, words in (("latent", LATENT), ("generation", GENERATION), ("training", TRAINING),
                         ("evaluation", EVALUATION)):  # fmt: skip
        if any(w in stem for w in words):
            return group
    return "other"


# ----------------------------------------------------------------- verdicts


def verdicts_of_gaps(gaps: dict[str, Any]) -> list[Verdict]:
    """What the approximation / amortization split says (Cremer et al. 2018, "Inference suboptimality")."""
    approximation, amortization = gaps["approximation"]["mean"], gaps["amortization"]["mean"]
    a, m = _pm(gaps["approximation"], 2), _pm(gaps["amortization"], 2)
    verdicts = [
        Verdict("warn", f"approximation gap {a} nats: a richer family could help (--family fullrank or a flow)"
                + _unsure(gaps["approximation"]) + ".")
        if approximation >= GAP_MATTERS
        else Verdict("ok", f"approximation gap {a} nats: q's family is not what limits the bound"
                     + _unsure(gaps["approximation"]) + ".")
    ]
    if amortization > approximation and amortization >= GAP_MATTERS / 2:
        verdicts.append(Verdict("warn", f"amortization gap {m} nats, larger than the approximation gap: the encoder "
                                "is the larger cost; a wider encoder or longer training helps more than a richer "
                                "family."))  # fmt: skip
    elif amortization >= GAP_MATTERS / 2:
        verdicts.append(Verdict("warn", f"amortization gap {m} nats, smaller than the approximation gap: the family "
                                "is the larger cost, the encoder the smaller one."))  # fmt: skip
    else:
        verdicts.append(Verdict("ok", f"amortization gap {m} nats: the encoder finds nearly the best q of its family."))
    return verdicts


def _unsure(estimate: dict[str, Any]) -> str:
    """A caveat when two standard errors reach across ``GAP_MATTERS``: the verdict could go either way."""
    mean, se = estimate["mean"], estimate.get("se")
    if se is None or not math.isfinite(se) or abs(mean - GAP_MATTERS) > 2 * se:
        return ""
    return f" (not decided: {GAP_MATTERS:g} nat is within two standard errors; more --gap-points would tell)"


def _khat_verdict(khat: dict[str, Any]) -> Verdict:
    threshold = khat.get("threshold", KHAT_THRESHOLD)
    share = khat.get(f"share_above_{threshold}")
    median, worst = _number(khat.get("median"), 2), _number(khat.get("max"), 2)
    if share is None or (isinstance(share, float) and math.isnan(share)):  # no point had a tail to fit
        return Verdict("warn", "k-hat could not be computed on any point, so nothing says whether the log p(x) "
                       "error bars can be trusted; evaluate with more particles (--k).")  # fmt: skip
    if share > 0:
        return Verdict("bad" if share > 0.1 else "warn",
                       f"k-hat above {threshold} on {100 * share:.0f}% of points (median {median}, "
                       f"max {worst}): do not trust the log p(x) error bars on those points; more "
                       "particles (--k) or a better q would.")  # fmt: skip
    return Verdict("ok", f"k-hat below {threshold} on every point (max {worst}): the log p(x) "
                   "estimates can be trusted.")  # fmt: skip


def verdicts_of_evaluation(evaluation: dict[str, Any]) -> list[Verdict]:
    """Plain-language findings from ``evaluation.json``: k-hat, the bound's slack, units, the gaps, warnings."""
    verdicts = [Verdict("bad", w) for w in evaluation.get("warnings") or []]
    if evaluation.get("psis_khat"):
        verdicts.append(_khat_verdict(evaluation["psis_khat"]))
    slack = ((evaluation.get("bounds") or {}).get("elbo") or {}).get("log_px_minus_bound")
    if slack:
        verdicts.append(Verdict("ok", f"log p(x) - ELBO = {_pm(slack, 2)} nats: how much the ELBO understates "
                                "the likelihood."))  # fmt: skip
    units = evaluation.get("active_units")
    if units and units["count"] < units["dimensions"]:
        verdicts.append(Verdict("warn", f"{units['count']} of {units['dimensions']} latent dimensions are active: "
                                "the others are unused (a smaller --latent-dim would do)."))  # fmt: skip
    if evaluation.get("gaps"):
        verdicts += verdicts_of_gaps(evaluation["gaps"])
    return verdicts


def verdicts_of_posterior(posterior: dict[str, Any]) -> list[Verdict]:
    """The fit's verdict and reasons, and k-hat in plain words."""
    d = posterior.get("diagnostics") or {}
    trusted = d.get("verdict") not in ("do not trust",)
    verdicts = [Verdict("ok" if trusted else "bad", f"verdict: {d.get('verdict', 'none recorded')}")]
    khat = [k for k in d.get("khat") or [] if k is not None]
    if khat:
        worst = max(khat)
        bad = worst >= KHAT_THRESHOLD
        text = "do not trust these posterior sds (nor the means)" if bad else "importance sampling can check q"
        verdicts.append(Verdict("bad" if bad else "ok", f"k-hat {worst:.2f}: {text}."))
    verdicts += [Verdict("warn" if trusted else "bad", r) for r in d.get("reasons") or []]
    if posterior.get("converged") is False:
        verdicts.append(Verdict("warn", "the step limit was reached before the objective converged: fit longer."))
    return verdicts


# ----------------------------------------------------------------- VAE run


def _training_table(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> Table:
    rows = [[split, _number(v.get("elbo")), _number(v.get("reconstruction")), _number(v.get("kl"))]
            for split in ("train", "valid", "test") if isinstance(v := summary.get(split), dict)]  # fmt: skip
    if not rows and metrics:
        last = metrics[-1]
        rows = [[s, _number(last.get(f"{s}_elbo")), _number(last.get(f"{s}_reconstruction")),
                 _number(last.get(f"{s}_kl"))] for s in ("train", "valid") if f"{s}_elbo" in last]  # fmt: skip
    return Table(["split", "ELBO", "reconstruction", "KL"], rows, "final metrics, nats per data point")


def _training_notes(metrics: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    s, d = info.get("summary") or {}, info.get("dataset") or {}
    notes = [f"Data set: {d['name']}." if d.get("name") else ""]
    if s:
        notes.append(f"{s.get('epochs', len(metrics))} epochs in {_number(s.get('seconds'), 1)} s; best validation "
                     f"ELBO at epoch {s.get('best_epoch', '—')}; status {info.get('status', 'unknown')}.")  # fmt: skip
    elif metrics:
        notes.append(f"{len(metrics)} epochs recorded in metrics.jsonl.")
    notes.append("The ELBO is a lower bound on log p(x), not log p(x) itself.")
    return [n for n in notes if n]


def _evaluation_table(e: dict[str, Any]) -> Table:
    k = (e.get("log_px") or {}).get("k")
    rows = [[f"log p(x) (IWAE, K = {k})", _pm(e.get("log_px")), ""]]
    for name, bound in (e.get("bounds") or {}).items():
        label = {"elbo": "ELBO", "cubo_2": "CUBO_2"}.get(name, name.upper().replace("IWAE_", "IWAE_"))
        rows.append([label, _pm(bound), _pm(bound.get("log_px_minus_bound"))])
    rows += [["rate (KL)", _pm(e.get("rate")), ""], ["distortion", _pm(e.get("distortion")), ""],
             ["I(x; z)", _pm(e.get("mutual_information")), ""]]  # fmt: skip
    if units := e.get("active_units"):
        rows.append(["active units", f"{units['count']} of {units['dimensions']}", ""])
    if ess := e.get("ess"):
        rows.append([f"importance ESS (of {ess['k']})", f"median {_number(ess['median'], 1)}, "
                     f"min {_number(ess['min'], 1)}", ""])  # fmt: skip
    if khat := e.get("psis_khat"):
        rows.append(["PSIS k-hat", f"median {_number(khat['median'], 2)}, max {_number(khat['max'], 2)}", ""])
    return Table(["quantity", "mean ± se (nats)", "log p(x) - bound"], rows, e.get("units", ""))


def _gaps_table(g: dict[str, Any]) -> Table:
    rows = [[name, _pm(g.get(key))] for name, key in (("approximation gap", "approximation"),
            ("amortization gap", "amortization"), ("total gap", "total"), ("log p(x)", "log_px"),
            ("ELBO, encoder's q", "elbo_encoder"), ("ELBO, per-point q", "elbo_local"))]  # fmt: skip
    return Table(["gap split", "mean ± se (nats)"], rows, f"on {g.get('points')} points, {g.get('steps')} steps")


def _evaluation_section(run_dir: Path, evaluation: dict[str, Any] | None, figures: list[Figure]) -> Section:
    section = Section("evaluation", "Evaluation", figures=figures)
    if evaluation is None:
        section.notes.append(f"No evaluation.json yet: run `elbox evaluate {run_dir}` to estimate log p(x) with "
                             "error bars and split the gap, then `elbox report RUN` to refresh this page.")  # fmt: skip
        return section
    source = evaluation.get("source") or {}
    split, checkpoint = source.get("split", "?"), source.get("checkpoint", "?")
    section.notes.append(f"On the {split} split ({evaluation.get('points')} points, {checkpoint} checkpoint); "
                         "every number is mean ± standard error.")  # fmt: skip
    section.tables.append(_evaluation_table(evaluation))
    if evaluation.get("gaps"):
        section.tables.append(_gaps_table(evaluation["gaps"]))
    return section


def vae_sections(run_dir: str | Path) -> list[Section]:
    """The sections of a VAE run's report."""
    run_dir = Path(run_dir)
    config, info = _read_json(run_dir / "config.json"), _optional_json(run_dir / "run.json") or {}
    metrics, evaluation = read_metrics(run_dir), _optional_json(run_dir / "evaluation.json")
    figures = figures_of(run_dir)
    diagnostics = Section("diagnostics", "Diagnostics", figures=figures["other"])
    if evaluation is None:
        diagnostics.notes.append(f"The verdicts come from evaluation.json: run `elbox evaluate {run_dir}`.")
    else:
        diagnostics.verdicts = verdicts_of_evaluation(evaluation)
    latent = Section("latent-space", "Latent space", figures=figures["latent"])
    if not latent.figures:
        latent.notes.append(f"No latent-space figure in {run_dir / 'figures'} (the manifold is drawn for 2-D latents).")
    return [
        Section("configuration", "Configuration", tables=[config_table(config)]),
        Section("training", "Training", notes=_training_notes(metrics, info),
                tables=[_training_table(metrics, info.get("summary") or {})], figures=figures["training"]),
        _evaluation_section(run_dir, evaluation, figures["evaluation"]),
        Section("generation", "Generation", figures=figures["generation"],
                notes=_generation_notes(figures["generation"], info)),
        latent,
        diagnostics,
    ]  # fmt: skip


def _generation_notes(figures: list[Figure], info: dict[str, Any]) -> list[str]:
    if not figures:
        return ["No samples, reconstructions or interpolations drawn yet."]
    if (info.get("dataset") or {}).get("schema"):  # a table
        return ["A table: each column's marginal and the correlations between columns, data against samples "
                "x ~ p(x | z), stand for the image grids; reconstructions are predicted against true per column."]
    return []


# ----------------------------------------------------------------- Bayesian fit


def _posterior_table(summary: dict[str, dict[str, float]]) -> Table:
    columns = ["mean", "sd", "q5", "q50", "q95"]
    rows = [[name, *(_number(q.get(c)) for c in columns)] for name, q in summary.items()]
    return Table(["quantity", *columns], rows, "draws from q, constrained")


def _comparison_table(comparison: dict[str, dict[str, float]]) -> Table:
    rows = []
    for name, c in comparison.items():
        met = abs(c["mean_error"]) <= 0.1 and abs(c["sd_ratio"] - 1) <= 0.1
        rows.append([name, _number(c["mean_error"]), _number(c["sd_ratio"]), _number(c["wasserstein"]),
                     "met" if met else "NOT met"])  # fmt: skip
    return Table(["quantity", "mean error (ref. sds)", "sd ratio", "W1 (ref. sds)", "target"], rows,
                 "targets: every mean within 0.1 sd, every sd within 10%")  # fmt: skip


def _fit_notes(p: dict[str, Any]) -> list[str]:
    start = p.get("start") or {}
    notes = [f"Fitted {p.get('model')} with q = {p.get('family')}: {p.get('steps')} steps "
             f"({'converged' if p.get('converged') else 'step limit reached, not converged'}), "
             f"{_number(p.get('seconds'), 1)} s, ELBO {_number(p.get('elbo'))}; start: {start.get('method', '?')}"
             + (f" ({start['reason']})" if start.get("reason") else "") + "."]  # fmt: skip
    notes += [f"tried {a.get('family')}: {a.get('verdict')} ({'; '.join(a.get('reasons') or [])})"
              for a in p.get("attempts") or []]  # fmt: skip
    return notes + ([p["choice"]] if p.get("choice") else [])


def _phases_table(p: dict[str, Any]) -> list[Table]:
    rows = [[r.get("phase", "?"), _number(r.get("seconds"), 2), f"{int(r.get('evaluations', 0)):,}"]
            for r in p.get("phases") or []]  # fmt: skip
    return [Table(["phase", "seconds", "log p evaluations"], rows, "where the fit's time went")] if rows else []


def _diagnostics_table(d: dict[str, Any]) -> Table:
    rows = [["k-hat per replicate", ", ".join(_number(k, 2) for k in d.get("khat") or [])],
            ["ESS per replicate", ", ".join(_number(e, 0) for e in d.get("ess") or [])]]  # fmt: skip
    for name in ("elbo", "log_evidence"):
        if isinstance(v := d.get(name), list) and len(v) == 2:
            rows.append([name.replace("_", " "), f"{_number(v[0])} ± {_number(v[1])}"])
    return Table(["diagnostic", "value"], rows, f"{d.get('replicates')} sets of {d.get('draws')} draws")


def bayes_sections(run_dir: str | Path) -> list[Section]:
    """The sections of a Bayesian fit's report."""
    run_dir = Path(run_dir)
    config, posterior = _read_json(run_dir / "config.json"), _read_json(run_dir / "posterior.json")
    figures = figures_of(run_dir)
    comparison = posterior.get("comparison")
    rest = figures["generation"] + figures["latent"] + figures["evaluation"] + figures["other"]
    return [
        Section("configuration", "Configuration", tables=[config_table(config)]),
        Section("training", "Fit", notes=_fit_notes(posterior), figures=figures["training"],
                tables=_phases_table(posterior)),
        Section("posterior", "Posterior", tables=[_posterior_table(posterior.get("summary") or {})]),
        Section("diagnostics", "Diagnostics", verdicts=verdicts_of_posterior(posterior),
                tables=[_diagnostics_table(posterior.get("diagnostics") or {})]),
        Section("comparison", "Comparison with reference draws",
                tables=[_comparison_table(comparison)] if comparison else [],
                notes=[] if comparison else ["No reference draws were found for this model, so there is no "
                                             "comparison (pass --posteriordb DIR to `elbox fit`)."]),
        Section("figures", "Figures", figures=rest),
    ]  # fmt: skip


# ----------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    """Templates from the package data ``elbox/templates``, every ``{{ value }}`` HTML-escaped."""
    loader = jinja2.PackageLoader("elbox", "templates")
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def render(title: str, kind: str, sections: list[Section]) -> str:
    """The page, as HTML text (autoescaped: every string of ``sections`` renders as text)."""
    return _environment().get_template(TEMPLATE).render(title=title, kind=kind, sections=sections)


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` for a run folder of ``elbox train`` or ``elbox fit --out``; return its path.

    Cheap: it reads the folder's files and embeds its figures; it runs no evaluation.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        _check_run(run_dir)
    with owned(run_dir):  # not a folder another process is writing
        _check_run(run_dir)
        return _write(run_dir)


def _write(run_dir: Path) -> Path:
    bayesian = is_bayesian(run_dir)
    sections = bayes_sections(run_dir) if bayesian else vae_sections(run_dir)
    kind = "Bayesian fit" if bayesian else "VAE run"
    html = render(f"elbox report: {run_dir.resolve().name}", kind, sections)
    path = run_dir / REPORT
    try:
        write_atomic(path, lambda p: p.write_text(html, encoding="utf-8"))
    except OSError as e:
        raise ElboxError(f"the report {path} cannot be written: {e.strerror or e}. Make the run folder writable, "
                         "or free some space.") from None
    return path
