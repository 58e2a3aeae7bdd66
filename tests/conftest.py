"""Shared fixtures: the shared data folder beside the repo, read in place and never copied."""

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("ELBOX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The folder ../shared/data; tests that need it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is missing (set ELBOX_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


# `pytest -m "not slow"` runs the fast specifications (the math, the catalogues, the layout) in about a
# minute on 2 cores; CI runs everything. Slow: whole files that train, fit, spawn processes or drive a
# browser, and the tests that took 2 s or more in a full run (`pytest --durations=40`).
SLOW_FILES = {
    "test_train_crash.py",
    "test_distributed.py",
    "test_bayes_shard.py",
    "test_bayes_large.py",
    "test_bayes_files.py",
    "test_guide.py",
    "test_report.py",
    "test_fuzz.py",
    "test_runs.py",
    "test_messages.py",
    "test_cli.py",
    "test_train.py",
    "test_tables.py",
    "test_plots_table.py",
    "test_bayes_fitting.py",
    "test_bayes_diagnostics.py",
    "test_bayes_cli.py",
    "test_evaluate.py",
    "test_hierarchical.py",
    "test_bayes_subsample.py",
    "test_tensorboard.py",
    "test_conditional.py",
    "test_vib.py",
    "test_networks.py",
    "test_startup.py",
    "test_plots.py",
    "test_sinharcsinh.py",
}
SLOW_TESTS = {
    "tests/test_estimators.py::test_dreg_and_score_are_unbiased_for_the_iwae_gradient",
    "tests/test_estimators.py::test_every_estimator_is_unbiased_for_the_elbo_gradient",
    "tests/test_estimators.py::test_score_gradient_with_one_point_per_call_and_a_carried_baseline_is_unbiased",
    "tests/test_families.py::test_a_density_integrates_to_one",
    "tests/test_families.py::test_a_mixture_finds_both_modes_of_a_bimodal_target",
    "tests/test_families.py::test_elbox_leaves_torchs_argument_checks_as_they_were",
    "tests/test_families.py::test_on_a_banana_a_flow_beats_full_rank_which_beats_diagonal",
    "tests/test_families.py::test_richer_families_attain_a_tighter_elbo_on_the_correlated_target",
    "tests/test_families.py::test_the_full_rank_family_recovers_a_correlated_gaussian_exactly",
    "tests/test_likelihoods.py::test_a_vae_with_the_likelihood_trains_on_digits_saves_loads_and_samples",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        if Path(path).name in SLOW_FILES or item.nodeid.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
