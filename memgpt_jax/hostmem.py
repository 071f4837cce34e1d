"""Host memory: glibc's allocator, tuned for XLA:CPU before JAX starts.

XLA:CPU allocates its large per-step buffers (activations, attention scores: tens of
MB each) afresh on every step. With glibc's defaults, each such buffer over 32 MiB is a
new ``mmap`` that the kernel zero-fills page by page, and every worker thread gets an
arena of its own whose freed memory is returned to the system. On this project's
2-core CPU that page-faulting costs as much as the arithmetic in the attention products
("Where the dense step's time goes" in ``benchmarks/HISTORY.md``).

:func:`tune_host_allocator` makes glibc keep one arena, serve every buffer from its heap
(no ``mmap`` per large buffer: ``M_MMAP_MAX`` 0) and never hand freed memory back to the
system (``M_TRIM_THRESHOLD`` at its maximum), so each step's buffers reuse the pages the
previous step touched. A 1 GiB ceiling is not enough: XLA:CPU takes a training step's
temporaries as one block (about 2.4 GB for a 10M-parameter LM at 8,192 tokens a step: f32
logits over an 8k vocabulary alone are 256 MiB a copy), which with a ceiling below it
stays a fresh ``mmap``, 620,000 page faults a step (``faults_per_step`` in
``benchmarks/results/history/train_step_capped.md``).
It must run before any thread is started (before JAX's first computation).

Where it applies. It was measured to help XLA:CPU's training steps, nothing else, and its cost
is resident memory: the process keeps the high-water mark of its heap (plus fragmentation; the
2.4 GB step settles at 3-5.3 GB of heap after its first steps) until it exits. So, with
``MEMGPT_ALLOCATOR`` unset, :func:`default_setting` is ``tuned`` only for the training
commands (``pretrain``, ``finetune``, ``distill``, ``demo``) and the benchmarks, and only
when JAX will run on the CPU; every other command (eval, decode, generate, chat, export, ...)
and every TPU/GPU run keeps glibc's defaults. The backend is decided before JAX starts
(:func:`accelerator_expected`): ``JAX_PLATFORMS``, when set, names it first (``cpu``, or an
accelerator); unset, JAX takes an accelerator whenever a TPU/GPU plugin is installed
(``libtpu``, ``jax_cuda12_plugin``, ``jax_plugins``: this rule then assumes it does; set
``JAX_PLATFORMS=cpu`` on such a machine to train on its CPU with the tuned setting).
The ``memgpt-jax`` entry point calls :func:`tune_host_allocator` with its command first thing;
the speed benchmarks (``train_step``, ``attention``, the studies) call it in their JAX and
PyTorch processes alike (``MEMGPT_ALLOCATOR`` reaches their child processes).

``MEMGPT_ALLOCATOR`` in the environment overrides that choice for every command:
``default`` leaves glibc's defaults, ``tuned`` is the setting above, ``capped`` the earlier,
leaner one (buffers up to 1 GiB from the heap, at most 1 GiB of freed memory kept). On other
C libraries (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os

ENV = "MEMGPT_ALLOCATOR"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8  # glibc's malloc.h
NEVER_TRIM = -1  # mallopt takes an int; glibc reads the trim threshold as size_t: -1 is its maximum
CAP_BYTES = 1 << 30
SETTINGS = {  # MEMGPT_ALLOCATOR -> mallopt calls
    "tuned": ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM)),
    # buffers up to 1 GiB from the heap and at most 1 GiB of freed memory kept: less resident
    # memory, but a larger block (a training step's temporaries) stays a fresh mmap every step
    "capped": ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, CAP_BYTES), (M_TRIM_THRESHOLD, CAP_BYTES)),
    "default": (),
}

TUNED_COMMANDS = ("pretrain", "finetune", "distill", "demo", "bench")  # where "tuned" was measured to help
ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins")  # JAX's TPU/GPU plugins

_state: dict[str, object] = {"applied": None}


def accelerator_expected() -> bool:
    """Whether JAX will run on TPU/GPU, told before it starts: the first of ``JAX_PLATFORMS``
    when it is set, else whether a TPU/GPU plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS)


def default_setting(command: str | None) -> str:
    """The setting for ``command`` when ``MEMGPT_ALLOCATOR`` is unset: ``tuned`` for training
    commands and benchmarks on the CPU backend, ``default`` for anything else."""
    return "tuned" if command in TUNED_COMMANDS and not accelerator_expected() else "default"


def tune_host_allocator(command: str | None = "bench") -> bool:
    """Applies ``MEMGPT_ALLOCATOR``, else :func:`default_setting` of ``command`` (a benchmark
    when not given), once per process; returns whether glibc accepted a setting other than
    its defaults."""
    if _state["applied"] is not None:
        return _state["applied"] != "default"
    name = os.environ.get(ENV) or default_setting(command)
    if name not in SETTINGS:
        raise ValueError(f"{ENV}={name!r}: choose one of {', '.join(SETTINGS)}")
    applied = "default"
    if SETTINGS[name]:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc: nothing to tune
            mallopt = None
        if mallopt is not None and all(mallopt(option, value) == 1 for option, value in SETTINGS[name]):
            applied = name
    _state["applied"] = applied
    return applied != "default"


def allocator_setting() -> str:
    """One word for reports: the applied setting (``tuned``, ``capped``, ``default``: opted out
    or not applied) or ``unset``."""
    return "unset" if _state["applied"] is None else str(_state["applied"])
