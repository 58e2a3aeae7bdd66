"""Messages a careless user meets (issue 18): each names the bad option and its value, points to the right
place and cause, and the CLI prints it as one paragraph with exit status 2; warnings for what runs but misleads."""

import math
import warnings

import pytest
from command import run_cli

from elbox.catalogue import parse, suggest
from elbox.errors import ElboxError, ElboxWarning
from elbox.evaluation import EvaluationConfig
from elbox.families.table import FAMILIES
from elbox.models import VAEConfig
from elbox.report import _evaluation_table, verdicts_of_evaluation
from elbox.training import TrainConfig

TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-report"]


@pytest.mark.parametrize("name", ["beta", "kl_warmup", "kl_cycles", "free_bits"])
def test_a_negative_weight_names_itself_and_its_value(name):
    with pytest.raises(ElboxError) as e:
        TrainConfig.from_dict({name: -1})
    others = {"beta", "kl_warmup", "kl_cycles", "free_bits"} - {name}
    assert f"{name} (--{name.replace('_', '-')}) must be at least 0, got -1" in str(e.value)
    assert not any(o in str(e.value) for o in others)


def test_a_family_with_zero_steps_is_not_called_unknown():
    with pytest.raises(ValueError) as e:
        parse("iaf:0", FAMILIES, "family")
    assert "unknown" not in str(e.value) and "at least 1, got '0'" in str(e.value)
    with pytest.raises(ValueError, match="did you mean 'diagonal'"):
        parse("diagnol", FAMILIES, "family")


@pytest.mark.parametrize(("value", "quoted"), [("200,abc", "'abc'"), (200, "200"), ("200,-3", "'-3'"),
                                               ([200, "x"], "'x'"), ("", "empty")])  # fmt: skip
def test_hidden_must_be_a_list_of_positive_integers(value, quoted):
    with pytest.raises(ElboxError) as e:
        TrainConfig.from_dict({"hidden": value})
    assert quoted in str(e.value) and "type tuple" not in str(e.value)
    assert "positive integers" in str(e.value)


def test_hidden_none_is_said_outright_for_a_linear_vae():
    assert TrainConfig.from_dict({"hidden": "none"}).model.hidden == ()
    assert TrainConfig.from_dict({"hidden": "300, 100"}).model.hidden == (300, 100)


def test_unknown_keys_and_model_names_suggest_the_closest():
    with pytest.raises(ElboxError, match="did you mean 'latent_dim'"):
        TrainConfig.from_dict({"latent_dimm": 3})
    with pytest.raises(ElboxError, match="did you mean 'vae'"):
        VAEConfig(model="vea")
    assert suggest("zzzzzz", ["latent_dim"]) == ""


def test_evaluation_options_name_the_cli_option_and_refuse_one_particle():
    with pytest.raises(ElboxError) as e:
        EvaluationConfig(max_memory=0)
    assert "--max-memory" in str(e.value) and "gap_lr" not in str(e.value)
    with pytest.raises(ElboxError, match="at least 2 for a log p"):
        EvaluationConfig(k=1)


def test_a_realnvp_in_one_dimension_is_one_paragraph(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--family", "realnvp", "--latent-dim", "1", "--out", tmp_path / "r")
    assert code == 2 and "2 dimensions" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_a_warm_up_longer_than_the_run_warns(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--kl-warmup", "500", "--out", tmp_path / "r")
    assert code in (None, 0) and "elbox: warning: the KL warm-up lasts 500 epochs but the run 1" in err, err
    from elbox.training import train

    with pytest.warns(ElboxWarning, match="warm-up"):
        train(epochs=1, latent_dim=2, hidden=(8,), kl_warmup=3, out=str(tmp_path / "s"), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ElboxWarning)  # a warm-up that completes says nothing
        TrainConfig.from_dict({"kl_warmup": 2, "epochs": 2})


def test_every_report_section_survives_missing_numbers():
    evaluation = {"psis_khat": {"median": None, "max": None, "share_above_0.7": None, "threshold": 0.7},
                  "log_px": {"mean": None, "se": None, "k": 8}, "bounds": {"elbo": {"mean": None, "se": None,
                  "log_px_minus_bound": None}}, "ess": {"k": 8, "median": None, "min": None},
                  "gaps": None, "active_units": None}  # fmt: skip
    verdicts = verdicts_of_evaluation(evaluation)
    assert any("could not be computed" in v.text for v in verdicts)
    assert _evaluation_table(evaluation).rows


def test_a_nan_khat_is_no_share_of_zero():
    import torch

    from elbox.evaluation.result import _share

    assert math.isnan(_share(torch.full((5,), math.nan), 0.7))
    assert _share(torch.tensor([math.nan, 0.9, 0.1]), 0.7) == 0.5
