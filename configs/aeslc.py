"""AESLC: an email's subject line from its body (abstractive, very short targets), with a
decoder-only model reading ``[BOS] body [SEP] subject [EOS]`` (loss on the subject only).

Both backbones start from the IMDb recipe's English language models (`configs/imdb.py`:
`pretrain`, `pretrain_student`: ~25M tokens of movie reviews, its 8k sentencepiece
tokenizer), continued as language models on the emails themselves (`lm`, `lm_student`:
`data.prompt_loss`, body and subject both predicted, ~2 passes over the ~3M tokens of
train); AESLC alone is too small (14k emails) to learn English from, and movie reviews
are not emails.

    memgpt-jax data prepare aeslc --source $MEMGPT_SHARED_DATA/aeslc/aeslc_train_dev.tar.gz
    memgpt-jax pretrain --config configs/aeslc.py:lm --workdir runs/aeslc/lm
    memgpt-jax finetune --config configs/aeslc.py:teacher --workdir runs/aeslc/teacher
    memgpt-jax pretrain --config configs/aeslc.py:lm_student --workdir runs/aeslc/lm_student
    memgpt-jax distill  --config configs/aeslc.py:student --workdir runs/aeslc/student
    memgpt-jax eval --checkpoint runs/aeslc/teacher --split dev --beam 4

(`AESLC_IN_DOMAIN_LM=1 train/aeslc_recipe.sh` runs all of it, the IMDb language models first if
they are missing; by default the recipe runs `teacher_copy` and `student_copy` instead.)
Variants: `lm`, `lm_student` (the in-domain LMs), `teacher` (dense, from `lm`),
`student` (block-sparse, from `lm_student`, word-level distillation from the teacher),
`teacher_english_lm` (the lever's control: the teacher fine-tuned from the English LM
alone), `teacher_copy` (the lever of a copy head, `model.copy_dim`: `teacher_english_lm` with
a pointer-generator head 64 wide that can write a word of the body by pointing at it),
`student_copy` (block-sparse, 32-wide copy head, from the English student LM
`runs/imdb/lm_student`, word-level distillation from `runs/aeslc/teacher_copy`),
`teacher_copy_more` (`teacher_copy` trained 600 steps more), `teacher_copy_lm` (`teacher_copy`
from the in-domain LM `runs/aeslc/lm`), `student_copy_lm` (`student_copy` from the in-domain
student LM `runs/aeslc/lm_student`, distilled from `teacher_copy_lm`), `tiny` (tests: seconds, bytes).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes


def get_config(arg: str = "teacher"):
    variants = ("teacher", "student", "tiny", "lm", "lm_student", "teacher_english_lm", "teacher_copy", "student_copy",
                "teacher_copy_more", "teacher_copy_lm", "student_copy_lm")
    if arg not in variants:
        raise ValueError(f"configs/aeslc.py: variant {arg!r} not in {variants}")
    config = run_config.defaults("lm")
    config.data.update(dataset="pairs", name="memgpt_aeslc/aeslc", tokenizer="runs/imdb/spm8k.model", seq_len=512,
                       batch_size=16, eval_batch_size=32, eval_split="dev", eval_batches=0, pack=True,
                       truncate="head")  # a long email keeps its opening
    config.optim.update(lr=5e-4, warmup_steps=100, weight_decay=0.1)
    config.train.update(steps=900, log_every=25, eval_every=300, checkpoint_every=100)
    if arg in ("teacher", "teacher_english_lm", "teacher_copy", "teacher_copy_more", "teacher_copy_lm"):
        config.model.update(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
        config.train.init_from = "runs/aeslc/lm" if arg in ("teacher", "teacher_copy_lm") else "runs/imdb/lm"
        if arg in ("teacher_copy", "teacher_copy_more", "teacher_copy_lm"):
            config.model.copy_dim = 64
        if arg == "teacher_copy_more":  # 600 steps more, a warm restart at its peak rate
            config.train.update(init_from="runs/aeslc/teacher_copy", steps=600)
            config.optim.warmup_steps = 50
    elif arg in ("lm", "lm_student"):  # in-domain LMs: the English LMs continued on the emails (every token predicted)
        config.model.update(run_config.model_of(f"{IMDB}:pretrain" if arg == "lm" else f"{IMDB}:pretrain_student"),
                            dropout=0.0)
        config.data.prompt_loss = True
        config.optim.update(lr=5e-4 if arg == "lm" else 1e-3, warmup_steps=50, weight_decay=0.05)
        config.train.update(steps=700, eval_every=350,
                            init_from="runs/imdb/lm" if arg == "lm" else "runs/imdb/lm_student")
    elif arg == "student":
        config.model.update(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)
        config.optim.lr = 1e-3
        config.train.init_from = "runs/aeslc/lm_student"
        config.distill.update(teacher="runs/aeslc/teacher", temperature=1.0, alpha=0.5)
    elif arg in ("student_copy", "student_copy_lm"):
        config.model.update(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1, copy_dim=32)
        config.optim.lr = 1e-3
        config.train.update(steps=1000, init_from="runs/imdb/lm_student")
        config.distill.update(teacher="runs/aeslc/teacher_copy", temperature=1.0, alpha=0.5)
        if arg == "student_copy_lm":  # both from the in-domain LMs
            config.train.init_from = "runs/aeslc/lm_student"
            config.distill.teacher = "runs/aeslc/teacher_copy_lm"
    else:
        config.model.update(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16))
        config.data.update(tokenizer="bytes", seq_len=128, batch_size=8, eval_batch_size=8, eval_batches=2)
        config.train.update(steps=4, eval_every=4, checkpoint_every=4)
    return config
