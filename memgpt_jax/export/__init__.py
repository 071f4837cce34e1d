"""Interoperability: Orbax checkpoints to PyTorch and Hugging Face GPT-2, and back.

- :mod:`~memgpt_jax.export.mapping`: the one key-and-transform table (our tree
  <-> our PyTorch module's state dict <-> Hugging Face GPT-2's) driving every direction.
- :mod:`~memgpt_jax.export.torch_model`: a pure-PyTorch twin of the model (no JAX import).
- :mod:`~memgpt_jax.export.torch_format`: ``export_torch`` / ``import_torch``.
- :mod:`~memgpt_jax.export.hf_gpt2`: ``export_hf_gpt2`` / ``import_hf_gpt2`` / ``open_hf_run``.
- ``memgpt-jax export`` and ``memgpt-jax import`` live in :mod:`memgpt_jax.cli.export`.

Names below are imported lazily, so ``import memgpt_jax.export.torch_model`` stays
free of JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ConversionError": "memgpt_jax.export.mapping",
    "TorchGPT": "memgpt_jax.export.torch_model",
    "export_torch": "memgpt_jax.export.torch_format",
    "import_torch": "memgpt_jax.export.torch_format",
    "export_hf_gpt2": "memgpt_jax.export.hf_gpt2",
    "import_hf_gpt2": "memgpt_jax.export.hf_gpt2",
    "open_hf_run": "memgpt_jax.export.hf_gpt2",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memgpt_jax.export' has no attribute {name!r}")
