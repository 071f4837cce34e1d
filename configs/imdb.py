"""The IMDb recipe: sentencepiece -> LM pretraining on train+unsup -> teacher
classifier -> block-sparse student distilled from it (<= 40% of the parameters).

    export MEMGPT_DATA_DIR=~/memgpt_data
    RUNS=${MEMGPT_RUNS:-runs}  # where the configs look for runs
    memgpt-jax data prepare imdb --source $MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz
    memgpt-jax data tokenizer train --dataset memgpt_imdb/val10_seed0 --split train+unsupervised \\
        --vocab-size 8192 --output $RUNS/imdb/spm8k.model
    memgpt-jax pretrain --config configs/imdb.py:pretrain --workdir $RUNS/imdb/lm
    memgpt-jax pretrain --config configs/imdb.py:pretrain_student --workdir $RUNS/imdb/lm_student
    memgpt-jax finetune --config configs/imdb.py:teacher_long --workdir $RUNS/imdb/teacher
    memgpt-jax distill  --config configs/imdb.py:student --workdir $RUNS/imdb/student

Variants: `pretrain`, `pretrain_student` (the two backbones as LMs on train+unsup; every
text recipe starts from them), `teacher_long` (the recipe's teacher: whole reviews),
`teacher` (the same on the first 512 tokens), `student` (distilled from the teacher),
`tiny` (seconds), `teacher_tpu` (accelerator scale: bf16, larger batch, fsdp mesh), and
`scratch_teacher` / `scratch_student` (no LM: the derived-layouts benchmark's text task).
"""

from memgpt_jax import run_config

# CPU budget (2 cores): hours; the stages and their wall times are in README "The IMDb recipe".
# Rotary positions: the LM pretrains on 512-token windows, the classifiers read up to 1,024.
TEACHER = dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, max_len=1024, position="rope", dropout=0.1,
               attention=dict(pattern="dense", block_size=64))
STUDENT = dict(vocab_size=8192, d_model=128, n_layers=4, n_heads=4, max_len=1024, position="rope", dropout=0.1,
               attention=dict(pattern="window_global", block_size=64, window=2, n_global=1))
# Whole reviews: 1,024 tokens (head + tail beyond), batches padded to their length bucket.
WHOLE_REVIEWS = dict(seq_len=1024, truncate="head+tail", length_buckets=(256, 512, 768))

BASE = dict(
    task="classification",
    model=dict(TEACHER, num_labels=2, pooling="mean", compute_dtype="bfloat16"),
    data=dict(dataset="imdb", name="memgpt_imdb/val10_seed0", tokenizer=run_config.runs_path("imdb/spm8k.model"),
              seq_len=512, batch_size=32, eval_batch_size=64, eval_split="validation"),
    optim=dict(lr=3e-4, warmup_steps=50, weight_decay=0.05),
    train=dict(steps=500, log_every=25, eval_every=500, checkpoint_every=100),
)

VARIANTS = {
    # About one pass over train+unsup (~25M tokens), no dropout; every 500th checkpoint kept.
    "pretrain": dict(task="lm", model=dict(dropout=0.0),
                     data=dict(train_split="train+unsupervised", eval_batches=20, batch_size=16),
                     optim=dict(lr=1e-3, warmup_steps=200),
                     train=dict(steps=3000, eval_every=500, checkpoint_every=250, keep_period=500)),
    "pretrain_student": dict(based_on="pretrain", model=dict(STUDENT, dropout=0.0)),
    "teacher_long": dict(data=WHOLE_REVIEWS, train=dict(init_from=run_config.runs_path("imdb/lm"))),
    # Reviews average 336 tokens: batches padded to their bucket, not to 512.
    "teacher": dict(data=dict(length_buckets=(128, 256, 384)), train=dict(init_from=run_config.runs_path("imdb/lm"))),
    "student": dict(model=STUDENT, data=WHOLE_REVIEWS, optim=dict(lr=1e-3),
                    train=dict(steps=600, init_from=run_config.runs_path("imdb/lm_student")),
                    distill=dict(teacher=run_config.runs_path("imdb/teacher"), temperature=2.0, alpha=0.5)),
    # From scratch (no LM), for benchmarks/derived_layouts.py: a dense teacher and the student
    # its layouts are measured on (the benchmark sets the student's layout and teacher). The
    # students' 400 steps (~0.6 epoch) take about 16 minutes each on 2 CPU cores (AMD EPYC).
    "scratch_teacher": dict(data=WHOLE_REVIEWS),
    "scratch_student": dict(model=STUDENT, data=WHOLE_REVIEWS, optim=dict(lr=1e-3), train=dict(steps=400),
                            distill=dict(temperature=2.0, alpha=0.5)),
    "tiny": dict(model=dict(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128),  # bytes: no tokenizer
                 data=dict(tokenizer="bytes", seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=2),
                 train=dict(steps=4, eval_every=4, checkpoint_every=2)),
    "teacher_tpu": dict(model=dict(d_model=512, n_layers=8, n_heads=8, max_len=1024),
                        data=dict(seq_len=1024, batch_size=256),
                        train=dict(mesh=(-1, 4, 1), steps=20_000, init_from="gs://YOUR_BUCKET/imdb/lm")),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
