"""memgpt-jax: lightweight GPT-style language models in JAX/Flax.

Block-sparse attention, knowledge distillation, compression, Orbax checkpoints
and PyTorch export. See README.md for the quickstart.
"""

__version__ = "0.1.0"

from memgpt_jax.config import AttentionConfig, ModelConfig  # noqa: E402
from memgpt_jax.flops import count_params, flops_per_token  # noqa: E402

__all__ = ["AttentionConfig", "ModelConfig", "count_params", "flops_per_token", "__version__"]
