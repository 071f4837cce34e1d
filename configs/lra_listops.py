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


def get_config(arg: str = "sparse"):
    if arg not in ("dense", "sparse", "tiny"):
        raise ValueError(f"configs/lra_listops.py: variant {arg!r} not in ('dense', 'sparse', 'tiny')")
    # Dense runs its exact causal attention through the block kernel (impl="xla": linear memory,
    # no upper-triangle tiles), the fastest dense attention on CPU; on a GPU pass
    # --config.model.attention.impl=fused (cuDNN) or =pallas.
    pattern = dict(pattern="dense", block_size=128, impl="xla") if arg == "dense" else dict(
        pattern="bigbird", block_size=128, window=1, n_global=1, n_random=1, seed=0)
    config = run_config.defaults("classification")
    config.model.update(vocab_size=32, d_model=128, n_layers=2, n_heads=2, d_ff=256, max_len=2048, num_labels=10,
                 pooling="mean", dropout=0.0, compute_dtype="bfloat16", attention=pattern)
    config.data.update(listops=dict(preset="lra"), seq_len=2048, batch_size=16, eval_batch_size=32, eval_batches=0)
    config.optim.update(lr=1e-3, warmup_steps=80, weight_decay=0.05, end_lr_ratio=0.05)
    config.train.update(steps=800, log_every=25, eval_every=800, checkpoint_every=50, keep=2)
    if arg == "tiny":
        config.model.update(max_len=256, n_layers=1, attention=dict(pattern="bigbird", block_size=32, window=1,
                                                             n_global=1, n_random=1))
        config.data.update(listops=dict(preset="tiny"), seq_len=256, batch_size=4, eval_batches=2)
        config.train.update(steps=2, eval_every=2)
    return config
