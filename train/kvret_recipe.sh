#!/usr/bin/env bash
# KVRET knowledge-grounded dialogue, end to end: the English LMs (train/english_lm.sh, skipped when trained) ->
# dense teacher fine-tuned from its LM -> block-sparse student distilled from the teacher ->
# int8 -> the table in benchmarks/RESULTS.md. Rerunning resumes.
#
#   MEMGPT_DATA_DIR=~/memgpt_data MEMGPT_SHARED_DATA=../shared/data train/kvret_recipe.sh
set -euo pipefail
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${MEMGPT_SHARED_DATA:?set MEMGPT_SHARED_DATA to the folder holding the shared data}"
# KVRET_FROM_SCRATCH=1: both models from random weights (configs/kvret.py:teacher_scratch,
# :student_scratch), no English LMs to train first: about an hour of CPU in all.
TOKENIZER_ONLY=${KVRET_FROM_SCRATCH:-} IMDB_SOURCE=${IMDB_SOURCE:-$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz} \
    "$(dirname "$0")/english_lm.sh"

$CLI data prepare dialogue --source "$MEMGPT_SHARED_DATA/kvret/kvret_train_validation.json.gz" --name kvret
if [ -n "${KVRET_FROM_SCRATCH:-}" ]; then
    $CLI finetune --config configs/kvret.py:teacher_scratch --workdir runs/kvret/teacher
    $CLI distill --config configs/kvret.py:student_scratch --workdir runs/kvret/student
else
    $CLI finetune --config configs/kvret.py:teacher --workdir runs/kvret/teacher
    $CLI distill --config configs/kvret.py:student --workdir runs/kvret/student
fi
[ -d runs/kvret/student_int8 ] || $CLI quantize --checkpoint runs/kvret/student --out runs/kvret/student_int8 --bits 8
${PYTHON:-python} -m benchmarks.kvret_recipe --runs runs/kvret
