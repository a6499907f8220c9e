"""Test configuration: 8 simulated CPU devices and float64 enabled for parity checks.

Both settings must be in place before jax is imported anywhere.
"""
import os

# 8 host devices for the multi-device tests; LLVM optimisation level 0 cuts XLA:CPU compile time
# (the suite is compile-bound: tiny graphs, thousands of compilations).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# In CI the PML parity tests must run: a skipped parity test fails the session.
_skipped_parity = []


def pytest_runtest_logreport(report):
    if report.skipped and "pml" in report.keywords:
        _skipped_parity.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") and _skipped_parity:
        print(f"\nCI: {len(_skipped_parity)} PML parity test(s) were skipped, which CI forbids: {_skipped_parity[:5]}")
        session.exitstatus = 1
