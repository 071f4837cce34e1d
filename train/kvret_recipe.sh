#!/usr/bin/env bash
# KVRET knowledge-grounded dialogue, end to end: the English LMs (train/english_lm.sh, skipped when trained) ->
# dense teacher fine-tuned from its LM -> block-sparse student distilled from the teacher ->
# int8 -> the table in benchmarks/RESULTS.md. Rerunning resumes.
#
#   MEMGPT_DATA_DIR=~/memgpt_data MEMGPT_SHARED_DATA=../shared/data train/kvret_recipe.sh
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/kvret  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${MEMGPT_SHARED_DATA:?set MEMGPT_SHARED_DATA to the folder holding the shared data}"
# Both models read whole dialogues (data.multi_turn) and have a copy head (model.copy_dim).
# KVRET_FROM_SCRATCH=1: both from random weights (configs/kvret.py:teacher_copy, :student_copy;
# the table's "copy head" rows), no English LMs to train first: about 1.3 hours of CPU in all.
TOKENIZER_ONLY=${KVRET_FROM_SCRATCH:-} IMDB_SOURCE=${IMDB_SOURCE:-$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz} \
    "$(dirname "$0")/english_lm.sh"

$CLI data prepare dialogue --source "$MEMGPT_SHARED_DATA/kvret/kvret_train_validation.json.gz" --name kvret
if [ -n "${KVRET_FROM_SCRATCH:-}" ]; then
    $CLI finetune --config configs/kvret.py:teacher_copy --workdir "$RUNS/teacher_copy"
    $CLI distill --config configs/kvret.py:student_copy --workdir "$RUNS/student_copy"
    [ -d "$RUNS/student_copy_int8" ] ||
        $CLI quantize --checkpoint "$RUNS/student_copy" --out "$RUNS/student_copy_int8" --bits 8
else
    $CLI finetune --config configs/kvret.py:teacher --workdir "$RUNS/teacher"
    $CLI distill --config configs/kvret.py:student --workdir "$RUNS/student"
    [ -d "$RUNS/student_int8" ] || $CLI quantize --checkpoint "$RUNS/student" --out "$RUNS/student_int8" --bits 8
fi
${PYTHON:-python} -m benchmarks.kvret_recipe --runs "$RUNS"
