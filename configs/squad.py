"""Extractive question answering on SQuAD v1.1 articles: a span head on the causal
Transformer reading ``[BOS] question [SEP] context-window`` (the question first, so every
context token sees it).

Only 36 articles are available (8,123 questions, the first 36 of the official dev set);
6 of them, drawn with seed 0, are held out as validation, whole. Both backbones start
from the IMDb recipe's English language models (`configs/imdb.py`: `pretrain`,
`pretrain_student`; its 8k sentencepiece tokenizer): 30 articles cannot teach English.

    memgpt-jax data prepare squad --train $MEMGPT_SHARED_DATA/squad_v1.1/squad_v1.1_dev_articles_00-35.json \\
        --holdout-articles 6 --seed 0 --name squad36_val6
    memgpt-jax finetune --config configs/squad.py:teacher --workdir runs/squad/teacher
    memgpt-jax distill  --config configs/squad.py:student --workdir runs/squad/student
    memgpt-jax eval --checkpoint runs/squad/teacher --split validation
    memgpt-jax qa --checkpoint runs/squad/student --question "..." --context-file article.txt

(`train/squad_recipe.sh` runs all of it.) Variants: `teacher` (dense), `student`
(block-sparse, distilled on the start/end distributions), `tiny` (tests).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes


def get_config(arg: str = "teacher"):
    variants = ("teacher", "student", "tiny")
    if arg not in variants:
        raise ValueError(f"configs/squad.py: variant {arg!r} not in {variants}")
    config = run_config.defaults("qa")
    config.data.update(dataset="squad", name="memgpt_squad/squad36_val6", tokenizer="runs/imdb/spm8k.model",
                       seq_len=384, doc_stride=128, batch_size=16, eval_batch_size=32, eval_split="validation",
                       eval_batches=0)
    config.optim.update(lr=3e-4, warmup_steps=60, weight_decay=0.05)
    config.train.update(steps=1200, log_every=25, eval_every=400, checkpoint_every=100)
    if arg == "teacher":
        config.model.update(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
        config.train.init_from = "runs/imdb/lm"
    elif arg == "student":
        config.model.update(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)
        config.optim.lr = 1e-3
        config.train.init_from = "runs/imdb/lm_student"
        config.distill.update(teacher="runs/squad/teacher", temperature=2.0, alpha=0.5)
    else:
        config.model.update(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16))
        config.data.update(tokenizer="bytes", seq_len=128, doc_stride=64, batch_size=8, eval_batch_size=8,
                           eval_batches=2)
        config.train.update(steps=4, eval_every=4, checkpoint_every=4)
    return config
