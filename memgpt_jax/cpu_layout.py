"""Operand layouts that XLA:CPU's dot emitter runs at full speed.

XLA folds a plain transpose into the dot that reads it. On CPU, a product that reads a
transposed operand (``A^T @ B``: every weight gradient, ``dx = g w^T``, the attention
backward's ``dq = dS k``) runs several times slower than the same product on a transposed
copy (``benchmarks.studies.step_parts``), and in bf16 it is converted to float32 first (both
operands, the optimised HLO shows it). ``materialized_transpose`` makes that copy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def materialized_transpose(a: jax.Array) -> jax.Array:
    """``swapaxes(a, -1, -2)``, materialised in memory on CPU; the plain swap elsewhere.

    Splitting the swapped axis before transposing is what forces the copy (XLA cannot fold
    the reshaped view into the dot). Arrays whose second-to-last axis is not a multiple of 8
    get the plain swap."""
    if a.ndim < 2:
        raise ValueError(f"materialized_transpose needs at least 2 dimensions, got shape {a.shape}")
    *lead, n, k = a.shape
    if jax.default_backend() != "cpu" or n % 8:
        return jnp.swapaxes(a, -1, -2)
    r = len(lead)
    split = a.reshape(*lead, n // 8, 8, k)
    return jnp.transpose(split, (*range(r), r + 2, r, r + 1)).reshape(*lead, k, n)
