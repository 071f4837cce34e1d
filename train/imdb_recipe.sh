#!/usr/bin/env bash
# The IMDb recipe end to end (README "The IMDb recipe"): tokenizer -> LM pretraining on
# train+unsup -> teacher classifier -> block-sparse student by distillation -> int8 ->
# NBSVM-bigram (minutes) and the hybrid teacher (the teacher and NBSVM stacked on
# validation) -> evaluation and the RESULTS.md table. Rerunning resumes: finished stages are skipped and
# a stopped training run continues from its newest checkpoint.
#
#   MEMGPT_DATA_DIR=~/memgpt_data IMDB_SOURCE=../shared/data/aclImdb_dev.tar.gz train/imdb_recipe.sh
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/imdb  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${IMDB_SOURCE:?set IMDB_SOURCE to an aclImdb .tar.gz or directory}"
mkdir -p "$RUNS"

"$(dirname "$0")/english_lm.sh"  # data, tokenizer, the two LMs (shared with the other text recipes)
$CLI finetune --config configs/imdb.py:teacher_long --workdir "$RUNS/teacher"  # whole reviews
$CLI distill --config configs/imdb.py:student --workdir "$RUNS/student"
[ -d "$RUNS/student_int8" ] || $CLI quantize --checkpoint "$RUNS/student" --out "$RUNS/student_int8" --bits 8
[ -f "$RUNS/nbsvm/nbsvm_2gram.npz" ] || ${PYTHON:-python} -m benchmarks.imdb_baselines --ngrams 2 --save-values "$RUNS/nbsvm"
${PYTHON:-python} -m benchmarks.imdb_hybrid --runs "$RUNS" --members teacher --no-results-md
${PYTHON:-python} -m benchmarks.imdb_recipe --runs "$RUNS"
