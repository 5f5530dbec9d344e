"""The hot-path benchmark runs in a fresh process and counts the path's matmul arithmetic."""

import pytest


def test_hot_path_counts_the_matmul_flops_of_one_loss_and_backward():
    from benchmarks.run import run_one

    record = run_one("hot_path", "--batch", 2, "--steps", 20, "--repeats", 1)
    assert "error" not in record, record
    rows = 2 * 20
    # one hidden layer of 64: OTN 3->64->10, FTN 10->64->3; forward (4 products), weight
    # gradients (4) and input gradients (3: not into the data x) of 2 M N K each
    otn_in, otn_out, ftn_in, ftn_out = 3 * 64, 64 * 10, 10 * 64, 64 * 3
    expected = 2 * rows * (3 * otn_in + 3 * otn_out + 2 * ftn_in + 3 * ftn_out)
    # the blocked latent solve: one block of 20 steps, (20 x 20) @ (20 x B Dz) forward and
    # its transpose for the drive's gradient (the decays are constants)
    expected += 2 * (2 * 20 * 20 * 2 * 3)
    assert record["matmuls"] == 13 and record["flops"] == expected
    assert record["sequential_over_parallel"] == pytest.approx(
        record["sequential_s"] / record["parallel_s"]
    )
    assert 0 < record["parallel_floor_fraction"]


def test_before_path_is_the_same_loss_as_the_current_one():
    """The benchmark's ``before`` path (main before the blocked solve) computes the same value
    and gradients as ``Alternator.loss`` from the same draws: only the speed may differ."""
    import torch

    from alternators_ppl.models import Alternator
    from benchmarks.hot_path import _before_loss

    torch.manual_seed(0)
    model = Alternator(4, 2, hidden=(8,)).double()
    x = torch.randn(3, 70, 4, dtype=torch.float64)
    results = []
    for loss_fn in (model.loss, lambda x: _before_loss(model, x)):
        torch.manual_seed(5)
        loss = loss_fn(x)
        results.append((loss.item(), torch.autograd.grad(loss, list(model.parameters()))))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)
