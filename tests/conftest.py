"""Shared fixtures: e3nn 0.6.0 as a test-only oracle, and a scoped float64 default dtype."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def e3nn_o3():
    """``e3nn.o3`` (version 0.6.x), or skip the test when e3nn is not installed."""
    e3nn = pytest.importorskip("e3nn")
    assert e3nn.__version__.startswith("0.6"), e3nn.__version__
    from e3nn import o3

    return o3


@pytest.fixture
def float64_default():
    """Set torch's default dtype to float64 for one test and restore it afterwards.

    e3nn builds some constants (e.g. the generators behind ``wigner_D``) in the default dtype,
    so comparisons at 1e-12 need float64 there."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread and restore the setting afterwards.

    The math-layer tests call many kernels on small tensors; with two threads on a busy two-core
    machine each call can stall on thread hand-off (seen: e3nn's wigner_D 100x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
