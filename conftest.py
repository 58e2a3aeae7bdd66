"""Doctests see torch and nn, and a fixed seed, so the examples in docstrings read naturally."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    torch.manual_seed(0)
    doctest_namespace.update(torch=torch, nn=nn)
