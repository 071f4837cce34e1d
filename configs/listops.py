"""ListOps (Long Range Arena style, generated offline): a dense teacher and a
block-sparse student distilled from it. The `memgpt-jax demo` runs both.

    memgpt-jax finetune --config configs/listops.py:teacher --workdir runs/listops_teacher
    memgpt-jax distill  --config configs/listops.py:student --workdir runs/listops_student \
        --config.distill.teacher=runs/listops_teacher

Variants: `teacher`, `student` (CPU minutes, sequences up to 128 tokens) and
`lra_teacher`, `lra_student` (LRA sizes: 96k examples, 2k tokens; accelerators).
"""

import ml_collections

DATA = dict(dataset="listops", name="", data_dir=None, tokenizer="listops",
            listops=dict(preset="tiny", train=20_000, validation=500, test=1_000, max_length=128),
            train_split="train", eval_split="validation", seq_len=128, batch_size=32,
            eval_batch_size=50, eval_batches=0, seed=0, text_key="text")

MODELS = {
    "teacher": dict(vocab_size=32, d_model=128, n_layers=4, n_heads=4, max_len=128, num_labels=10,
                    pooling="mean", attention=dict(pattern="dense", block_size=16)),
    "student": dict(vocab_size=32, d_model=64, n_layers=2, n_heads=4, max_len=128, num_labels=10,
                    pooling="mean",
                    attention=dict(pattern="window_global", block_size=16, window=2, n_global=1)),
    "lra_teacher": dict(vocab_size=32, d_model=512, n_layers=4, n_heads=8, d_ff=1024, max_len=2048,
                        num_labels=10, pooling="mean", attention=dict(pattern="dense", block_size=128)),
    "lra_student": dict(vocab_size=32, d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_len=2048,
                        num_labels=10, pooling="mean",
                        attention=dict(pattern="bigbird", block_size=128, window=1, n_global=1, n_random=2)),
}


def get_config(arg: str = "teacher") -> ml_collections.ConfigDict:
    if arg not in MODELS:
        raise ValueError(f"configs/listops.py: variant {arg!r} not in {sorted(MODELS)}")
    lra = arg.startswith("lra_")
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.model = dict(MODELS[arg], dropout=0.0)
    data = dict(DATA)
    if lra:
        data.update(listops=dict(preset="lra"), seq_len=2048, batch_size=32)
    c.data = data
    c.optim = dict(lr=1e-3 if not lra else 5e-4, schedule="cosine", warmup_steps=50 if not lra else 1000,
                   total_steps=0, end_lr_ratio=0.05, weight_decay=0.05, grad_clip=1.0, b1=0.9, b2=0.98, eps=1e-8)
    c.train = dict(steps=600 if not lra else 20_000, accum_steps=1, seed=0, parallel="pjit", mesh=(-1, 1, 1),
                   log_every=25, eval_every=0, checkpoint_every=200 if not lra else 1000, keep=2,
                   async_checkpoint=True, init_from="")
    c.distill = dict(teacher="", kind="forward_kl", temperature=2.0, alpha=0.5, beta=0.5,
                     hidden_weight=0.0, hidden_kind="cosine", attention_weight=0.0, init_from_teacher=False)
    return ml_collections.ConfigDict(c)
