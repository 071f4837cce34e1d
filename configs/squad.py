"""Extractive question answering on SQuAD v1.1 articles: a span head on the causal
Transformer reading ``[BOS] question [SEP] context-window`` (the question first, so every
context token sees it).

Only 36 articles are available (8,123 questions, the first 36 of the official dev set);
6 of them, drawn with seed 0, are held out as validation, whole. Both backbones start
from the English LMs of `configs/imdb.py` (and its tokenizer): 30 articles cannot teach English.

    RUNS=${MEMGPT_RUNS:-runs}  # where the configs look for runs
    memgpt-jax data prepare squad --train $MEMGPT_SHARED_DATA/squad_v1.1/squad_v1.1_dev_articles_00-35.json \\
        --holdout-articles 6 --seed 0 --name squad36_val6
    memgpt-jax finetune --config configs/squad.py:teacher --workdir $RUNS/squad/teacher
    memgpt-jax distill  --config configs/squad.py:student --workdir $RUNS/squad/student
    memgpt-jax eval --checkpoint $RUNS/squad/teacher --split validation
    memgpt-jax qa --checkpoint $RUNS/squad/student --question "..." --context-file article.txt

(`train/squad_recipe.sh` runs all of it.) Variants: `teacher` (dense), `student`
(block-sparse, distilled on the start/end distributions), `tiny` (tests).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes

BASE = dict(
    task="qa",
    data=dict(dataset="squad", name="memgpt_squad/squad36_val6", tokenizer=run_config.runs_path("imdb/spm8k.model"),
              seq_len=384, doc_stride=128, batch_size=16, eval_batch_size=32, eval_split="validation", eval_batches=0),
    optim=dict(lr=3e-4, warmup_steps=60, weight_decay=0.05),
    train=dict(steps=1200, log_every=25, eval_every=400, checkpoint_every=100),
)

VARIANTS = {
    "teacher": dict(model=dict(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1),
                    train=dict(init_from=run_config.runs_path("imdb/lm"))),
    "student": dict(model=dict(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1), optim=dict(lr=1e-3),
                    train=dict(init_from=run_config.runs_path("imdb/lm_student")),
                    distill=dict(teacher=run_config.runs_path("squad/teacher"), temperature=2.0, alpha=0.5)),
    "tiny": dict(model=dict(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16)),
                 data=dict(tokenizer="bytes", seq_len=128, doc_stride=64, batch_size=8, eval_batch_size=8,
                           eval_batches=2),
                 train=dict(steps=4, eval_every=4, checkpoint_every=4)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
