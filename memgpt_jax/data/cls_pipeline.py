"""Classification batches: one example per row, truncated, padded, with validity masks.

Each text becomes ``[BOS] + tokens + [EOS]`` (both optional) cut to ``max_len``
(``truncate="right"`` keeps the head, ``"left"`` the tail, ``"both"`` the first
quarter and the last three quarters of the budget, as Sun et al. (2019) found best
for long reviews; EOS is kept after truncation; cuts are counted in ``stats``) and right-padded with PAD.

Batch (``B`` = global batch / process count, ``T`` = ``max_len``)::

    inputs         int32 [B, T]  token ids, PAD after ``length``
    kv_valid       bool  [B, T]  True on real tokens: the key-validity mask
    length         int32 [B]     real tokens per row (last real token: length - 1)
    label          int32 [B]     class id (-1: unlabelled, only with ``unlabelled=True``)
    example_valid  bool  [B]     False on padding examples (weight them 0)

With ``teacher_offsets=(offsets [N, L], scale)`` (one row per source record) batches also carry::

    teacher_offset float32 [B, L]  the record's offsets (0 on padding examples)
    teacher_scale  float32 [B]     ``scale``: the distillation step uses ``scale * teacher logits + offset``

Padding examples appear only with ``drop_remainder=False`` (the last batch of
a finite pass, and shard padding so every process yields as many batches);
they hold ``[PAD]`` with ``kv_valid`` True at position 0 and ``length`` 1, so
that no row of a masked softmax is empty (which would produce NaN).

State is :class:`~memgpt_jax.data.ordering.CursorIterator`'s and restores exactly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.ordering import CursorIterator

CLS_KEYS = ("inputs", "kv_valid", "length", "label", "example_valid")
TRUNCATIONS = ("right", "left", "both")  # keep the head, the tail, or head and tail
KEEP = {"head": "right", "tail": "left", "head+tail": "both"}  # data.truncate / --truncate -> truncate_tokens


def truncate_tokens(tokens: Sequence[int], budget: int, how: str) -> np.ndarray:
    """``budget`` of ``tokens``: the head (``right``), the tail (``left``) or both (a
    quarter of the budget from the head, the rest from the tail)."""
    tokens = np.asarray(tokens)
    if len(tokens) <= budget:
        return tokens
    if how == "right":
        return tokens[:budget]
    if how == "left":
        return tokens[len(tokens) - budget:]
    head = budget // 4
    return np.concatenate([tokens[:head], tokens[len(tokens) - (budget - head):]])


class ClassificationIterator(CursorIterator):
    """Iterator of padded classification batches over a random-access source.

    Args:
      source: ``len()`` + ``[i]`` records with ``text_key`` and ``label_key``.
      tokenizer: any :class:`~memgpt_jax.data.Tokenizer` (bytes for LRA text,
        ListOps words, sentencepiece for IMDb).
      batch_size: global rows per step; each process yields ``batch_size / process_count``.
      max_len: tokens per row, including BOS/EOS if added.
      drop_remainder: True for training (even shards, full batches, a permuted
        tail of ``n % process_count`` left out per epoch); False for evaluation
        (every example exactly once, padded with ``example_valid == False``).
      num_epochs: ``None`` iterates forever (batches may span epochs).
      length_buckets: training only: row lengths to pad to (``max_len`` is added). Texts
        are drawn ``pool_batches`` batches at a time, sorted by length, cut into batches
        that are returned in a seeded random order, each padded only to the smallest
        bucket that holds its longest text: long reviews cost their length, short ones
        do not pay for it. The state stays exact (the pool's start and how many of its
        batches were returned).
      unlabelled: accept label -1 (a distilled student learns those rows from its teacher).
    """

    kind = "classification"

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer, *, batch_size: int,
                 max_len: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 text_key: str = "text", label_key: str = "label", add_bos: bool = True,
                 add_eos: bool = False, truncate: str = "right", drop_remainder: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 length_buckets: Sequence[int] = (), pool_batches: int = 16, unlabelled: bool = False,
                 teacher_offsets: tuple[np.ndarray, float] | None = None) -> None:
        if truncate not in TRUNCATIONS:
            raise ValueError(f"truncate must be one of {TRUNCATIONS}, got {truncate!r}")
        if max_len < 1 + int(add_bos) + int(add_eos):
            raise ValueError(f"max_len {max_len} leaves no room for text")
        buckets = tuple(sorted({int(n) for n in length_buckets if 0 < int(n) < max_len} | {max_len}))
        if length_buckets and not (shuffle and drop_remainder):
            raise ValueError("length_buckets are for training batches (shuffle, drop_remainder)")
        if length_buckets and (process_count or 1) > 1:  # each process would pick its own row length
            raise ValueError("length_buckets need one process (every host must build the same shapes)")
        extra = {"length_buckets": list(buckets), "pool_batches": pool_batches} if length_buckets else {}
        super().__init__(source, tokenizer, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, even=drop_remainder, process_index=process_index,
                         process_count=process_count, max_len=max_len, add_bos=add_bos,
                         add_eos=add_eos, truncate=truncate, drop_remainder=drop_remainder, **extra)
        self.max_len, self.text_key, self.label_key = max_len, text_key, label_key
        self.add_bos, self.add_eos, self.truncate = add_bos, add_eos, truncate
        self.drop_remainder, self.unlabelled = drop_remainder, unlabelled
        self.offsets, self.offset_scale = None, 1.0
        if teacher_offsets is not None:
            offsets, scale = teacher_offsets
            offsets = np.asarray(offsets, np.float32)
            if offsets.ndim != 2 or len(offsets) != len(source):
                raise ValueError(f"teacher offsets: {offsets.shape[:1]} rows for a source of {len(source)} records "
                                 "(one row per record, in the source's order)")
            self.offsets, self.offset_scale = offsets, float(scale)
        self.buckets = buckets if length_buckets else ()
        self.pool_batches, self.seed = int(pool_batches), seed
        self._pool: list[list[tuple[np.ndarray, int, int]]] = []  # the batches (tokens, label, index) of the pool
        self._pool_start: dict[str, Any] | None = None  # the cursor where it was drawn
        self._pool_taken = 0  # its batches returned so far
        self._pools = 0
        self._skip = 0  # after set_state: batches of the redrawn pool already returned

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.buckets and self._pool_start is not None and self._pool_taken < len(self._pool):
            state.update(self._pool_start, pool_taken=self._pool_taken, pools=self._pools - 1)
        elif self.buckets:
            state.update(pools=self._pools)
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self._pool, self._pool_start, self._pool_taken = [], None, 0
        self._pools = int(state.get("pools", 0))
        self._skip = int(state.get("pool_taken", 0))  # redraw that pool, skip what was returned

    def encode(self, text: str) -> np.ndarray | None:
        """Row tokens of ``text`` (BOS/EOS, truncated), or None if nothing is left."""
        tokens = self.tokenizer.encode(text)
        if len(tokens) == 0:
            self.stats["empty_texts"] += 1
            if not self.add_bos:
                return None
        budget = self.max_len - int(self.add_bos) - int(self.add_eos)
        if len(tokens) > budget:
            self.stats["truncated"] += 1
            self.stats["tokens_truncated"] += len(tokens) - budget
            tokens = truncate_tokens(tokens, budget, self.truncate)
        head = [specials.BOS_ID] if self.add_bos else []
        tail = [specials.EOS_ID] if self.add_eos else []
        return np.concatenate([head, tokens, tail]).astype(np.int32)

    def _offset_fields(self, rows: int) -> dict[str, np.ndarray]:
        if self.offsets is None:
            return {}
        return {"teacher_offset": np.zeros((rows, self.offsets.shape[1]), np.float32),
                "teacher_scale": np.full((rows,), self.offset_scale, np.float32)}

    def _set_offset(self, batch: dict[str, np.ndarray], row: int, index: int) -> None:
        if self.offsets is not None:
            batch["teacher_offset"][row] = self.offsets[index]

    def _label(self, record: Mapping[str, Any], index: int) -> int:
        label = int(record[self.label_key])
        if label < 0 and not self.unlabelled:
            raise ValueError(
                f"record {index} has label {label} (unlabeled); classification needs a "
                "labeled split (e.g. IMDb train/validation/test, not unsupervised)"
            )
        return label

    def _fetch(self, indices: list[int]) -> list[Mapping[str, Any]]:
        """Records at ``indices``, in one read when the source supports it (tfds does)."""
        getitems = getattr(self.source, "__getitems__", None)
        return list(getitems(indices)) if getitems else [self.source[i] for i in indices]

    def _next_indices(self, count: int) -> list[int]:
        """Up to ``count`` record indices (``-1``: shard padding) from the cursor."""
        indices = []
        while len(indices) < count and (index := self._take()) is not None:
            indices.append(index)
        return indices

    def _next_batch(self) -> dict[str, np.ndarray] | None:
        if not self.buckets:
            return self._next_plain_batch()
        if self._pool_taken >= len(self._pool):
            self._draw_pool()
            skip, self._skip = self._skip, 0
            self._pool_taken = min(skip, len(self._pool))
            if not self._pool:
                return None
        rows = self._pool[self._pool_taken]
        self._pool_taken += 1
        longest = max(len(tokens) for tokens, _, _ in rows)
        t = next(n for n in self.buckets if n >= longest)
        batch = {"inputs": np.full((len(rows), t), specials.PAD_ID, np.int32), "kv_valid": np.zeros((len(rows), t), bool),
                 "length": np.zeros((len(rows),), np.int32), "label": np.zeros((len(rows),), np.int32),
                 "example_valid": np.ones((len(rows),), bool), **self._offset_fields(len(rows))}
        for r, (tokens, label, index) in enumerate(rows):
            batch["inputs"][r, :len(tokens)] = tokens
            batch["kv_valid"][r, :len(tokens)] = True
            batch["length"][r], batch["label"][r] = len(tokens), label
            self._set_offset(batch, r, index)
        self.stats["examples"] += len(rows)
        self.stats[f"bucket_{t}"] += 1
        return batch

    def _draw_pool(self) -> None:
        """The next ``pool_batches`` batches of texts, sorted by length, in a seeded order."""
        self._pool_start = dict(self._cursor.state())
        rows: list[tuple[np.ndarray, int, int]] = []
        want = self.batch_size * self.pool_batches
        while len(rows) < want:
            indices = [i for i in self._next_indices(want - len(rows)) if i >= 0]
            if not indices:
                break
            for index, record in zip(indices, self._fetch(indices)):
                tokens = self.encode(as_text(record[self.text_key]))
                if tokens is None:
                    self.stats["empty_examples_skipped"] += 1
                    continue
                rows.append((tokens, self._label(record, index), index))
        full = len(rows) - len(rows) % self.batch_size  # drop_remainder: whole batches only
        self.stats["final_examples_dropped"] += len(rows) - full
        rows = sorted(rows[:full], key=lambda r: len(r[0]))
        pool = [rows[i:i + self.batch_size] for i in range(0, full, self.batch_size)]
        order = np.random.default_rng([self.seed, self._pools]).permutation(len(pool))
        self._pool, self._pools = [pool[i] for i in order], self._pools + 1

    def _next_plain_batch(self) -> dict[str, np.ndarray] | None:
        b, t = self.batch_size, self.max_len
        batch = {
            "inputs": np.full((b, t), specials.PAD_ID, np.int32),
            "kv_valid": np.zeros((b, t), bool),
            "length": np.ones((b,), np.int32),
            "label": np.zeros((b,), np.int32),
            "example_valid": np.zeros((b,), bool),
            **self._offset_fields(b),
        }
        batch["kv_valid"][:, 0] = True  # padding rows: one valid key (see module docstring)
        rows = 0
        while rows < b:
            indices = self._next_indices(b - rows)
            if not indices:
                break
            real = [i for i in indices if i >= 0]
            records = dict(zip(real, self._fetch(real)))
            for index in indices:
                if index < 0:  # shard padding (evaluation): the row stays a padding example
                    self.stats["padding_examples"] += 1
                    rows += 1
                    continue
                record = records[index]
                tokens = self.encode(as_text(record[self.text_key]))
                if tokens is None:
                    self.stats["empty_examples_skipped"] += 1
                    continue
                batch["inputs"][rows, :len(tokens)] = tokens
                batch["kv_valid"][rows, :len(tokens)] = True
                batch["length"][rows] = len(tokens)
                batch["label"][rows] = self._label(record, index)
                batch["example_valid"][rows] = True
                self._set_offset(batch, rows, index)
                self.stats["examples"] += 1
                rows += 1
        if rows == 0:
            return None
        if rows < b:
            if self.drop_remainder:
                self.stats["final_examples_dropped"] += int(batch["example_valid"].sum())
                return None
            self.stats["padding_examples"] += b - rows
        return batch
