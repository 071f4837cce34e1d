"""AESLC: an email's subject line from its body (abstractive, very short targets), with a
decoder-only model reading ``[BOS] body [SEP] subject [EOS]`` (loss on the subject only).

    RUNS=${MEMGPT_RUNS:-runs}  # where the configs look for runs
    memgpt-jax data prepare aeslc --source $MEMGPT_SHARED_DATA/aeslc/aeslc_train_dev.tar.gz
    memgpt-jax finetune --config configs/aeslc.py:teacher_copy --workdir $RUNS/aeslc/teacher_copy
    memgpt-jax distill  --config configs/aeslc.py:student_copy --workdir $RUNS/aeslc/student_copy
    memgpt-jax eval --checkpoint $RUNS/aeslc/teacher_copy --split dev --beam 4

(`train/aeslc_recipe.sh` runs all of it, the English LMs of `configs/imdb.py` first if they
are missing; `AESLC_IN_DOMAIN_LM=1` runs `lm`, `teacher`, `lm_student`, `student` instead.)
Both backbones start from those English LMs: AESLC alone (14k emails) is too small to learn
English from. Variants: `teacher_copy` / `student_copy` (the recipe: dense teacher and
block-sparse student distilled from it, each with a copy head, `model.copy_dim`, that writes
a word of the body by pointing at it), `lm` / `lm_student` (the English LMs continued on the
emails, body and subject both predicted), `teacher` / `student` (no copy head, from those),
the levers `teacher_english_lm` (no copy head, from the English LM), `teacher_copy_more`
(600 steps more) and `teacher_copy_lm` (from `lm`), and `tiny` (tests: seconds, bytes).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes
TEACHER = dict(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
STUDENT = dict(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)
KD = dict(temperature=1.0, alpha=0.5)  # word-level distillation

BASE = dict(
    task="lm",
    data=dict(dataset="pairs", name="memgpt_aeslc/aeslc", tokenizer=run_config.runs_path("imdb/spm8k.model"),
              seq_len=512, batch_size=16, eval_batch_size=32, eval_split="dev", eval_batches=0, pack=True,
              truncate="head"),  # a long email keeps its opening
    optim=dict(lr=5e-4, warmup_steps=100, weight_decay=0.1),
    train=dict(steps=900, log_every=25, eval_every=300, checkpoint_every=100),
)

VARIANTS = {
    "teacher_english_lm": dict(model=TEACHER, train=dict(init_from=run_config.runs_path("imdb/lm"))),
    "teacher_copy": dict(based_on="teacher_english_lm", model=dict(copy_dim=64)),
    "student_copy": dict(model=dict(STUDENT, copy_dim=32), optim=dict(lr=1e-3),
                         train=dict(steps=1000, init_from=run_config.runs_path("imdb/lm_student")),
                         distill=dict(KD, teacher=run_config.runs_path("aeslc/teacher_copy"))),
    # The in-domain LMs: the English LMs continued on the emails, every token predicted.
    "lm": dict(model=dict(TEACHER, dropout=0.0), data=dict(prompt_loss=True),
               optim=dict(lr=5e-4, warmup_steps=50, weight_decay=0.05),
               train=dict(steps=700, eval_every=350, init_from=run_config.runs_path("imdb/lm"))),
    "lm_student": dict(based_on="lm", model=dict(STUDENT, dropout=0.0), optim=dict(lr=1e-3),
                       train=dict(init_from=run_config.runs_path("imdb/lm_student"))),
    "teacher": dict(based_on="teacher_english_lm", train=dict(init_from=run_config.runs_path("aeslc/lm"))),
    "student": dict(model=STUDENT, optim=dict(lr=1e-3), train=dict(init_from=run_config.runs_path("aeslc/lm_student")),
                    distill=dict(KD, teacher=run_config.runs_path("aeslc/teacher"))),
    # 600 steps more, a warm restart at its peak rate.
    "teacher_copy_more": dict(based_on="teacher_copy", optim=dict(warmup_steps=50),
                              train=dict(steps=600, init_from=run_config.runs_path("aeslc/teacher_copy"))),
    "teacher_copy_lm": dict(based_on="teacher_copy", train=dict(init_from=run_config.runs_path("aeslc/lm"))),
    "tiny": dict(model=dict(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16)),
                 data=dict(tokenizer="bytes", seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=2),
                 train=dict(steps=4, eval_every=4, checkpoint_every=4)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
