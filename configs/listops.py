"""ListOps (Long Range Arena style, generated offline): a dense teacher and a
block-sparse student distilled from it. `memgpt-jax demo` runs both.

    memgpt-jax finetune --config configs/listops.py:teacher --workdir runs/listops_teacher
    memgpt-jax distill  --config configs/listops.py:student --workdir runs/listops_student \\
        --config.distill.teacher=runs/listops_teacher

Variants: `teacher`, `student` (CPU minutes, expressions up to 96 tokens),
`demo_teacher`, `demo_student` (what `memgpt-jax demo` trains: expressions up to 32 tokens
with one level of nesting, which a CPU-sized teacher learns in two minutes) and
`lra_teacher`, `lra_student` (LRA sizes: 96k examples, 500-2,000 tokens; for accelerators).
"""

from memgpt_jax import run_config

BASE = dict(
    task="classification",
    model=dict(vocab_size=32, d_model=128, n_layers=4, n_heads=4, max_len=96, num_labels=10, pooling="mean",
               dropout=0.0, compute_dtype="bfloat16", attention=dict(pattern="dense", block_size=16)),
    data=dict(listops=dict(preset="tiny", train=20_000, validation=500, test=1_000, max_length=96),
              seq_len=96, batch_size=32, eval_batch_size=50),
    optim=dict(lr=2e-3, warmup_steps=50, weight_decay=0.05, end_lr_ratio=0.05),
    train=dict(steps=500, log_every=25, checkpoint_every=250, keep=2),
)

VARIANTS = {
    "teacher": {},
    "student": dict(model=dict(d_model=64, n_layers=2,
                               attention=dict(pattern="window_global", block_size=16, window=2, n_global=1))),
    # The demo's pair: short expressions (one level of nesting), 32 tokens. The student's layout
    # (blocks of 4: its own, the previous one and the first) keeps 288 of the 528 causal
    # query/key pairs of 32 tokens.
    "demo_teacher": dict(model=dict(d_model=160, n_layers=2, max_len=32, attention=dict(block_size=8)),
                         data=dict(listops=dict(preset="tiny", train=20_000, validation=500, test=1_000, min_length=5,
                                                max_length=32, max_depth=3, max_args=4, branch_prob=0.3),
                                   seq_len=32, batch_size=64, eval_batch_size=100, eval_batches=0),
                         train=dict(steps=1000, log_every=50, eval_every=1000, checkpoint_every=500, keep=1)),
    "demo_student": dict(based_on="demo_teacher",
                         model=dict(d_model=64, attention=dict(pattern="window_global", block_size=4, window=1,
                                                               n_global=1)),
                         train=dict(steps=800, eval_every=800, checkpoint_every=400)),
    "lra_teacher": dict(model=dict(d_model=512, n_layers=4, n_heads=8, d_ff=1024, max_len=2048,
                                   attention=dict(block_size=128)),
                        data=dict(listops=dict(preset="lra"), seq_len=2048, batch_size=32, eval_batch_size=32),
                        optim=dict(lr=5e-4, warmup_steps=1000),
                        train=dict(steps=20_000, log_every=50, checkpoint_every=1000)),
    "lra_student": dict(based_on="lra_teacher",
                        model=dict(d_model=256, n_heads=4, attention=dict(pattern="bigbird", window=1, n_global=1,
                                                                          n_random=2))),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
