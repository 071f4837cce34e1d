"""Host memory: glibc's allocator, tuned for XLA:CPU before JAX starts.

XLA:CPU allocates its large per-step buffers (activations, attention scores: tens of
MB each) afresh on every step. With glibc's defaults, each such buffer over 32 MiB is a
new ``mmap`` that the kernel zero-fills page by page, and every worker thread gets an
arena of its own whose freed memory is returned to the system. On this project's
2-core CPU that page-faulting costs as much as the arithmetic in the attention products
(``benchmarks/notes/step_parts.md``).

:func:`tune_host_allocator` makes glibc keep one arena, serve buffers up to 1 GiB from
it, and keep freed memory for reuse (``mallopt`` of ``M_ARENA_MAX``,
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``). It must run before any thread is
started (before JAX's first computation): the ``memgpt-jax`` entry point calls it first
thing, and the speed benchmarks (``train_step``, ``step_parts``, ``attention``) call it in
their JAX and PyTorch processes alike (``MEMGPT_ALLOCATOR`` reaches their child processes). The cost is
resident memory: up to 1 GiB of freed buffers stays mapped for the next step.

``MEMGPT_ALLOCATOR=default`` in the environment leaves glibc's defaults. On other C
libraries (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "MEMGPT_ALLOCATOR"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
KEEP_BYTES = 1 << 30

_state: dict[str, object] = {"tuned": None}


def tune_host_allocator() -> bool:
    """Applies the setting once per process; returns whether glibc accepted it."""
    if _state["tuned"] is not None:
        return bool(_state["tuned"])
    tuned = False
    if os.environ.get(ENV, "tuned") != "default":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc: nothing to tune
            mallopt = None
        if mallopt is not None:
            tuned = all(mallopt(option, value) == 1 for option, value in
                        ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, KEEP_BYTES), (M_TRIM_THRESHOLD, KEEP_BYTES)))
    _state["tuned"] = tuned
    return tuned


def allocator_setting() -> str:
    """One word for reports: ``tuned``, ``default`` (opted out or not applied) or ``unset``."""
    if _state["tuned"] is None:
        return "unset"
    return "tuned" if _state["tuned"] else "default"
