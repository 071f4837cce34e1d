"""Tiny ListOps classifier: the config tests use (one CPU, seconds).

    memgpt-jax finetune --config configs/listops_tiny.py --workdir runs/listops_tiny
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.model = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, max_len=64, num_labels=10,
                   pooling="last", pad_id=0, dropout=0.0,
                   attention=dict(pattern="dense", block_size=16, window=1, n_global=1, impl="auto"))
    c.data = dict(dataset="listops", name="memgpt_listops/tiny", data_dir=None, tokenizer="listops",
                  train_split="train", eval_split="validation", seq_len=64, batch_size=8,
                  eval_batch_size=8, eval_batches=2, seed=0, text_key="text")
    c.optim = dict(lr=1e-3, schedule="cosine", warmup_steps=2, total_steps=0, end_lr_ratio=0.1,
                   weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.98, eps=1e-8)
    c.train = dict(steps=4, accum_steps=1, seed=0, parallel="pjit", mesh=(-1, 1, 1), log_every=2,
                   eval_every=4, checkpoint_every=2, keep=3, async_checkpoint=True, init_from="")
    c.distill = dict(teacher="", kind="forward_kl", temperature=2.0, alpha=0.5, beta=0.5,
                     hidden_weight=0.0, hidden_kind="cosine", attention_weight=0.0, init_from_teacher=False)
    return ml_collections.ConfigDict(c)
