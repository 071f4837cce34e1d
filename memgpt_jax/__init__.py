"""memgpt-jax: lightweight GPT-style language models in JAX/Flax.

Block-sparse attention, knowledge distillation, compression, Orbax checkpoints
and PyTorch export. See README.md for the quickstart.
"""

__version__ = "0.1.0"

from memgpt_jax.config import AttentionConfig, ModelConfig  # noqa: E402


def __getattr__(name: str):  # lazy, so `import memgpt_jax` does not import JAX
    if name in ("count_params", "flops_per_token"):
        from memgpt_jax import flops

        return getattr(flops, name)
    raise AttributeError(f"module 'memgpt_jax' has no attribute {name!r}")

__all__ = ["AttentionConfig", "ModelConfig", "count_params", "flops_per_token", "__version__"]
