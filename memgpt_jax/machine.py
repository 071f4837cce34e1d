"""What CPU this is, read without JAX: for the figures that depend on it.

A figure measured on one CPU (a matmul peak, a compiled program) does not hold on
another: this module names the CPU (:func:`cpu_model`), its matrix features
(:func:`cpu_features`: AVX-512 BF16/FP16, AMX) and a fingerprint of both
(:func:`cpu_fingerprint`) under which such figures are kept, in this user's cache
directory (:func:`cache_dir`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform

# /proc/cpuinfo flags that decide how fast low-precision matrix products run
MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16",
                "amx_int8")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; ``platform``'s words elsewhere."""
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def cpu_model() -> str:
    """``AMD EPYC 7B13``, ``Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz``, ..."""
    return _cpuinfo()[0]


def cpu_features() -> dict[str, bool]:
    """Which of :data:`MATRIX_FLAGS` this CPU has."""
    flags = _cpuinfo()[1]
    return {name: name in flags for name in MATRIX_FLAGS}


def cpu_fingerprint() -> str:
    """A short name for this CPU kind: its model and a hash of all its instruction-set flags
    (two machines share it only if code compiled for one runs alike on the other)."""
    model, flags = _cpuinfo()
    slug = "".join(c if c.isalnum() else "-" for c in model).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    digest = hashlib.sha256((model + "|" + " ".join(sorted(flags))).encode()).hexdigest()[:12]
    return f"{slug[:40]}-{digest}"


def cache_dir(*parts: str) -> str:
    """``${XDG_CACHE_HOME:-~/.cache}/memgpt-jax/PARTS``."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "memgpt-jax", *parts)
