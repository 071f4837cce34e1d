"""Multi30k English -> German with a decoder-only model: `[BOS] en [SEP] de [EOS]`,
the loss on German tokens only, several pairs packed per row.

    D=$MEMGPT_SHARED_DATA/multi30k
    memgpt-jax data prepare pairs --name multi30k_en_de --split train=$D/train.en.gz,$D/train.de.gz \\
        --split val=$D/val.en.gz,$D/val.de.gz --split test_2016_flickr=$D/test_2016_flickr.en.gz,$D/test_2016_flickr.de.gz
    memgpt-jax data tokenizer train --dataset memgpt_pairs/multi30k_en_de --splits train --text-key prompt,target \\
        --vocab-size 8000 --output runs/multi30k/spm8k.model
    memgpt-jax pretrain --config configs/multi30k.py:teacher --workdir runs/multi30k/teacher
    memgpt-jax decode --checkpoint runs/multi30k/teacher --split train --out runs/multi30k/teacher_train.jsonl
    memgpt-jax data prepare pairs --name multi30k_distilled --split train=runs/multi30k/teacher_train.jsonl \\
        --split val=$D/val.en.gz,$D/val.de.gz
    memgpt-jax distill --config configs/multi30k.py:student --workdir runs/multi30k/student
    memgpt-jax quantize --checkpoint runs/multi30k/student --out runs/multi30k/student_int8
    memgpt-jax eval --checkpoint runs/multi30k/teacher --split test_2016_flickr --beam 4

(`train/multi30k_recipe.sh` runs all of it.) Variants: `teacher` (dense), `student`
(block-sparse, sequence-level distillation on the teacher's outputs plus word-level KD),
`tiny` (tests: seconds).
"""

from memgpt_jax import run_config

TOKENIZER = "runs/multi30k/spm8k.model"
TEACHER = dict(vocab_size=8000, d_model=256, n_layers=6, n_heads=8, max_len=128, dropout=0.1,
               attention=dict(pattern="dense", block_size=32))
STUDENT = dict(vocab_size=8000, d_model=256, n_layers=3, n_heads=8, max_len=128, dropout=0.1,
               attention=dict(pattern="window_global", block_size=16, window=3, n_global=1))


def get_config(arg: str = "teacher"):
    variants = ("teacher", "student", "tiny")
    if arg not in variants:
        raise ValueError(f"configs/multi30k.py: variant {arg!r} not in {variants}")
    config = run_config.defaults("lm")
    config.model.update(STUDENT if arg == "student" else TEACHER, compute_dtype="bfloat16")
    config.data.update(dataset="pairs", name="memgpt_pairs/multi30k_en_de", tokenizer=TOKENIZER, seq_len=128,
                       batch_size=48, eval_batch_size=48, eval_split="val", eval_batches=0, pack=True)
    config.optim.update(lr=1e-3, warmup_steps=200, weight_decay=0.1, b2=0.98)
    config.train.update(steps=3000, log_every=50, eval_every=1000, checkpoint_every=250)
    if arg == "student":  # starts from the teacher's layers, so it needs fewer steps
        config.data.name = "memgpt_pairs/multi30k_distilled"
        config.train.steps = 2000
        config.distill.update(teacher="runs/multi30k/teacher", temperature=1.0, alpha=0.5, init_from_teacher=True)
    elif arg == "tiny":
        config.model.update(vocab_size=264, d_model=64, n_layers=2, n_heads=4, max_len=64, dropout=0.0,
                            compute_dtype="float32", attention=dict(pattern="dense", block_size=16))
        config.data.update(tokenizer="bytes", seq_len=64, batch_size=16, eval_batch_size=16, eval_batches=2)
        config.optim.update(lr=3e-3, warmup_steps=20)
        config.train.update(steps=10, log_every=5, eval_every=10, checkpoint_every=10)
    return config
