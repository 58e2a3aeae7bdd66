"""Checkpoint and run files written atomically: safetensors tensors with a JSON header, no pickle.

A checkpoint is one ``.safetensors`` file: the model's and optimiser's tensors and the RNG
states, with the scalar training state as JSON in the file's metadata. One file per
checkpoint makes it atomic with a single rename: a crash leaves the old one or the new
one, never half of each.
"""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .errors import ElboxError

__all__ = [
    "append_json_line",
    "load_checkpoint",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "restore_rng_states",
    "rng_states",
    "save_checkpoint",
    "write_atomic",
    "write_json",
    "write_json_lines",
]

FORMAT = "elbox-checkpoint/1"


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The file is flushed to disk before the rename, and the temporary removed on any error.
    """
    path = Path(path)
    if path.is_dir():
        raise ElboxError(f"cannot write {path}: it is a folder. Give the path of a file to write (in that folder, "
                         f"e.g. {path / path.name}).")  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable(path: Path, error: OSError) -> ElboxError:
    """The user's error for a file that cannot be written: the path, the system's reason, what to do."""
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return ElboxError(f"cannot write {path}: {error.strerror or error}{where}. Give a path in a folder you may write "
                      "(not under /proc or /sys, nor below an existing file), on a disk with free space.")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def write_json_lines(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines, atomically (replacing the file)."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def append_json_line(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a crash mid-write leaves a torn last line that readers drop."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
    """Save named tensors and a JSON-able ``state`` to one safetensors file, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # one metadata key: safetensors writes its metadata map in Rust's HashMap order, which changes from
    # process to process, so two keys made two equal checkpoints differ in their bytes
    metadata = {"elbox": json.dumps({"format": FORMAT, "state": state})}
    write_atomic(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_checkpoint(path: str | Path, *, with_tensors: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles anything.

    ``with_tensors=False`` reads only the JSON state from the file's header (the tensors come back empty).
    """
    path = Path(path)
    if not path.is_file():
        other = _other_checkpoint(path)
        raise ElboxError(f"the checkpoint {path} does not exist." + other if other else
                         f"the checkpoint {path} does not exist; is this a run folder written by `elbox train`?")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}  # noqa: SIM118 (no iterator)
        if "elbox" in metadata:  # else the two keys of checkpoints written before
            metadata = json.loads(metadata["elbox"])
            metadata["state"] = json.dumps(metadata.get("state"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        state = json.loads(metadata["state"])
    except (SafetensorError, ValueError, KeyError, OSError) as e:
        raise ElboxError(
            f"the checkpoint {path} is corrupt or not an elbox checkpoint ({e}). Train the run again with "
            "--overwrite." + _other_checkpoint(path)
        ) from None
    return tensors, state


def _other_checkpoint(path: Path) -> str:
    """Advice to read the run's other checkpoint (``--checkpoint``) when one is there; ``--resume`` reads only last."""
    other = {"last.safetensors": "best", "best.safetensors": "last"}.get(path.name)
    if other is None or not (path.parent / f"{other}.safetensors").is_file():
        return ""
    return (f" The run's {other} checkpoint is there: `elbox evaluate`, `sample` and the other commands read it with "
            f"--checkpoint {other} (a resume continues only from last.safetensors).")


def optimizer_state_to_tensors(
    state_dict: dict[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser's ``state_dict`` into tensors (``optimizer.<i>.<name>``) and JSON."""
    tensors, scalars = {}, {}
    for i, slots in state_dict["state"].items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{i}.{name}"] = value
            else:
                scalars[f"{i}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``optimizer_state_to_tensors``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    for key, value in meta["scalars"].items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_states() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The random states a run draws from: torch's global generator (CPU and each CUDA device).

    Returned as tensors (``rng.torch``, ``rng.cuda.<i>``) and JSON, for ``save_checkpoint``;
    ``restore_rng_states`` is the inverse. NumPy's and Python's global states are neither saved nor
    set: elbox draws nothing from them, and saving them wrote the process's entropy into every
    checkpoint (two equal runs gave different bytes) while restoring them changed the caller's.
    """
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return tensors, {}


def restore_rng_states(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Set the random states saved by ``rng_states`` (NumPy's and Python's in older checkpoints are left unread)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
