"""checkpoints: atomic writes, round trips, and refusal of anything that is not ours."""

import os
import pickle

import pytest
import torch

from elbox.checkpoints import (
    load_checkpoint,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    save_checkpoint,
    write_atomic,
)
from elbox.errors import ElboxError


def test_round_trip_of_tensors_state_and_optimizer(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt.state_dict())
    save_checkpoint(tmp_path / "c.safetensors", tensors | {"w": net.weight}, {"epoch": 3, "optimizer": meta})
    loaded, state = load_checkpoint(tmp_path / "c.safetensors")
    assert state["epoch"] == 3 and torch.equal(loaded["w"], net.weight)
    restored = optimizer_state_from_tensors(loaded, state["optimizer"])
    fresh = torch.optim.Adam(net.parameters())
    fresh.load_state_dict(restored)
    for a, b in zip(fresh.state.values(), opt.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def crash(p):
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_corrupt_files_are_refused(tmp_path, content):
    path = tmp_path / "c.safetensors"
    path.write_bytes(content)
    with pytest.raises(ElboxError, match="corrupt"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.randn(100)}, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ElboxError, match="corrupt"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    torch.save({"x": Exploit()}, tmp_path / "t.safetensors")
    for p in (path, tmp_path / "t.safetensors"):
        with pytest.raises(ElboxError):
            load_checkpoint(p)
    assert not (tmp_path / "pwned").exists()


def test_a_broken_last_checkpoint_points_to_best_not_to_a_resume_that_cannot_read_it(tmp_path):
    from elbox.checkpoints import load_checkpoint, save_checkpoint
    from elbox.errors import ElboxError

    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "best.safetensors", {"a": torch.zeros(2)}, {"epoch": 1})
    with pytest.raises(ElboxError, match=r"does not exist\. The run's best checkpoint is there.*--checkpoint best"):
        load_checkpoint(folder / "last.safetensors")
    (folder / "last.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ElboxError) as e:
        load_checkpoint(folder / "last.safetensors")
    assert "--checkpoint best" in str(e.value) and "resume from another checkpoint" not in str(e.value)
    (folder / "best.safetensors").unlink()
    with pytest.raises(ElboxError) as e:
        load_checkpoint(folder / "last.safetensors")
    assert "--checkpoint" not in str(e.value)
