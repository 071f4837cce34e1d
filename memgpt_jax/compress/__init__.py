"""Compression primitives: pure functions on parameter pytrees, below the model.

- :mod:`memgpt_jax.compress.quantize`: int8 / int4 weight quantization (``QTensor``,
  ``quantize_params``, ``dequantize``, ``int8_matmul``, checkpoint ``encode``/``decode``);
- :mod:`memgpt_jax.compress.prune`: magnitude pruning masks and ``freeze_zeros``.

They import nothing from memgpt-jax (the model reads ``QTensor``). This package
imports neither eagerly (``prune`` needs optax, which the model does not); the
``quantize`` / ``prune`` commands and their reports live in ``memgpt_jax.cli.compress``.
"""

__all__ = ["prune", "quantize"]
