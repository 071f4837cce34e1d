"""From a config's ``data`` section to the iterators the loop consumes.

``data`` section fields:

- ``dataset``: ``"listops"`` | ``"imdb"`` | ``"text"`` | ``"squad"`` (task ``qa``) | ``"pairs"``
  (task ``lm``: prompt -> target, loss on targets only; ``pack``); ``name``: the prepared tfds
  name (e.g. ``memgpt_listops/tiny``); ``data_dir``: where prepared datasets live
  (default ``$MEMGPT_DATA_DIR``). ListOps is generated on first use; IMDb and text
  corpora must be prepared first (``memgpt-jax data prepare ...``).
- ``tokenizer``: ``"listops"``, ``"bytes"`` or a sentencepiece ``.model`` path.
- ``train_split``, ``eval_split``, ``text_key``, ``seq_len``, ``batch_size``,
  ``eval_batch_size``, ``eval_batches`` (0 = the whole split), ``seed``; QA: ``doc_stride``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any, Callable, Iterable, Iterator

from memgpt_jax import data as data_lib


@dataclasses.dataclass
class DataBundle:
    train: Any  # iterator with get_state()/set_state()
    eval: Callable[[], Iterable[dict]] | None
    tokenizer: Any
    tokenizer_bytes: bytes | None


def dataset_name(dc: Any) -> str:
    """The prepared dataset's name; for ListOps derived from ``listops`` settings."""
    if dc.dataset == "listops" and dc.get("listops"):
        settings = dict(dc.listops)
        preset = settings.pop("preset", "tiny")
        return "memgpt_listops/" + data_lib.listops_config(preset, **settings).name
    return dc.name


def _source(dc: Any, split: str):
    name = dataset_name(dc)
    if dc.dataset == "listops":
        try:
            return data_lib.load_split(name, split, dc.get("data_dir"))
        except data_lib.DataError:  # generated data: make it on first use
            settings = dict(dc.get("listops") or {})
            preset = settings.pop("preset", name.split("/", 1)[-1])
            data_lib.prepare(data_lib.listops_builder(preset, data_dir=dc.get("data_dir"), **settings))
            return data_lib.load_split(name, split, dc.get("data_dir"))
    return data_lib.load_split(name, split, dc.get("data_dir"))


def _iterator(task: str, dc: Any, split: str, tokenizer: Any, *, train: bool, batch_size: int):
    source = _source(dc, split)
    common = dict(batch_size=batch_size, seed=int(dc.get("seed", 0)), shuffle=train,
                  num_epochs=None if train else 1, drop_remainder=train)
    if task == "lm" and dc.dataset == "pairs":
        from memgpt_jax.data.pairs_pipeline import PackedPairsIterator

        return PackedPairsIterator(source, tokenizer, seq_len=int(dc.seq_len), pack=bool(dc.get("pack", True)),
                                   **common)
    if task == "lm":
        return data_lib.PackedLMIterator(source, tokenizer, seq_len=int(dc.seq_len),
                                         text_key=dc.get("text_key", "text"), **common)
    if task == "qa":
        from memgpt_jax.data.qa_pipeline import QAIterator

        return QAIterator(source, tokenizer, max_len=int(dc.seq_len), doc_stride=int(dc.get("doc_stride", 128)),
                          **common)
    return data_lib.ClassificationIterator(source, tokenizer, max_len=int(dc.seq_len),
                                           text_key=dc.get("text_key", "text"), **common)


def make_data(config: Any, workdir: str | None = None) -> DataBundle:
    dc, task = config.data, config.task
    tokenizer = data_lib.load_tokenizer(dc.tokenizer)
    vocab = int(config.model.vocab_size)
    if tokenizer.vocab_size > vocab:
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}")
    train_iter = _iterator(task, dc, dc.get("train_split", "train"), tokenizer, train=True,
                           batch_size=int(dc.batch_size))
    eval_split = dc.get("eval_split", "validation")

    def eval_batches() -> Iterator[dict]:
        it = _iterator(task, dc, eval_split, tokenizer, train=False,
                       batch_size=int(dc.get("eval_batch_size", dc.batch_size)))
        n = int(dc.get("eval_batches", 0))
        return itertools.islice(it, n) if n > 0 else iter(it)

    blob = json.dumps(tokenizer.to_config()).encode()
    return DataBundle(train=train_iter, eval=eval_batches if eval_split else None,
                      tokenizer=tokenizer, tokenizer_bytes=blob)
