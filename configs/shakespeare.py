"""Character-level (byte) language model on tiny Shakespeare.

    memgpt-jax data prepare text --files $MEMGPT_SHARED_DATA/tinyshakespeare.txt --name shakespeare
    memgpt-jax pretrain --config configs/shakespeare.py --workdir runs/shakespeare
    memgpt-jax pretrain --config configs/shakespeare.py:tiny --workdir runs/shakespeare_tiny   # seconds
    memgpt-jax pretrain --config configs/shakespeare.py:small --workdir runs/shakespeare_small  # for the compression benchmark

Variants: `base` (dense, ~10M parameters, 512 tokens), `sparse` (the same with
causal window+global block-sparse attention), `small` (~1.9M parameters, 256 tokens:
CPU minutes; the compression benchmark's model), `tiny` (CPU smoke run).
"""

from memgpt_jax import run_config

BASE = dict(
    task="lm",
    model=dict(vocab_size=264, d_model=384, n_layers=6, n_heads=6, max_len=512, dropout=0.1, compute_dtype="bfloat16",
               attention=dict(pattern="dense", block_size=64)),
    data=dict(dataset="text", name="memgpt_text/shakespeare", tokenizer="bytes", seq_len=512, batch_size=32,
              eval_batch_size=32, eval_batches=20),
    optim=dict(lr=1e-3, warmup_steps=200, b2=0.99),
    train=dict(steps=5000, log_every=50, eval_every=500, checkpoint_every=500),
)

VARIANTS = {
    "base": {},
    "sparse": dict(model=dict(attention=dict(pattern="window_global", window=2, n_global=1))),
    "small": dict(model=dict(d_model=192, n_layers=4, max_len=256),
                  data=dict(seq_len=256, batch_size=16, eval_batch_size=16, eval_batches=40),
                  optim=dict(lr=2e-3, warmup_steps=100), train=dict(steps=1500, checkpoint_every=250)),
    "tiny": dict(model=dict(d_model=64, n_layers=2, n_heads=4, max_len=128, dropout=0.0, attention=dict(block_size=32)),
                 data=dict(seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=4),
                 optim=dict(lr=3e-3, warmup_steps=10), train=dict(steps=50, log_every=10, eval_every=50,
                                                                  checkpoint_every=50)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="base")
