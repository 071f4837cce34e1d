"""Tiny ListOps classifier: the config the tests use (one CPU, seconds).

    memgpt-jax finetune --config configs/listops_tiny.py --workdir runs/listops_tiny
"""

from memgpt_jax import run_config

BASE = dict(
    task="classification",
    model=dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, max_len=64, num_labels=10, pooling="last",
               dropout=0.0, attention=dict(pattern="dense", block_size=16, window=1, n_global=1)),
    data=dict(name="memgpt_listops/tiny", seq_len=64, batch_size=8, eval_batch_size=8, eval_batches=2),
    optim=dict(lr=1e-3, warmup_steps=2, weight_decay=0.01),
    train=dict(steps=4, log_every=2, eval_every=4, checkpoint_every=2),
)

get_config = run_config.variant_table(BASE)  # no variants
