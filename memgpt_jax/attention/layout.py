"""Block layouts for block-sparse attention, built on the host in NumPy: the public face.

::

    from memgpt_jax.attention import layout as L
    lay = L.causal(T, block=128) & (L.local(T, block=128, window=3) | L.global_blocks(T, block=128, n=1))
    mask = lay.to_dense_mask()          # [T, T] bool, for oracles and plots

A :class:`BlockLayout` keeps ``(query, key)`` token pairs at the granularity of
``block x block`` tiles, each ``EMPTY``, ``FULL`` or ``PARTIAL`` (with its exact
token mask); it is immutable, hashable (a static argument of ``jax.jit``), and
composes with ``&`` and ``|``. The class and its codes are defined in
:mod:`memgpt_jax.attention.block_layout`; the constructors (``full``, ``causal``,
``local``, ``global_blocks``, ``global_tokens``, ``random_blocks``, ``strided``,
``fixed``, ``bigbird``, ``derived``, ``from_mask_fn``, ``from_block_map``, ``stack_heads``,
``from_config``) in :mod:`memgpt_jax.attention.layout_patterns`. This module
imports both, so users need only this one.
"""

from __future__ import annotations

from memgpt_jax.attention.block_layout import EMPTY, FULL, MASK_FULL, MASK_PAD, PARTIAL, BlockLayout, check_lengths
from memgpt_jax.attention.layout_patterns import (
    bigbird,
    causal,
    derived,
    fixed,
    from_block_map,
    from_config,
    from_mask_fn,
    full,
    global_blocks,
    global_tokens,
    layer_layouts,
    local,
    random_blocks,
    stack_heads,
    strided,
)

__all__ = [
    "BlockLayout", "EMPTY", "FULL", "MASK_FULL", "MASK_PAD", "PARTIAL", "bigbird", "causal", "derived",
    "check_lengths", "fixed", "from_block_map", "from_config", "from_mask_fn", "full",
    "global_blocks", "global_tokens", "layer_layouts", "local", "random_blocks", "stack_heads", "strided",
]
