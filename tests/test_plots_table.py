"""elbox.plots.table and a table run's outputs: figures chosen by data kind, log p(x | z) per column kind,
the sample / reconstruct / embed figures of a table, and the header of an incomplete CSV."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from command import run_cli

from elbox import train  # the package face: with the default hooks (the figures)
from elbox.data import infer_schema, read_table
from elbox.data.tables import fit_transforms
from elbox.impute import reconstruction_by_kind
from elbox.likelihoods import Table
from elbox.plots.table import correlations, marginals

IMAGE_GRIDS = ("samples.png", "interpolation.png", "traversals.png", "manifold.png")
TABLE_FIGURES = ("curves.png", "marginals.png", "correlations.png", "reconstructions.png", "embedding.png")


def _mixed(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"height": rng.normal(170, 10, n), "smoker": rng.choice(["yes", "no"], n),
                         "visits": rng.poisson(3.0, n), "colour": rng.choice(["red", "green", "blue"], n)})  # fmt: skip


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    frame = _mixed(200)
    frame.loc[::7, "height"] = np.nan
    frame.to_csv(folder / "t.csv", index=False)
    run = train(data=str(folder / "t.csv"), epochs=2, latent_dim=3, hidden=(16,), out=str(folder / "run"),
                progress=False)  # fmt: skip
    return run, folder


def test_a_table_run_draws_table_figures_and_no_image_grid(table_run):
    run, _ = table_run
    drawn = {p.name for p in (run.path / "figures").glob("*.png")}
    assert set(TABLE_FIGURES) <= drawn
    assert not drawn & set(IMAGE_GRIDS), drawn


def test_log_p_x_given_z_per_column_kind_adds_up_to_the_total(table_run):
    run, _ = table_run
    by_kind = run.summary["test"]["reconstruction_by_kind"]
    assert set(by_kind) == {"continuous", "binary", "count", "categorical", "total"}  # float32 sums below
    assert sum(v for k, v in by_kind.items() if k != "total") == pytest.approx(by_kind["total"], abs=1e-5)
    # the total is the run's reconstruction term, one draw of q per row: the same up to Monte Carlo error
    assert by_kind["total"] == pytest.approx(run.summary["test"]["reconstruction"], abs=1.0)


def test_each_kind_is_the_sum_of_its_columns():
    lik = Table(("gaussian", "bernoulli", "categorical:3", "poisson", "negative-binomial", "gaussian"))
    x = torch.tensor([[0.5, 1.0, 2.0, 4.0, 7.0, -1.0], [float("nan"), 0.0, 0.0, 1.0, 0.0, 2.0]])
    p = lik(torch.randn(2, lik.outputs, generator=torch.Generator().manual_seed(0)))
    columns, kinds = p.log_prob_columns(x), p.log_prob_kinds(x)
    assert set(kinds) == {"continuous", "binary", "categorical", "count"}
    torch.testing.assert_close(kinds["continuous"], columns[:, [0, 5]].sum(-1))
    torch.testing.assert_close(kinds["count"], columns[:, [3, 4]].sum(-1))
    torch.testing.assert_close(kinds["categorical"], columns[:, 2])
    torch.testing.assert_close(sum(kinds.values()), p.log_prob(x))


def test_reconstruction_by_kind_is_the_mean_of_one_draw_per_row(table_run):
    run, _ = table_run
    from elbox.runs import load_splits

    _, splits = load_splits(run.config)
    rows = splits["test"]
    got = reconstruction_by_kind(run.model, rows, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        want = run.model.decode(run.model.encode(rows).rsample()).log_prob(rows).double().mean().item()
    assert got["total"] == pytest.approx(want, rel=1e-6)
    assert got == reconstruction_by_kind(run.model, rows, seed=3)  # reproducible, global state untouched


def test_marginal_bars_are_the_shares_of_each_level():
    frame = _mixed(50)
    schema = fit_transforms(infer_schema(frame), frame)
    x = schema.encode(frame, "t")
    samples = x.copy()
    samples[:, 1] = 1.0  # every sample a smoker
    fig = marginals(schema, x, samples)
    bars = [p.get_height() for p in fig.axes[1].patches]  # data's two levels, then the samples'
    share = (frame["smoker"] == "yes").mean()
    np.testing.assert_allclose(bars, [1 - share, share, 0.0, 1.0])
    assert "smoker (binary)" in fig.axes[1].get_title()


def test_correlation_figure_reports_the_mean_absolute_difference():
    frame = _mixed(80)
    schema = fit_transforms(infer_schema(frame), frame)
    x = schema.encode(frame, "t")
    assert "mean |difference| 0.000 over 6 pairs" in correlations(schema, x, x)._suptitle.get_text()
    flipped = x.copy()
    flipped[:, 0] = -flipped[:, 0]  # every correlation with height changes sign
    r = pd.DataFrame(x).corr().to_numpy()
    want = 2 * np.abs(r[0, 1:]).sum() / 6
    assert f"mean |difference| {want:.3f}" in correlations(schema, x, flipped)._suptitle.get_text()


def test_sample_reconstruct_embed_draw_table_figures(table_run, tmp_path, capsys):
    run, _ = table_run
    for command, extra in (("sample", ["-n", "300"]), ("reconstruct", []), ("embed", ["--color", "colour"])):
        code, _, err = run_cli(capsys, command, run.path, "-o", tmp_path / f"{command}.png", *extra)
        assert code == 0, err
        assert (tmp_path / f"{command}.png").stat().st_size > 0
    code, _, err = run_cli(capsys, "embed", run.path, "--color", "shoe_size", "-o", tmp_path / "x.png")
    assert code == 2 and "'shoe_size' is not a column" in err and "height, smoker, visits, colour" in err


def test_a_csv_missing_values_in_every_column_keeps_its_header(tmp_path):
    frame = _mixed(30).astype(object)
    frame.iloc[0, :] = None  # csv.Sniffer gives up on every column that holds an empty cell
    frame.iloc[1:, :] = frame.iloc[1:, :].mask(np.eye(29, 4, dtype=bool))
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert list(read_table(tmp_path / "t.csv").columns) == ["height", "smoker", "visits", "colour"]
    # and a table without a header is still read as one
    pd.DataFrame(np.arange(12.0).reshape(4, 3)).to_csv(tmp_path / "n.csv", index=False, header=False)
    assert list(read_table(tmp_path / "n.csv").columns) == ["column_0", "column_1", "column_2"]


def test_run_json_holds_the_numbers_per_kind(table_run):
    run, _ = table_run
    stored = json.loads((run.path / "run.json").read_text())
    assert stored["summary"]["test"]["reconstruction_by_kind"] == run.summary["test"]["reconstruction_by_kind"]
