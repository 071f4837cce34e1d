"""Test setup, before JAX is imported.

- 8 fake CPU devices (for pmap/pjit tests).
- One JAX compilation cache per test session, shared by the xdist workers
  and by the subprocesses the CLI tests start (they inherit the environment):
  the many tests that train the same tiny models compile each program once
  per session instead of once per process. The directory is created by the
  controlling process and removed when the session ends, so a run never
  reuses compiles from an earlier run; set ``JAX_COMPILATION_CACHE_DIR``
  yourself to keep one across runs.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="memgpt-jax-test-compiles-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    # Cache every program, however small or quick to compile: the suite's
    # cost is thousands of small compiles.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def n_devices() -> int:
    return jax.device_count()
