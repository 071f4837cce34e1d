"""AESLC: an email's subject line from its body (abstractive, very short targets), with a
decoder-only model reading ``[BOS] body [SEP] subject [EOS]`` (loss on the subject only).

Both backbones start from the IMDb recipe's English language models (`configs/imdb.py`:
`pretrain`, `pretrain_student`: ~25M tokens of movie reviews, its 8k sentencepiece
tokenizer); AESLC itself is too small (14k emails) to learn English from.

    memgpt-jax data prepare aeslc --source $MEMGPT_SHARED_DATA/aeslc/aeslc_train_dev.tar.gz
    memgpt-jax finetune --config configs/aeslc.py:teacher --workdir runs/aeslc/teacher
    memgpt-jax distill  --config configs/aeslc.py:student --workdir runs/aeslc/student
    memgpt-jax eval --checkpoint runs/aeslc/teacher --split dev --beam 4

(`train/aeslc_recipe.sh` runs all of it, the IMDb language models first if they are
missing.) Variants: `teacher` (dense), `student` (block-sparse, word-level distillation
from the teacher), `tiny` (tests: seconds, bytes); `lm` continues the English LM on the
emails themselves (`data.prompt_loss`: body and subject both predicted, ~2 passes over the
~3M tokens of train) and `teacher_lm` fine-tunes the teacher from that in-domain LM:

    memgpt-jax pretrain --config configs/aeslc.py:lm --workdir runs/aeslc/lm
    memgpt-jax finetune --config configs/aeslc.py:teacher_lm --workdir runs/aeslc/teacher_lm

(The teacher fine-tuned straight from the IMDb LM at its step 500 wrote generic subjects:
ROUGE-1 2.4 greedy on dev, `benchmarks/results/aeslc_recipe.json`.)
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes


def get_config(arg: str = "teacher"):
    variants = ("teacher", "student", "tiny", "lm", "teacher_lm")
    if arg not in variants:
        raise ValueError(f"configs/aeslc.py: variant {arg!r} not in {variants}")
    config = run_config.defaults("lm")
    config.data.update(dataset="pairs", name="memgpt_aeslc/aeslc", tokenizer="runs/imdb/spm8k.model", seq_len=512,
                       batch_size=16, eval_batch_size=32, eval_split="dev", eval_batches=0, pack=True,
                       truncate="head")  # a long email keeps its opening
    config.optim.update(lr=5e-4, warmup_steps=100, weight_decay=0.1)
    config.train.update(steps=900, log_every=25, eval_every=300, checkpoint_every=100)
    if arg in ("teacher", "teacher_lm"):
        config.model.update(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
        config.train.init_from = "runs/imdb/lm" if arg == "teacher" else "runs/aeslc/lm"
    elif arg == "lm":  # in-domain LM: the English LM continued on the emails (every token predicted)
        config.model.update(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.0)
        config.data.prompt_loss = True
        config.optim.update(lr=5e-4, warmup_steps=50, weight_decay=0.05)
        config.train.update(steps=700, eval_every=350, init_from="runs/imdb/lm")
    elif arg == "student":
        config.model.update(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)
        config.optim.lr = 1e-3
        config.train.init_from = "runs/imdb/lm_student"
        config.distill.update(teacher="runs/aeslc/teacher", temperature=1.0, alpha=0.5)
    else:
        config.model.update(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16))
        config.data.update(tokenizer="bytes", seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=2)
        config.train.update(steps=4, eval_every=4, checkpoint_every=4)
    return config
