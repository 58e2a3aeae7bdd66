"""Schedules of the KL weight beta over training steps: constant, linear warm-up, cyclical."""

__all__ = ["kl_weight"]


def kl_weight(step: int, *, beta: float = 1.0, warmup: int = 0, cycle: int = 0, ratio: float = 0.5) -> float:
    """The KL weight at training step ``step`` (counted from 0).

    - constant: ``beta``;
    - linear warm-up over ``warmup`` steps (Bowman et al. 2016; Sønderby et al. 2016):
      beta * min(1, step / warmup);
    - cyclical annealing with period ``cycle`` (Fu et al. 2019): within each cycle the weight
      rises linearly over the first ``ratio`` of the period, then stays at ``beta``.

    >>> [kl_weight(s, warmup=4) for s in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    >>> [kl_weight(s, cycle=4) for s in range(8)]
    [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
    """
    if cycle:
        return beta * min(1.0, (step % cycle) / (cycle * ratio))
    if warmup:
        return beta * min(1.0, step / warmup)
    return beta
