"""A fit as ``elbox fit`` runs it: load the model and data, fit (sharded under torchrun, minibatched when
asked), compare with reference draws where there are some, describe, and write the run folder."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ElboxError
from ..fields import option

__all__ = ["DATA_HELP", "MODEL_HELP", "SHARDS_HELP", "FitOptions", "run_fit"]

MODEL_HELP = ("A model file (model.py defining `model`, a bayes.Model or a function of the data returning one; it is "
         "executed) or a built-in model: eight_schools_noncentered, eight_schools_centered, kilpisjarvi, blr, "
         "diamonds, low_dim_gauss_mix, hmm_example (posteriordb names such as sblrc-blr work too).")  # fmt: skip
DATA_HELP = ("The model file's data: .json (posteriordb's layout), .npz, a table (.csv, .parquet) whose columns are "
        "arrays, or a folder of NAME.npy files (memory-mapped); never executed. A Parquet file over 1 GiB decoded "
        "is streamed by row groups into a cached NAME.parquet.npy/ folder (ELBOX_STREAM_PARQUET).")  # fmt: skip
SHARDS_HELP = ("Shard the observations over N processes (torchrun; gloo on CPU): each sums its rows' log-likelihood, "
          "gradients are all-reduced, rank 0 prints and writes. Several machines: README.")  # fmt: skip


@dataclass
class FitOptions:
    """The options of ``elbox fit`` beyond the model and its data; each field is one flag."""

    family: str = option(
        "auto",
        "q's family: laplace (N(mode, H^-1), no VI), diagonal, lowrank[:R], fullrank, sinharcsinh, flow, "
        "iaf|nsf|realnvp|maf[:L], mixture[:K], or auto (laplace -> diagonal unless the Laplace Gaussian rules it "
        "out -> fullrank -> sinharcsinh -> realnvp:4, each warm-started from the last, until the verdict trusts one).",
    )
    steps: int = option(20_000, "The most Adam steps or L-BFGS iterations per family; the rules stop earlier.")
    particles: int | None = option(None, "Draws from q per Adam step, or fixed draws per L-BFGS set.")
    optimizer: str | None = option(
        None, "lbfgs (fixed draws, deterministic) or adam (default: lbfgs for Gaussians, adam for flows, mixtures); "
        "with --batch-size and --family diagonal natural-gradient steps (natural, the default there) or adam."
    )
    lr: float | None = option(None, "Adam's learning rate in posterior sds (default: 0.02; flows 0.005), or the "
                              "natural-gradient step size (default 0.3; 1 is Newton's step).")
    seed: int = option(0, "Seed of every draw.")
    batch_size: int | None = option(
        None,
        "Observations per step (per process with --nproc), their log-likelihood scaled by N / B; the start then "
        "uses a subsample's Hessian and the verdict a subsample when the data are large.",
    )
    posteriordb: Path | None = option(None, "posteriordb folder (default: $ELBOX_POSTERIORDB or ../shared/data).")
    out: Path | None = option(None, "Run folder to write (fit, diagnostics, figures).")
    overwrite: bool = option(False, "Replace what is in --out.")


def run_fit(
    model: str, data: Path | None, *, progress: bool | None = None, echo: Callable[[str], Any] = print,
    **options: Any,
) -> Path | None:  # fmt: skip
    """Fit ``model`` (a model file with its ``data``, or a built-in name) with ``FitOptions``, print what a user
    reads through ``echo`` (on the main process only), and return the run folder written (``out``), if any."""
    o = FitOptions(**options)
    posteriordb, batch_size, out, overwrite = o.posteriordb, o.batch_size, o.out, o.overwrite
    options = dict(family=o.family, steps=o.steps, particles=o.particles, lr=o.lr, seed=o.seed, progress=progress,
                   optimizer=o.optimizer)  # fmt: skip
    import torch

    from ..distributed import init
    from . import compare, is_model_file, load, load_files
    from .report import describe, write_run

    if is_model_file(model):
        reference = load_files(model, data)
    elif data is not None:
        raise ElboxError(f"--data goes with a model file, and {model!r} is a built-in model with its own data: "
                         "give a model file (model.py), or leave out --data")  # fmt: skip
    else:
        reference = load(model, posteriordb)
    w = init(torch.device("cpu"))
    posterior = _fit(reference.model, reference.data, w, batch_size, options)
    posterior.diagnostics()  # on every process: under torchrun its log-likelihoods are sums over them
    if not w.main:
        return None
    comparison = None
    if reference.draws is not None:
        comparison = compare(posterior.columns(10_000, seed=options.get("seed", 0) + 1), reference.draws)
    echo(describe(posterior, comparison))
    if comparison is None and not is_model_file(model):
        echo("\n(No reference draws found to compare with: pass --posteriordb DIR or set ELBOX_POSTERIORDB.)")
    if out is None:
        return None
    extra = {"comparison": comparison.to_dict()} if comparison is not None else None
    path = write_run(posterior, out, reference=reference.draws, overwrite=overwrite, extra=extra)
    echo(f"\nRun written to {path} (config.json, posterior.json, metrics.jsonl, checkpoints/, figures/).")
    return path


def _fit(model: Any, data: dict, w: Any, batch_size: int | None, options: dict[str, Any]) -> Any:
    """``fit`` of this process's shard under torchrun (``shard``), or of all the data; minibatched fits go
    through ``large.fit_at_scale``."""
    from .fitting import fit
    from .large import fit_at_scale
    from .shard import ShardedModel, shard_data

    if w.size > 1:
        model = ShardedModel(model)
        data = shard_data(model, data, w)
    if batch_size is not None:
        return fit_at_scale(model, data, batch_size=batch_size, **options)
    return fit(model, data, **options)
