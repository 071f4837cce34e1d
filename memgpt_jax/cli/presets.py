"""The model size presets of ``memgpt-jax info`` / ``smoke`` as a run config file.

    memgpt-jax info --preset 10m --config.model.n_layers=4

``--preset NAME`` loads this file as ``presets.py:NAME`` through
:func:`memgpt_jax.run_config.load`, so ``--config.model.*`` overrides are parsed
and validated exactly as for training configs.
"""

from memgpt_jax import config as model_config
from memgpt_jax import run_config

PRESETS = {"tiny": model_config.tiny, "10m": model_config.small_10m, "gpt2": model_config.gpt2_small}


def get_config(preset: str = "tiny"):
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} not in {sorted(PRESETS)}")
    config = run_config.defaults()
    model = PRESETS[preset]().to_dict()
    config.model.update({k: v for k, v in model.items() if v is not None})  # None: keep the typed placeholder
    config.data.seq_len = min(config.data.seq_len, model["max_len"])
    return config
