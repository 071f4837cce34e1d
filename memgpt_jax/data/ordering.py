"""Which record comes next: seeded epoch shuffles, process sharding, resumable cursors.

Every process computes the same permutation of the whole source for epoch
``e`` (``numpy.random.default_rng([seed, e])``) and takes every
``process_count``-th entry starting at ``process_index``, so the processes
together see each record once per epoch and no process needs to talk to
another. Two modes keep the processes in step:

- ``even=True`` (training): the permuted tail of ``n % process_count`` records
  is left out of that epoch (a different tail each epoch; counted in ``stats``).
- ``even=False`` (evaluation): each shard is padded to ``ceil(n / process_count)``
  with ``-1`` entries, which pipelines turn into padding examples, so every
  record is seen exactly once and all processes yield the same number of batches.

A :class:`EpochCursor`'s whole position is two integers (``epoch``, ``cursor``),
which is what makes pipeline state tiny, JSON-able and exactly resumable;
:class:`CursorIterator`, the base of every pipeline's iterator, builds on it.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's place among ``count`` data-loading processes."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"need 0 <= process_index < process_count, got {self.index}, {self.count}")


def process_shard(index: int | None = None, count: int | None = None) -> Shard:
    """The shard of this process: ``jax.process_index()/process_count()`` unless overridden."""
    if index is None or count is None:
        import jax  # lazy: the data commands and `memgpt-jax --help` run without importing JAX

        index = jax.process_index() if index is None else index
        count = jax.process_count() if count is None else count
    return Shard(int(index), int(count))


def local_batch_size(global_batch_size: int, shard: Shard) -> int:
    """Rows per process; the global batch must split evenly across processes."""
    if global_batch_size < 1 or global_batch_size % shard.count:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of "
            f"the process count {shard.count}"
        )
    return global_batch_size // shard.count


def epoch_order(num_records: int, *, seed: int, epoch: int, shuffle: bool, shard: Shard,
                even: bool) -> np.ndarray:
    """Record indices this process visits in ``epoch`` (``-1`` marks padding)."""
    order = (np.random.default_rng([seed, epoch]).permutation(num_records)
             if shuffle else np.arange(num_records))
    if even:
        order = order[: num_records - num_records % shard.count]
    else:
        per_shard = -(-num_records // shard.count)
        order = np.concatenate([order, np.full(per_shard * shard.count - num_records, -1)])
    return order[shard.index :: shard.count]


class EpochCursor:
    """Walks epoch orders one record at a time; state is ``(epoch, cursor)``."""

    def __init__(self, num_records: int, *, seed: int, shuffle: bool, shard: Shard,
                 even: bool, num_epochs: int | None) -> None:
        if num_records < 1:
            raise ValueError("the data source is empty: no records to iterate over")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
        self.num_records, self.seed, self.shuffle = num_records, seed, shuffle
        self.shard, self.even, self.num_epochs = shard, even, num_epochs
        self.epoch, self.cursor = 0, 0
        self.dropped_for_even_shards = 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    def _current_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._order = epoch_order(self.num_records, seed=self.seed, epoch=self.epoch,
                                      shuffle=self.shuffle, shard=self.shard, even=self.even)
            self._order_epoch = self.epoch
            if self.even:
                self.dropped_for_even_shards += self.num_records % self.shard.count
        if len(self._order) == 0:
            raise ValueError(
                f"{self.num_records} records cannot feed {self.shard.count} processes evenly"
            )
        return self._order

    def peek(self) -> int | None:
        """The record index at the cursor (``-1``: padding), or None when finished."""
        order = self._current_order()
        if self.cursor >= len(order):
            if self.num_epochs is not None and self.epoch + 1 >= self.num_epochs:
                return None
            self.epoch, self.cursor = self.epoch + 1, 0
            order = self._current_order()
        return int(order[self.cursor])

    def advance(self) -> None:
        self.cursor += 1

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def check_fingerprint(expected: Mapping[str, Any], state: Mapping[str, Any], what: str) -> None:
    """Refuse to restore ``state`` saved by a differently configured pipeline."""
    saved = state.get("fingerprint")
    if saved is None:
        raise ValueError(f"{what}: state has no fingerprint; was it made by get_state()?")
    diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{what}: cannot restore state from a different pipeline ({details})")


class CursorIterator(abc.ABC):
    """Base of every batch iterator here (LM, classification, prompt/target, QA).

    It owns what makes an iterator resumable, once: this process's shard and
    local batch size, the :class:`EpochCursor` over the source, the settings
    fingerprint, the batch count, ``stats``, and ``get_state``/``set_state``.
    State is ``{"epoch", "cursor", "batches", "fingerprint"}``: JSON-able, and
    restoring it into an identically configured iterator continues with exactly
    the batches the saved one would have produced.

    A subclass sets ``kind`` (the fingerprint's first entry), passes its own
    settings to ``__init__`` (they join the fingerprint), walks records with
    ``self._cursor`` (or :meth:`_take`), and implements :meth:`_next_batch`.
    One whose position is more than the cursor (the LM packer's offset into a
    document) adds it by extending ``get_state``/``set_state``.
    """

    kind: str

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer: Any, *, batch_size: int,
                 seed: int, shuffle: bool, num_epochs: int | None, even: bool,
                 process_index: int | None, process_count: int | None, **settings: Any) -> None:
        self.source, self.tokenizer = source, tokenizer
        self.shard = process_shard(process_index, process_count)
        self.batch_size = local_batch_size(batch_size, self.shard)
        self._cursor = EpochCursor(len(source), seed=seed, shuffle=shuffle, shard=self.shard,
                                   even=even, num_epochs=num_epochs)
        self._fingerprint = {
            "kind": self.kind, "num_records": len(source), "seed": seed, "shuffle": shuffle,
            "batch_size": batch_size, **settings,
            "process_index": self.shard.index, "process_count": self.shard.count,
            "vocab_size": int(tokenizer.vocab_size),
        }
        self.batches = 0
        self.stats: collections.Counter = collections.Counter()

    def get_state(self) -> dict[str, Any]:
        """JSON-able position after the last batch returned."""
        return {**self._cursor.state(), "batches": self.batches, "fingerprint": dict(self._fingerprint)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`get_state` of an identical pipeline)."""
        check_fingerprint(self._fingerprint, state, type(self).__name__)
        self._cursor.restore(state)
        self.batches = int(state["batches"])

    def _take(self) -> int | None:
        """The record index at the cursor (``-1``: shard padding), stepping past it; None at the end."""
        index = self._cursor.peek()
        if index is not None:
            self._cursor.advance()
        return index

    @abc.abstractmethod
    def _next_batch(self) -> dict[str, np.ndarray] | None:
        """The next batch of NumPy arrays, or None when the data is finished."""

    def __iter__(self) -> "CursorIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._next_batch()
        if batch is None:
            raise StopIteration
        self.batches += 1
        return batch
