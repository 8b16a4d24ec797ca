"""One-pass non-finite scans (imckit._scan) against torch's elementwise checks."""
from __future__ import annotations

import pytest
import torch

from imckit._scan import all_finite, has_nan


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("special", [float("nan"), float("inf"), float("-inf"), 1.0, -0.0])
def test_scans_equal_isfinite_and_isnan(dtype, special):
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 4099):
        for pos in (0, n // 2, n - 1):
            x = torch.randn(n, generator=g).to(dtype)
            x[pos] = special
            for t in (x, x.reshape(1, -1).t(), x[::2] if n > 1 else x):   # views too
                assert all_finite(t) == bool(torch.isfinite(t).all())
                assert has_nan(t) == bool(torch.isnan(t).any())


def test_scans_of_all_nan_empty_and_integer_tensors():
    assert not all_finite(torch.full((5,), float("nan"))) and has_nan(torch.full((5,), float("nan")))
    assert all_finite(torch.empty(0)) and not has_nan(torch.empty(0))
    assert all_finite(torch.arange(5)) and not has_nan(torch.arange(5))
    assert not all_finite(torch.tensor([1 + 1j, complex("nan")]))
    assert has_nan(torch.tensor([1 + 1j, complex("nan")])) and not has_nan(torch.tensor([1j]))
    x = torch.tensor([1.0, float("inf")], requires_grad=True)
    assert not all_finite(x) and not has_nan(x)                      # no autograd trouble
