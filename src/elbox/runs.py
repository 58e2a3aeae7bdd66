"""Run folders: the files `elbox train` writes and `load_run` reads back.

runs/<name>/
  config.json        the fully resolved TrainConfig (reusable with --config)
  run.json           the data set's description, status and summary
  metrics.jsonl      one JSON object per epoch
  checkpoints/       last.safetensors, best.safetensors (checkpoints module)
  figures/*.png
  .lock              held (flock) by the one process writing the folder: see ``owned``
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .bounds import COLLAPSE_MI
from .checkpoints import load_checkpoint
from .data import Dataset, Schema, binarize, load_dataset
from .errors import ElboxError
from .models import LatentVariableModel, build_model

if TYPE_CHECKING:  # imported where used at run time: elbox.training.config runs train/'s face, which imports runs
    from .training.config import TrainConfig

__all__ = [
    "LOCK",
    "Run",
    "load_run",
    "load_splits",
    "model_tensors",
    "owned",
    "read_json",
    "read_metrics",
    "restore_model",
    "run_folder_problem",
]

CONFIG, INFO, METRICS, CHECKPOINTS, FIGURES = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "checkpoints",
    "figures",
)
LOCK = ".lock"
_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, depth): this process's locks, re-entrant


def run_folder_problem(path: Path, error: OSError, *, new: bool = True) -> ElboxError:
    """The user's error for an ``OSError`` met on a run folder's files: the path, the cause and what to do.

    ``new``: the folder was to be made (``--out``); else an existing run is read and written (evaluate, report).
    """
    where = Path(error.filename) if error.filename else path
    reason = error.strerror or type(error).__name__
    fix = ("Give --out a folder in a place you may write (not /proc or /sys, nor below an existing file), with "
           "free space." if new else "elbox writes its results (and a .lock) into the run folder: give a run "
           "folder you may write, or copy the run to one.")  # fmt: skip
    return ElboxError(f"the run folder {path} cannot be written: {reason} ({where}). {fix}")


def _holder(lock: Path) -> str:
    """``process PID (COMMAND)`` holding the flock on ``lock``, from the kernel's table (Linux's /proc/locks).

    Read from the kernel, not from the file: the lock file is never written, so taking a lock
    changes no file of a run, and a holder's record can never be stale.
    """
    try:
        inode = str(os.stat(lock).st_ino)
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; waiters start with "->"
            if "FLOCK" in fields and "->" not in fields:
                i = fields.index("FLOCK")
                pid, where = fields[i + 3], fields[i + 4]
                if where.rsplit(":", 1)[-1] == inode:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                    return f"process {pid} ({command or 'command unknown'})"
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    return "another process"


@contextmanager
def owned(path: str | Path, *, create: bool = False) -> Iterator[Path]:
    """Hold the run folder ``path`` for this process: an exclusive ``flock`` on ``path/.lock`` while inside.

    A second process that asks (``train --out``, ``--resume``, ``evaluate``, ``report``, ``fit
    --out``) is refused with the holder's pid and command (``_holder``), before it writes anything. The kernel
    releases the lock when the holder exits, killed or not, so a stale ``.lock`` file never
    blocks. Re-entrant within one process (``flock`` on a second descriptor would block itself).
    ``create`` makes the folder (and its parents) first. Under torchrun only rank 0 (``RANK``, read
    from the launcher's environment since the group may not be joined yet) takes it: it owns the folder.
    """
    path = Path(path)
    if os.environ.get("RANK", "0") != "0":
        yield path
        return
    key = path.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield path
        finally:
            _release(key)
        return
    if path.exists() and not path.is_dir():
        raise ElboxError(f"{path} is a file, not a run folder; nothing was changed. Give a folder's path.")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise run_folder_problem(path, e, new=create) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ElboxError(
            f"the run folder {path} is being written by {_holder(path / LOCK)}; nothing was changed. Wait for it to "
            "finish (or stop it), or choose another folder: two writers would interleave the run's files."
        ) from None
    _held[key] = (fd, 1)
    try:
        yield path
    finally:
        _release(key)


def _release(key: Path) -> None:
    fd, depth = _held[key]
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    del _held[key]
    os.close(fd)  # closing the last descriptor releases the flock


@dataclass
class Run:
    """A training run on disk, with its model loaded.

    Attributes:
        path: the run folder.
        config: the resolved configuration it was trained with.
        model: the model, in evaluation mode, with the chosen checkpoint's weights.
        metrics: one dict per epoch (``metrics.jsonl``).
        info: ``run.json``: the data set's description, the status and the summary.
        epochs_trained: the epochs the call that returned it trained (``train``, ``resume``);
            ``None`` for a run only loaded.
    """

    path: Path
    config: "TrainConfig"
    model: LatentVariableModel  # the class config.model.model names (models.MODEL_KINDS)
    metrics: list[dict[str, Any]]
    info: dict[str, Any]
    epochs_trained: int | None = None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        shape = self.info.get("dataset", {}).get("image_shape")
        return tuple(shape) if shape else None

    @property
    def schema(self) -> Schema | None:
        """A table's schema: its columns, kinds, levels and transforms (None for other data)."""
        stored = self.info.get("dataset", {}).get("schema")
        return None if stored is None else Schema.from_dict(stored)

    def describe(self) -> str:
        """What ``elbox train`` prints at the end: the ELBO split into its two terms per split, warnings
        (skipped steps, a collapsed posterior) and what the bound means for this kind of model."""
        s, d = self.summary, self.info["dataset"]
        sizes = d["sizes"]
        kind = {"cvae": "conditional VAE", "vib": "VIB classifier"}.get(self.model.config.model, "VAE")
        lines = [
            f"Trained a {kind} on {d['name']} ({sizes['train']} train / {sizes['valid']} valid / "
            f"{sizes['test']} test{'; all rows trained on' if self.config.all_rows else ''}) for {s['epochs']} "
            f"epochs in {s['seconds']:.1f} s "
            f"(latent dim {self.model.config.latent_dim}, {self.model.config.likelihood} likelihood).",
            "",
            f"{'nats per data point':<22}{'ELBO':>10}  = {'reconstruction':>14} - {'KL':>8}",
        ]
        for split in ("train", "valid", "test"):
            v = s[split]
            lines.append(f"{split:<22}{v['elbo']:>10.3f}  = {v['reconstruction']:>14.3f} - {v['kl']:>8.3f}")
        if "accuracy" in s["test"]:
            lines.append(f"test accuracy {s['test']['accuracy']:.4f} (p(y | x) averaged over 12 draws of z)")
        c = self.config
        if c.objective != "elbo" and self.metrics:
            trained = f"{c.objective.upper()}_{c.k}" + (f" (alpha {c.alpha})" if c.objective == "renyi" else "")
            value = self.metrics[-1][f"train_{c.objective}"]
            lines.append(f"trained bound {trained}, {c.estimator} gradients: {value:.3f}")
        if skipped := sum(m.get("skipped_steps", 0) for m in self.metrics):
            epochs = [m["epoch"] for m in self.metrics if m.get("skipped_steps")]
            lines.append(f"warning: {skipped} training steps had a non-finite loss or gradient and were skipped "
                         f"(epochs {', '.join(map(str, epochs[:10]))}{' ...' if len(epochs) > 10 else ''}; "
                         "skipped_steps in metrics.jsonl).")  # fmt: skip
        if self.model.config.model != "vib" and s["test"]["kl"] < COLLAPSE_MI:  # the mean KL bounds I(x; z)
            lines.append(f"warning: the test KL is {s['test']['kl']:.3f} nats: the posterior has collapsed onto the "
                         "prior and the decoder ignores z. A longer --kl-warmup or --free-bits can help; with "
                         "--prior vamp, "
                         "--activation relu (README, 'Learned priors and two stochastic layers').")  # fmt: skip
        lines += [
            "",
            {"cvae": "Every term is given the label y: the ELBO is a lower bound on log p(x | y), not log p(x | y) "
                     "itself.",
             "vib": "Here reconstruction is E_q log p(y | z) (minus the cross-entropy) and KL the rate, an upper bound "
                    "on I(z; x)."}.get(self.model.config.model,
                                       "The ELBO is a lower bound on log p(x), not log p(x) itself."),
            f"Run written to {self.path} (config.json, metrics.jsonl, checkpoints/, figures/).",
        ]
        if self.model.config.model == "vae":  # evaluate estimates log p(x) of a model without labels
            lines.append(f"`elbox evaluate {self.path}` estimates log p(x) and splits the gap into the family's and "
                         "the "
                         "encoder's.")  # fmt: skip
        return "\n".join(lines)

    def split(self, name: str) -> tuple[Tensor, Tensor | None]:
        """A split of the run's data as it was trained on (``load_splits``), and its labels (None where unknown)."""
        if name not in ("train", "valid", "test"):
            raise ElboxError(f"--split must be train, valid or test, got {name!r}.")
        dataset, splits = load_splits(self.config)
        return splits[name], dataset.labels.get(name)

    @property
    def summary(self) -> dict[str, Any]:
        return self.info.get("summary", {})


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ElboxError(f"{path} is missing: {path.parent} is not a run folder written by `elbox train`.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ElboxError(f"{path} is corrupt ({e}); the run folder cannot be read.") from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The metrics of a run, one dict per epoch; a torn last line (a crash mid-write) is dropped."""
    path = Path(path) / METRICS
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == len(lines):  # the torn last line of a crash mid-write
                break
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)):
            raise ElboxError(f"{path} is corrupt at line {i} (not one epoch's JSON object); the run's metrics "
                             "cannot be read. Restore the file, or train the run again.")  # fmt: skip
        rows.append(row)
    return rows


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's state, keyed ``model.<name>``."""
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def restore_model(model: nn.Module, tensors: dict[str, Tensor], source: Path) -> None:
    """Load ``model.<name>`` tensors into ``model``, refusing any mismatch by name."""
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    wrong = [
        f"{k} {list(v.shape)} (checkpoint {list(state[k].shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if wrong or missing or unexpected:
        raise ElboxError(
            f"the checkpoint {source} does not fit the model of its run's config.json: "
            f"shape mismatch {wrong}, missing {sorted(missing)}, unexpected {sorted(unexpected)}. "
            "Was config.json edited or the checkpoint copied from another run?"
        )
    model.load_state_dict(state)


def load_run(path: str | Path, checkpoint: str = "last") -> Run:
    """Load a run folder written by ``elbox.train``: its config, metrics and model.

    Args:
        path: the run folder.
        checkpoint: ``last`` (the end of training) or ``best`` (best validation ELBO).
    """
    path = Path(path)
    if not path.is_dir():
        raise ElboxError(f"the run folder {path} does not exist; give the folder `elbox train` wrote.")
    if checkpoint not in ("last", "best"):
        raise ElboxError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}.")
    from .training.config import TrainConfig  # deferred: see the import at the top

    config = TrainConfig.from_dict(read_json(path / CONFIG))
    model = build_model(config.model)
    ckpt = path / CHECKPOINTS / f"{checkpoint}.safetensors"
    tensors, _ = load_checkpoint(ckpt)
    restore_model(model, tensors, ckpt)
    return Run(path, config, model.eval(), read_metrics(path), read_json(path / INFO))


def load_splits(config: "TrainConfig") -> tuple[Dataset, dict[str, Tensor]]:
    """The data set of ``config`` and its train / valid / test splits ``[N, X]``, binarized as asked.

    Held-out splits are binarized once (fixed by the seed), so every epoch is evaluated on
    the same data; with ``dynamic`` the training split stays grey and is drawn per epoch.
    """
    dataset = load_dataset(config.data, config.data_dir, download=config.download, schema=config.schema,
                           all_rows=config.all_rows, power=config.power)  # fmt: skip
    splits = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    if config.binarize == "none":
        return dataset, splits
    low, high = min(x.min().item() for x in splits.values()), max(x.max().item() for x in splits.values())
    if low < 0 or high > 1:
        raise ElboxError(
            f"--binarize {config.binarize} draws each value as the probability of a 1, so it needs data in [0, 1], "
            f"but the data {config.data} range from {low:.4g} to {high:.4g}. Scale them to [0, 1] first (e.g. "
            "(x - min) / (max - min), for images x / the largest grey level), or train on them as they are "
            "without --binarize (--likelihood gaussian)."
        )
    g = torch.Generator().manual_seed(config.seed)
    fixed = {"valid", "test"} | ({"train"} if config.binarize == "static" else set())
    return dataset, {name: binarize(x, g) if name in fixed else x for name, x in splits.items()}
