"""optim: the fused-Adam factory with its fallback, and the one non-finite policy shared by train/ and bayes."""

import pytest
import torch
from torch import nn

from elbox.optim import NonFiniteCounts, NonFiniteError, all_finite, first_nonfinite, guard_step, make_optimizer


def test_make_optimizer_takes_every_parameter_fused_or_not(monkeypatch):
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    fused = make_optimizer(module, 0.1)
    assert fused.defaults["fused"] and fused.defaults["lr"] == 0.1

    real = torch.optim.Adam

    def no_kernel(params, lr, fused=None):  # a device or dtype without the fused kernel
        params = list(params)  # as torch does before it looks for the kernel
        if fused:
            raise RuntimeError("fused=True requires ...")
        return real(params, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", no_kernel)
    for given in (module, module.parameters()):  # a generator too: the fallback must still see every tensor
        plain = make_optimizer(given, 0.1)
        assert not plain.defaults["fused"]
        assert [p for g in plain.param_groups for p in g["params"]] == list(module.parameters())


def test_the_guard_skips_counts_names_the_first_of_a_row_and_stops_at_the_limit():
    counts, described = NonFiniteCounts(), []

    def step(finite, n):
        return guard_step(counts, finite, step=n, limit=3, describe=lambda: described.append(n) or f"tensor {n}")

    assert step(True, 1) and counts == NonFiniteCounts()
    assert not step(False, 2) and not step(False, 3)
    assert (counts.skipped, counts.in_a_row, counts.first_bad, described) == (2, 2, "step 2: tensor 2", [2])
    assert step(True, 4) and (counts.skipped, counts.in_a_row) == (2, 0)  # a good step ends the row
    assert not step(False, 5) and not step(False, 6)
    with pytest.raises(NonFiniteError, match=r"3 training steps in a row .*\(the first, step 5: tensor 5\)"):
        step(False, 7)
    assert counts.skipped == 5 and described == [2, 5]  # described once per row, at its first step


def test_all_finite_sees_a_nan_in_the_loss_or_any_gradient_and_first_nonfinite_names_it():
    layer = nn.Linear(3, 2)
    loss = layer(torch.ones(1, 3)).sum()
    loss.backward()
    assert all_finite(loss, layer.parameters())
    assert not all_finite(loss * float("nan"), layer.parameters())
    layer.bias.grad[1] = float("-inf")
    assert not all_finite(loss, layer.parameters())
    assert first_nonfinite([("the loss", loss)], layer.named_parameters()) == "the gradient of bias"
    assert first_nonfinite([("the loss", loss / 0 * 0)], []).startswith("the loss (1 non-finite")
    layer.bias.grad[1], layer.weight.grad[0, 0], layer.bias.grad[0] = 3e38, 3e38, 3e38  # each finite, the sum not
    assert not all_finite(loss, layer.parameters())
    assert first_nonfinite([("the loss", loss)], layer.named_parameters()).startswith("no single tensor")


def test_adam_is_torch_fused_adam_to_the_last_bit_learning_rate_decays_included():
    from elbox.optim import Adam

    torch.manual_seed(0)
    ours = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64,
                                                                                   requires_grad=True)]  # fmt: skip
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    for params, optimizer in ((ours, Adam(ours, 0.01)), (theirs, torch.optim.Adam(theirs, lr=0.01, fused=True))):
        for step in range(30):
            optimizer.zero_grad(set_to_none=True)
            sum((p**3).sum() for p in params[: 1 if step % 3 == 0 else 2]).backward()  # a tensor without a grad
            optimizer.step()
            if step == 10:
                optimizer.param_groups[0]["lr"] *= 0.2
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
