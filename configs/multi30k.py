"""Multi30k English -> German with a decoder-only model: `[BOS] en [SEP] de [EOS]`,
the loss on German tokens only, several pairs packed per row.

    D=$MEMGPT_SHARED_DATA/multi30k RUNS=${MEMGPT_RUNS:-runs}  # RUNS: where the configs look for runs
    memgpt-jax data prepare pairs --name multi30k_en_de --split train=$D/train.en.gz,$D/train.de.gz \\
        --split val=$D/val.en.gz,$D/val.de.gz --split test_2016_flickr=$D/test_2016_flickr.en.gz,$D/test_2016_flickr.de.gz
    memgpt-jax data tokenizer train --dataset memgpt_pairs/multi30k_en_de --splits train --text-key prompt,target \\
        --vocab-size 8000 --output $RUNS/multi30k/spm8k.model
    memgpt-jax pretrain --config configs/multi30k.py:teacher --workdir $RUNS/multi30k/teacher
    memgpt-jax decode --checkpoint $RUNS/multi30k/teacher --split train --out $RUNS/multi30k/teacher_train.jsonl
    memgpt-jax data prepare pairs --name multi30k_distilled --split train=$RUNS/multi30k/teacher_train.jsonl \\
        --split val=$D/val.en.gz,$D/val.de.gz
    memgpt-jax distill --config configs/multi30k.py:student --workdir $RUNS/multi30k/student
    memgpt-jax quantize --checkpoint $RUNS/multi30k/student --out $RUNS/multi30k/student_int8
    memgpt-jax eval --checkpoint $RUNS/multi30k/teacher --split test_2016_flickr --beam 4

(`train/multi30k_recipe.sh` runs all of it.) Variants: `teacher` (dense), `student`
(block-sparse, sequence-level distillation on the teacher's outputs plus word-level KD),
`tiny` (tests: seconds).
"""

from memgpt_jax import run_config

TEACHER = dict(vocab_size=8000, d_model=256, n_layers=6, n_heads=8, max_len=128, dropout=0.1,
               attention=dict(pattern="dense", block_size=32))
STUDENT = dict(vocab_size=8000, d_model=256, n_layers=3, n_heads=8, max_len=128, dropout=0.1,
               attention=dict(pattern="window_global", block_size=16, window=3, n_global=1))

BASE = dict(
    task="lm",
    model=dict(TEACHER, compute_dtype="bfloat16"),
    data=dict(dataset="pairs", name="memgpt_pairs/multi30k_en_de", tokenizer=run_config.runs_path("multi30k/spm8k.model"),
              seq_len=128, batch_size=48, eval_batch_size=48, eval_split="val", eval_batches=0, pack=True),
    optim=dict(lr=1e-3, warmup_steps=200, weight_decay=0.1, b2=0.98),
    train=dict(steps=3000, log_every=50, eval_every=1000, checkpoint_every=250),
)

VARIANTS = {
    "teacher": {},
    # Starts from the teacher's layers, so it needs fewer steps.
    "student": dict(model=STUDENT, data=dict(name="memgpt_pairs/multi30k_distilled"), train=dict(steps=2000),
                    distill=dict(teacher=run_config.runs_path("multi30k/teacher"), temperature=1.0, alpha=0.5,
                                 init_from_teacher=True)),
    "tiny": dict(model=dict(vocab_size=264, d_model=64, n_layers=2, n_heads=4, max_len=64, dropout=0.0,
                            compute_dtype="float32", attention=dict(pattern="dense", block_size=16)),
                 data=dict(tokenizer="bytes", seq_len=64, batch_size=16, eval_batch_size=16, eval_batches=2),
                 optim=dict(lr=3e-3, warmup_steps=20),
                 train=dict(steps=10, log_every=5, eval_every=10, checkpoint_every=10)),
}

get_config = run_config.variant_table(BASE, VARIANTS, default="teacher")
