"""elbox fit model.py --data FILE: the model file's conventions, the four data formats, every refusal, the examples."""

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from command import run_cli

from elbox import bayes
from elbox.bayes.files import check_data, load_data_file, write_data_file
from elbox.errors import ElboxError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FORMATS = (".json", ".npz", ".csv", ".parquet")

REGRESSION = '''
from torch.distributions import Normal
from elbox import bayes

model = bayes.Model({"beta": bayes.Param(3)}, lambda p: Normal(0.0, 1.0).log_prob(p["beta"]).sum(-1),
                    lambda p, d: Normal(p["beta"] @ d["X"].T, 1.0).log_prob(d["y"]), observed=("X", "y"))
'''


def _engine(suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install pyarrow)")


def _arrays(n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return {"X": x, "y": x @ np.array([1.0, -0.5, 0.25]) + rng.normal(size=n), "g": np.arange(n) % 4}


@pytest.mark.parametrize("suffix", FORMATS)
def test_arrays_come_back_equal_with_their_kind_from_every_format(tmp_path, suffix):
    _engine(suffix)
    arrays = _arrays()
    back = load_data_file(write_data_file(tmp_path / f"data{suffix}", arrays))
    assert sorted(back) == sorted(arrays)
    for name, a in arrays.items():
        assert back[name].shape == a.shape and back[name].dtype.kind == a.dtype.kind, name
        assert np.array_equal(back[name], a), name  # bit for bit: CSV floats are read with round_trip precision


def test_json_takes_posteriordb_layout_with_scalars_and_integers(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"J": 8, "y": [28, 8.5, -3], "n": [[1, 2], [3, 4]]}')
    data = load_data_file(path)
    assert data["J"].shape == () and data["J"].dtype == np.int64 and data["y"].dtype == np.float64
    assert data["n"].shape == (2, 2) and data["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("data.json", '{"y": [1, 2], "label": "a"}', "'label' as \"a\": every item must be a number"),
        ("data.json", '{"y": [[1, 2], [3]]}', "rectangular (nested) list"),
        ("data.json", "[1, 2, 3]", "a JSON list, not an object"),
        ("data.json", "{y: 1}", "not valid JSON"),
        ("data.csv", "y,group\n1.0,a\n2.0,b\n", "'group' of"),
        ("data.csv", "y,x\n1.0,\n2.0,3.0\n", "'x' of"),
        ("data.csv", "y,X[0],X[2]\n1,2,3\n", "no gap"),
        ("data.txt", "1 2 3", "ends in .txt"),
        ("data.npz", b"\x93NUMPY not really", "not an .npz archive"),
    ],
)
def test_data_files_that_are_refused(tmp_path, name, content, phrase):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ElboxError) as e:
        load_data_file(path)
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_the_same_fit_from_every_format(tmp_path, capsys):
    """One data set written as .json, .npz, .csv and .parquet gives the same fit, number for number."""
    (tmp_path / "model.py").write_text(REGRESSION)
    tables = []
    for suffix in FORMATS:
        _engine(suffix)
        data = write_data_file(tmp_path / f"data{suffix}", _arrays())
        code, text, err = run_cli(capsys, "fit", tmp_path / "model.py", "--data", data, "--family", "diagonal",
                                  "--steps", "300", "--no-progress")  # fmt: skip
        assert code == 0, err
        assert "No reference draws" not in text  # that hint is for the built-in models
        tables.append(text[text.index("Posterior (draws") : text.index("PSIS k-hat")])
    assert "beta[2]" in tables[0] and all(t == tables[0] for t in tables)


def test_model_file_conventions(tmp_path):
    """`model` may be a Model, a function of no argument or a function of the data; it is named after the file."""
    data = {"X": np.zeros((5, 3)), "y": np.zeros(5)}
    (tmp_path / "plain.py").write_text(REGRESSION)
    assert bayes.load_model_file(tmp_path / "plain.py").name == "plain"
    (tmp_path / "factory.py").write_text(REGRESSION.replace("model = bayes", "model = lambda: bayes"))
    assert bayes.load_model_file(tmp_path / "factory.py").dim == 3
    (tmp_path / "shaped").mkdir()
    (tmp_path / "shaped" / "model.py").write_text(REGRESSION.replace("model = bayes", "model = lambda data: bayes")
                                                  .replace("Param(3)", 'Param(data["X"].shape[1])'))  # fmt: skip
    model = bayes.load_model_file(tmp_path / "shaped" / "model.py", {"X": np.zeros((5, 7))})
    assert model.dim == 7 and model.name == "shaped"
    check_data(model, {"X": np.zeros((5, 7)), "y": np.zeros(5)})
    (tmp_path / "helpers.py").write_text("DIM = 5\n")  # a module beside the model file imports as in `python model.py`
    (tmp_path / "uses.py").write_text("from helpers import DIM\n" + REGRESSION.replace("Param(3)", "Param(DIM)"))
    path_before = list(sys.path)
    assert bayes.load_model_file(tmp_path / "uses.py").dim == 5 and sys.path == path_before
    with pytest.raises(ElboxError, match="fails on"):
        check_data(model, data)  # 3 columns where the model has 7 coefficients


def _pickle_bomb(path: Path, marker: Path) -> None:
    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path.write_bytes(pickle.dumps({"y": Bomb()}))


def _refusals(tmp: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (arguments after `fit`, a phrase the one paragraph must hold)."""
    (tmp / "model.py").write_text(REGRESSION)
    (tmp / "none.py").write_text("import math\nfrom math import sqrt\nSCALE = 2.0\ndef helper():\n    return sqrt(2)\n")
    (tmp / "three.py").write_text("model = 3\n")
    (tmp / "renamed.py").write_text(REGRESSION.replace("model = bayes", "regression = bayes"))
    (tmp / "reads.py").write_text(REGRESSION.replace('observed=("X", "y")', 'observed=("y",)')
                                  .replace('d["X"]', 'd["Z"]'))  # fmt: skip
    (tmp / "factory.py").write_text("def model(data):\n    n = data['groups']\n")
    arrays = _arrays()
    write_data_file(tmp / "good.npz", arrays)
    write_data_file(tmp / "no_y.csv", {"X": arrays["X"]})
    np.savez(tmp / "ragged.npz", X=arrays["X"], y=arrays["y"][:-1])
    write_data_file(tmp / "narrow.npz", {"X": arrays["X"][:, :2], "y": arrays["y"]})
    _pickle_bomb(tmp / "bomb.npz", tmp / "EXPLODED")
    np.savez(tmp / "objects.npz", y=np.array([{"a": 1}, None], dtype=object))
    (tmp / "folder").mkdir()
    return {
        "no model": ([tmp / "none.py"], "no `model`; it defines SCALE (float), helper (function)."),
        "not a Model": ([tmp / "three.py"], "`model` there is (or returned) an object of type int"),
        "other name": ([tmp / "renamed.py"], "defines a Model named regression but none named `model`"),
        "observed missing": ([tmp / "model.py", "--data", tmp / "no_y.csv"], "observes ['y'], which the data file"),
        "read missing": ([tmp / "reads.py", "--data", tmp / "good.npz"], "reads the data item 'Z'"),
        "factory reads": ([tmp / "factory.py", "--data", tmp / "good.npz"], "reads the data item 'groups'"),
        "first dims differ": ([tmp / "model.py", "--data", tmp / "ragged.npz"], "their first dimensions"),
        "shape mismatch": ([tmp / "model.py", "--data", tmp / "narrow.npz"], "shapes do not fit together"),
        "pickle as npz": ([tmp / "model.py", "--data", tmp / "bomb.npz"], "never unpickles"),
        "object array": ([tmp / "model.py", "--data", tmp / "objects.npz"], "never unpickles"),
        "missing model": ([tmp / "absent.py"], "does not exist"),
        "missing data": ([tmp / "model.py", "--data", tmp / "absent.csv"], "does not exist"),
        "model directory": ([tmp / "folder"], "is a directory"),
        "data directory": ([tmp / "model.py", "--data", tmp / "folder"], "is a directory"),
        "unknown suffix": ([tmp / "model.py", "--data", tmp / "model.py"], "ends in .py"),
        "data for a built-in": (["eight_schools_noncentered", "--data", tmp / "good.npz"], "--data goes with"),
    }


@pytest.mark.parametrize("case", [
    "no model", "not a Model", "other name", "observed missing", "read missing", "factory reads", "first dims differ",
    "shape mismatch", "pickle as npz", "object array", "missing model", "missing data", "model directory",
    "data directory", "unknown suffix", "data for a built-in",
])  # fmt: skip
def test_refusals_print_one_paragraph_exit_2_and_write_nothing(tmp_path, capsys, case):
    args, phrase = _refusals(tmp_path)[case]
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "fit", *args, "--out", out, "--no-progress")
    assert code == 2, (text, err)
    assert err.startswith("elbox: error:") and phrase in err, err
    assert "Traceback" not in err and err.strip().count("\n") == 0  # one paragraph (run_cli joins its lines)
    assert not out.exists() and not (tmp_path / "EXPLODED").exists()


# ----------------------------------------------------------------------------- the examples, through the real CLI

TOLERANCE = 3.5  # posterior sds: every generating value lies this close to q's mean (|z| > 3.5 has odds 1 in 2000)


@pytest.mark.parametrize(("example", "data"), [("logistic", "data.csv"), ("varying_intercept", "data.json"),
                                                ("poisson_glmm", "data.csv")])  # fmt: skip
def test_example_recovers_its_generating_parameters(tmp_path, example, data):
    folder = EXAMPLES / example
    out = tmp_path / "run"
    command = [sys.executable, "-m", "elbox", "fit", folder / "model.py", "--data", folder / data,
               "--family", "fullrank", "--no-progress", "--no-report", "--out", out]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "posterior.json").read_text())["summary"]
    truth = json.loads((folder / "truth.json").read_text())
    checked = 0
    for name, value in truth.items():
        for index, v in np.ndenumerate(np.asarray(value)):
            key = f"{name}[{','.join(map(str, index))}]" if index else name
            z = (summary[key]["mean"] - v) / summary[key]["sd"]
            assert abs(z) < TOLERANCE, (key, v, summary[key])
            checked += 1
    assert checked >= 4 and json.loads((out / "config.json").read_text())["model"] == example


@pytest.mark.parametrize("example", ["logistic", "varying_intercept", "poisson_glmm"])
def test_example_data_is_what_its_generator_writes(tmp_path, example):
    shutil.copy(EXAMPLES / example / "generate.py", tmp_path)
    subprocess.run([sys.executable, tmp_path / "generate.py"], check=True, timeout=300)
    for made in tmp_path.iterdir():
        if made.name != "generate.py":
            assert made.read_bytes() == (EXAMPLES / example / made.name).read_bytes(), made.name


def test_a_run_folder_names_the_model_after_its_file(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(REGRESSION)
    data = write_data_file(tmp_path / "data.npz", _arrays())
    code, text, err = run_cli(capsys, "fit", tmp_path / "mine.py", "--data", data, "--family", "diagonal",
                              "--steps", "200", "--no-progress", "--no-report", "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, err
    assert re.search(r"Fitted mine \(3 unconstrained", text)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "mine"
