"""elbox.bayes.densities: each formula equals torch.distributions' log_prob, value and gradient, in float64."""

import math

import pytest
import torch
from torch.distributions import Beta, Cauchy, Normal, StudentT

from elbox.bayes import densities

LOG2 = math.log(2)


def _f64(*values: float) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=torch.float64) for v in values]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda x: densities.normal(x, 0.7, 2.5), lambda x: Normal(*_f64(0.7, 2.5)).log_prob(x)),
        (lambda x: densities.half_normal(x, 2.5), lambda x: Normal(*_f64(0.0, 2.5)).log_prob(x) + LOG2),
        (lambda x: densities.half_cauchy(x, 5.0), lambda x: Cauchy(*_f64(0.0, 5.0)).log_prob(x) + LOG2),
        (lambda x: densities.student_t(x, 3.0, 8.0, 10.0), lambda x: StudentT(*_f64(3.0, 8.0, 10.0)).log_prob(x)),
        (lambda x: densities.half_student_t(x, 3.0, 10.0),
         lambda x: StudentT(*_f64(3.0, 0.0, 10.0)).log_prob(x) + LOG2),
        (lambda x: densities.beta(x / 4, 5.0, 2.0), lambda x: Beta(*_f64(5.0, 2.0)).log_prob(x / 4)),
    ],
    ids=["normal", "half_normal", "half_cauchy", "student_t", "half_student_t", "beta"],
)
def test_matches_torch(ours: object, theirs: object) -> None:
    x = torch.linspace(0.05, 3.9, 17, dtype=torch.float64, requires_grad=True)
    a, b = ours(x), theirs(x)
    (ga,) = torch.autograd.grad(a.sum(), x)
    (gb,) = torch.autograd.grad(b.sum(), x)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_tensor_scale_broadcasts() -> None:
    """A tensor location and scale (eight schools' sigma per school) broadcast against the value ``[K, N]``."""
    y, loc, scale = torch.randn(8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), torch.rand(8) + 0.5
    torch.testing.assert_close(densities.normal(y, loc, scale.double()), Normal(loc, scale.double()).log_prob(y))


@pytest.mark.parametrize("loc_is_tensor", [False, True])
@pytest.mark.parametrize("scale_is_tensor", [False, True])
@pytest.mark.parametrize("loc", [0.0, -1.3])
def test_normal_every_path(loc_is_tensor: bool, scale_is_tensor: bool, loc: float) -> None:
    """Each mix of number and tensor parameters (the folded constants of a prior's numbers, the fused
    ``addcmul`` of a tensor scale) is the same log density and gradient as torch's."""
    x = torch.linspace(-3.0, 4.0, 9, dtype=torch.float64, requires_grad=True)
    loc_ = torch.full((9,), loc, dtype=torch.float64) if loc_is_tensor else loc
    scale_ = torch.linspace(0.5, 3.0, 9, dtype=torch.float64) if scale_is_tensor else 1.7
    ours = densities.normal(x, loc_, scale_)
    theirs = Normal(*(torch.as_tensor(v, dtype=torch.float64) for v in (loc_, scale_))).log_prob(x)
    (ga,) = torch.autograd.grad(ours.sum(), x)
    (gb,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_a_constant_is_made_once_per_value_and_dtype_and_takes_the_values_dtype() -> None:
    """The 0-d constants (``densities._constant``) are kept per value, dtype and device: a float32 value after
    a float64 one (and the other way) gets its own dtype's numbers."""
    for dtype in (torch.float64, torch.float32, torch.float64):
        x = torch.linspace(0.1, 3.0, 5, dtype=dtype)
        half_cauchy = Cauchy(0.0, 5.0).log_prob(x.double()) + LOG2
        for ours, theirs in ((densities.normal(x, 0.0, 2.0), Normal(0.0, 2.0).log_prob(x.double())),
                             (densities.half_cauchy(x, 5.0), half_cauchy)):  # fmt: skip
            assert ours.dtype == dtype
            assert torch.allclose(ours.double(), theirs, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_a_data_scales_term_is_kept_while_the_tensor_lives_and_follows_in_place_changes() -> None:
    """A scale without a gradient (data) has its -log scale - log sqrt(2 pi) made once: the same tensor on the
    next call. An in-place change of the scale, a scale with a gradient or a new tensor of the same values
    gives the right density; the cache lets the tensor die."""
    import gc

    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    sigma = torch.tensor([15.0, 10.0, 16.0], dtype=torch.float64)
    assert densities._scale_term(sigma) is densities._scale_term(sigma)
    sigma.mul_(2.0)  # in place: the term must follow
    torch.testing.assert_close(densities.normal(x, 0.5, sigma), Normal(0.5, sigma).log_prob(x), rtol=1e-14, atol=0)
    scale = sigma.clone().requires_grad_()
    densities.normal(x, 0.5, scale).sum().backward()
    torch.testing.assert_close(scale.grad, (x - 0.5) ** 2 / scale.detach() ** 3 - 1 / scale.detach())
    key = id(sigma)
    del sigma
    gc.collect()
    assert key not in densities._SCALE_TERMS
