"""Test setup, before JAX is imported.

- 8 fake CPU devices (for pmap/pjit tests).
- XLA's backend (LLVM) optimisation off (``--xla_backend_optimization_level=0``, unless
  ``XLA_FLAGS`` already sets a level): the suite's programs are tiny, so compiling them
  costs far more than running them, and unoptimised machine code compiles in about a
  third less time (tests/test_apps.py and test_model.py cold: 108 s -> 69 s). Its
  rounding may differ from optimised code (no fused multiply-adds, other reduction
  orders), one more kind of CPU arithmetic the tests' tolerances and learned-behaviour
  margins must hold under; long training (the digit reverser) runs optimised in its own
  process. Speed is measured in benchmarks, never here.
- A JAX compilation cache shared by the xdist workers and by the subprocesses the
  CLI tests start (they inherit the environment). The suite's cost is thousands
  of small compiles, many of them the same tiny models compiled again in
  another test or process; with the cache each program compiles once.

  ``MEMGPT_TEST_COMPILE_CACHE`` chooses where it lives:

  - unset: ``${XDG_CACHE_HOME:-~/.cache}/memgpt-jax/test-compiles/<cpu>``, kept
    between runs (a rerun after an edit recompiles only the programs the edit
    changed). ``<cpu>`` names the CPU model and its instruction-set flags: the
    cached programs are machine code for this CPU, and JAX's cache key does not
    include it. Over 2 GiB at the start of a run, the oldest entries go.
  - ``session``: a temporary directory removed when the run ends (a cold run:
    nothing reused from an earlier one).
  - ``off``: no persistent cache.
  - a path: that directory.

  An explicit ``JAX_COMPILATION_CACHE_DIR`` wins over all of these.
"""

import os
import shutil
import tempfile

from memgpt_jax import machine  # reads /proc/cpuinfo; imports no JAX

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CACHE_ENV = "MEMGPT_TEST_COMPILE_CACHE"
CACHE_BYTES = 2 << 30


def _cache_dir() -> tuple[str | None, bool]:
    """(directory, whether this process owns it and removes it at the end)."""
    choice = os.environ.get(CACHE_ENV, "")
    if choice == "off":
        return None, False
    if choice == "session":
        return tempfile.mkdtemp(prefix="memgpt-jax-test-compiles-"), True
    if choice:
        return os.path.abspath(os.path.expanduser(choice)), False
    return machine.cache_dir("test-compiles", machine.cpu_fingerprint()), False


def _prune(directory: str, limit: int) -> None:
    """Deletes the least recently written entries until ``directory`` holds half of ``limit``
    (only when it holds more than ``limit``)."""
    entries = []
    for entry in os.scandir(directory):
        if entry.is_file():
            st = entry.stat()
            entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    for _, size, path in sorted(entries):
        if total <= limit // 2:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size


_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
    directory, owned = _cache_dir()
    if directory:
        os.makedirs(directory, exist_ok=True)
        _OWN_CACHE = directory if owned else None
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
        if not owned:
            _prune(directory, CACHE_BYTES)
        # every program, however small or quick to compile (JAX's size bound is left
        # unset: it rescans the directory at each write)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_report_header(config):
    where = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return f"JAX compilation cache: {where or 'off'} (${CACHE_ENV}: unset, session, off or a path)"


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def n_devices() -> int:
    return jax.device_count()
