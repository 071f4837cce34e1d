"""KVRET: an in-car assistant's next reply from its knowledge base and the dialogue so
far (`memgpt_jax/data/dialogue.py` serializes both into the prompt), scored by BLEU and
entity F1 on `validation`.

Both backbones start from the IMDb recipe's English language models (`configs/imdb.py`:
`pretrain`, `pretrain_student`; its 8k sentencepiece tokenizer). Prompts run to ~690
tokens (the weather knowledge base is the longest), hence 768-token rows.

    memgpt-jax data prepare dialogue --source $MEMGPT_SHARED_DATA/kvret/kvret_train_validation.json.gz --name kvret
    memgpt-jax finetune --config configs/kvret.py:teacher --workdir runs/kvret/teacher
    memgpt-jax distill  --config configs/kvret.py:student --workdir runs/kvret/student
    memgpt-jax eval --checkpoint runs/kvret/teacher --split validation --beam 4
    memgpt-jax chat --checkpoint runs/kvret/student --kb kb.json

(`train/kvret_recipe.sh` runs all of it; `KVRET_FROM_SCRATCH=1` runs `teacher_copy` and
`student_copy` instead, from random weights, no English LM: about 1.3 hours of CPU.) Variants:
`teacher` (dense), `student` (block-sparse, word-level distillation), both on whole dialogues
with a copy head (the levers measured from random weights; from the English LMs not yet
measured), `teacher_scratch` / `student_scratch` (the first from-scratch recipe: per turn, no
copy head), `teacher_more` (the lever of
more epochs: the finished teacher trained 600 steps more, a warm restart at half its peak
rate; `--workdir runs/kvret/teacher_more`), `teacher_dialogues` / `student_dialogues` (the lever
of whole dialogues, `data.multi_turn`: `teacher_scratch` / `student_scratch` trained on each
dialogue once, from its last turn, with the loss on all of its replies: the same replies for
fewer tokens (the KB and history read once per dialogue), so the same 1,200 steps see more epochs; the student distils
from `runs/kvret/teacher_dialogues`; `student_dialogues_kb`: the same with 6 global blocks instead
of 1, so every token sees the first 384, most of a knowledge base), `teacher_copy` /
`student_copy` (the lever of a copy head, `model.copy_dim`: `teacher_dialogues` /
`student_dialogues` with a pointer-generator head, 64 / 32 wide, that can name a knowledge-base
value by pointing at it in the prompt; the student distils from `runs/kvret/teacher_copy`;
`student_copy_more`: that student trained 600 steps more, a warm restart at half its peak rate),
`tiny` (tests).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes


def get_config(arg: str = "teacher"):
    variants = ("teacher", "student", "teacher_scratch", "student_scratch", "teacher_more", "teacher_dialogues",
                "student_dialogues", "student_dialogues_kb", "teacher_copy", "student_copy", "student_copy_more", "tiny")
    if arg not in variants:
        raise ValueError(f"configs/kvret.py: variant {arg!r} not in {variants}")
    config = run_config.defaults("lm")
    config.data.update(dataset="pairs", name="memgpt_dialogue/kvret", tokenizer="runs/imdb/spm8k.model",
                       seq_len=768, batch_size=12, eval_batch_size=24, eval_split="validation", eval_batches=0,
                       pack=True)
    config.optim.update(lr=5e-4, warmup_steps=100, weight_decay=0.1)
    config.train.update(steps=1200, log_every=25, eval_every=400, checkpoint_every=100)
    if arg.startswith("teacher"):
        config.model.update(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
        config.train.init_from = "runs/imdb/lm"
        if arg == "teacher":  # the levers measured from random weights: whole dialogues, a copy head
            config.data.multi_turn = True
            config.model.copy_dim = 64
        if arg in ("teacher_scratch", "teacher_dialogues", "teacher_copy"):
            config.train.init_from = ""
            config.optim.lr = 1e-3
            config.data.multi_turn = arg in ("teacher_dialogues", "teacher_copy")
            if arg == "teacher_copy":
                config.model.copy_dim = 64
        elif arg == "teacher_more":  # ~1.7 epochs more of the 6,288 training turns
            config.train.update(init_from="runs/kvret/teacher", steps=600, eval_every=300)
            config.optim.update(lr=5e-4, warmup_steps=50)
    elif arg.startswith("student"):
        config.model.update(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)
        config.optim.lr = 1e-3
        config.train.update(init_from="runs/imdb/lm_student", steps=1000)
        config.distill.update(teacher="runs/kvret/teacher", temperature=1.0, alpha=0.5)
        if arg == "student":
            config.data.multi_turn = True
            config.model.copy_dim = 32
        if arg in ("student_scratch", "student_dialogues", "student_dialogues_kb", "student_copy", "student_copy_more"):
            config.train.init_from = ""
        if arg in ("student_dialogues", "student_dialogues_kb", "student_copy", "student_copy_more"):
            config.data.multi_turn = True
            config.distill.teacher = "runs/kvret/teacher_dialogues"
        if arg in ("student_copy", "student_copy_more"):
            config.model.copy_dim = 32
            config.distill.teacher = "runs/kvret/teacher_copy"
        if arg == "student_copy_more":  # the finished copy-head student, 600 steps more (a warm restart)
            config.train.update(init_from="runs/kvret/student_copy", steps=600, eval_every=300)
            config.optim.update(lr=5e-4, warmup_steps=50)
        if arg == "student_dialogues_kb":  # 6 global blocks: the first 384 tokens, most knowledge bases
            config.model.update(attention=dict(pattern="window_global", block_size=64, window=2, n_global=6))
    else:
        config.model.update(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=256, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16))
        config.data.update(tokenizer="bytes", seq_len=256, batch_size=8, eval_batch_size=8, eval_batches=2)
        config.train.update(steps=4, eval_every=4, checkpoint_every=4)
    return config
