"""The ``elbox`` command: it parses options and calls the library, nothing more.

Problems with the user's input (``ElboxError``) print one paragraph and exit with status 2;
no traceback, and no run file is changed.
"""

import functools
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import ElboxError, ElboxWarning, StoppedError

__all__ = ["app", "main"]

app = typer.Typer(
    help="Variational inference that says how wrong it may be. Train a VAE with `elbox train`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _command(f: Callable[..., None]) -> Callable[..., None]:
    """Register ``f`` as a command whose user errors print one paragraph and exit with status 2."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", ElboxWarning)
                warnings.showwarning = _show_warning
                f(*args, **kwargs)
        except ElboxError as e:
            message = textwrap.fill(str(e), width=100, break_long_words=False, break_on_hyphens=False)
            stopped = isinstance(e, StoppedError)
            typer.echo(f"\nelbox: {message}" if stopped else f"elbox: error: {message}", err=True)
            raise typer.Exit(128 + e.signum if stopped else 2) from None
        except KeyboardInterrupt:
            typer.echo(
                "\nelbox: interrupted at once. Checkpoints are written whole (never half), so the last one "
                "stands; continue a training run with `elbox train --resume RUN`.",
                err=True,
            )
            raise typer.Exit(130) from None

    return app.command()(wrapper)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """An ``ElboxWarning`` as one paragraph (no file and line: it is about the user's input); others as Python does."""
    if not issubclass(category, ElboxWarning):
        return _show_python_warning(message, category, *args, **kwargs)
    text = textwrap.fill(str(message), width=100, break_long_words=False, break_on_hyphens=False)
    typer.echo(f"elbox: warning: {text}", err=True)


_show_python_warning = warnings.showwarning
Run = Annotated[Path, typer.Argument(help="A run folder written by `elbox train`.")]
Checkpoint = Annotated[str, typer.Option(help="Which weights: last (end of training) or best (validation).")]
Split = Annotated[str, typer.Option(help="Which inputs: train, valid or test.")]
Output = Annotated[Path | None, typer.Option("-o", "--output", help="PNG to write. \\[default: in RUN/figures/]")]
Progress = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bar. \\[default: on a terminal]")
]
Report = Annotated[bool, typer.Option("--report/--no-report", help="Write RUN/report.html at the end (no evaluation).")]


@_command
def train(
    config: Annotated[
        Path | None,
        typer.Option(help="Read options from a TOML (or JSON) file; flags override it."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="digits (embedded), binarized-mnist, mnist, fashion-mnist, or a .npy/.npz file."),
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files.")] = None,
    download: Annotated[
        bool | None, typer.Option("--download", help="Fetch missing data files (needs a network).")
    ] = None,
    binarize: Annotated[
        str | None,
        typer.Option(help="none, static (one draw, fixed) or dynamic (drawn every epoch)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training data. \\[default: 200]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size. \\[default: 100]")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam's learning rate. \\[default: 1e-3]")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds weights, data order and draws. \\[default: 0]")] = None,
    k: Annotated[int | None, typer.Option(help="Particles per data point in the ELBO. \\[default: 1]")] = None,
    objective: Annotated[
        str | None, typer.Option(help="The bound to train: elbo, iwae (with --k particles) or renyi. \\[default: elbo]")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Order of the Rényi bound. \\[default: 0.5]")] = None,
    estimator: Annotated[
        str | None, typer.Option(help="Gradient estimator: reparam, stl, dreg or score. \\[default: reparam]")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="Weight of the KL term (beta-VAE). \\[default: 1]")] = None,
    kl_warmup: Annotated[int | None, typer.Option(help="Epochs of linear KL warm-up from 0 to beta.")] = None,
    kl_cycles: Annotated[int | None, typer.Option(help="Cyclical KL annealing: cycles over the run.")] = None,
    free_bits: Annotated[float | None, typer.Option(help="Nats per latent dimension kept free of KL pressure.")] = None,
    max_nonfinite: Annotated[
        int | None,
        typer.Option(help="Steps in a row with a non-finite loss or gradient (skipped) before the run stops. "
                     "\\[default: 10]"),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Also checkpoint every N steps (0: at epoch ends only); a killed run resumes from there. "
                     "\\[default: 1000]"),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:N, or auto (a GPU when there is one). \\[default: cpu]")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads, fixed for the run. \\[default: torch's, one per core]")
    ] = None,
    tensorboard: Annotated[
        bool | None,
        typer.Option("--tensorboard/--no-tensorboard", help="Also log each epoch to RUN/tensorboard (pip install "
                     "'elbox[tensorboard]'). \\[default: off]"),
    ] = None,
    mc_kl: Annotated[
        bool | None,
        typer.Option("--mc-kl", help="Estimate the KL by Monte Carlo instead of in closed form."),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="Compile the loss with torch.compile (same losses, faster "
                     "after seconds of compiling). \\[default: off]"),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32, or bf16 for the forward pass in bfloat16 (opt-in). \\[default: fp32]")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="q's family: diagonal, fullrank, lowrank[:R] (rank R), flows iaf, maf, nsf, realnvp [:L steps], "
            "mixture[:K] (K components), or discrete latents bernoulli, categorical[:C]. \\[default: diagonal]"
        ),
    ] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Latent dimensions D. \\[default: 2]")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden widths, e.g. 200,200; the decoder mirrors them.")] = None,
    activation: Annotated[str | None, typer.Option(help="tanh, relu, elu, gelu or softplus. \\[default: tanh]")] = None,
    likelihood: Annotated[
        str | None,
        typer.Option(help="auto, bernoulli, binomial, gaussian, gaussian-pixel (a scale per pixel), "
                     "continuous-bernoulli, logistic (discretized) or categorical. \\[default: auto]"),
    ] = None,
    levels: Annotated[
        int | None, typer.Option(help="Grey levels minus one, for binomial, logistic, categorical (from the data).")
    ] = None,
    network: Annotated[
        str | None, typer.Option(help="mlp, or conv (convolutional encoder and decoder, for images). \\[default: mlp]")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="Conv channels per layer, e.g. 32,64; the decoder mirrors them.")
    ] = None,
    image_shape: Annotated[
        str | None, typer.Option(help="H,W of the images for --network conv (from the data).")
    ] = None,
    gaussian_scale: Annotated[
        float | None,
        typer.Option(help="Fixed scale of the gaussian likelihood (learned if unset)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="vae; cvae (conditioned on the data's labels); vib (a classifier with a stochastic "
                     "encoder, trained with cross-entropy + beta KL); hvae (two stochastic layers, Burda et al. "
                     "2016; --latent-dim is z1's); or vamp (vae with --prior vamp). \\[default: vae]"),
    ] = None,
    class_prior: Annotated[
        bool | None, typer.Option("--class-prior", help="cvae: a learned Gaussian prior p(z | y) per class.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Gumbel-softmax temperature of discrete latents. \\[default: 0.5]")
    ] = None,
    straight_through: Annotated[
        bool | None,
        typer.Option("--straight-through", help="Discrete latents: hard draws forward, relaxed gradients backward."),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(help="p(z): standard, mog[:K] (learned mixture, K=10) or vamp[:K] (VampPrior, K=500 "
                     "pseudo-inputs). \\[default: standard]"),
    ] = None,
    top_latent_dim: Annotated[int | None, typer.Option(help="hvae: z2's dimensions. \\[default: half of z1's]")] = None,
    top_hidden: Annotated[
        str | None, typer.Option(help="hvae: widths between z1 and z2. \\[default: half of --hidden]")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run folder to write. \\[default: runs/<data>-<time>]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this run from its last checkpoint (with --epochs to extend it)."),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(help="Train with N processes (DDP over torchrun; gloo on CPU, NCCL on GPUs). For several "
                     "machines, call torchrun yourself (README).", min=1),
    ] = 1,
    progress: Progress = None,
    report: Report = True,
) -> None:
    """Train a VAE by maximising the ELBO, and write a run folder."""
    from .hooks import DEFAULT_HOOKS  # the figures (and TensorBoard): train/ draws none itself
    from .train import read_config_file
    from .train import resume as resume_run
    from .train import train as train_run

    if nproc > 1:
        from .distributed import launch

        raise typer.Exit(launch(nproc, _without_nproc(_argv)))

    if resume is not None:
        run = resume_run(resume, epochs=epochs, device=device, progress=progress, hooks=DEFAULT_HOOKS)
    else:
        options = read_config_file(config) if config is not None else {}
        flags = dict(
            data=data, data_dir=data_dir, download=download, binarize=binarize, epochs=epochs,
            batch_size=batch_size, lr=lr, seed=seed, k=k, analytic_kl=None if mc_kl is None else not mc_kl,
            objective=objective, alpha=alpha, estimator=estimator, beta=beta, kl_warmup=kl_warmup,
            kl_cycles=kl_cycles, free_bits=free_bits, tensorboard=tensorboard, max_nonfinite=max_nonfinite,
            checkpoint_every=checkpoint_every, device=device, threads=threads,
            family=family, latent_dim=latent_dim, hidden=hidden, activation=activation, likelihood=likelihood,
            levels=levels, gaussian_scale=gaussian_scale, network=network, channels=channels,
            image_shape=image_shape, out=out, model=model, class_prior=class_prior, temperature=temperature,
            straight_through=straight_through, compile=compile, precision=precision, prior=prior,
            top_latent_dim=top_latent_dim, top_hidden=top_hidden,
        )  # fmt: skip
        options = _vamp_model(_flatten(options) | {key: v for key, v in flags.items() if v is not None})
        run = train_run(progress=progress, overwrite=overwrite, hooks=DEFAULT_HOOKS, **options)
    from .distributed import world

    if not world().main or run.epochs_trained == 0:  # rank 0 speaks for the run; a complete run was warned of
        return
    typer.echo(_summary(run))
    if report:
        typer.echo(f"Report written to {_write_report(run.path)}.")


def _write_report(run: Path) -> Path:
    from .report import write_report

    return write_report(run)


def _flatten(options: dict[str, Any]) -> dict[str, Any]:
    model = options.get("model") or {}
    model = {"model": model} if isinstance(model, str) else model  # model = "cvae" names the kind
    return {k: v for k, v in options.items() if k != "model"} | model


def _vamp_model(options: dict[str, Any]) -> dict[str, Any]:
    """``model = "vamp"`` is the VAE with the VampPrior: ``model = "vae"``, ``prior = "vamp[:K]"``."""
    if options.get("model") != "vamp":
        return options
    prior = options.get("prior", "vamp")
    if prior.partition(":")[0] != "vamp":
        raise ElboxError(f"--model vamp is the VAE with the VampPrior; it takes --prior vamp[:K] or none, "
                         f"not {prior!r}.")
    return options | {"model": "vae", "prior": prior}


def _summary(run: Any) -> str:
    from .evaluation import COLLAPSE_MI

    s, d = run.summary, run.info["dataset"]
    sizes = d["sizes"]
    kind = {"cvae": "conditional VAE", "vib": "VIB classifier"}.get(run.model.config.model, "VAE")
    lines = [
        f"Trained a {kind} on {d['name']} ({sizes['train']} train / {sizes['valid']} valid / "
        f"{sizes['test']} test) for {s['epochs']} epochs in {s['seconds']:.1f} s "
        f"(latent dim {run.model.config.latent_dim}, {run.model.config.likelihood} likelihood).",
        "",
        f"{'nats per data point':<22}{'ELBO':>10}  = {'reconstruction':>14} - {'KL':>8}",
    ]
    for split in ("train", "valid", "test"):
        v = s[split]
        lines.append(f"{split:<22}{v['elbo']:>10.3f}  = {v['reconstruction']:>14.3f} - {v['kl']:>8.3f}")
    if "accuracy" in s["test"]:
        lines.append(f"test accuracy {s['test']['accuracy']:.4f} (p(y | x) averaged over 12 draws of z)")
    c = run.config
    if c.objective != "elbo" and run.metrics:
        trained = f"{c.objective.upper()}_{c.k}" + (f" (alpha {c.alpha})" if c.objective == "renyi" else "")
        lines.append(f"trained bound {trained}, {c.estimator} gradients: {run.metrics[-1][f'train_{c.objective}']:.3f}")
    if skipped := sum(m.get("skipped_steps", 0) for m in run.metrics):
        epochs = [m["epoch"] for m in run.metrics if m.get("skipped_steps")]
        lines.append(f"warning: {skipped} training steps had a non-finite loss or gradient and were skipped "
                     f"(epochs {', '.join(map(str, epochs[:10]))}{' ...' if len(epochs) > 10 else ''}; "
                     "skipped_steps in metrics.jsonl).")  # fmt: skip
    if run.model.config.model != "vib" and s["test"]["kl"] < COLLAPSE_MI:  # the mean KL bounds I(x; z) from above
        lines.append(f"warning: the test KL is {s['test']['kl']:.3f} nats: the posterior has collapsed onto the prior "
                     "and the decoder ignores z. A longer --kl-warmup or --free-bits can help; with --prior vamp, "
                     "--activation relu (README, 'Learned priors and two stochastic layers').")  # fmt: skip
    lines += [
        "",
        {"cvae": "Every term is given the label y: the ELBO is a lower bound on log p(x | y), not log p(x | y) itself.",
         "vib": "Here reconstruction is E_q log p(y | z) (minus the cross-entropy) and KL the rate, an upper bound on "
                "I(z; x)."}.get(run.model.config.model, "The ELBO is a lower bound on log p(x), not log p(x) itself."),
        f"Run written to {run.path} (config.json, metrics.jsonl, checkpoints/, figures/).",
    ]
    if run.model.config.model == "vae":  # evaluate estimates log p(x) of a model without labels
        lines.append(f"`elbox evaluate {run.path}` estimates log p(x) and splits the gap into the family's and the "
                     "encoder's.")  # fmt: skip
    return "\n".join(lines)


def _load(run: Path, checkpoint: str) -> Any:
    from .runs import load_run

    return load_run(run, checkpoint)


def _held_out(run: Any, split: str) -> Any:
    return _labelled(run, split)[0]


def _labelled(run: Any, split: str) -> tuple[Any, Any]:
    """A split of the run's data as it was trained on, and its labels (None where unknown)."""
    from .runs import load_splits

    if split not in ("train", "valid", "test"):
        raise ElboxError(f"--split must be train, valid or test, got {split!r}.")
    dataset, splits = load_splits(run.config)
    return splits[split], dataset.labels.get(split)


def _out(run: Any, given: Path | None, name: str) -> Path:
    return given if given is not None else run.path / "figures" / name


@_command
def sample(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=1, help="How many draws from the prior.")] = 64,
    output: Output = None,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    checkpoint: Checkpoint = "last",
    condition: Annotated[
        int | None, typer.Option(help="A conditional VAE (--model cvae) draws given this class label.")
    ] = None,
) -> None:
    """Decode draws z ~ p(z), the model's prior (or p(z | y) given --condition), into an image grid."""
    from . import plots

    r = _load(run, checkpoint)
    figure = plots.samples(r.model, n, r.image_shape, seed, condition=condition)
    typer.echo(f"wrote {plots.save(figure, _out(r, output, 'samples.png'))}")


@_command
def reconstruct(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=1, help="How many inputs.")] = 20,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Show inputs above their reconstructions (the mean of p(x | z) at the mean of q(z | x))."""
    from . import plots

    r = _load(run, checkpoint)
    x, labels = _labelled(r, split)
    given = plots.spread(labels, n) if r.model.needs_labels and labels is not None else None
    figure = plots.reconstructions(r.model, plots.spread(x, n), r.image_shape, labels=given)
    typer.echo(f"wrote {plots.save(figure, _out(r, output, 'reconstructions.png'))}")


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
    from . import plots

    r = _load(run, checkpoint)
    x = plots.spread(_held_out(r, split), 2 * pairs)
    figure = plots.interpolation(r.model, x, steps, r.image_shape)
    typer.echo(f"wrote {plots.save(figure, _out(r, output, 'interpolation.png'))}")


@_command
def manifold(
    run: Run,
    grid: Annotated[int, typer.Option(min=2, help="Images per side of the grid.")] = 20,
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """For a 2-D latent space: the decoded grid over z, and interpolations between encoded inputs."""
    from . import plots

    r = _load(run, checkpoint)
    path = plots.save(plots.manifold(r.model, grid, r.image_shape), _out(r, output, "manifold.png"))
    x = plots.spread(_held_out(r, "test"), 10)
    between = plots.save(
        plots.interpolation(r.model, x, 10, r.image_shape),
        path.with_name(f"{path.stem}-interpolation.png"),
    )
    typer.echo(f"wrote {path}\nwrote {between}")


@_command
def traverse(
    run: Run,
    dims: Annotated[
        str | None, typer.Option(help="Latent dimensions, e.g. 0,3,7. \\[default: the active units, at most 10]")
    ] = None,
    steps: Annotated[int, typer.Option(min=2, help="Values of z_d per row.")] = 9,
    span: Annotated[float, typer.Option(min=0.0, help="z_d moves over +-span around its posterior mean.")] = 3.0,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Decode one input with one latent dimension moved at a time (rows: dimensions)."""
    from . import plots

    r = _load(run, checkpoint)
    chosen = None if dims is None else _ints(dims, "--dims")
    try:
        figure = plots.traversals(r.model, _held_out(r, split), chosen, steps, span, r.image_shape)
    except ValueError as e:
        raise ElboxError(f"{e}; pass --dims as comma-separated latent dimensions") from None
    typer.echo(f"wrote {plots.save(figure, _out(r, output, 'traversals.png'))}")


@_command
def embed(
    run: Run,
    n: Annotated[int, typer.Option("-n", min=2, help="How many inputs, spread through the split.")] = 1000,
    split: Split = "test",
    output: Output = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Scatter the posterior means E_q[z | x] in 2-D (PCA beyond two dimensions), coloured by label."""
    from . import plots

    r = _load(run, checkpoint)
    x, labels = _labelled(r, split)
    labels = None if labels is None else plots.spread(labels, n)  # spread picks the same rows of both
    figure = plots.embedding(r.model, plots.spread(x, n), labels)
    typer.echo(f"wrote {plots.save(figure, _out(r, output, 'embedding.png'))}")


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ElboxError(f"{option} takes comma-separated integers, got {text!r}") from None


@_command
def evaluate(
    run: Run,
    split: Split = "test",
    k: Annotated[int, typer.Option(help="Particles per data point for the log p(x) estimate (IWAE_K).")] = 5000,
    chunk: Annotated[
        int | None, typer.Option(help="Particles per decoder pass. \\[default: as many as --max-memory holds]")
    ] = None,
    max_memory: Annotated[float, typer.Option(help="MiB one chunk of particles may take (estimated).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Data points per pass.")] = 100,
    gap_points: Annotated[
        int, typer.Option(help="Points of the approximation / amortization gap split; 0 skips it.")
    ] = 100,
    gap_steps: Annotated[int, typer.Option(help="Adam steps of the per-point optimisation of q.")] = 500,
    mi_points: Annotated[int, typer.Option(help="Points whose q(z | x) make the aggregate posterior.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of every draw.")] = 0,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="Compile the decoder pass (torch.compile). \\[default: when "
                     "the pass has 2 million particle-points or more]"),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16 for the decoder's matrix products in bfloat16 (opt-in).")
    ] = "fp32",
    checkpoint: Checkpoint = "last",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="JSON to write. \\[default: RUN/evaluation.json]")
    ] = None,
    progress: Progress = None,
) -> None:
    """Estimate log p(x) with error bars, the bounds around it, rate, distortion, collapse and the gap split."""
    from .evaluation import evaluate as evaluate_run
    from .plots import write_evaluation_figures

    result = evaluate_run(
        run, split=split, checkpoint=checkpoint, k=k, chunk=chunk, max_memory=max_memory * 2**20,
        batch_size=batch_size, gap_points=gap_points, gap_steps=gap_steps, mi_points=mi_points, seed=seed,
        progress=progress, compile=compile, precision=precision,
    )  # fmt: skip
    from .distributed import world

    if not world().main:  # under torchrun, rank 0 writes and reports
        return
    path = result.save(output if output is not None else run / "evaluation.json")
    figures = write_evaluation_figures(result, path.parent / "figures")
    typer.echo(f"{result.table()}\n\nwrote {path} and {len(figures)} figures in {path.parent / 'figures'}")
    if output is None and (run / "report.html").exists():  # keep the run's report in step with its evaluation
        typer.echo(f"updated {_write_report(run)}")


@_command
def fit(
    model: Annotated[
        str,
        typer.Argument(
            help="A built-in model: eight_schools_noncentered, eight_schools_centered, kilpisjarvi, blr, diamonds, "
            "low_dim_gauss_mix, hmm_example (posteriordb names such as sblrc-blr work too)."
        ),
    ],
    family: Annotated[
        str,
        typer.Option(
            help="q's family: diagonal, lowrank[:R], fullrank, flow, iaf|nsf|realnvp|maf[:L], mixture[:K], or auto "
            "(diagonal -> lowrank -> fullrank -> flow until the verdict trusts one)."
        ),
    ] = "auto",
    steps: Annotated[
        int, typer.Option(min=1, help="The most steps per family; the convergence rule stops earlier.")
    ] = 20_000,
    particles: Annotated[int, typer.Option(min=1, help="Draws from q per step.")] = 16,
    lr: Annotated[
        float | None, typer.Option(help="Adam's learning rate in posterior sds. \\[default: 0.02; flows 0.005]")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every draw.")] = 0,
    posteriordb: Annotated[
        Path | None,
        typer.Option(help="posteriordb folder. \\[default: $ELBOX_POSTERIORDB or ../shared/data/posteriordb]"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to write (fit, diagnostics, figures).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
    progress: Progress = None,
    report: Report = True,
) -> None:
    """Fit q to a Bayesian model's posterior; print the summary, diagnostics, verdict and, where reference
    draws exist, the comparison with them."""
    from . import bayes
    from .bayes.report import describe, write_run

    reference = bayes.load(model, posteriordb)
    posterior = bayes.fit(reference.model, reference.data, family=family, steps=steps, particles=particles, lr=lr,
                          seed=seed, progress=progress)  # fmt: skip
    comparison = None
    if reference.draws is not None:
        comparison = bayes.compare(posterior.columns(10_000, seed=seed + 1), reference.draws)
    typer.echo(describe(posterior, comparison))
    if comparison is None:
        typer.echo("\n(No reference draws found to compare with: pass --posteriordb DIR or set ELBOX_POSTERIORDB.)")
    if out is not None:
        extra = {"comparison": comparison.to_dict()} if comparison is not None else None
        path = write_run(posterior, out, reference=reference.draws, overwrite=overwrite, extra=extra)
        typer.echo(f"\nRun written to {path} (config.json, posterior.json, metrics.jsonl, checkpoints/, figures/).")
        if report:
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


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        skip = a == "--nproc"
        if not skip:
            out.append(a)
    return out
