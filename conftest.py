"""Doctests see torch and nn and a fixed seed, so docstring examples read naturally; the slow ones are marked."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    torch.manual_seed(0)
    doctest_namespace.update(torch=torch, nn=nn)


SLOW_DOCTESTS = {"elbox", "elbox.train.run.train", "elbox.bayes"}  # each trains or fits: seconds (--durations)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the doctests that train as ``slow``, as the slow tests are, so ``-m "not slow"`` stays under a minute."""
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
