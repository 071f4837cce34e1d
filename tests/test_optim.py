"""The optimiser: layer-wise rates (optim.layer_decay) against plain AdamW, the decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax.run_config import ConfigError, OptimConfig
from memgpt_jax.training.optim import decay_mask, layer_scales, make_optimizer

PARAMS = {"params": {
    "transformer": {"wte": {"embedding": jnp.ones((5, 4))}, "h_0": {"w": {"kernel": jnp.ones((4, 4))}},
                    "h_1": {"w": {"kernel": jnp.ones((4, 4))}}, "ln_f": {"scale": jnp.ones(4)}},
    "score": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}, "aux": {"proj": {"kernel": jnp.ones((4, 4))}}}


def test_layer_scales_follow_depth():
    s = layer_scales(PARAMS, 0.5)["params"]
    t = s["transformer"]
    assert (t["wte"]["embedding"], t["h_0"]["w"]["kernel"], t["h_1"]["w"]["kernel"]) == (0.125, 0.25, 0.5)
    assert t["ln_f"]["scale"] == s["score"]["kernel"] == s["score"]["bias"] == 1.0
    assert layer_scales(PARAMS, 0.5)["aux"]["proj"]["kernel"] == 1.0


def test_layer_decay_scales_each_update_of_plain_adamw():
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), PARAMS)
    cfg = OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.1, grad_clip=0.0, schedule="constant")
    plain, _ = make_optimizer(cfg, 10)
    layered, _ = make_optimizer(OptimConfig(**{**cfg.__dict__, "layer_decay": 0.5}), 10)
    _, s_plain = plain.update(grads, plain.init(PARAMS), PARAMS)  # step 0 has rate 0 (warmup)
    _, s_layer = layered.update(grads, layered.init(PARAMS), PARAMS)
    u_plain, _ = plain.update(grads, s_plain, PARAMS)
    u_layer, _ = layered.update(grads, s_layer, PARAMS)
    scales = layer_scales(PARAMS, 0.5)
    for a, b, s in zip(jax.tree.leaves(u_plain), jax.tree.leaves(u_layer), jax.tree.leaves(scales)):
        np.testing.assert_allclose(b, a * s, rtol=1e-6)
    assert min(float(jnp.abs(u).max()) for u in jax.tree.leaves(u_plain)) > 0  # the updates are not all zero


def test_bad_layer_decay_is_refused_and_decay_mask_skips_embeddings():
    with pytest.raises(ConfigError, match="optim.layer_decay"):
        OptimConfig(layer_decay=0.0)
    mask = decay_mask(PARAMS)["params"]
    assert not mask["transformer"]["wte"]["embedding"] and mask["transformer"]["h_0"]["w"]["kernel"]
    assert not mask["score"]["bias"] and not mask["transformer"]["ln_f"]["scale"]
