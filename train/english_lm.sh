#!/usr/bin/env bash
# The English language models every text recipe starts from (IMDb reviews: train + unsup,
# ~25M tokens): the 8k sentencepiece tokenizer, then the teacher's and the student's
# backbones as LMs (configs/imdb.py:pretrain, :pretrain_student). Finished stages are
# skipped; a stopped run resumes from its newest checkpoint.
#
#   MEMGPT_DATA_DIR=~/memgpt_data IMDB_SOURCE=../shared/data/aclImdb_dev.tar.gz train/english_lm.sh
set -euo pipefail
CLI=${MEMGPT_CLI:-memgpt-jax}
: "${IMDB_SOURCE:?set IMDB_SOURCE to an aclImdb .tar.gz or directory}"
mkdir -p runs/imdb

$CLI data prepare imdb --source "$IMDB_SOURCE"
[ -f runs/imdb/spm8k.model ] || $CLI data tokenizer train --dataset memgpt_imdb/val10_seed0 \
    --splits train,unsupervised --vocab-size 8192 --output runs/imdb/spm8k.model
$CLI pretrain --config configs/imdb.py:pretrain --workdir runs/imdb/lm
$CLI pretrain --config configs/imdb.py:pretrain_student --workdir runs/imdb/lm_student
