"""Data for memgpt-jax: tfds datasets, tokenizers and resumable input pipelines.

Datasets (tfds ``GeneratorBasedBuilder``s written as ``array_record``, read with
random access and no TensorFlow; see ``memgpt-jax data --help``):

- ``memgpt_imdb/val10_seed0``: IMDb reviews from an aclImdb archive; splits
  ``train``, ``validation`` (seeded stratified carve-out of train), ``test``,
  ``unsupervised``; features ``text``, ``label``, ``rating``, ``id``.
- ``memgpt_text/<name>``: plain UTF-8 files; splits ``train``, ``validation``.
- ``memgpt_listops/tiny`` (or ``lra``, or custom): generated ListOps, 10 classes.

Prepared data lives in ``--data-dir`` / ``$MEMGPT_DATA_DIR``; read a split with
``load_split("memgpt_imdb/val10_seed0", "train")``.

Tokenizers share one special-id table (:mod:`~memgpt_jax.data.specials`: pad 0,
bos 1, eos 2, sep 3, unk 4): :class:`ByteTokenizer`, :class:`ListOpsTokenizer`,
:class:`SentencePieceTokenizer` (:func:`train_sentencepiece`).

Batch format (NumPy, this process's rows; ``B = batch_size // process_count``)
-----------------------------------------------------------------------------
Language modelling, :class:`PackedLMIterator` (``T = seq_len``)::

    inputs       int32 [B, T]  token ids; PAD (0) where segment_ids == 0
    targets      int32 [B, T]  next token within the same document; PAD on padding
    segment_ids  int32 [B, T]  1, 2, ... per document piece in the row; 0 = padding
    positions    int32 [B, T]  0, 1, ... restarting at every segment; 0 on padding
    loss_mask    bool  [B, T]  True where targets count (segment_ids > 0)

Attention within a document: ``q_seg[:, :, None] == k_seg[:, None, :]`` and
``q_seg > 0``, plus causality. Rows are full except the last batch of a finite
pass (``drop_remainder=False``).

Classification, :class:`ClassificationIterator` (``T = max_len``)::

    inputs         int32 [B, T]  [BOS] text [EOS?], right-padded with PAD
    kv_valid       bool  [B, T]  key-validity mask; every row has >= 1 True
    length         int32 [B]     number of valid tokens (pool at length - 1)
    label          int32 [B]     class id (IMDb: 0 neg, 1 pos; ListOps: 0-9)
    example_valid  bool  [B]     False for padding examples (evaluation only)

Every iterator here (:class:`PackedLMIterator`, :class:`ClassificationIterator`,
:class:`PackedPairsIterator`, :class:`QAIterator`) is a :class:`CursorIterator`,
which holds the resumable part once: deterministic given ``seed`` (the order of
epoch ``e`` is ``default_rng([seed, e]).permutation``), records sharded across
processes (``jax.process_index/process_count``, overridable), and
``get_state()`` / ``set_state()``: a small JSON-able dict (``epoch``, ``cursor``,
``batches``, a settings ``fingerprint``; the LM packer adds ``offset``) after
which a new iterator yields exactly the batches the original would have.
``stats`` counts everything cut, skipped or padded. Device layouts
(:mod:`~memgpt_jax.data.placement`, which ``training.sharding`` uses too):
:func:`split_for_devices` (``[devices, B/devices, ...]``) or
:func:`to_global_arrays` (``jax.Array`` with a given sharding).

Why not Grain
-------------
Grain 0.2.18 reads the same ``array_record`` sources, with checkpointable
iterators and worker processes. The grain study (``benchmarks/HISTORY.md``,
``benchmarks/results/history/data_grain.json``: IMDb train, sentencepiece 8k,
32 x 512, a 2-core EPYC shared with other jobs) built Grain pipelines whose
batches equal ours bit for bit, and measured their batches/s relative to ours
(medians of 5 runs of 100 batches; ours: of 10, 5 before and 5 after Grain,
117 batches/s classification, 56 LM packing, on one core)::

    Grain                      classification   LM packing
    in process, no threads          0.60           0.69
    in process, 16 threads          0.85           0.53
    2 worker processes              0.72           0.92
    2 workers x 16 threads          0.97           0.75

Worker processes take 3-7 s to start and 2-3 s to restore (ours: 0.01 s).
Resume was exact at every tested point when the state was passed as an
object, but Grain's packing (``ConcatThenSplitIterDataset``) restored wrongly
through JSON, as Grain's own checkpoint handler saves it, at 15 of 60 points
of a stream of short documents: those where a row ends exactly at a
document's end (its ``(-1, -1)`` "no remainder" tuple comes back as a list).
Grain matches ours neither on throughput per core nor on exact resume, so we
keep ours. Worth a new measurement if Grain fixes that, or if the input
pipeline ever limits a training step.
"""

from memgpt_jax.data import specials
from memgpt_jax.data.cls_pipeline import CLS_KEYS, ClassificationIterator
from memgpt_jax.data.catalog import label_names, pipeline_of, prepare_arguments
from memgpt_jax.data.prepared import (
    DATA_DIR_ENV,
    DamagedDataError,
    DataError,
    as_text,
    dataset_metadata,
    dataset_report,
    iter_texts,
    list_prepared,
    load_split,
    prepare,
    resolve_data_dir,
)
from memgpt_jax.data.imdb import IMDB_SOURCE_ENV, MemgptImdb, imdb_builder, imdb_config
from memgpt_jax.data.listops import MemgptListops, evaluate as evaluate_listops, listops_builder, listops_config
from memgpt_jax.data.lm_pipeline import LM_KEYS, PackedLMIterator
from memgpt_jax.data.ordering import CursorIterator, Shard, epoch_order
from memgpt_jax.data.pairs_pipeline import PackedPairsIterator
from memgpt_jax.data.placement import split_for_devices, to_global_arrays
from memgpt_jax.data.qa_pipeline import QA_KEYS, QAIterator
from memgpt_jax.data.spm import SentencePieceTokenizer, train_sentencepiece
from memgpt_jax.data.text_corpus import MemgptText, text_builder, text_config
from memgpt_jax.data.tokenizers import (
    ByteTokenizer,
    ListOpsTokenizer,
    Tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_config,
)

__all__ = [
    "CLS_KEYS", "DATA_DIR_ENV", "IMDB_SOURCE_ENV", "LM_KEYS", "QA_KEYS",
    "ByteTokenizer", "ClassificationIterator", "CursorIterator", "DamagedDataError", "DataError", "dataset_metadata", "ListOpsTokenizer",
    "MemgptImdb", "MemgptListops", "MemgptText", "PackedLMIterator", "PackedPairsIterator", "QAIterator",
    "SentencePieceTokenizer", "Shard", "Tokenizer",
    "as_text", "dataset_report", "epoch_order", "evaluate_listops", "imdb_builder", "imdb_config",
    "iter_texts", "label_names", "list_prepared", "listops_builder", "listops_config", "load_split", "load_tokenizer",
    "pipeline_of", "prepare", "prepare_arguments", "resolve_data_dir", "save_tokenizer", "specials", "split_for_devices",
    "text_builder", "text_config", "to_global_arrays", "tokenizer_from_config", "train_sentencepiece",
]
