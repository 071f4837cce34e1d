import dataclasses

import pytest

from memgpt_jax.config import AttentionConfig, ModelConfig, gpt2_small, tiny, upgrade_attention_dict


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(d_model=65, n_heads=4), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(activation="tanh"), "activation"),
        (dict(compute_dtype="int8"), "compute_dtype"),
        (dict(pad_id=256), "pad_id"),
        (dict(max_len=100, attention=AttentionConfig(pattern="local", block_size=32)), "attention.block_size"),
    ],
)
def test_invalid_config_names_field(changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        tiny(**changes)


def test_invalid_attention_config_names_field():
    with pytest.raises(ValueError, match="^attention.pattern:"):
        AttentionConfig(pattern="diagonal")
    with pytest.raises(ValueError, match="^attention.impl:"):
        AttentionConfig(impl="cuda")
    with pytest.raises(ValueError, match="^attention.impl: .*'dense' was renamed 'reference'"):
        AttentionConfig(impl="dense")
    with pytest.raises(ValueError, match="^attention.pattern: .*'causal' was removed"):
        AttentionConfig(pattern="causal")


@pytest.mark.parametrize("old, new", [
    (dict(pattern="dense", impl="dense"), dict(pattern="dense", impl="reference")),
    (dict(pattern="bigbird", impl="dense", block_size=16), dict(pattern="bigbird", impl="reference", block_size=16)),
    (dict(pattern="causal", block_size=32), dict(pattern="dense", impl="xla", block_size=32)),
    (dict(pattern="causal", impl="auto"), dict(pattern="dense", impl="xla")),
    (dict(pattern="causal", impl="pallas"), dict(pattern="dense", impl="pallas")),
    (dict(pattern="causal", impl="dense"), dict(pattern="dense", impl="reference")),
])
def test_upgrade_attention_dict_maps_old_names(old, new):
    saved = dict(old)
    got, notes = upgrade_attention_dict(saved)
    assert got == new and saved == old  # a new dict; the input is unchanged
    assert notes and all(n.startswith("attention.") for n in notes)
    AttentionConfig(**got)  # loads


def test_upgrade_attention_dict_keeps_current_names():
    current = dict(pattern="window_global", impl="xla", block_size=64)
    assert upgrade_attention_dict(current) == (current, [])
    assert upgrade_attention_dict({}) == ({}, [])


def test_frozen_hashable_and_json_round_trip():
    cfg = tiny(n_kv_heads=2, attention=AttentionConfig(pattern="local", block_size=16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3  # type: ignore[misc]
    assert hash(cfg) == hash(ModelConfig.from_json(cfg.to_json()))
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({"widht": 3})


def test_derived_sizes():
    cfg = gpt2_small()
    assert (cfg.head_dim, cfg.kv_heads, cfg.mlp_dim) == (64, 12, 3072)
    assert cfg.is_gpt2_compatible
    assert not tiny(position="rope").is_gpt2_compatible
