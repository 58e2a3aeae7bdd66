"""elbox fit: prints the fit, diagnostics, verdict and comparison; writes a run folder; bad input exits 2."""

import json

import pytest
from command import run_cli


def test_fit_prints_summary_diagnostics_and_the_reference_comparison(tmp_path, capsys, shared_data):
    out = tmp_path / "fit"
    args = ("fit", "kilpisjarvi", "--family", "fullrank", "--steps", "400", "--no-progress",
            "--posteriordb", shared_data / "posteriordb", "--out", out)  # fmt: skip
    code, text, _ = run_cli(capsys, *args)
    assert code == 0, text
    for expected in ("q = fullrank", "Posterior (draws from q", "PSIS k-hat", "verdict:", "Against the reference",
                     "targets (every mean within 0.1 sd", f"Run written to {out}", "Where the time went",
                     "start: mode search", "fit fullrank (lbfgs)", "verdict on fullrank"):  # fmt: skip
        assert expected in text
    saved = json.loads((out / "posterior.json").read_text())
    assert saved["family"] == "fullrank" and saved["diagnostics"]["verdict"] in ("trust", "do not trust")
    phases = ["start: mode search", "fit fullrank (lbfgs)", "verdict on fullrank"]
    assert [p["phase"] for p in saved["phases"]] == phases
    assert all(p["evaluations"] > 0 for p in saved["phases"])
    assert set(saved["comparison"]) == {"alpha", "beta", "sigma"}
    for name in (
        "config.json",
        "metrics.jsonl",
        "checkpoints/q.safetensors",
        "figures/marginals.png",
        "figures/elbo.png",
    ):
        assert (out / name).is_file(), name
    code, _, err = run_cli(capsys, *args)  # the folder is not empty now
    assert code == 2 and "--overwrite" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fit", "radon"), "unknown model 'radon'"),
        (("fit", "eight_schools_centered", "--family", "gauss"), "unknown family"),
    ],
)
def test_bad_input_prints_one_paragraph_and_exits_2(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err and err.startswith("elbox: error:") and "Traceback" not in err
