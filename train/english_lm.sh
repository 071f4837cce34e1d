#!/usr/bin/env bash
# The English language models every text recipe starts from (IMDb reviews: train + unsup,
# ~25M tokens): the 8k sentencepiece tokenizer, then the teacher's and the student's
# backbones as LMs (configs/imdb.py:pretrain, :pretrain_student). Finished stages are
# skipped; a stopped run resumes from its newest checkpoint.
#
#   MEMGPT_DATA_DIR=~/memgpt_data IMDB_SOURCE=../shared/data/aclImdb_dev.tar.gz train/english_lm.sh
#
# LM_STOP_AT=N stops both LMs at step N (a checkpoint; the schedule stays that of the full
# run, and a later run without it continues to the end): e.g. LM_STOP_AT=500 gives the
# task recipes a backbone in under an hour on a fresh machine. Their fine-tuning starts
# from the newest LM checkpoint, and the recipe tables say which (the init column).
# TOKENIZER_ONLY=1 stops after the tokenizer (recipes whose models start from random weights).
set -euo pipefail
RUNS=${MEMGPT_RUNS:-runs}/imdb  # the root the configs read (memgpt_jax.run_config.runs_path)
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${IMDB_SOURCE:?set IMDB_SOURCE to an aclImdb .tar.gz or directory}"
mkdir -p "$RUNS"

$CLI data prepare imdb --source "$IMDB_SOURCE"
[ -f "$RUNS/spm8k.model" ] || $CLI data tokenizer train --dataset memgpt_imdb/val10_seed0 \
    --splits train,unsupervised --vocab-size 8192 --output "$RUNS/spm8k.model"
[ -z "${TOKENIZER_ONLY:-}" ] || exit 0  # TOKENIZER_ONLY=1: the data and the tokenizer, no LMs
STOP=(${LM_STOP_AT:+--stop-at "$LM_STOP_AT"})
$CLI pretrain --config configs/imdb.py:pretrain --workdir "$RUNS/lm" "${STOP[@]}"
$CLI pretrain --config configs/imdb.py:pretrain_student --workdir "$RUNS/lm_student" "${STOP[@]}"
