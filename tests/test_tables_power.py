"""Tables' opt-in power transform (``--power yeo-johnson``): the transform against scikit-learn's, its
exact inverse, lambda fitted on the training rows' observed values only, missing cells passed through,
the user's units out of a reloaded run, and runs saved without the option loading as before."""

import json

import numpy as np
import pandas as pd
import pytest
from command import run_cli
from scipy.stats import skew
from tablerun import gapped_run

from elbox import train
from elbox.data import Schema, infer_schema, load_dataset, read_table
from elbox.data.tables import fit_transforms, split_rows
from elbox.data.transforms import fit_lambda, from_standard, to_standard, yeo_johnson, yeo_johnson_inverse
from elbox.errors import ElboxError
from elbox.impute import impute_table, sample_table, table_draws
from elbox.runs import load_run
from elbox.training.config import TrainConfig


def _skewed(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A log-normal column (skewness about 1.8 at sd 0.5 on the log scale), a normal one and a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "income": np.exp(rng.normal(3.0, 0.5, n)),     # right-skewed, positive, median e^3 ~ 20
        "height": rng.normal(170.0, 10.0, n),          # symmetric
        "smoker": rng.choice(["yes", "no"], n),
    })  # fmt: skip


@pytest.mark.parametrize("lmbda", [-1.3, -0.2, 0.0, 0.4, 1.0, 2.0, 2.7])
def test_yeo_johnson_is_scikit_learns_and_its_inverse_is_exact(lmbda):
    from sklearn.preprocessing import PowerTransformer

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.lognormal(0, 1, 200), -rng.lognormal(0, 1, 50), [0.0, np.nan]])
    reference = PowerTransformer(standardize=False)
    reference.lambdas_ = np.array([lmbda])
    y = yeo_johnson(x, lmbda)
    np.testing.assert_allclose(y[:-1], reference.transform(x[:-1, None])[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(yeo_johnson_inverse(y, lmbda), x, rtol=1e-12, atol=1e-12)  # NaN stays NaN
    assert np.isnan(y[-1]) and y[-2] == 0.0


def test_lambda_is_kept_where_the_transform_covers_the_line_so_every_draw_has_a_preimage():
    """A column so skewed that the free MLE lambda is below 0 (its transform then bounded above): lambda
    is clipped to 0, and a decoder's draw 50 sd out still maps to a finite value in the user's units."""
    from sklearn.preprocessing import PowerTransformer

    v = np.exp(np.random.default_rng(2).normal(0.0, 1.5, 500))
    z = (v - v.mean()) / v.std()
    assert PowerTransformer(standardize=False).fit(z[:, None]).lambdas_[0] < 0
    assert fit_lambda(z) == 0.0
    column = fit_transforms(infer_schema(pd.DataFrame({"v": v}), power="yeo-johnson"), pd.DataFrame({"v": v}))
    far = from_standard(np.array([-50.0, 50.0]), column.columns[0])
    assert np.isfinite(far).all() and far[0] < v.min() and far[1] > v.max()


def test_the_power_transform_makes_a_skewed_column_near_normal_and_decodes_it_exactly():
    frame = _skewed()
    frame.loc[[4, 9, 11], "income"] = np.nan
    schema = fit_transforms(infer_schema(frame, power="yeo-johnson"), frame)
    income, height = schema.columns[0], schema.columns[1]
    assert income.power == height.power == "yeo-johnson" and 0 <= income.lmbda < 1  # pulls the right tail in
    assert schema.columns[2].power is None  # binary: untouched
    x = to_standard(frame["income"].to_numpy(), income)
    ok = ~np.isnan(x)
    assert np.isnan(x[[4, 9, 11]]).all() and ok.sum() == len(frame) - 3  # missing stays missing
    assert abs(x[ok].mean()) < 1e-12 and abs(x[ok].std() - 1) < 1e-12  # standardised after the transform
    assert abs(skew(frame["income"].dropna())) > 1.2 and abs(skew(x[ok])) < 0.2
    back = from_standard(x, income)
    np.testing.assert_allclose(back[ok], frame["income"].to_numpy()[ok], rtol=1e-8, atol=0)
    assert np.isnan(back[~ok]).all()
    encoded = schema.encode(frame)  # float32 on the way in, float64 out: exact to float32's rounding
    np.testing.assert_allclose(schema.decode(encoded)["income"][ok], frame["income"][ok], rtol=1e-5)
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema  # JSON and back, nothing lost
    assert "yeo-johnson, lambda" in schema.describe()


def test_a_schema_file_chooses_the_transform_per_column(tmp_path):
    _skewed().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.json").write_text(json.dumps({"columns": {"income": "continuous:yeo-johnson"}}))
    (tmp_path / "opt_out.json").write_text(json.dumps({"columns": {"height": "continuous:none"}}))
    one = load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "s.json").schema
    assert [c.power for c in one.columns] == ["yeo-johnson", None, None]
    every = load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "opt_out.json", power="yeo-johnson").schema
    assert [c.power for c in every.columns] == ["yeo-johnson", None, None]
    (tmp_path / "bad.json").write_text(json.dumps({"columns": {"income": "continuous:box-cox"}}))
    with pytest.raises(ElboxError, match="unknown column kinds"):
        load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "bad.json")


def test_lambda_and_the_standardisation_are_fitted_on_the_training_rows_only(tmp_path):
    frame = _skewed()
    frame.loc[frame.index[:40], "income"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = str(tmp_path / "t.csv")
    column = load_dataset(data, power="yeo-johnson").schema.columns[0]
    rows = read_table(data)["income"].iloc[split_rows(len(frame), data)["train"]].dropna().to_numpy()
    loc, scale = rows.mean(), rows.std()
    assert column.power_loc == pytest.approx(loc, rel=1e-12) and column.power_scale == pytest.approx(scale, rel=1e-12)
    assert column.lmbda == fit_lambda((rows - loc) / scale)
    t = yeo_johnson((rows - loc) / scale, column.lmbda)
    assert column.loc == pytest.approx(t.mean(), abs=1e-12) and column.scale == pytest.approx(t.std(), rel=1e-12)
    every = read_table(data)["income"].dropna().to_numpy()
    assert abs(column.power_loc - every.mean()) > 1e-6 * scale  # all rows would differ: the test can fail


def test_bad_power_options_are_refused_with_the_fix():
    with pytest.raises(ElboxError, match="power must be one of"):
        TrainConfig(data="t.csv", power="box-cox")
    with pytest.raises(ElboxError, match="yeo-johnson"):
        infer_schema(_skewed(), power="log")


def test_power_on_data_that_are_not_a_table_is_refused(tmp_path):
    with pytest.raises(ElboxError, match="not a table"):
        train(data="digits", epochs=1, power="yeo-johnson", out=str(tmp_path / "r"), progress=False)


# ----------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def power_run(tmp_path_factory):
    return gapped_run(tmp_path_factory.mktemp("power"), _skewed(300), mask_seed=3, power="yeo-johnson")


def test_a_reloaded_run_samples_in_the_users_units(power_run, capsys):
    """samples.csv is the decoder's draws (encoded scale) mapped back by the stored transform: the same
    numbers to 1e-8 as the inverse applied by hand, and log-normal-like income in its own units."""
    run, folder, _ = power_run
    reloaded = load_run(run.path)
    assert reloaded.config.power == "yeo-johnson" and reloaded.schema == run.schema
    income = reloaded.schema.columns[0]
    assert income.power == "yeo-johnson" and income.lmbda != 1.0
    code, _, err = run_cli(capsys, "sample", run.path, "-n", "500", "--seed", "7", "--out", folder / "samples.csv")
    assert code == 0, err
    samples = pd.read_csv(folder / "samples.csv")
    draws = table_draws(reloaded, 500, 7).numpy()
    expected = from_standard(np.asarray(draws[:, 0], dtype=np.float64), income)
    np.testing.assert_allclose(samples["income"].to_numpy(), expected, rtol=1e-8, atol=0)
    assert sample_table(reloaded, 500, 7).equals(sample_table(run, 500, 7))
    # in the user's units: the median near e^3 ~ 20 (a 3-epoch model: loose), not near 0 (standard units)
    assert 10 < samples["income"].median() < 40 and 140 < samples["height"].median() < 200
    # reconstructions too: the reconstruct command goes through the same decode
    code, _, err = run_cli(capsys, "reconstruct", run.path, "--out", folder / "reconstruct.csv")
    assert code == 0, err
    assert 5 < pd.read_csv(folder / "reconstruct.csv")["income"].median() < 60


def test_imputation_fills_missing_cells_in_the_users_units_and_keeps_every_observed_one(power_run):
    run, _, frame = power_run
    filled = impute_table(load_run(run.path), frame, k=20)
    assert not filled.isna().any().any()
    observed = frame["income"].notna()
    assert (filled["income"][observed] == frame["income"][observed]).all()  # bit for bit
    gaps = filled["income"][~observed]
    assert len(gaps) > 10 and (gaps > 0).all() and 5 < gaps.median() < 60  # positive, in the column's units


def test_a_run_without_the_option_writes_and_reads_its_schema_as_before(tmp_path):
    """Default runs store no power fields (their run folders as before), and a config.json written before
    the option existed (no "power" key) loads, samples and is read as power none."""
    _skewed(200).to_csv(tmp_path / "t.csv", index=False)
    run = train(data=str(tmp_path / "t.csv"), epochs=1, latent_dim=2, hidden=(16,), out=str(tmp_path / "run"),
                progress=False)  # fmt: skip
    stored = json.loads((run.path / "run.json").read_text())["dataset"]["schema"]["columns"]
    assert all(set(c) == {"name", "kind", "levels", "loc", "scale", "likelihood"} for c in stored)
    config = json.loads((run.path / "config.json").read_text())
    assert config.pop("power") == "none"
    (run.path / "config.json").write_text(json.dumps(config))
    old = load_run(run.path)
    assert old.config.power == "none" and all(c.power is None for c in old.schema.columns)
    assert sample_table(old, 50, 0).equals(sample_table(run, 50, 0))
