"""Operand layouts that XLA:CPU's dot emitter runs at full speed.

XLA folds a plain transpose into the dot that reads it. On CPU, a product that reads a
transposed operand (``A^T @ B``: every weight gradient, ``dx = g w^T``, the attention
backward's ``dq = dS k``) runs several times slower than the same product on a transposed
copy (``benchmarks.studies.step_parts``), and in bf16 it is converted to float32 first (both
operands, the optimised HLO shows it). ``materialized_transpose`` makes that copy.

These are measures for XLA:CPU alone. :func:`on_cpu` chooses per platform when the program is
lowered (``jax.lax.platform_dependent``), not from the process's default backend, so a program
lowered here for TPU or GPU (``jax.export``, ``.lower(lowering_platforms=...)``) carries none
of them; ``tests/test_attention_lowering.py`` checks it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

SCOPE = "xla_cpu_layout"


def on_cpu(cpu: Callable[..., Any], default: Callable[..., Any], *args: Any) -> Any:
    """``cpu(*args)`` in a program lowered for CPU, ``default(*args)`` for any other platform
    (both must return the same shapes and dtypes). The CPU branch's operations carry the
    name scope ``xla_cpu_layout`` (in the lowered text's locations), which tests look for."""

    def scoped(*args: Any) -> Any:
        with jax.named_scope(SCOPE):
            return cpu(*args)

    return jax.lax.platform_dependent(*args, cpu=scoped, default=default)


def materialized_transpose(a: jax.Array) -> jax.Array:
    """``swapaxes(a, -1, -2)``, materialised in memory on CPU; the plain swap elsewhere.

    Splitting the swapped axis before transposing is what forces the copy (XLA cannot fold
    the reshaped view into the dot). Arrays whose second-to-last axis is not a multiple of 8
    get the plain swap."""
    if a.ndim < 2:
        raise ValueError(f"materialized_transpose needs at least 2 dimensions, got shape {a.shape}")
    *lead, n, k = a.shape
    swap = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731
    if n % 8:
        return swap(a)

    def copy(a: jax.Array) -> jax.Array:
        r = len(lead)
        split = a.reshape(*lead, n // 8, 8, k)
        return jnp.transpose(split, (*range(r), r + 2, r, r + 1)).reshape(*lead, k, n)

    return on_cpu(copy, swap, a)
