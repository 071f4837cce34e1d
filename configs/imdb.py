"""The IMDb recipe: sentencepiece -> LM pretraining on train+unsup -> teacher
classifier -> block-sparse student distilled from it (<= 40% of the parameters).

    export MEMGPT_DATA_DIR=~/memgpt_data
    memgpt-jax data prepare imdb --source $MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz
    memgpt-jax data tokenizer train --dataset memgpt_imdb/val10_seed0 --split train+unsupervised \\
        --vocab-size 8192 --output runs/imdb/spm8k.model
    memgpt-jax pretrain --config configs/imdb.py:pretrain --workdir runs/imdb/lm
    memgpt-jax pretrain --config configs/imdb.py:pretrain_student --workdir runs/imdb/lm_student
    memgpt-jax finetune --config configs/imdb.py:teacher_long --workdir runs/imdb/teacher
    memgpt-jax distill  --config configs/imdb.py:student --workdir runs/imdb/student

Variants: `pretrain` and `pretrain_student` (the two backbones as LMs on train+unsup),
`teacher_long` (the recipe's teacher: whole reviews up to 1,024 tokens, head+tail beyond,
length-bucketed batches), `teacher` (the same on the first 512 tokens: the base of the IMDb
curve and of the teacher levers in the ablation), `student` (whole reviews too, distilled
from runs/imdb/teacher), `student_hybrid` (the same student distilled on train + unsup from
the teacher stacked with NBSVM-bigram: `python -m benchmarks.imdb_hybrid --write-offsets
train+unsupervised` first), `tiny` (seconds), and `teacher_tpu` (the teacher at accelerator
scale: bf16, larger batch, fsdp mesh).
"""

from memgpt_jax import run_config

TOKENIZER = "runs/imdb/spm8k.model"
DATASET = "memgpt_imdb/val10_seed0"

# CPU budget (2 cores): hours; the stages and their wall times are in README "The IMDb recipe".
# Rotary positions: the LM pretrains on 512-token windows, the classifiers read up to 1,024.
TEACHER = dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, max_len=1024, position="rope", dropout=0.1,
               attention=dict(pattern="dense", block_size=64))
STUDENT = dict(vocab_size=8192, d_model=128, n_layers=4, n_heads=4, max_len=1024, position="rope", dropout=0.1,
               attention=dict(pattern="window_global", block_size=64, window=2, n_global=1))


def get_config(arg: str = "teacher"):
    variants = ("pretrain", "pretrain_student", "teacher", "teacher_long", "student", "student_hybrid", "tiny",
                "teacher_tpu")
    if arg not in variants:
        raise ValueError(f"configs/imdb.py: variant {arg!r} not in {variants}")
    pretrain = arg in ("pretrain", "pretrain_student")
    config = run_config.defaults("lm" if pretrain else "classification")
    student = arg in ("student", "student_hybrid", "pretrain_student")
    config.model.update(STUDENT if student else TEACHER, num_labels=2, pooling="mean", compute_dtype="bfloat16")
    config.data.update(dataset="imdb", name=DATASET, tokenizer=TOKENIZER, seq_len=512, batch_size=32,
                       eval_batch_size=64, eval_split="validation")
    config.optim.update(lr=3e-4, warmup_steps=50, weight_decay=0.05)
    config.train.update(steps=500, log_every=25, eval_every=500, checkpoint_every=100)
    if pretrain:  # about one pass over train+unsup (~25M tokens); every 500th checkpoint kept for the curve
        config.model.dropout = 0.0  # under one epoch: nothing to regularise
        config.data.update(train_split="train+unsupervised", eval_split="validation", eval_batches=20, batch_size=16)
        config.optim.update(lr=1e-3, warmup_steps=200)
        config.train.update(steps=3000, eval_every=500, checkpoint_every=250, keep_period=500)
    elif arg == "teacher":  # reviews average 336 tokens: batches padded to their bucket, not to 512
        config.data.length_buckets = (128, 256, 384)
        config.train.init_from = "runs/imdb/lm"
    elif arg == "teacher_long":  # whole reviews: 1,024 tokens (head + tail beyond), padded per length bucket
        config.data.update(seq_len=1024, truncate="head+tail", length_buckets=(256, 512, 768))
        config.train.init_from = "runs/imdb/lm"
    elif arg in ("student", "student_hybrid"):  # its backbone pretrained as an LM too (pretrain_student), then distilled
        config.data.update(seq_len=1024, truncate="head+tail", length_buckets=(256, 512, 768))  # as its teacher
        config.distill.update(teacher="runs/imdb/teacher", temperature=2.0, alpha=0.5)
        config.optim.lr = 1e-3
        config.train.update(steps=600, init_from="runs/imdb/lm_student")
        if arg == "student_hybrid":  # the teacher stacked with NBSVM-bigram (benchmarks.imdb_hybrid), on unsup too
            config.data.train_split = "train+unsupervised"
            config.distill.teacher_offsets = "runs/imdb/hybrid/offsets_train+unsupervised.npz"
    elif arg == "tiny":  # bytes: runs without the recipe's tokenizer
        config.model.update(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128)
        config.data.update(tokenizer="bytes", seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=2)
        config.train.update(steps=4, eval_every=4, checkpoint_every=2)
    elif arg == "teacher_tpu":
        config.model.update(d_model=512, n_layers=8, n_heads=8, max_len=1024)
        config.data.update(seq_len=1024, batch_size=256)
        config.train.update(mesh=(-1, 4, 1), steps=20_000, init_from="gs://YOUR_BUCKET/imdb/lm")
    return config
