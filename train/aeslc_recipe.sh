#!/usr/bin/env bash
# AESLC email -> subject line, end to end: the English LMs (train/english_lm.sh, skipped when trained)
# -> dense teacher with a copy head fine-tuned from its LM -> block-sparse student distilled from the
# teacher -> int8 -> the table in benchmarks/RESULTS.md. Rerunning resumes.
#
#   MEMGPT_DATA_DIR=~/memgpt_data MEMGPT_SHARED_DATA=../shared/data train/aeslc_recipe.sh
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/aeslc  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${MEMGPT_SHARED_DATA:?set MEMGPT_SHARED_DATA to the folder holding the shared data}"
IMDB_SOURCE=${IMDB_SOURCE:-$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz} "$(dirname "$0")/english_lm.sh"

$CLI data prepare aeslc --source "$MEMGPT_SHARED_DATA/aeslc/aeslc_train_dev.tar.gz"
if [ -z "${AESLC_IN_DOMAIN_LM:-}" ]; then
    # Both models with a copy head (model.copy_dim), from the English LMs: the table's "copy head" rows.
    $CLI finetune --config configs/aeslc.py:teacher_copy --workdir "$RUNS/teacher_copy"
    $CLI distill --config configs/aeslc.py:student_copy --workdir "$RUNS/student_copy"
    [ -d "$RUNS/student_copy_int8" ] ||
        $CLI quantize --checkpoint "$RUNS/student_copy" --out "$RUNS/student_copy_int8" --bits 8
else  # AESLC_IN_DOMAIN_LM=1: the first recipe, no copy head, the English LMs continued on the emails
    $CLI pretrain --config configs/aeslc.py:lm --workdir "$RUNS/lm"
    $CLI finetune --config configs/aeslc.py:teacher --workdir "$RUNS/teacher"
    $CLI pretrain --config configs/aeslc.py:lm_student --workdir "$RUNS/lm_student"
    $CLI distill --config configs/aeslc.py:student --workdir "$RUNS/student"
    [ -d "$RUNS/student_int8" ] || $CLI quantize --checkpoint "$RUNS/student" --out "$RUNS/student_int8" --bits 8
fi
${PYTHON:-python} -m benchmarks.aeslc_recipe --runs "$RUNS"
# the same runs decoded without repeating a token within a subject: rows of their own
${PYTHON:-python} -m benchmarks.aeslc_recipe --runs "$RUNS" --no-repeat-ngram 1
