"""A mean over data points with its standard error, and tensors as JSON numbers."""

import math
from typing import NamedTuple

from torch import Tensor

__all__ = ["Estimate", "floats"]


class Estimate(NamedTuple):
    """A mean over data points with its standard error (``std / sqrt(n)``), in nats per data point.

    >>> import torch
    >>> f"{Estimate.of(torch.tensor([1.0, 2.0, 3.0])):.3f}"
    '2.000 ± 0.577'
    """

    mean: float
    se: float

    @classmethod
    def of(cls, values: Tensor) -> "Estimate":
        v = values.detach().double().flatten()
        se = (v.std() / math.sqrt(v.numel())).item() if v.numel() > 1 else math.nan
        return cls(v.mean().item(), se)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ± {self.se:{spec}}"

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "se": self.se}


def floats(values: Tensor, digits: int = 5) -> list[float | None]:
    """A tensor as JSON numbers, rounded; NaN and infinities (not JSON) as null."""
    return [round(v, digits) if math.isfinite(v) else None for v in values.detach().double().flatten().tolist()]
