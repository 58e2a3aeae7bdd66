"""tensorboard: a run trained with --tensorboard logs every epoch's metrics and prior samples, and the run's
numbers are the same as without it."""

import json

import pytest

import elbox
from elbox import ElboxError
from elbox.tensorboard import LOG_DIR, _scalars

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install 'elbox[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_scalars_are_grouped_by_split_with_the_schedule_beside_them():
    metrics = {"epoch": 3, "step": 30, "train_elbo": -1.5, "valid_kl": 2.0, "kl_weight_per_step": [0.1, 0.2], "x": "a"}
    assert _scalars(metrics) == {"train/elbo": -1.5, "valid/kl": 2.0, "schedule/beta": 0.2}


@pytest.mark.slow
def test_a_run_logs_each_epoch_and_its_numbers_do_not_change(tmp_path):
    options = dict(epochs=3, hidden=(16,), out=None, progress=False)
    logged = elbox.train(**options | {"out": tmp_path / "tb"}, tensorboard=True, kl_warmup=2)
    plain = elbox.train(**options | {"out": tmp_path / "plain"}, kl_warmup=2)
    assert json.loads((tmp_path / "tb" / "config.json").read_text())["tensorboard"] is True
    assert logged.metrics[-1]["valid_elbo"] == plain.metrics[-1]["valid_elbo"]
    events = EventAccumulator(str(tmp_path / "tb" / LOG_DIR)).Reload()
    elbo = events.Scalars("train/elbo")
    assert [e.step for e in elbo] == [1, 2, 3]
    assert [e.value for e in elbo] == pytest.approx([m["train_elbo"] for m in logged.metrics])
    assert "schedule/beta" in events.Tags()["scalars"] and "valid/kl" in events.Tags()["scalars"]
    assert len(events.Images("prior samples")) == 3
    assert not (tmp_path / "plain" / LOG_DIR).exists()


def test_a_missing_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else object())
    with pytest.raises(ElboxError, match="pip install 'elbox\\[tensorboard\\]'"):
        elbox.train(epochs=1, out=tmp_path / "r", tensorboard=True, progress=False)
    assert not (tmp_path / "r").exists()
