#!/usr/bin/env bash
# SQuAD v1.1 extractive QA (6 of the 36 articles held out), end to end: the English LMs (train/english_lm.sh, skipped when trained) ->
# dense teacher fine-tuned from its LM -> block-sparse student distilled from the teacher ->
# int8 -> the table in benchmarks/RESULTS.md. Rerunning resumes.
#
#   MEMGPT_DATA_DIR=~/memgpt_data MEMGPT_SHARED_DATA=../shared/data train/squad_recipe.sh
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/squad  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${MEMGPT_SHARED_DATA:?set MEMGPT_SHARED_DATA to the folder holding the shared data}"
IMDB_SOURCE=${IMDB_SOURCE:-$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz} "$(dirname "$0")/english_lm.sh"

$CLI data prepare squad --train "$MEMGPT_SHARED_DATA/squad_v1.1/squad_v1.1_dev_articles_00-35.json" \
    --holdout-articles 6 --seed 0 --name squad36_val6
$CLI finetune --config configs/squad.py:teacher --workdir "$RUNS/teacher"
$CLI distill --config configs/squad.py:student --workdir "$RUNS/student"
[ -d "$RUNS/student_int8" ] || $CLI quantize --checkpoint "$RUNS/student" --out "$RUNS/student_int8" --bits 8
${PYTHON:-python} -m benchmarks.squad_recipe --runs "$RUNS"
