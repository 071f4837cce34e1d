"""LRA "ListOps" at 2,048 tokens: dense vs block-sparse models of equal size and budget.

    memgpt-jax finetune --config configs/lra_listops.py:dense  --workdir runs/lra_listops_dense
    memgpt-jax finetune --config configs/lra_listops.py:sparse --workdir runs/lra_listops_sparse
    python -m benchmarks.lra          # both tasks, both variants, the table in RESULTS.md

ListOps is generated offline with the LRA preset (96k / 2k / 2k examples, 500-2,000 tokens).
The CPU budget: 800 steps of 16 sequences per variant (12,800 examples, 1/7.5 of an epoch),
far below LRA's; raise `train.steps` on an accelerator.
Variants: `dense`, `sparse` (BigBird-style window + global + random blocks), `tiny`.
"""

from memgpt_jax import run_config

BASE = dict(
    task="classification",
    model=dict(vocab_size=32, d_model=128, n_layers=2, n_heads=2, d_ff=256, max_len=2048, num_labels=10,
               pooling="mean", dropout=0.0, compute_dtype="bfloat16"),
    data=dict(listops=dict(preset="lra"), seq_len=2048, batch_size=16, eval_batch_size=32, eval_batches=0),
    optim=dict(lr=1e-3, warmup_steps=80, weight_decay=0.05, end_lr_ratio=0.05),
    train=dict(steps=800, log_every=25, eval_every=800, checkpoint_every=50, keep=2),
)

VARIANTS = {
    # Exact causal attention through the block kernel (impl="xla": linear memory, no
    # upper-triangle tiles), the fastest dense attention on CPU; on a GPU pass
    # --config.model.attention.impl=fused (cuDNN) or =pallas.
    "dense": dict(model=dict(attention=dict(pattern="dense", block_size=128, impl="xla"))),
    "sparse": dict(model=dict(attention=dict(pattern="bigbird", block_size=128, window=1, n_global=1, n_random=1,
                                             seed=0))),
    "tiny": dict(based_on="sparse", model=dict(max_len=256, n_layers=1, attention=dict(block_size=32)),
                 data=dict(listops=dict(preset="tiny"), seq_len=256, batch_size=4, eval_batches=2),
                 train=dict(steps=2, eval_every=2)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="sparse")
