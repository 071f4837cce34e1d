#!/usr/bin/env bash
# Multi30k English -> German end to end (README "Prompt -> target fine-tuning"): shared
# tokenizer -> dense teacher -> teacher's translations of the train set -> block-sparse student
# by sequence-level distillation (+ word-level KD) -> int8 -> BLEU/chrF table in RESULTS.md.
# Rerunning resumes: finished stages are skipped, training continues from checkpoints.
#
#   MEMGPT_DATA_DIR=~/memgpt_data MULTI30K=../shared/data/multi30k train/multi30k_recipe.sh
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/multi30k  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${MULTI30K:?set MULTI30K to the directory holding {train,val,test_2016_flickr}.{en,de}.gz}"
D=$MULTI30K
mkdir -p "$RUNS"
split() { echo "$1=$D/$1.en.gz,$D/$1.de.gz"; }

$CLI data prepare pairs --name multi30k_en_de --split "$(split train)" --split "$(split val)" \
    --split "$(split test_2016_flickr)"
[ -f "$RUNS/spm8k.model" ] || $CLI data tokenizer train --dataset memgpt_pairs/multi30k_en_de --splits train \
    --text-key prompt,target --vocab-size 8000 --output "$RUNS/spm8k.model"
$CLI pretrain --config configs/multi30k.py:teacher --workdir "$RUNS/teacher"
if [ ! -f "$RUNS/teacher_train.jsonl" ]; then  # sequence-level KD data: the teacher's translations
    $CLI decode --checkpoint "$RUNS/teacher" --split train --batch-size 64 --out "$RUNS/teacher_train.jsonl.partial"
    mv "$RUNS/teacher_train.jsonl.partial" "$RUNS/teacher_train.jsonl"
fi
$CLI data prepare pairs --name multi30k_distilled --split "train=$RUNS/teacher_train.jsonl" --split "$(split val)"
$CLI distill --config configs/multi30k.py:student --workdir "$RUNS/student"
[ -d "$RUNS/student_int8" ] || $CLI quantize --checkpoint "$RUNS/student" --out "$RUNS/student_int8" --bits 8
${PYTHON:-python} -m benchmarks.multi30k_recipe --runs "$RUNS"
