"""KVRET: an in-car assistant's next reply from its knowledge base and the dialogue so
far (`memgpt_jax/data/dialogue.py` serializes both into the prompt), scored by BLEU and
entity F1 on `validation`. Prompts run to ~690 tokens (the weather knowledge base is the
longest), hence 768-token rows.

    RUNS=${MEMGPT_RUNS:-runs}  # where the configs look for runs
    memgpt-jax data prepare dialogue --source $MEMGPT_SHARED_DATA/kvret/kvret_train_validation.json.gz --name kvret
    memgpt-jax finetune --config configs/kvret.py:teacher --workdir $RUNS/kvret/teacher
    memgpt-jax distill  --config configs/kvret.py:student --workdir $RUNS/kvret/student
    memgpt-jax eval --checkpoint $RUNS/kvret/teacher --split validation --beam 4
    memgpt-jax chat --checkpoint $RUNS/kvret/student --kb kb.json

(`train/kvret_recipe.sh` runs all of it; `KVRET_FROM_SCRATCH=1` runs `teacher_copy` and
`student_copy` instead: about 1.3 hours of CPU.) Variants: `teacher` (dense) and `student`
(block-sparse, word-level distillation), from the English LMs of `configs/imdb.py`, reading
whole dialogues (`data.multi_turn`: each once, from its last turn, the loss on all of its
replies) with a copy head (`model.copy_dim`: names a knowledge-base value by pointing at it);
`teacher_copy` / `student_copy` (the same from random weights); the levers measured on the
way, from random weights: `teacher_dialogues` / `student_dialogues` (no copy head),
`student_dialogues_kb` (6 global blocks: every token sees the first 384, most of a knowledge
base), `student_copy_more` (600 steps more), and `teacher_more` (the per-turn teacher of its
time, without a copy head, 600 steps more); `tiny` (tests).
"""

import os

from memgpt_jax import run_config

IMDB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imdb.py")  # the backbones' shapes
TEACHER = dict(run_config.model_of(f"{IMDB}:pretrain"), dropout=0.1)
STUDENT = dict(run_config.model_of(f"{IMDB}:pretrain_student"), dropout=0.1)

BASE = dict(
    task="lm",
    data=dict(dataset="pairs", name="memgpt_dialogue/kvret", tokenizer=run_config.runs_path("imdb/spm8k.model"),
              seq_len=768, batch_size=12, eval_batch_size=24, eval_split="validation", eval_batches=0, pack=True),
    optim=dict(lr=5e-4, warmup_steps=100, weight_decay=0.1),
    train=dict(steps=1200, log_every=25, eval_every=400, checkpoint_every=100),
)

VARIANTS = {
    "teacher": dict(model=dict(TEACHER, copy_dim=64), data=dict(multi_turn=True),
                    train=dict(init_from=run_config.runs_path("imdb/lm"))),
    "student": dict(model=dict(STUDENT, copy_dim=32), data=dict(multi_turn=True), optim=dict(lr=1e-3),
                    train=dict(steps=1000, init_from=run_config.runs_path("imdb/lm_student")),
                    distill=dict(teacher=run_config.runs_path("kvret/teacher"), temperature=1.0, alpha=0.5)),
    "teacher_copy": dict(based_on="teacher", optim=dict(lr=1e-3), train=dict(init_from="")),
    "student_copy": dict(based_on="student", train=dict(init_from=""),
                         distill=dict(teacher=run_config.runs_path("kvret/teacher_copy"))),
    # 600 steps more: a warm restart at half the peak rate.
    "student_copy_more": dict(based_on="student_copy", optim=dict(lr=5e-4, warmup_steps=50),
                              train=dict(steps=600, eval_every=300,
                                         init_from=run_config.runs_path("kvret/student_copy"))),
    "teacher_dialogues": dict(based_on="teacher_copy", model=dict(copy_dim=0)),
    "student_dialogues": dict(based_on="student_copy", model=dict(copy_dim=0),
                              distill=dict(teacher=run_config.runs_path("kvret/teacher_dialogues"))),
    "student_dialogues_kb": dict(based_on="student_dialogues", model=dict(attention=dict(n_global=6))),
    "teacher_more": dict(based_on="teacher", model=dict(copy_dim=0), data=dict(multi_turn=False),
                         optim=dict(warmup_steps=50),
                         train=dict(steps=600, eval_every=300, init_from=run_config.runs_path("kvret/teacher"))),
    "tiny": dict(model=dict(vocab_size=264, d_model=32, n_layers=1, n_heads=2, max_len=256, dropout=0.0,
                            attention=dict(pattern="dense", block_size=16)),
                 data=dict(tokenizer="bytes", seq_len=256, batch_size=8, eval_batch_size=8, eval_batches=2),
                 train=dict(steps=4, eval_every=4, checkpoint_every=4)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
