"""Tiny ListOps classifier: the config the tests use (one CPU, seconds).

    memgpt-jax finetune --config configs/listops_tiny.py --workdir runs/listops_tiny
"""

import base


def get_config():
    model = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, max_len=64, num_labels=10, pooling="last",
                 dropout=0.0, attention=dict(pattern="dense", block_size=16, window=1, n_global=1, impl="auto"))
    data = base.data(name="memgpt_listops/tiny", seq_len=64, batch_size=8, eval_batch_size=8, eval_batches=2)
    return base.config(
        "classification", model, data,
        base.optim(lr=1e-3, warmup_steps=2, weight_decay=0.01),
        base.train(steps=4, log_every=2, eval_every=4, checkpoint_every=2),
        base.distill(),
    )
