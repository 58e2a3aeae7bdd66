"""cli: every command runs and writes what it says; bad input gets one paragraph and exit code 2."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from command import run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "digits"
    subprocess.run(
        [sys.executable, "-m", "elbox", "train", "--epochs", "1", "--hidden", "32", "--out", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _snapshot(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_train_prints_the_elbo_split_and_writes_the_run(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--epochs", "1", "--hidden", "16", "--out", tmp_path / "r", "--no-progress")
    assert code == 0
    assert "reconstruction" in out and "KL" in out and "valid" in out and str(tmp_path / "r") in out
    for name in ("config.json", "run.json", "metrics.jsonl", "checkpoints/last.safetensors", "figures/samples.png"):
        assert (tmp_path / "r" / name).is_file(), name


@pytest.mark.slow
def test_train_warns_when_the_posterior_collapsed_and_not_otherwise(tmp_path, capsys):
    """A KL weight of 100 drives q onto the prior; the mean KL bounds I(x; z), so under 0.05 nats z says nothing."""
    code, out, _ = run_cli(capsys, "train", "--epochs", "2", "--hidden", "16", "--beta", "100", "--out", tmp_path / "c",
                           "--no-progress", "--no-report")  # fmt: skip
    assert code == 0 and "warning: the test KL is 0.0" in out and "collapsed onto the prior" in out
    code, out, _ = run_cli(capsys, "train", "--epochs", "2", "--hidden", "16", "--out", tmp_path / "u", "--no-progress",
                           "--no-report")  # fmt: skip
    assert code == 0 and "collapsed" not in out


@pytest.mark.slow
def test_model_vamp_is_the_vae_with_the_vamp_prior(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "train", "--model", "vamp", "--prior", "vamp:5", "--epochs", "1", "--hidden", "16",
                         "--out", tmp_path / "v", "--no-progress", "--no-report")  # fmt: skip
    config = json.loads((tmp_path / "v" / "config.json").read_text())["model"]
    assert code == 0 and (config["model"], config["prior"]) == ("vae", "vamp:5")
    code, _, err = run_cli(capsys, "train", "--model", "vamp", "--prior", "mog", "--out", tmp_path / "m")
    assert code == 2 and "takes --prior vamp[:K] or none" in err and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_config_file_options_are_used_and_flags_override_them(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("epochs = 2\nlatent_dim = 3\nhidden = [16]\n")
    code, _, _ = run_cli(capsys, "train", "--config", config, "--epochs", "1", "--out", tmp_path / "r", "--no-progress")
    assert code == 0
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert resolved["epochs"] == 1 and resolved["model"]["latent_dim"] == 3 and resolved["model"]["hidden"] == [16]


@pytest.mark.parametrize(
    ("command", "figure"),
    [
        (["sample", "-n", "16"], "samples.png"),
        (["reconstruct", "-n", "8"], "reconstructions.png"),
        (["interpolate", "--pairs", "2"], "interpolation.png"),
        (["manifold", "--grid", "5"], "manifold.png"),
        (["traverse", "--dims", "1,0", "--steps", "5"], "traversals.png"),
        (["embed", "-n", "50"], "embedding.png"),
    ],
)
@pytest.mark.slow
def test_figure_commands_write_a_png(run, tmp_path, capsys, command, figure):
    out = tmp_path / figure
    code, stdout, _ = run_cli(capsys, command[0], run, *command[1:], "-o", out)
    assert code == 0 and str(out) in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bad_inputs(tmp_path):
    wrong_shape = tmp_path / "flat.npy"
    np.save(wrong_shape, np.zeros(10, dtype=np.float32))
    nans = tmp_path / "nans.npy"
    x = np.random.default_rng(0).random((40, 4)).astype(np.float32)
    x[5, 1] = np.nan
    np.save(nans, x)
    return {
        "missing data dir": (["--data", "binarized-mnist", "--data-dir", tmp_path / "nowhere"], "binarized_mnist"),
        "wrong-shaped array": (["--data", wrong_shape], "shape"),
        "NaNs": (["--data", nans], "NaN"),
        "grey values to a Bernoulli": (["--likelihood", "bernoulli"], "binarize"),
        "an unknown option in the config file": (["--config", _write(tmp_path / "c.toml", "epoch = 1\n")], "epoch"),
    }


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "missing data dir",
        "wrong-shaped array",
        "NaNs",
        "grey values to a Bernoulli",
        "an unknown option in the config file",
    ],
)
def test_bad_training_input_gives_one_paragraph_and_exit_code_2(run, tmp_path, capsys, case):
    args, words = _bad_inputs(tmp_path)[case]
    before = _snapshot(run)
    code, out, err = run_cli(capsys, "train", *args, "--out", run)
    assert code == 2
    assert err.startswith("elbox: error:") and words in err and "Traceback" not in err + out
    assert "\n\n" not in err.strip()
    assert _snapshot(run) == before  # the existing run is left exactly as it was


def test_a_corrupt_checkpoint_gives_a_clear_error_and_stays_as_it_is(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    checkpoint = copy / "checkpoints" / "last.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    before = _snapshot(copy)
    for command in (["sample", copy], ["train", "--resume", copy]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and "corrupt" in err and "Traceback" not in err
    assert _snapshot(copy) == before


@pytest.mark.slow
def test_an_image_run_refuses_a_tables_latent_option(run, capsys):
    code, _, err = run_cli(capsys, "sample", run, "--latent", "aggregate")
    assert code == 2 and "trained on a table" in err and "Traceback" not in err


def test_a_missing_run_folder_and_a_non_2d_manifold_are_explained(run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "sample", tmp_path / "nothing")
    assert code == 2 and "does not exist" in err
    run_cli(
        capsys,
        "train",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--latent-dim",
        "3",
        "--out",
        tmp_path / "r3",
        "--no-progress",
    )
    code, _, err = run_cli(capsys, "manifold", tmp_path / "r3")
    assert code == 2 and "2-D" in err


@pytest.mark.slow
def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "elbox", "train", "--data", str(tmp_path / "none.npy")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "none.npy" in result.stderr


@pytest.mark.slow
def test_objective_estimator_and_schedule_flags_reach_the_run(tmp_path, capsys):
    flags = ["--objective", "iwae", "--k", "3", "--estimator", "dreg", "--kl-warmup", "1", "--beta", "0.5"]
    code, _, _ = run_cli(
        capsys, "train", *flags, "--epochs", "1", "--hidden", "16", "--out", tmp_path / "r", "--no-progress"
    )
    assert code == 0
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert {k: resolved[k] for k in ("objective", "k", "estimator", "kl_warmup", "beta")} == {
        "objective": "iwae", "k": 3, "estimator": "dreg", "kl_warmup": 1, "beta": 0.5
    }  # fmt: skip
    metrics = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert "train_iwae" in metrics and max(metrics["kl_weight_per_step"]) < 0.5


@pytest.mark.slow
def test_evaluate_prints_the_table_and_writes_evaluation_json(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    flags = ["--k", "50", "--gap-points", "3", "--gap-steps", "10", "--mi-points", "40", "--no-progress"]
    code, out, _ = run_cli(capsys, "evaluate", copy, *flags)
    assert code == 0
    for words in ("log p(x)", "Nats per data point", "±", "IWAE_50", "CUBO_2", "active units", "amortization"):
        assert words in out, words
    written = json.loads((copy / "evaluation.json").read_text())
    assert written["source"]["split"] == "test" and written["config"]["k"] == 50
    assert str(copy / "evaluation.json") in out
    assert "approximation gap" in (copy / "report.html").read_text()  # the report was brought up to date
    for figure in ("bound_tightness", "rate_distortion", "kl_per_dimension", "gaps"):
        assert (copy / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    # the same seed gives the same numbers; another split and file on request
    code, _, _ = run_cli(capsys, "evaluate", copy, *flags, "--split", "valid", "-o", tmp_path / "valid.json")
    again = json.loads((tmp_path / "valid.json").read_text())
    assert code == 0 and again["source"]["split"] == "valid" and again["log_px"] != written["log_px"]


def test_evaluate_refuses_bad_options_in_one_paragraph(run, capsys):
    before = _snapshot(run)
    bad = {"split": ["--split", "tests"], "k must be": ["--k", "0"], "max-memory": ["--max-memory", "0.0001"]}
    for words, flags in bad.items():
        code, out, err = run_cli(capsys, "evaluate", run, *flags)
        assert code == 2 and words in err and "Traceback" not in err + out, err
    assert _snapshot(run) == before


def test_traverse_refuses_dimensions_the_latent_space_lacks(run, capsys):
    before = _snapshot(run)
    for dims in ("7", "a,b"):
        code, out, err = run_cli(capsys, "traverse", run, "--dims", dims)
        assert code == 2 and "--dims" in err and "Traceback" not in err + out, err
    assert _snapshot(run) == before
