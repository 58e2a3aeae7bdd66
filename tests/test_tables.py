"""Tables: schema inference and refusals, the transforms to and from the user's units, training on
incomplete rows, numbers out (sample, reconstruct, embed) and imputation (MIWAE) against an exact oracle."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from command import run_cli
from tablerun import gapped_run

from elbox import (
    VAE,
    VAEConfig,
    train,  # the package face: with the default hooks (the figures)
)
from elbox.aggregate import aggregate_posterior, aggregate_sample
from elbox.data import Schema, infer_schema, load_dataset, read_table
from elbox.data.tables import fit_transforms, split_rows
from elbox.errors import ElboxError
from elbox.impute import impute, impute_table, sample_table
from elbox.likelihoods import NegativeBinomialMean, Table
from elbox.runs import load_run


def _crafted(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "height": rng.normal(170, 10, n),                    # continuous, in cm
        "smoker": rng.choice(["yes", "no"], n),               # binary strings
        "answer": rng.integers(1, 6, n),                     # integers that are categories (1..5)
        "visits": rng.poisson(3.0, n) + (rng.random(n) < 0.1) * 40,  # counts
        "colour": rng.choice(["red", "green", "blue"], n),   # categorical text
    })  # fmt: skip


def test_column_kinds_are_inferred_from_crafted_columns():
    schema = infer_schema(_crafted())
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"height": "continuous", "smoker": "binary", "answer": "categorical", "visits": "count",
                     "colour": "categorical"}  # fmt: skip
    assert schema.columns[2].levels == (1, 2, 3, 4, 5) and schema.columns[1].levels == ("no", "yes")
    assert "visits" in schema.describe() and "negative-binomial" in schema.describe()


def test_a_count_column_with_a_ceiling_is_read_as_bounded_and_one_without_as_unbounded():
    """Counts whose largest value holds 5% or more of the values (days a week, pixels on of 16) are bounded:
    beta-binomial up to that value; a largest value reached by a few rows is a tail: negative binomial."""
    rng = np.random.default_rng(0)
    days = np.minimum(rng.poisson(4.0, 300), 7)  # capped at 7: about 13% of the rows at the cap
    tail = rng.poisson(4.0, 300)
    frame = pd.DataFrame({"days": days, "tail": tail})
    assert (days == 7).mean() > 0.05 > (tail == tail.max()).mean()
    assert infer_schema(frame).specs == ("beta-binomial:7", "negative-binomial")


@pytest.mark.parametrize(
    ("column", "phrase"),
    [
        ([1.0, 1.0, 1.0, None], "holds one value only"),
        ([None, None, None, None], "has no values"),
    ],
)
def test_a_constant_or_an_all_missing_column_is_refused_with_its_name(column, phrase):
    frame = pd.DataFrame({"ok": [0.1, 0.5, 0.2, 0.9], "bad_column": column})
    with pytest.raises(ElboxError, match=phrase) as info:
        infer_schema(frame)
    assert "'bad_column'" in str(info.value) and "drop" in str(info.value)
    assert [c.name for c in infer_schema(frame, {"bad_column": "drop"}).columns] == ["ok"]


def test_text_with_too_many_levels_is_refused():
    frame = pd.DataFrame({"id": [f"patient-{i}" for i in range(80)], "x": np.arange(80.0)})
    with pytest.raises(ElboxError, match="'id' holds text with 80 distinct values"):
        infer_schema(frame)


def test_a_schema_file_declares_kinds_and_the_rest_is_inferred(tmp_path):
    _crafted().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.toml").write_text('[columns]\nanswer = "count:poisson"\ncolour = "drop"\n')
    ds = load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "s.toml")
    specs = [(c.name, c.spec) for c in ds.schema.columns]
    assert specs == [("height", "gaussian"), ("smoker", "bernoulli"), ("answer", "poisson"),
                     ("visits", "negative-binomial")]  # fmt: skip
    (tmp_path / "bad.json").write_text('{"columns": {"height": "ordinal"}}')
    with pytest.raises(ElboxError, match="unknown column kinds"):
        load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "bad.json")


def test_a_bounded_count_is_declared_beta_binomial_with_its_bound_read_or_given_and_kept_by_the_run(tmp_path):
    frame = pd.DataFrame({"score": [0, 3, 12, 7, 5], "x": [0.1, 0.5, -1.0, 2.0, 0.3]})
    bound_read = infer_schema(frame, {"score": "count:beta-binomial"})  # N: the largest value seen
    assert bound_read.specs == ("beta-binomial:12", "gaussian")
    schema = infer_schema(frame, {"score": "count:beta-binomial:20"})
    assert schema.specs == ("beta-binomial:20", "gaussian")
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "stored.json").write_text(json.dumps(schema.to_dict()))  # a run's stored schema reads back the same
    assert load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "stored.json").schema.specs == schema.specs
    with pytest.raises(ElboxError, match=r"at most 10 .* holds 12"):
        infer_schema(frame, {"score": "count:beta-binomial:10"})
    with pytest.raises(ElboxError, match="above its bound 20"):
        schema.encode(pd.DataFrame({"score": [21], "x": [0.0]}))
    (tmp_path / "zero.json").write_text('{"columns": {"score": "count:beta-binomial:0"}}')
    with pytest.raises(ElboxError, match="unknown column kinds"):
        load_dataset(str(tmp_path / "t.csv"), schema=tmp_path / "zero.json")


def test_a_csv_without_a_header_is_read_with_numbered_columns(tmp_path):
    _crafted().to_csv(tmp_path / "t.csv", index=False, header=False)
    frame = read_table(tmp_path / "t.csv")
    assert list(frame.columns) == [f"column_{i}" for i in range(5)] and len(frame) == 120


def test_encoding_then_decoding_gives_the_users_values_back():
    frame = _crafted()
    frame.loc[[3, 7], "height"] = np.nan
    frame.loc[5, "colour"] = None
    schema = fit_transforms(infer_schema(frame), frame)
    x = schema.encode(frame)
    assert np.isnan(x[[3, 7], 0]).all() and np.isnan(x[5, 4])
    ok = ~np.isnan(x[:, 0])
    assert abs(x[ok, 0].mean()) < 1e-5 and abs(x[ok, 0].std() - 1) < 1e-4  # standardised by elbox
    back = schema.decode(x)
    assert np.allclose(back["height"][ok], frame["height"][ok], rtol=1e-6)  # un-standardised on the way out
    for name in ("smoker", "answer", "visits"):
        assert (back[name] == frame[name]).all()
    assert back["colour"].isna().tolist() == frame["colour"].isna().tolist()
    assert Schema.from_dict(schema.to_dict()) == schema  # JSON and back, nothing lost


# ----------------------------------------------------------------------------- a run on a table


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    return gapped_run(tmp_path_factory.mktemp("table"), _crafted(300), mask_seed=1)


def test_a_run_on_an_incomplete_table_trains_and_stores_its_schema_as_json(table_run):
    run, folder, _ = table_run
    assert math.isfinite(run.summary["test"]["elbo"])
    reloaded = load_run(run.path)
    assert reloaded.schema == load_dataset(str(folder / "t.csv")).schema
    assert reloaded.model.config.columns == ("gaussian", "bernoulli", "categorical:5", "negative-binomial",
                                             "categorical:3")  # fmt: skip


def test_all_rows_trains_on_every_row_of_the_table_and_keeps_the_splits_for_evaluation(table_run):
    from elbox.training.config import TrainConfig
    from elbox.training.setup import prepare

    _, folder, frame = table_run
    data = str(folder / "t.csv")
    held_out = prepare(TrainConfig(data=data)).splits
    setup = prepare(TrainConfig(data=data, all_rows=True))
    every = setup.splits
    assert held_out["train"].shape[0] < len(frame) == every["train"].shape[0]
    # the training split is the rows of the three splits, each once; valid and test are still scored
    rows = split_rows(len(frame), data)
    table = read_table(data)

    def encoded(index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(setup.dataset.schema.encode(table.iloc[index])).to(every["train"].dtype)

    whole = encoded(np.concatenate([rows["train"], rows["valid"], rows["test"]]))
    assert torch.equal(every["train"].nan_to_num(-99.0), whole.nan_to_num(-99.0))
    for split in ("valid", "test"):
        assert every[split].shape == held_out[split].shape
        assert torch.equal(every[split].nan_to_num(-99.0), encoded(rows[split]).nan_to_num(-99.0))


def test_all_rows_standardises_the_continuous_columns_by_every_row_and_the_run_keeps_it(table_run, tmp_path):
    # MIWAE fits the whole incomplete table: its standardisation is the table's own, not the 80%
    # training rows' (which a held-out run keeps, so its valid and test rows stay unseen)
    from elbox.training.config import TrainConfig
    from elbox.training.setup import prepare

    _, folder, frame = table_run
    data = str(folder / "t.csv")
    height = read_table(data)["height"]
    train_rows = height.iloc[split_rows(len(frame), data)["train"]].dropna()
    held_out = prepare(TrainConfig(data=data)).dataset.schema.columns[0]
    every = prepare(TrainConfig(data=data, all_rows=True)).dataset.schema.columns[0]
    assert held_out.name == every.name == "height"
    assert held_out.loc == pytest.approx(train_rows.mean()) and held_out.scale == pytest.approx(train_rows.std(ddof=0))
    assert every.loc == pytest.approx(height.mean()) and every.scale == pytest.approx(height.std(ddof=0))
    assert abs(every.loc - held_out.loc) > 1e-3 * held_out.scale  # the two differ on this table: the test can fail
    run = train(data=data, epochs=1, latent_dim=2, hidden=(16,), out=str(tmp_path / "run"), progress=False,
                all_rows=True)  # fmt: skip
    assert load_run(run.path).schema.columns[0] == every  # imputing reads the table with the run's transforms


def test_an_all_rows_run_records_the_data_sets_splits_and_says_it_trained_on_every_row(table_run, tmp_path):
    from elbox.impute import _trained_rows, embedding_rows

    held_out, folder, frame = table_run
    run = train(data=str(folder / "t.csv"), epochs=1, latent_dim=2, hidden=(16,), out=str(tmp_path / "run"),
                progress=False, all_rows=True)  # fmt: skip
    sizes = run.info["dataset"]["sizes"]
    assert sum(sizes.values()) == len(frame) and sizes["train"] == len(frame) - 2 * round(len(frame) / 10)
    assert "all rows trained on" in run.describe()
    assert len(embedding_rows(run, "test")) == sizes["test"]
    # the aggregate posterior (`sample --latent aggregate`) is over the rows trained on: every row here
    assert len(_trained_rows(run)) == len(frame) and len(_trained_rows(held_out)) == sizes["train"]


def test_samples_csv_keeps_the_names_order_kinds_and_units(table_run, capsys):
    run, folder, frame = table_run
    code, _, err = run_cli(capsys, "sample", run.path, "-n", "1000", "--out", folder / "samples.csv")
    assert code == 0, err
    samples = pd.read_csv(folder / "samples.csv")
    assert list(samples.columns) == list(frame.columns) and len(samples) == 1000
    assert set(samples["smoker"]) <= {"yes", "no"} and set(samples["colour"]) <= {"red", "green", "blue"}
    assert set(samples["answer"]) <= {1, 2, 3, 4, 5} and (samples["visits"] >= 0).all()
    assert (samples["visits"] == samples["visits"].round()).all()
    assert 120 < samples["height"].mean() < 220  # centimetres, not standard units
    for command in ("reconstruct", "embed"):
        code, _, err = run_cli(capsys, command, run.path, "--out", folder / f"{command}.csv")
        assert code == 0, err
    assert list(pd.read_csv(folder / "reconstruct.csv").columns) == list(frame.columns)
    embedded = pd.read_csv(folder / "embed.csv")
    assert list(embedded.columns) == ["row", "z0", "z1"] and embedded["row"].max() < len(frame)


def test_samples_from_the_aggregate_posterior_through_the_command_line(table_run, capsys):
    run, folder, frame = table_run
    code, _, err = run_cli(capsys, "sample", run.path, "-n", "500", "--latent", "aggregate", "--out",
                           folder / "aggregate.csv")  # fmt: skip
    assert code == 0, err
    samples = pd.read_csv(folder / "aggregate.csv")
    assert list(samples.columns) == list(frame.columns) and len(samples) == 500
    assert sample_table(run, 500, 0, "aggregate").equals(sample_table(load_run(run.path), 500, 0, "aggregate"))
    assert not sample_table(run, 500, 0, "aggregate").equals(sample_table(run, 500, 0, "prior"))
    assert sample_table(run, 500, 0, "gmm").equals(sample_table(run, 500, 0, "gmm"))
    assert not sample_table(run, 500, 0, "gmm").equals(sample_table(run, 500, 0, "aggregate"))
    code, _, err = run_cli(capsys, "sample", run.path, "--latent", "posterior", "--out", folder / "bad.csv")
    assert code != 0 and "--latent must be one of prior, aggregate, gmm" in err


def test_impute_fills_every_gap_and_never_changes_an_observed_value(table_run, capsys):
    run, folder, frame = table_run
    code, _, err = run_cli(capsys, "impute", run.path, "--data", folder / "t.csv", "--out", folder / "f.csv",
                           "--k", "50")  # fmt: skip
    assert code == 0, err
    filled = pd.read_csv(folder / "f.csv")
    assert not filled.isna().any().any()
    observed = frame.notna().to_numpy()
    for j, name in enumerate(frame.columns):
        assert (filled[name][observed[:, j]].to_numpy() == frame[name][observed[:, j]].to_numpy()).all(), name
    multiple = impute_table(run, frame, k=50, draws=3)
    assert len(multiple) == 3 * len(frame) and list(multiple.columns) == ["imputation", *frame.columns]
    for m in range(3):
        copy = multiple[multiple["imputation"] == m].drop(columns="imputation").reset_index(drop=True)
        assert copy.where(frame.notna()).equals(frame.where(frame.notna()).astype(copy.dtypes.to_dict()))


def test_a_table_refuses_options_for_images(tmp_path):
    _crafted().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ElboxError, match="are a table, which does not take --likelihood bernoulli"):
        train(data=str(tmp_path / "t.csv"), epochs=1, likelihood="bernoulli", out=str(tmp_path / "r"),
              progress=False)  # fmt: skip


# ----------------------------------------------------------------------------- imputation against the truth


_GAPPED = [[1.2, float("nan"), 0.4, float("nan")], [float("nan"), -0.3, -1.0, 2.5], [0.1, -2.0, float("nan"), 1.0]]
_B = [0.5, -1.0, 0.0, 2.0]


def _factor_model(w: list, sigma: float, v: list | None = None) -> tuple[VAE, torch.Tensor]:
    """A table VAE of four continuous columns whose decoder is linear-Gaussian, x = W z + b + v e + sigma eps
    (e, eps standard normal; no v: independent noise), with its encoder fixed (q = N(0, 0.69^2 I)): the
    factor model x ~ N(b, S), S = W W^T + v v^T + sigma^2 I, returned beside the VAE."""
    torch.manual_seed(0)
    w, b = torch.tensor(w, dtype=torch.float64), torch.tensor(_B, dtype=torch.float64)
    config = VAEConfig(data_dim=4, latent_dim=w.shape[1], hidden=(), likelihood="table", columns=("gaussian",) * 4,
                       noise_rank=0 if v is None else 1)  # fmt: skip
    vae = VAE(config).double()
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.zero_()
        vae.decoder[0].weight.copy_(w)
        vae.decoder[0].bias.copy_(b)
        vae.likelihood.raw_scale.fill_(math.log(math.expm1(sigma - 1e-3)))
        if v is not None:
            vae.likelihood.noise_factor.copy_(torch.tensor(v, dtype=torch.float64))
    return vae, w @ w.T + sigma**2 * torch.eye(4, dtype=torch.float64)


def _conditional(x: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """E[x_m | x_o] = b_m + S_mo S_oo^-1 (x_o - b_o) for each row of ``x`` (NaN: missing), x_o kept."""
    b, out = torch.tensor(_B, dtype=torch.float64), x.clone()
    for i, row in enumerate(x):
        o, m = ~torch.isnan(row), torch.isnan(row)
        out[i, m] = b[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], row[o] - b[o])
    return out


def _imputed(vae: VAE, x: torch.Tensor, repeats: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """The single imputation's mean and standard error over ``repeats`` runs of K = 4000; observed values checked."""
    reps = torch.stack([impute(vae, x, k=4000) for _ in range(repeats)])  # [R, B, C]
    missing = torch.isnan(x)
    assert torch.equal(reps[:, ~missing], x[~missing].expand(repeats, -1))  # observed values untouched
    return reps.mean(0), reps.std(0) / math.sqrt(repeats)


def test_the_imputed_conditional_mean_matches_the_exact_gaussian_conditional():
    """A VAE whose decoder is linear-Gaussian, x = W z + b + sigma eps with z ~ N(0, I), is the factor
    model x ~ N(b, W W^T + sigma^2 I); E[x_m | x_o] = b_m + S_mo S_oo^-1 (x_o - b_o) exactly. The
    importance-weighted mean over K draws of q must agree within its Monte Carlo standard error
    (from R independent repetitions), whatever q is (here the encoder is fixed, q = N(0, 0.69^2 I))."""
    vae, cov = _factor_model([[0.9, 0.1], [-0.6, 0.7], [0.3, -0.8], [0.5, 0.5]], 0.6)
    x = torch.tensor(_GAPPED, dtype=torch.float64)
    exact, missing = _conditional(x, cov), torch.isnan(x)
    mean, se = _imputed(vae, x)
    assert (se[missing] < 0.02).all()  # precise enough that a wrong weighting would show
    assert ((mean - exact)[missing].abs() <= 4 * se[missing] + 1e-3).all(), (mean[missing], exact[missing])


def test_with_correlated_noise_the_imputed_mean_is_the_gaussian_conditional_of_the_whole_covariance():
    """With noise rank 1 the decoder is x = W z + b + v e + sigma eps: the factor model x ~ N(b, W W^T + v v^T
    + sigma^2 I). The imputation must use the noise's correlation too, E[x_m | x_o] with S the whole covariance
    (4 Monte Carlo standard errors); the mean of S without v v^T, what independent noise would give, is
    further off than that. Multiple imputations (SIR, Matheron's rule) have the same mean."""
    v = [[0.2], [0.8], [-0.9], [0.7]]
    vae, cov = _factor_model([[0.9], [-0.6], [0.3], [0.5]], 0.3, v)
    x, vt = torch.tensor(_GAPPED, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)
    exact, independent, missing = _conditional(x, cov + vt @ vt.T), _conditional(x, cov), torch.isnan(x)
    mean, se = _imputed(vae, x)
    assert ((mean - exact)[missing].abs() <= 4 * se[missing] + 1e-3).all(), (mean[missing], exact[missing])
    assert ((independent - exact)[missing].abs() > 10 * se[missing] + 1e-3).any()  # the test can tell them apart
    many = impute(vae, x, k=2000, draws=4000)  # [M, B, C]: SIR draws of x_m | x_o
    assert ((many.mean(0) - exact)[missing].abs() < 4 * many.std(0)[missing] / math.sqrt(4000) + 0.02).all()


def test_a_run_with_correlated_columns_trains_reloads_and_imputes_through_the_command_line(tmp_path, capsys):
    """--noise-rank is stored with the run: the reloaded model has the factor, imputes every gap and
    keeps every observed value; on data that are not a table it is refused in one paragraph, exit 2."""
    cov = [[1, 0.9, 0.5], [0.9, 1, 0.4], [0.5, 0.4, 1]]
    frame = pd.DataFrame(np.random.default_rng(0).multivariate_normal([0, 1, 2], cov, 200), columns=["a", "b", "c"])
    frame = frame.mask(np.random.default_rng(1).random(frame.shape) < 0.2)
    frame.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--epochs", "2", "--hidden", "16",
                           "--noise-rank", "2", "--out", tmp_path / "run", "--no-progress")  # fmt: skip
    assert code == 0, err
    run = load_run(tmp_path / "run")
    assert run.model.likelihood.noise_factor.shape == (3, 2)
    code, _, err = run_cli(capsys, "impute", tmp_path / "run", "--data", tmp_path / "t.csv",
                           "--out", tmp_path / "f.csv", "--k", "50")  # fmt: skip
    assert code == 0, err
    filled = pd.read_csv(tmp_path / "f.csv")
    assert not filled.isna().any().any()
    assert np.allclose(filled.where(frame.notna()).fillna(0), frame.fillna(0), atol=1e-5)
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "run", "--k", "16", "--gap-points", "4", "--gap-steps", "2",
                             "--mi-points", "4", "--no-progress")  # fmt: skip
    assert code == 0 and "log p(x)" in out, err
    code, _, err = run_cli(capsys, "sample", tmp_path / "run", "-n", "50", "--out", tmp_path / "s.csv")
    assert code == 0 and pd.read_csv(tmp_path / "s.csv").shape == (50, 3), err
    code, _, err = run_cli(capsys, "train", "--epochs", "1", "--hidden", "16", "--noise-rank", "2",
                           "--out", tmp_path / "digits", "--no-progress")  # fmt: skip
    assert code == 2 and "Traceback" not in err and "Load a table" in err
    assert not (tmp_path / "digits").exists()


def test_a_parquet_table_loads_like_its_csv(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs the optional pyarrow (pip install 'elbox[parquet]')")
    frame = _crafted()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    csv, parquet = load_dataset(str(tmp_path / "t.csv")), load_dataset(str(tmp_path / "t.parquet"))
    assert csv.schema == parquet.schema and torch.equal(csv.train, parquet.train)


def test_a_table_run_evaluates_through_the_command_line(table_run, capsys):
    """The evaluation sizes its chunks by the decoder's outputs, which a table's likelihood states itself
    (``Likelihood.widths``); it used to ask every likelihood for outputs per pixel and crashed on a table."""
    run, _, _ = table_run
    code, out, err = run_cli(capsys, "evaluate", run.path, "--k", "64", "--gap-points", "8", "--gap-steps", "5",
                             "--mi-points", "8", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "log p(x)" in out


# ----------------------------------------------------------------------------- sampling quality


def test_count_columns_start_at_their_marginal_mean_and_dispersion():
    """log mean into the decoder's bias, theta = m^2 / (v - m) by the moments (Poisson-like: 1000)."""
    rng = np.random.default_rng(0)
    x = torch.tensor(np.stack([rng.normal(size=4000),                       # gaussian: left as built
                               rng.negative_binomial(5, 5 / (5 + 700), 4000),  # NB(mean 700, theta 5)
                               rng.poisson(90, 4000)], 1), dtype=torch.float32)  # fmt: skip
    x[::7, 1] = float("nan")  # missing values are left out of the moments
    lik, bias = Table(("gaussian", "negative-binomial", "negative-binomial")), torch.zeros(3)
    lik.start_at(x, bias)
    assert bias[0] == 0
    assert bias[1].exp().item() == pytest.approx(700, rel=0.03)  # the sd of the mean is 700 / sqrt(5 * 3428), 0.8%
    assert bias[2].exp().item() == pytest.approx(90, rel=0.01)
    theta = lik.theta
    assert theta[0].item() == pytest.approx(5.0, rel=0.15)  # the moment estimate's sd is about 5% at N = 3428
    assert theta[1].item() == pytest.approx(1000, rel=0.01)  # under-dispersed against a Poisson: the Poisson


def test_a_bounded_count_column_starts_at_its_marginal_probability_and_concentration():
    """beta-binomial:16 of Beta(2, 3)-mixed binomials: logit p = logit 0.4 into the bias, theta = a + b = 5 by
    the moments, var = N p (1 - p) (N + theta) / (1 + theta)."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.binomial(16, rng.beta(2.0, 3.0, 4000)), dtype=torch.float32)[:, None]
    lik, bias = Table(("negative-binomial", "beta-binomial:16")), torch.zeros(2)
    lik.start_at(torch.cat([x + 3, x], 1), bias)
    assert torch.sigmoid(bias[1]).item() == pytest.approx(0.4, abs=0.01)  # the sd of the mean / 16 is 0.004
    theta = lik.theta
    assert theta[1].item() == pytest.approx(5.0, rel=0.15)  # the concentration, not the NB column's theta


def test_a_count_column_in_the_hundreds_samples_with_its_spread(tmp_path):
    """Counts in the hundreds (wine's magnesium: 70-162) train 300 steps and sample with the data's sd.
    From theta = 1 and a mean of 1 the negative binomial stayed ~10 times too dispersed."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    frame = pd.DataFrame({"a": z + 0.3 * rng.normal(size=200), "mg": np.round(100 + 14 * z).astype(int)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = train(data=str(tmp_path / "t.csv"), epochs=60, latent_dim=2, hidden=(32,), out=str(tmp_path / "run"),
                progress=False, batch_size=32)  # fmt: skip
    assert run.schema.columns[1].kind == "count"
    mg = sample_table(run, 2000, 0)["mg"]
    assert 80 < mg.mean() < 120 and 7 < mg.std() < 28  # within a factor 2 of the data's 14


def test_a_count_columns_dispersion_leaves_its_start_within_a_small_tables_training():
    """theta on a log scale: Adam (lr 1e-3, the training default) moves a parameter ~lr a step, so theta moves
    by a fraction of itself. From theta = 5 to the data's 30 (log ratio 1.8) in 4,000 steps it reaches the
    maximum-likelihood theta; parametrised by softplus it moved ~lr in absolute terms and ended near 7."""
    rng = np.random.default_rng(0)
    log_mu = torch.tensor(rng.uniform(np.log(50), np.log(500), 2000))
    mu = log_mu.exp().numpy()
    x = torch.tensor(rng.negative_binomial(30, 30 / (30 + mu)), dtype=torch.float64)[:, None]
    lik = Table(("negative-binomial",)).double()
    with torch.no_grad():
        lik.log_theta.fill_(math.log(5.0))
    opt = torch.optim.Adam([lik.log_theta], lr=1e-3)
    for _ in range(4000):
        opt.zero_grad()
        (-lik(log_mu[:, None]).log_prob(x).mean()).backward()
        opt.step()
    grid = torch.linspace(math.log(5), math.log(200), 2000, dtype=torch.float64)
    log_lik = [NegativeBinomialMean(log_mu, g.exp()).log_prob(x[:, 0]).sum() for g in grid]
    mle = grid[int(torch.stack(log_lik).argmax())].exp().item()
    assert mle == pytest.approx(30, rel=0.2)  # the MLE's sd at N = 2000 is about 6% here
    assert lik.theta.item() == pytest.approx(mle, rel=0.05)


def test_a_run_saved_with_the_softplus_dispersion_loads_with_the_same_theta():
    """State dicts from before the log scale hold raw_theta (theta = softplus(raw) + 1e-4): read as log_theta."""
    lik = Table(("gaussian", "negative-binomial", "beta-binomial:9"))
    raw = torch.tensor([0.3, 12.0])
    state = {k: v for k, v in lik.state_dict().items() if k != "log_theta"} | {"raw_theta": raw}
    lik.load_state_dict(state)
    torch.testing.assert_close(lik.theta.detach(), torch.nn.functional.softplus(raw) + 1e-4)


class _TwoClusters(torch.nn.Module):
    """q(z | x) = N(x, 0.1^2 I): the posterior of a row is centred on the row."""

    def encode(self, x):
        return torch.distributions.Independent(torch.distributions.Normal(x, 0.1), 1)


def test_the_aggregate_sample_draws_each_rows_posterior_equally_often():
    """q(z) = (1/N) sum_i q(z | x_i) with 300 rows at -3 and 700 at +3: 30% of the draws near -3, and
    about each cluster the posterior's own spread, sd 0.1 (tolerances: 4 standard errors)."""
    x = torch.cat([torch.full((300, 2), -3.0), torch.full((700, 2), 3.0)])
    n = 20_000
    torch.manual_seed(0)
    z = aggregate_sample(_TwoClusters(), x, n)
    assert z.shape == (n, 2)
    low = z[:, 0] < 0
    assert low.float().mean().item() == pytest.approx(0.3, abs=4 * math.sqrt(0.3 * 0.7 / n))
    for part, centre in ((z[low], -3.0), (z[~low], 3.0)):
        m = len(part)
        assert (part.mean(0) - centre).abs().max().item() < 4 * 0.1 / math.sqrt(m)
        assert (part.std(0) / 0.1 - 1).abs().max().item() < 4 / math.sqrt(2 * m)


def test_the_aggregate_sample_stratifies_its_rows():
    """n = 2.5 N draws take every row twice or three times (N / 2 rows three times), not a multinomial's
    0..7 times, and come in a random order; n < N draws take distinct rows."""
    x = torch.arange(40.0).unsqueeze(1)  # row i's posterior sits at i (sd 0.1): the draw names its row
    torch.manual_seed(0)
    rows = aggregate_sample(_TwoClusters(), x, 100).round().long().squeeze(1)
    counts = torch.bincount(rows, minlength=40)
    assert set(counts.tolist()) == {2, 3} and (counts == 3).sum().item() == 20
    assert not torch.equal(rows[:40].sort().values, rows[:40]), "draws in row order"
    few = aggregate_sample(_TwoClusters(), x, 30).round().long().squeeze(1)
    assert len(set(few.tolist())) == 30


def test_the_aggregate_posterior_finds_the_clusters_of_the_latents():
    """Latents in two clusters (30% at -3, 70% at +3, sd 0.1): the BIC picks two components with those
    weights and means; the mixture is the same for the same seed."""

    class TwoClusters(torch.nn.Module):
        def encode(self, x):
            return torch.distributions.Independent(torch.distributions.Normal(x, 0.1), 1)

    x = torch.cat([torch.full((300, 2), -3.0), torch.full((700, 2), 3.0)])
    q = aggregate_posterior(TwoClusters(), x, seed=0)
    order = q.component_distribution.loc[:, 0].argsort()
    assert q.mixture_distribution.probs[order].tolist() == pytest.approx([0.3, 0.7], abs=1e-3)
    assert q.component_distribution.loc[order].flatten().tolist() == pytest.approx([-3, -3, 3, 3], abs=0.01)
    sd = q.component_distribution.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    assert sd.flatten().tolist() == pytest.approx([0.1] * 4, rel=0.1)
    assert torch.equal(q.mean, aggregate_posterior(TwoClusters(), x, seed=0).mean)
