"""Language-model batches: documents packed into fixed-length rows with segment ids.

A document's tokens become ``[BOS] + tokens + [EOS]`` (EOS is the document
separator), i.e. ``n`` tokens give ``n - 1`` (input, target) pairs, and rows are
filled with those pairs back to back. Each piece of a document in a row is a
*segment* (ids 1, 2, ... within the row; 0 = padding) whose ``positions`` start
at 0, so attention masked by ``segment_ids`` never crosses a document and
positions never reach ``seq_len``. With ``split_documents=True`` (default) a
document that does not fit the rest of a row continues in the next row (no
padding except at the very end); with ``False`` it starts a fresh row, and only
documents longer than a whole row are cut. Cuts are counted in ``stats``.

Batch (``B`` = global batch / process count, ``T`` = ``seq_len``)::

    inputs       int32 [B, T]  token ids (PAD where segment_ids == 0)
    targets      int32 [B, T]  next token of the same document (PAD on padding)
    segment_ids  int32 [B, T]  1.. per document piece in the row; 0 = padding
    positions    int32 [B, T]  0.. within each segment; 0 on padding
    loss_mask    bool  [B, T]  True where targets are real (== segment_ids > 0)

State is :class:`~memgpt_jax.data.ordering.CursorIterator`'s plus ``offset``:
the document at ``cursor`` of ``epoch``'s order and how many of its pairs are
already emitted, so a restored iterator continues with exactly the batches an
uninterrupted one would produce.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.ordering import CursorIterator

LM_KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")


class PackedLMIterator(CursorIterator):
    """Iterator of packed LM batches over a random-access text source.

    Args:
      source: ``len()`` + ``[i]`` records (a tfds data source from
        :func:`~memgpt_jax.data.load_split`, or a list of dicts).
      tokenizer: any :class:`~memgpt_jax.data.Tokenizer`.
      batch_size: global rows per step; each process yields ``batch_size / process_count``.
      seq_len: tokens per row (``T``).
      seed, shuffle: document order per epoch (see :mod:`~memgpt_jax.data.ordering`).
      num_epochs: ``None`` iterates forever; else stop after this many passes.
      drop_remainder: with finite epochs, drop (and count) a last partial batch
        instead of padding it with empty rows.
      process_index, process_count: default to JAX's; set them in tests.
    """

    kind = "lm"

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer, *, batch_size: int,
                 seq_len: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 text_key: str = "text", add_bos: bool = True, split_documents: bool = True,
                 drop_remainder: bool = True, process_index: int | None = None,
                 process_count: int | None = None) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        super().__init__(source, tokenizer, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, even=False, process_index=process_index,
                         process_count=process_count, seq_len=seq_len, add_bos=add_bos,
                         split_documents=split_documents)
        self.seq_len, self.text_key, self.add_bos = seq_len, text_key, add_bos
        self.split_documents, self.drop_remainder = split_documents, drop_remainder
        self._offset = 0  # pairs of the current document already emitted
        self._doc: np.ndarray | None = None

    # -- state: the cursor's, plus how far into the current document -----------
    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "offset": self._offset}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self._offset, self._doc = int(state["offset"]), None

    # -- documents -----------------------------------------------------------
    def _document(self) -> np.ndarray | None:
        """Tokens of the document at the cursor (BOS/EOS added), or None at the end."""
        while self._doc is None:
            index = self._cursor.peek()
            if index is None:
                return None
            if index < 0:  # shard padding: LM rows need no placeholder
                self._cursor.advance()
                continue
            tokens = self.tokenizer.encode(as_text(self.source[index][self.text_key]))
            if len(tokens) == 0:
                self.stats["empty_documents_skipped"] += 1
                self._cursor.advance()
                continue
            head = [specials.BOS_ID] if self.add_bos else []
            self._doc = np.concatenate([head, tokens, [specials.EOS_ID]]).astype(np.int32)
            if self._offset == 0:
                self.stats["documents"] += 1
                self.stats["tokens"] += len(self._doc)
                if len(self._doc) - 1 > self.seq_len:
                    self.stats["documents_longer_than_seq_len"] += 1
        return self._doc

    def _next_document(self) -> None:
        self._cursor.advance()
        self._doc, self._offset = None, 0

    def _fill_row(self, row: dict[str, np.ndarray]) -> int:
        """Pack pairs into ``row`` (arrays of length T); return how many were written."""
        filled, segment = 0, 0
        while filled < self.seq_len:
            doc = self._document()
            if doc is None:
                break
            remaining = len(doc) - 1 - self._offset
            space = self.seq_len - filled
            if remaining > space and filled > 0 and not self.split_documents:
                break
            take = min(remaining, space)
            if take < remaining:
                self.stats["document_cuts"] += 1
            segment += 1
            start = self._offset
            row["inputs"][filled:filled + take] = doc[start:start + take]
            row["targets"][filled:filled + take] = doc[start + 1:start + take + 1]
            row["segment_ids"][filled:filled + take] = segment
            row["positions"][filled:filled + take] = np.arange(take)
            filled += take
            self._offset += take
            if self._offset == len(doc) - 1:
                self._next_document()
        return filled

    # -- batches -------------------------------------------------------------
    def _next_batch(self) -> dict[str, np.ndarray] | None:
        shape = (self.batch_size, self.seq_len)
        batch = {k: np.zeros(shape, np.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
        rows_filled = 0
        for r in range(self.batch_size):
            row = {k: v[r] for k, v in batch.items()}
            filled = self._fill_row(row)
            if filled == 0:
                break
            rows_filled += 1
            self.stats["pad_tokens"] += self.seq_len - filled
        if rows_filled == 0:
            return None
        if rows_filled < self.batch_size:
            if self.drop_remainder:
                self.stats["final_rows_dropped"] += rows_filled
                self.stats["final_tokens_dropped"] += int((batch["segment_ids"] > 0).sum())
                return None
            self.stats["final_rows_padded"] += self.batch_size - rows_filled
        batch["loss_mask"] = batch["segment_ids"] > 0
        return batch
