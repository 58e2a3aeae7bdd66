"""Hostile input, generated: any configuration and any user data file gives a valid result or one clear
``ElboxError``, never another exception (part of the reliability issue). Hypothesis draws the inputs;
the examples per test are bounded so the suite stays fast."""

import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elbox
from elbox.data import load_dataset
from elbox.errors import ElboxError
from elbox.models import VAEConfig
from elbox.training import TrainConfig, read_config_file

FAST = settings(max_examples=300, deadline=None, derandomize=True,  # the same inputs on every run: CI cannot flake
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = sorted({*TrainConfig.__dataclass_fields__, *VAEConfig.__dataclass_fields__} - {"model"})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, -0.5, 1e308, 10**9]),
    st.text(max_size=12), st.sampled_from(["diagonal", "iaf:2", "lowrank:0", "mixture:x", "elbo", "iwae", "200,200",
                                           "bernoulli", "gaussian", "dreg", "static", "-3", "1e3", ""]),
)  # fmt: skip
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=6), scalars, max_size=3))
configs = st.one_of(  # few known keys (mostly accepted: their values get checked), or anything
    st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), values, max_size=8),
)


def _accepted_or_clear(call, *args):
    try:
        return call(*args)
    except ElboxError as e:
        assert str(e).strip(), "an ElboxError must say what is wrong"
        return None


@FAST
@given(configs, st.booleans())
def test_any_configuration_is_accepted_or_refused_with_a_clear_error(options, nested):
    if nested:  # the same options as a run's config.json writes them: the model's under "model"
        options = {k: v for k, v in options.items() if k not in VAEConfig.__dataclass_fields__} | {
            "model": {k: v for k, v in options.items() if k in VAEConfig.__dataclass_fields__}
        }
    config = _accepted_or_clear(TrainConfig.from_dict, options)
    if config is not None:  # what is accepted is well-formed and round-trips
        numbers = [v for v in (*config.to_dict().values(), *config.model.to_dict().values()) if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers), config
        assert config.epochs >= 1 and config.batch_size >= 1 and config.lr > 0 and config.model.min_scale > 0
        assert TrainConfig.from_dict(config.to_dict()) == config


@FAST
@given(st.binary(max_size=200), st.sampled_from([".toml", ".json"]))
def test_any_configuration_file_is_read_or_refused_with_a_clear_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"config{suffix}"
    path.write_bytes(content)
    options = _accepted_or_clear(read_config_file, path)
    if options is not None:
        _accepted_or_clear(TrainConfig.from_dict, options if isinstance(options, dict) else {"x": options})


arrays = st.one_of(
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6)).map(
        lambda s: np.random.default_rng(s[0]).normal(size=s[1:]).astype(np.float32)
    ),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=12).map(
        lambda v: np.asarray(v, dtype=np.float32).reshape(-1, 1) if v else np.zeros((0, 3), np.float32)
    ),
    st.sampled_from([np.zeros((4, 3), np.int64), np.full((5, 2), 2.0), np.array(["a", "b"]), np.zeros(7),
                     np.zeros((2, 2, 2)), np.ones((3, 4), bool)]),
)  # fmt: skip


@FAST
@given(arrays, arrays, st.booleans())
def test_any_user_array_file_is_loaded_or_refused_with_a_clear_error(tmp_path_factory, train, test, as_npz):
    folder = tmp_path_factory.mktemp("data")
    if as_npz:
        path = folder / "data.npz"
        np.savez(path, train=train, test=test)
    else:
        path = folder / "data.npy"
        np.save(path, train)
    dataset = _accepted_or_clear(load_dataset, str(path))
    if dataset is not None:
        assert dataset.train.ndim == 2 and dataset.train.shape[0] >= 1 and bool(dataset.train.isfinite().all())


@FAST
@given(st.binary(max_size=300), st.sampled_from([".npy", ".npz"]))
def test_any_bytes_as_a_data_file_are_refused_with_a_clear_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("junk") / f"data{suffix}"
    path.write_bytes(content)
    _accepted_or_clear(load_dataset, str(path))


def test_a_pickled_object_array_is_refused_without_being_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled",))

    path = tmp_path / "evil.npy"
    np.save(path, np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(ElboxError):
        load_dataset(str(path))
    (tmp_path / "evil.json").write_text(json.dumps({"epochs": {"__class__": "os.system"}}))
    with pytest.raises(ElboxError):
        TrainConfig.from_dict(read_config_file(tmp_path / "evil.json"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return elbox.train(epochs=1, hidden=(8,), out=str(tmp_path_factory.mktemp("fuzz") / "run"), progress=False).path


@pytest.mark.slow
@settings(FAST, max_examples=150)
@given(st.sampled_from(["checkpoints/last.safetensors", "config.json", "run.json", "metrics.jsonl"]),
       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.none(), st.floats(0, 1)))  # fmt: skip
def test_any_damage_to_a_run_folder_is_loaded_or_refused_with_a_clear_error(trained_run, name, flips, cut):
    """Bytes overwritten anywhere in a run's files, or the file cut short: loading the run, or
    resuming it, gives the run or one ElboxError; the damaged folder is never written to."""
    import shutil

    from elbox.runs import load_run

    run = trained_run.parent / "damaged"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(trained_run, run)
    data = bytearray((run / name).read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    (run / name).write_bytes(bytes(data[: int(cut * len(data))] if cut is not None else data))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    if _accepted_or_clear(load_run, run) is None:  # refused to load: refused to resume, and nothing written
        with pytest.raises(ElboxError):
            elbox.resume(run, epochs=2, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ------------------------------------------------- every path option, given a path that cannot serve (issue 18)

PATHS = ["/proc/elbox/x", "/sys/elbox-x", "/proc/self/mem", "/dev/null", "afile", "afile/below", "adir",
         "missing/deep/x", "x.npy"]  # fmt: skip
FAST_CLI = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-report", "--no-progress"]
COMMANDS = [
    lambda p: ["train", *FAST_CLI, "--out", p],
    lambda p: ["train", *FAST_CLI, "--data", p, "--out", "fresh"],
    lambda p: ["train", *FAST_CLI, "--config", p, "--out", "fresh"],
    lambda p: ["train", *FAST_CLI, "--data", "mnist", "--data-dir", p, "--out", "fresh"],
    lambda p: ["train", "--resume", p, "--no-report"],
    lambda p: ["evaluate", p, "--k", "4", "--gap-points", "0", "--mi-points", "4"],
    lambda p: ["evaluate", "run", "--k", "4", "--gap-points", "0", "--mi-points", "4", "-o", p],
    lambda p: ["sample", p],
    lambda p: ["sample", "run", "-o", p],
    lambda p: ["report", p],
    lambda p: ["fit", "eight_schools_noncentered", "--family", "diagonal", "--steps", "20", "--out", p, "--no-report"],
    lambda p: ["fit", "eight_schools_noncentered", "--family", "diagonal", "--steps", "20", "--posteriordb", p],
]


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    """A folder with a trained run, a file and a folder, for paths to point at wrongly."""
    from elbox.training import train

    root = tmp_path_factory.mktemp("paths")
    train(epochs=1, latent_dim=2, hidden=(8,), out=str(root / "run"), progress=False)
    (root / "afile").write_text("keep me")
    (root / "adir").mkdir()
    (root / "x.npy").mkdir()
    return root


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(range(len(COMMANDS))), st.sampled_from(PATHS))
def test_any_path_option_given_a_bad_path_is_one_paragraph_never_a_traceback(playground, monkeypatch, capsys,
                                                                              command, path):  # fmt: skip
    from elbox.cli import main

    monkeypatch.chdir(playground)
    args = COMMANDS[command](path)
    with pytest.raises(SystemExit) as e:  # any other exception fails the test: a traceback reached the user
        main(args)
    err = capsys.readouterr().err
    assert e.value.code in (None, 0, 2), (args, e.value.code, err)
    if e.value.code == 2:
        assert err.startswith("elbox: error: ") and "Traceback" not in err, (args, err)
    if "-o" not in args:  # an -o names a file to write, which may replace one; --out never does
        assert (playground / "afile").read_bytes() == b"keep me", args
    (playground / "afile").write_text("keep me")
    shutil.rmtree(playground / "fresh", ignore_errors=True)
