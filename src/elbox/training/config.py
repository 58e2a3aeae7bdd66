"""Training configuration: plain typed data, read from files, written beside the results."""

import json
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..bounds import ESTIMATORS
from ..bounds import OBJECTIVES as BOUNDS
from ..catalogue import suggest
from ..data.transforms import POWERS
from ..errors import ElboxError
from ..fields import option
from ..models import VAEConfig

__all__ = ["TrainConfig", "options_from", "read_config_file"]

BINARIZE = ("none", "static", "dynamic")
OBJECTIVES = tuple(name for name, cls in BOUNDS.items() if cls.lower)  # what training maximises
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """How to train a VAE; ``config.json`` in a run folder is this, fully resolved.

    Attributes:
        data: a data set name (``digits``, ``binarized-mnist``, ``mnist``, ``fashion-mnist``)
            or a path to a ``.npy`` / ``.npz`` file.
        data_dir: where the data set's files are (or go, with ``download``).
        schema: for a table (``.csv``, ``.parquet``): a JSON or TOML file declaring column kinds
            (``data.tables.read_schema_file``); columns it does not name are inferred.
        power: a table's continuous columns' transform before standardising: ``none`` (the default),
            or ``yeo-johnson`` (Yeo & Johnson 2000), its lambda fitted to the training rows' observed
            values, for skewed columns; samples, reconstructions and imputations are transformed back.
        download: fetch missing data files (needs a network).
        binarize: ``none``; ``static`` (one Bernoulli draw per pixel, fixed by ``seed``); or
            ``dynamic`` (drawn anew every epoch, Burda et al. 2016).
        epochs, batch_size, lr: Adam's budget, minibatch size and learning rate.
        seed: seeds the weights, the data order and every draw; equal configs give equal runs.
        all_rows: train on every row, the valid and test splits included (they are then no longer
            held out, and their numbers are not held-out numbers): MIWAE's transductive fit of an
            incomplete table that ``elbox impute`` is to fill (Mattei & Frellsen 2019); a table's
            continuous columns are then standardised by every row's mean and sd.
        k: particles per data point in the training objective.
        analytic_kl: closed-form KL(q || p) where torch.distributions has one (ELBO, reparam).
        objective: the bound trained: ``elbo``, ``iwae`` (with k particles) or ``renyi`` (order
            ``alpha``). Whatever is trained, the ELBO is what is reported per epoch.
        alpha: the order of the Rényi bound.
        estimator: the gradient estimator: ``reparam``, ``stl``, ``dreg`` (elbo, iwae) or ``score``.
        beta: the weight of the KL part of the surrogate (beta-VAE); its final value under a schedule.
        kl_warmup: epochs over which beta rises linearly from 0.
        kl_cycles: cyclical annealing: beta rises and holds this many times over the run.
        free_bits: nats per latent dimension below which the KL is not pushed down.
        checkpoint_every: also write ``checkpoints/last.safetensors`` every this many steps (``0``:
            only at each epoch's end), so a killed run resumes bitwise from where it stood.
        ema: the decay d of an exponential moving average of the weights (``train.WeightAverage``),
            e.g. ``0.999``: the run's checkpoints then give evaluate, sample and impute the averaged
            weights, and validation scores them; ``None`` (the default) trains without one.
        ema_start: the epochs trained before the average starts (a copy of the weights then).
        device: ``cpu``, ``cuda`` (``cuda:N``), or ``auto`` (a GPU when torch sees one).
        threads: torch's intra-op threads, fixed for the run (``torch.set_num_threads``); ``None``
            keeps torch's choice (``OMP_NUM_THREADS``, else one per core). ``elbox train --nproc N``
            gives each process its share of the cores this process may use.
        max_nonfinite: steps in a row with a non-finite loss or gradient (each skipped) before
            the run stops, naming the first tensor that went non-finite.
        compile: train with the loss compiled by ``torch.compile`` (``train.compile_loss``):
            the same losses as eager to float rounding, faster once compiled (docs/benchmarks.md).
        precision: ``fp32``, or ``bf16`` for the forward pass under bfloat16 autocast (opt-in;
            ``train.VariationalLoss``).
        out: the run folder; ``runs/<data>-<time>`` when not given.
        tensorboard: also log each epoch to ``RUN/tensorboard`` (``elbox.tensorboard``; needs the
            ``tensorboard`` package).
        model: the architecture (``models.VAEConfig``).
    """

    data: str = option(
        "digits",
        "digits (embedded), binarized-mnist, mnist, fashion-mnist, a .npy/.npz file, or a table (.csv, .parquet).",
    )
    data_dir: str | None = option(None, "Folder holding the data set's files.")
    schema: str | None = option(None, "A table's column kinds (JSON or TOML); columns it does not name are inferred.")
    power: str = option("none", "A table's continuous columns before standardising: none, or yeo-johnson (skewed).")
    download: bool = option(False, "Fetch missing data files (needs a network).")
    binarize: str = option("none", "none, static (one draw, fixed) or dynamic (drawn every epoch).")
    epochs: int = option(200, "Passes over the training data.")
    batch_size: int = option(100, "Minibatch size.")
    lr: float = option(1e-3, "Adam's learning rate.")
    seed: int = option(0, "Seeds weights, data order and draws.")
    all_rows: bool = option(
        False,
        "Train on every row, valid and test included (no longer held out): to impute the table itself.",
    )
    k: int = option(1, "Particles per data point in the ELBO.")
    analytic_kl: bool = option(
        True,
        "The KL in closed form where there is one (--mc-kl: by Monte Carlo).",
        flag="--analytic-kl/--mc-kl",
    )
    objective: str = option("elbo", "The bound to train: elbo, iwae (with --k particles) or renyi.")
    alpha: float = option(0.5, "Order of the Rényi bound.")
    estimator: str = option("reparam", "Gradient estimator: reparam, stl, dreg or score.")
    beta: float = option(1.0, "Weight of the KL term (beta-VAE).")
    kl_warmup: int = option(0, "Epochs of linear KL warm-up from 0 to beta.")
    kl_cycles: int = option(0, "Cyclical KL annealing: cycles over the run.")
    free_bits: float = option(0.0, "Nats per latent dimension kept free of KL pressure.")
    max_nonfinite: int = option(10, "Steps in a row with a non-finite loss or gradient (skipped) before the run stops.")
    checkpoint_every: int = option(
        1000,
        "Also checkpoint every N steps (0: at epoch ends only); a killed run resumes from there.",
    )
    ema: float | None = option(
        None,
        "Decay of an exponential moving average of the weights (e.g. 0.999); checkpoints then hold the average.",
    )
    ema_start: int = option(0, "Epochs trained before the weight average (--ema) starts.")
    device: str = option("cpu", "cpu, cuda, cuda:N, or auto (a GPU when there is one).")
    threads: int | None = option(None, "Intra-op threads, fixed for the run (default: torch's, one per core).")
    compile: bool = option(
        False,
        "Compile the loss with torch.compile (same losses, faster after seconds of compiling).",
    )
    precision: str = option("fp32", "fp32, or bf16 for the forward pass in bfloat16 (opt-in).")
    out: str | None = option(None, "Run folder to write (default: runs/<data>-<time>).")
    tensorboard: bool = option(False, "Also log each epoch to RUN/tensorboard (pip install 'elbox[tensorboard]').")
    model: VAEConfig = field(default_factory=VAEConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.binarize not in BINARIZE:
            problems.append(f"binarize must be one of {BINARIZE}, got {self.binarize!r}")
        for name in ("epochs", "batch_size", "k", "max_nonfinite"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1 (or left out for torch's choice), got {self.threads}")
        if self.checkpoint_every < 0:
            problems.append(f"checkpoint_every must be at least 0 (0: at epoch ends only), got {self.checkpoint_every}")
        if self.ema is not None and not 0 < self.ema < 1:
            problems.append(f"ema is a decay strictly between 0 and 1 (e.g. 0.999), or left out, got {self.ema}")
        if self.ema_start < 0:
            problems.append(f"ema_start must be at least 0 epochs, got {self.ema_start}")
        elif self.ema_start and self.ema is None:
            problems.append(f"ema_start ({self.ema_start}) starts the weights' average, which needs --ema DECAY")
        if self.device not in ("cpu", "cuda", "auto") and not re.fullmatch(r"cuda:\d+", self.device):
            problems.append(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if not 0 < self.lr < math.inf:
            problems.append(f"lr must be positive and finite, got {self.lr}")
        if not all(math.isfinite(v) for v in (self.beta, self.alpha, self.free_bits)):
            problems.append(
                f"beta, alpha and free_bits must be finite, got {self.beta}, {self.alpha}, {self.free_bits}"
            )
        if self.power not in POWERS:
            problems.append(f"power must be one of {POWERS} (yeo-johnson for skewed table columns), got {self.power!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.data:
            problems.append("data must name a data set or a .npy / .npz file, got an empty string")
        problems += self._objective_problems()
        if problems:
            raise ElboxError("invalid training options: " + "; ".join(problems) + ".")

    def _objective_problems(self) -> list[str]:
        problems = []
        if self.objective == "cubo":
            problems.append("cubo is an upper bound on log p(x): elbox reports it, but trains lower bounds")
        elif self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.estimator not in ESTIMATORS:
            problems.append(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator == "dreg" and self.objective == "renyi":
            problems.append("the dreg estimator is defined for the elbo and iwae objectives, not renyi")
        if self.objective == "renyi" and self.alpha == 1:
            problems.append("alpha = 1 is the ELBO: use --objective elbo")
        for name in ("beta", "kl_warmup", "kl_cycles", "free_bits"):
            if getattr(self, name) < 0:
                problems.append(f"{name} (--{name.replace('_', '-')}) must be at least 0, got {getattr(self, name):g}")
        if self.kl_warmup and self.kl_cycles:
            problems.append("choose one KL schedule: kl_warmup or kl_cycles")
        if self.free_bits and self.model.family != "diagonal":
            problems.append(
                f"free bits act on each latent dimension's KL, which needs a q that factorizes over "
                f"dimensions: use --family diagonal, not {self.model.family}"
            )
        return problems + self._zoo_problems()

    def _zoo_problems(self) -> list[str]:
        problems = []
        relaxed = self.model.discrete and not self.model.straight_through and self.estimator != "score"
        if relaxed and (self.objective != "elbo" or not self.analytic_kl or self.estimator != "reparam"):
            problems.append(
                "relaxed (Gumbel-softmax) draws of discrete latents have no log q: they train the ELBO with the "
                "closed-form KL only (--objective elbo, no --mc-kl, --estimator reparam); for other objectives "
                "or estimators use --straight-through (hard draws) or --estimator score"
            )
        if self.free_bits and (self.model.prior != "standard" or self.model.model == "hvae"):
            problems.append(
                "free bits act on each latent dimension's KL, which needs the standard normal prior and one "
                f"stochastic layer: use --prior standard and --model vae, not {self.model.prior} {self.model.model}"
            )
        if self.tensorboard and self.model.model not in ("vae", "hvae"):
            problems.append(f"--tensorboard draws prior samples of a VAE; --model {self.model.model} has none")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"} | {
            "model": self.model.to_dict()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from nested (``{"model": {...}}``) or flat options, checking names and types.

        Flat keys that name a model option (``latent_dim``, ``hidden``, ...) go to the model.
        """
        d = dict(d)
        model = d.pop("model", None) or {}
        if isinstance(model, str):  # the flat option --model cvae names the model's kind
            model = {"model": model}
        if not isinstance(model, dict):
            raise ElboxError(f"option 'model' must be a table of model options ([model] in TOML), got {model!r}.")
        model = dict(model)
        model_keys = {f.name for f in fields(VAEConfig)}
        train_keys = {f.name for f in fields(cls)} - {"model"}
        for key in list(d):
            if key in model_keys and key not in train_keys:
                model[key] = d.pop(key)
        if unknown := (set(d) - train_keys) | (set(model) - model_keys):  # a damaged config.json too
            hints = "".join(f"{k!r}{suggest(k, train_keys | model_keys)}, " for k in sorted(unknown, key=str))
            raise ElboxError(
                f"unknown option(s) {hints.removesuffix(', ')} in the configuration; "
                f"known options: {', '.join(sorted(train_keys | model_keys))}."
            )
        train_values = {k: _typed(k, v, _hint(cls, k)) for k, v in d.items()}
        model_values = {k: _typed(k, v, _hint(VAEConfig, k)) for k, v in model.items()}
        return cls(**train_values, model=VAEConfig.from_dict(model_values))


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _typed(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type hint, converting only where it loses nothing."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _typed(name, value, hint)
    if typing.get_origin(hint) is tuple and args[0] is str:  # a table's column likelihoods, from its schema
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ElboxError(f"option {name!r} must be a list of column likelihoods (a table schema), got {value!r}.")
    if typing.get_origin(hint) is tuple:
        return _widths(name, value)
    elif hint in (bool, int) and type(value) is hint:  # type(), since True is an int
        return value
    elif hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif hint is str and isinstance(value, str | os.PathLike):
        return str(value)
    elif hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    wanted = getattr(hint, "__name__", str(hint))
    raise ElboxError(f"option {name!r} must be of type {wanted}, got {value!r}.")


def _widths(name: str, value: Any) -> tuple[int, ...]:
    """A list of positive integers: ``"200,200"`` from a flag, ``[200, 200]`` from a file; ``"none"`` is no layer."""
    example = f"e.g. --{name.replace('_', '-')} 200,200, or {name} = [200, 200] in TOML"
    if isinstance(value, str):
        if value.strip().lower() == "none":  # said outright: no hidden layer
            return ()
        if not value.strip():
            raise ElboxError(f"option {name!r} is empty; give a list of positive integers ({example}), or 'none' "
                             "for no hidden layer at all (a linear map).")  # fmt: skip
        parts = [v.strip() for v in value.split(",")]
        if bad := [v for v in parts if not v.isdigit() or int(v) < 1]:
            raise ElboxError(f"option {name!r} must be a list of positive integers ({example}), but {bad[0]!r} in "
                             f"{value!r} is not one.")  # fmt: skip
        return tuple(int(v) for v in parts)
    if isinstance(value, list | tuple):
        if bad := [v for v in value if type(v) is not int or v < 1]:
            raise ElboxError(f"option {name!r} must be a list of positive integers ({example}), but {bad[0]!r} in "
                             f"{list(value)!r} is not one.")  # fmt: skip
        return tuple(value)
    raise ElboxError(f"option {name!r} must be a list of positive integers ({example}), got {value!r}.")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read options from a TOML (or JSON, such as a run's ``config.json``) file; nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise ElboxError(f"the configuration file {path} does not exist; check the path given to --config.")
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ElboxError(f"the configuration file {path} cannot be read: {e}. Fix its syntax.") from None
    except OSError as e:
        raise ElboxError(f"the configuration file {path} cannot be read: {e.strerror or e}. Give --config a "
                         "readable TOML or JSON file.") from None


def options_from(config_file: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The options of a run: a config file's (flattened: ``[model]`` keys beside the others), overridden by
    the flags given. ``model = "vamp"`` is the VAE with the VampPrior: ``model = "vae"``, ``prior = "vamp[:K]"``."""
    options = read_config_file(config_file) if config_file is not None else {}
    model = options.get("model") or {}
    model = {"model": model} if isinstance(model, str) else model  # model = "cvae" names the kind
    options = {k: v for k, v in options.items() if k != "model"} | model | flags
    if options.get("model") != "vamp":
        return options
    prior = options.get("prior", "vamp")
    if prior.partition(":")[0] != "vamp":
        raise ElboxError(f"--model vamp is the VAE with the VampPrior; it takes --prior vamp[:K] or none, "
                         f"not {prior!r}.")
    return options | {"model": "vae", "prior": prior}
