"""The ``elbox`` command: it parses options and calls the library, nothing more. Each option of a config is
described once, in its field (``fields.option``); user errors print one paragraph and exit with status 2."""

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .bayes.command import DATA_HELP, MODEL_HELP, SHARDS_HELP, FitOptions
from .errors import ElboxError, exit_message, user_warnings
from .evaluation.config import EvaluationConfig
from .flags import flags_from
from .models.config import VAEConfig
from .training.config import TrainConfig

__all__ = ["app", "main"]

HELP = "Variational inference that says how wrong it may be. Train a VAE with `elbox train`."
app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _command(f: Callable[..., None]) -> Callable[..., None]:
    """Register ``f`` as a command whose user errors print one paragraph and exit with status 2 (``exit_message``)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            with user_warnings():  # an ElboxWarning as one paragraph
                f(*args, **kwargs)
        except (ElboxError, KeyboardInterrupt) as e:
            message, status = exit_message(e)
            typer.echo(message, err=True)
            raise typer.Exit(status) from None

    return app.command()(wrapper)


Run = Annotated[Path, typer.Argument(help="A run folder written by `elbox train`.")]
Checkpoint = Annotated[str, typer.Option(help="Which weights: last (end of training) or best (validation).")]
Split = Annotated[str, typer.Option(help="Which inputs: train, valid or test.")]
Output = Annotated[Path | None, typer.Option("-o", "--output", help="PNG to write. \\[default: in RUN/figures/]")]
Progress = Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a tty).")]
TableOut = Annotated[Path | None, typer.Option("--out", help="A table's numbers in its units: .csv, .parquet, .npy.")]
Latent = Annotated[str, typer.Option(help="A table's z: prior (z ~ p(z)), aggregate (a row's q(z | x)) or gmm.")]
Report = Annotated[bool, typer.Option("--report/--no-report", help="Write RUN/report.html at the end (no evaluation).")]


RESUME = "Continue this run from its last checkpoint (with --epochs to extend it)."
DRAWS = "M multiple imputations (sampling-importance-resampling) in a column imputation (default: the mean)."
NPROC = "Train with N processes (DDP over torchrun). For several machines, call torchrun yourself (README)."


@_command
@flags_from(TrainConfig, VAEConfig)
def train(
    config: Annotated[Path | None, typer.Option(help="Read options from a TOML (or JSON) file; flags win.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out.")] = False,
    resume: Annotated[Path | None, typer.Option(help=RESUME)] = None,
    nproc: Annotated[int, typer.Option(min=1, help=NPROC)] = 1,
    progress: Progress = None,
    report: Report = True,
    **options: Any,
) -> None:
    """Train a VAE by maximising the ELBO, and write a run folder."""
    from .distributed import launch, world
    from .hooks import DEFAULT_HOOKS  # the figures (and TensorBoard): training/ draws none itself
    from .training import options_from
    from .training import resume as resume_run
    from .training import train as train_run

    if nproc > 1:
        raise typer.Exit(launch(nproc, _argv))
    if resume is not None:
        changes = {k: options.pop(k) for k in ("epochs", "device") if k in options}
        run = resume_run(resume, **changes, progress=progress, hooks=DEFAULT_HOOKS)
    else:
        run = train_run(progress=progress, overwrite=overwrite, hooks=DEFAULT_HOOKS, **options_from(config, options))
    if world().main and run.epochs_trained:  # rank 0 speaks for the run; a complete run was warned of
        typer.echo(run.describe())
        if report:
            typer.echo(f"Report written to {_write_report(run.path)}.")


def _write_report(run: Path) -> Path:
    from .report import write_report

    return write_report(run)


def _load(run: Path, checkpoint: str) -> Any:
    from .runs import load_run

    return load_run(run, checkpoint)


def _numbers(out: Path, what: str, *args: Any) -> None:
    """Write a table's numbers (``impute.<what>(*args)``) in its units to ``out``."""
    from . import data, impute

    typer.echo(f"wrote {data.write_table(getattr(impute, what)(*args), out)}")


def _save(run: Any, figure: Any, name: str, output: Path | None) -> None:
    from .plots import save

    typer.echo(f"wrote {save(figure, output if output is not None else run.path / 'figures' / name)}")


@_command
def sample(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=1, help="How many draws from the prior.")] = 64,
    output: Output = None,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    checkpoint: Checkpoint = "last",
    condition: Annotated[int | None, typer.Option(help="A cvae draws given this class label.")] = None,
    out: TableOut = None,
    latent: Latent = "prior",
) -> None:
    """Decode draws z ~ p(z) (or p(z | y)) into images; a table's marginals, or with --out its rows x ~ p(x | z)."""
    from .plots.run import samples_of

    r = _load(run, checkpoint)
    if out is not None:
        return _numbers(out, "sample_table", r, n, seed, latent)
    _save(r, *samples_of(r, n, seed, condition, latent), output)


@_command
def reconstruct(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=1, help="How many inputs.")] = 20,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
    out: TableOut = None,
) -> None:
    """Inputs above their reconstructions (p(x | z)'s mean at q(z | x)'s); a table's per column, or with --out."""
    from .plots.run import reconstructions_of

    r = _load(run, checkpoint)
    x, labels = r.split(split)
    if out is not None:
        return _numbers(out, "reconstruct_table", r, x[:n])
    _save(r, *reconstructions_of(r, x, labels, n), output)


@_command
def interpolate(
    run: Run,
    pairs: Annotated[int, typer.Option(min=1, help="How many pairs of inputs (one row each).")] = 5,
    steps: Annotated[int, typer.Option(min=2, help="Images per row.")] = 10,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Decode straight lines between the posterior means of pairs of inputs (any latent dimension)."""
    from .plots import interpolation, spread

    r = _load(run, checkpoint)
    _save(r, interpolation(r.model, spread(r.split(split)[0], 2 * pairs), steps, r.image_shape), "interpolation.png",
          output)  # fmt: skip


@_command
def manifold(
    run: Run,
    grid: Annotated[int, typer.Option(min=2, help="Images per side of the grid.")] = 20,
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """For a 2-D latent space: the decoded grid over z, and interpolations between encoded inputs."""
    from .plots import interpolation, manifold, spread

    r, between = _load(run, checkpoint), None if output is None else output.with_stem(f"{output.stem}-interpolation")
    _save(r, manifold(r.model, grid, r.image_shape), "manifold.png", output)
    _save(r, interpolation(r.model, spread(r.split("test")[0], 10), 10, r.image_shape), "manifold-interpolation.png",
          between)  # fmt: skip


@_command
def traverse(
    run: Run,
    dims: Annotated[str | None, typer.Option(help="Latent dimensions, e.g. 0,3,7 (default: the active ones).")] = None,
    steps: Annotated[int, typer.Option(min=2, help="Values of z_d per row.")] = 9,
    span: Annotated[float, typer.Option(min=0.0, help="z_d moves over +-span around its posterior mean.")] = 3.0,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Decode one input with one latent dimension moved at a time (rows: dimensions)."""
    from .plots import traversals

    r = _load(run, checkpoint)
    _save(r, traversals(r.model, r.split(split)[0], dims, steps, span, r.image_shape), "traversals.png", output)


@_command
def embed(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=2, help="How many inputs, spread through the split.")] = 1000,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
    out: TableOut = None,
    color: Annotated[str | None, typer.Option(help="A table's column to colour by (default: a label column).")] = None,
) -> None:
    """Scatter E_q[z | x] in 2-D (PCA beyond two) coloured by label or --color; --out writes every row's means."""
    from .plots.run import check_color, embedding_of

    r = _load(run, checkpoint)
    check_color(r, color)
    if out is not None:
        return _numbers(out, "embedding_rows", r, split)
    _save(r, *embedding_of(r, *r.split(split), n, color), output)


@_command
def impute(
    run: Run,
    data: Annotated[Path, typer.Option(help="The table (.csv, .parquet) whose empty cells to fill.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the filled table: .csv, .parquet or .npy.")],
    draws: Annotated[int | None, typer.Option(min=1, help=DRAWS)] = None,
    k: Annotated[int, typer.Option(min=1, help="Draws of q(z | x_obs) per row (importance weights).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    checkpoint: Checkpoint = "last",
) -> None:
    """Fill a table's missing values with a run's model (MIWAE); observed values are never changed."""
    from .data import write_table
    from .impute import impute_table

    filled = impute_table(_load(run, checkpoint), str(data), k=k, draws=draws, seed=seed)
    typer.echo(f"wrote {write_table(filled, out)}")


@_command
@flags_from(EvaluationConfig, skip=("max_memory",))
def evaluate(
    run: Run,
    max_memory: Annotated[float, typer.Option(help="MiB one chunk of particles may take (estimated).")] = 512,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="JSON (default: RUN/evaluation.json).")] = None,
    progress: Progress = None,
    **options: Any,
) -> None:
    """Estimate log p(x) with error bars, the bounds around it, rate, distortion, collapse and the gap split."""
    from .distributed import world
    from .evaluation import evaluate as evaluate_run
    from .plots import write_evaluation_figures

    result = evaluate_run(run, max_memory=max_memory * 2**20, progress=progress, **options)
    if world().main:  # under torchrun, rank 0 writes and reports
        path = result.save(output if output is not None else run / "evaluation.json")
        figures = write_evaluation_figures(result, path.parent / "figures")
        typer.echo(f"{result.table()}\n\nwrote {path} and {len(figures)} figures in {path.parent / 'figures'}")
        if output is None and (run / "report.html").exists():  # keep the run's report in step with its evaluation
            typer.echo(f"updated {_write_report(run)}")


@_command
@flags_from(FitOptions)
def fit(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    nproc: Annotated[int, typer.Option(min=1, help=SHARDS_HELP)] = 1,
    progress: Progress = None,
    report: Report = True,
    **options: Any,
) -> None:
    """Fit q to a Bayesian model's posterior; print the summary, diagnostics, verdict and, where reference
    draws exist, the comparison with them."""
    from .bayes.command import run_fit
    from .distributed import launch

    if nproc > 1:
        raise typer.Exit(launch(nproc, _argv))
    path = run_fit(model, data, progress=progress, echo=typer.echo, **options)
    if path is not None and report:
        typer.echo(f"Report written to {_write_report(path)}.")


@_command
def report(
    run: Annotated[Path, typer.Argument(help="A run folder written by `elbox train` or `elbox fit --out`.")],
) -> None:
    """Write RUN/report.html: one self-contained page of the run's configuration, curves, evaluation, figures
    and plain-language diagnostics. It reads the run's files and runs no evaluation."""
    typer.echo(f"wrote {_write_report(run)}")


_argv: list[str] = []  # the command line as given, for `train --nproc` to hand on to torchrun


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``elbox`` command."""
    _argv[:] = sys.argv[1:] if argv is None else argv
    app(args=argv, prog_name="elbox")
