"""What a run trains on, checked before anything is written: the data, the resolved model options, the device."""

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor

from ..data import Dataset, binarize
from ..distributed import device_of, init
from ..errors import ElboxError
from ..likelihoods import GRID_LIKELIHOODS, Table
from ..models import LatentVariableModel, VAEConfig, build_model
from ..priors import VampPrior
from ..runs import load_splits
from .config import TrainConfig

__all__ = ["Setup", "labels_for", "prepare", "resolve_device"]


class Setup(NamedTuple):
    """What a run trains on: the resolved config, the data set, fixed splits and the model."""

    config: TrainConfig
    dataset: Dataset
    splits: dict[str, Tensor]  # train / valid / test, [N, X], in the likelihood's support
    model: LatentVariableModel


def _resolve_table(model: VAEConfig, dataset: Dataset, binarized: bool) -> VAEConfig:
    """A table's model: one likelihood per column, from the schema; the options that need images or labels refused."""
    problems = []
    if model.likelihood not in ("auto", "table"):
        problems.append(f"--likelihood {model.likelihood} (a table has one likelihood per column, set by its schema: "
                        "leave --likelihood out, or declare column kinds with --schema)")  # fmt: skip
    if binarized:
        problems.append("--binarize (it draws pixels; a table's binary columns are modelled as they are)")
    if model.model != "vae" or model.network != "mlp" or model.prior.startswith("vamp"):
        problems.append(f"--model {model.model} --network {model.network} --prior {model.prior} (tables train "
                        "--model vae with --network mlp, and a standard or mog prior)")  # fmt: skip
    if problems:
        raise ElboxError(f"the data {dataset.name} are a table, which does not take " + "; ".join(problems) + ".")
    return replace(model, data_dim=dataset.dim, likelihood="table", columns=dataset.schema.specs)


def _resolve_model(model: VAEConfig, dataset: Dataset, binarized: bool) -> VAEConfig:
    if dataset.schema is not None:
        return _resolve_table(model, dataset, binarized)
    likelihood, levels = model.likelihood, model.levels
    if likelihood == "auto":
        if binarized or dataset.levels == 1:
            likelihood = "bernoulli"
        elif dataset.levels is not None:
            likelihood = "binomial"
        else:
            likelihood = "gaussian"
    if likelihood in GRID_LIKELIHOODS and levels is None:
        levels = dataset.levels
        if levels is None:
            raise ElboxError(
                f"the {likelihood} likelihood is a pmf on the grey levels k/n, but the {dataset.name} data take "
                "continuous values; give n with --levels if they lie on such a grid, or use --likelihood "
                "gaussian or continuous-bernoulli."
            )
    image_shape = model.image_shape
    if model.network == "conv" and image_shape is None:
        image_shape = dataset.image_shape
        if image_shape is None:
            raise ElboxError(
                f"the conv network needs images, but the {dataset.name} data are rows of {dataset.dim} values with no "
                "image shape; save them as an [N, H, W] array, give --image-shape H,W, or use --network mlp."
            )
    return replace(model, data_dim=dataset.dim, likelihood=likelihood, levels=levels, image_shape=image_shape)


def prepare(config: TrainConfig) -> Setup:
    """Load the data, resolve the model's options from it and check the data fit the model.

    Nothing is written: every problem with the user's input surfaces here, before a run
    folder is touched (``train`` runs its hooks' checks, such as TensorBoard's, just before).
    The weights are initialised from ``config.seed``.
    """
    dataset, splits = load_splits(config)
    if config.power != "none" and dataset.schema is None:
        raise ElboxError(f"--power {config.power} transforms a table's continuous columns, but the data "
                         f"{config.data} are not a table (.csv, .parquet); leave --power out.")  # fmt: skip
    model_config = _resolve_model(config.model, dataset, config.binarize != "none")
    model_config = _resolve_classes(model_config, dataset, config.data)
    device = resolve_device(config.device)
    if config.threads is not None:  # pinned for the run: a thread count that drifts changes speed and rounding
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    try:
        model = build_model(model_config)
    except ValueError as e:  # options each valid, but no such model: a flow that cannot split one dimension
        raise ElboxError(f"invalid model options: {e} (--family {model_config.family}, --latent-dim "
                         f"{model_config.latent_dim}).") from None  # fmt: skip
    for prior in (m for m in model.modules() if isinstance(m, VampPrior)):  # a resumed run loads its own after
        prior.start_at(splits["train"], torch.Generator().manual_seed(config.seed))
    _check_data(model, dataset, splits, config)
    if config.all_rows:
        splits = _all_rows(splits, model)
    # count columns start at their marginal (a resumed run loads its own); a VIB has a classifier, no likelihood
    if isinstance(getattr(model, "likelihood", None), Table):
        model.likelihood.start_at(splits["train"], model.decoder[-1].bias)
    w = init(device)  # under torchrun: join the other processes; every rank built the same weights
    if w.rank:  # each rank draws its own particles; rank 0 draws what a single process would
        torch.manual_seed(config.seed + 1_000_003 * w.rank)
    return Setup(replace(config, model=model_config), dataset, splits, model.to(device_of(device, w)))


def _all_rows(splits: dict[str, Tensor], model: LatentVariableModel) -> dict[str, Tensor]:
    """``all_rows``: the training split is every row ``[N_train + N_valid + N_test, X]``; valid and test stay."""
    if model.needs_labels:
        raise ElboxError("--all-rows trains on the rows of every split, which a conditional model cannot (its labels "
                         "are per split); train without --all-rows.")  # fmt: skip
    return {**splits, "train": torch.cat([splits["train"], splits["valid"], splits["test"]])}


def _check_data(model: LatentVariableModel, dataset: Dataset, splits: dict[str, Tensor], config: TrainConfig) -> None:
    """``model.check`` each array the user gave, in its own row order, so a refusal names a row of the file.

    A user's file split into train / valid / test (shuffled) is put back together first: "row 36" is
    then the file's row 36, not row 0 of a shuffled split. Named data sets are checked split by split.
    """
    checked = {}
    for name, x in splits.items():
        dynamic = name == "train" and config.binarize == "dynamic"
        checked[name] = binarize(x, torch.Generator().manual_seed(0)) if dynamic else x
    by_source: dict[str, list[str]] = {}
    for name in checked:
        by_source.setdefault(dataset.sources.get(name, name), []).append(name)
    for source, names in by_source.items():
        if not all(n in dataset.rows for n in names):
            for n in names:
                model.check(checked[n], n)
            continue
        size = sum(checked[n].shape[0] for n in names)
        whole = checked[names[0]].new_zeros(size, *checked[names[0]].shape[1:])  # [N, X] in the file's order
        for n in names:
            whole[dataset.rows[n]] = checked[n]
        model.check(whole, source)


def resolve_device(name: str) -> torch.device:
    """The device a config names: ``auto`` is the GPU when torch sees one, else the CPU.

    The data splits stay in host memory; each epoch's training data and each evaluation chunk
    go to the device, so a data set larger than the GPU's memory still trains.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ElboxError(
                f"device {name!r} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}, {build}). "
                "Use --device cpu, or --device auto to take a GPU only where there is one."
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ElboxError(f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s).")
    return torch.device(name)


def _resolve_classes(model: VAEConfig, dataset: Dataset, data: str) -> VAEConfig:
    """A cvae's or vib's number of classes, from labels that every split must have; refused without them."""
    if model.model not in ("cvae", "vib"):
        return model
    if missing := [s for s in ("train", "valid", "test") if s not in dataset.labels]:
        raise ElboxError(
            f"--model {model.model} needs a class label for every example, but the data {data!r} have none for "
            f"the {', '.join(missing)} split(s). Use a data set with labels (digits, mnist, fashion-mnist) or an "
            ".npz file with 'train_labels' (and 'valid_labels', 'test_labels' for the splits it holds)."
        )
    low = min(int(y.min()) for y in dataset.labels.values())
    high = max(int(y.max()) for y in dataset.labels.values())
    if low < 0:
        raise ElboxError(f"class labels must be 0, 1, ..., C - 1, but the data {data!r} have the label {low}.")
    if model.classes is not None and high >= model.classes:
        raise ElboxError(f"classes is {model.classes} but the data {data!r} have the label {high}; "
                         f"give --classes {high + 1} or more, or leave it out.")  # fmt: skip
    return replace(model, classes=model.classes or max(high + 1, 2))


def labels_for(setup: Setup, split: str) -> Tensor | None:
    """The labels of a split ``[N]`` when the model needs them (cvae, vib), else None."""
    return setup.dataset.labels[split] if setup.model.needs_labels else None
