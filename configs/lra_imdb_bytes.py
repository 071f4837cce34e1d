"""LRA "Text": byte-level IMDb classification at 4,096 tokens, dense vs block-sparse
models of equal size and training budget.

    memgpt-jax data prepare imdb --source $MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz
    memgpt-jax finetune --config configs/lra_imdb_bytes.py:dense  --workdir runs/lra_text_dense
    memgpt-jax finetune --config configs/lra_imdb_bytes.py:sparse --workdir runs/lra_text_sparse

The CPU budget: 500 steps of 8 reviews per variant (4,000 reviews, about a sixth of an epoch);
raise `train.steps` and `data.batch_size` on an accelerator.
Variants: `dense`, `sparse` (BigBird-style: window + global + random blocks), `tiny`.
"""

from memgpt_jax import run_config

BASE = dict(
    task="classification",
    model=dict(vocab_size=264, d_model=128, n_layers=2, n_heads=2, d_ff=256, max_len=4096, num_labels=2,
               pooling="mean", dropout=0.1, compute_dtype="bfloat16"),
    data=dict(dataset="imdb", name="memgpt_imdb/val10_seed0", tokenizer="bytes", seq_len=4096, batch_size=8,
              eval_batch_size=16, eval_batches=25),
    optim=dict(lr=5e-4, warmup_steps=50, weight_decay=0.05),
    train=dict(steps=500, log_every=10, eval_every=500, checkpoint_every=50, keep=2),
)

VARIANTS = {
    # Exact causal attention through the block kernel (impl="xla": linear memory, no
    # upper-triangle tiles), the fastest dense attention on CPU; on a GPU pass
    # --config.model.attention.impl=fused (cuDNN) or =pallas.
    "dense": dict(model=dict(attention=dict(pattern="dense", block_size=128, impl="xla"))),
    "sparse": dict(model=dict(attention=dict(pattern="bigbird", block_size=128, window=1, n_global=1, n_random=1,
                                             seed=0))),
    "tiny": dict(based_on="sparse", model=dict(max_len=512, n_layers=1, attention=dict(block_size=64)),
                 data=dict(seq_len=512, batch_size=4, eval_batches=2), train=dict(steps=2, eval_every=2)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="sparse")
