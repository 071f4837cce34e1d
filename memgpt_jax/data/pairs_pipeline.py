"""Prompt -> target batches for a decoder-only model: loss on target tokens only.

A pair becomes ``[BOS] prompt [SEP] target [EOS]``; the model reads it left to
right and is trained to predict the target tokens and the final EOS only (the
``loss_mask`` is False on prompt positions and padding; ``prompt_loss=True``,
``data.prompt_loss``, counts the prompt's tokens too: LM training on the prompts). With ``pack=True``
several pairs share a row, each its own *segment* (``segment_ids`` 1, 2, ...;
``positions`` restart at 0), so attention never crosses a pair boundary; a pair
that does not fit the rest of a row starts the next one. Pairs longer than a row
lose prompt tokens from the left (the target is kept whole when it fits in
``seq_len - max_prompt_fraction`` of the row, else it is cut at the right); cuts
are counted in ``stats``.

Batch keys and shapes are those of :class:`~memgpt_jax.data.PackedLMIterator`
(``inputs, targets, segment_ids, positions, loss_mask``), so LM training,
LM distillation and evaluation work unchanged.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.cls_pipeline import KEEP, truncate_tokens
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.ordering import CursorIterator


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """What the model reads before generating a target: ``[BOS] prompt [SEP]``."""
    return [specials.BOS_ID, *tokenizer.encode(prompt).tolist(), specials.SEP_ID]


def keep_prompt(ids: Sequence[int], room: int, keep: str = "tail") -> list[int]:
    """At most ``room`` of ``ids``: the end (``"tail"``: dialogue, the latest turns), the
    beginning (``"head"``: an email's opening says what it is about) or both (``"head+tail"``)."""
    return truncate_tokens(ids, max(room, 0), KEEP[keep]).tolist()


def pair_tokens(tokenizer: Any, prompt: str, target: str, seq_len: int,
                stats: collections.Counter | None = None, prompt_keep: str = "tail") -> tuple[np.ndarray, int]:
    """``(tokens, n_prompt)`` with ``tokens = [BOS] p [SEP] t [EOS]`` cut to ``seq_len + 1``
    tokens (inputs and targets are its two shifted views); the first ``n_prompt``
    tokens are not predicted. A prompt too long keeps its ``prompt_keep`` end."""
    p = tokenizer.encode(prompt).tolist()
    t = tokenizer.encode(target).tolist() + [specials.EOS_ID]
    budget = seq_len + 1
    if 2 + len(p) + len(t) > budget:
        if stats is not None:
            stats["truncated_pairs"] += 1
        keep_t = min(len(t), budget - 2 - min(len(p), budget // 4))
        t = t[:keep_t]
        p = keep_prompt(p, budget - 2 - len(t), prompt_keep)
    tokens = [specials.BOS_ID, *p, specials.SEP_ID, *t]
    return np.asarray(tokens, np.int32), 2 + len(p)


class PackedPairsIterator(CursorIterator):
    """Iterator of (packed) prompt/target LM batches over a random-access source."""

    kind = "pairs"

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer: Any, *, batch_size: int, seq_len: int,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = None, pack: bool = True,
                 prompt_key: str = "prompt", target_key: str = "target", drop_remainder: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 prompt_keep: str = "tail", prompt_loss: bool = False) -> None:
        super().__init__(source, tokenizer, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, even=drop_remainder, process_index=process_index,
                         process_count=process_count, seq_len=seq_len, pack=pack,
                         drop_remainder=drop_remainder)
        self.seq_len, self.pack, self.drop_remainder = seq_len, pack, drop_remainder
        self.prompt_key, self.target_key, self.prompt_keep = prompt_key, target_key, prompt_keep
        self.prompt_loss = prompt_loss  # the loss also predicts the prompt's tokens (and the separator)
        self._cache: dict[int, tuple[np.ndarray, int]] = {}

    def _tokens(self, index: int) -> tuple[np.ndarray, int]:
        if index not in self._cache:
            if len(self._cache) > 100_000:
                self._cache.clear()
            r = self.source[index]
            self._cache[index] = pair_tokens(self.tokenizer, as_text(r[self.prompt_key]),
                                             as_text(r[self.target_key]), self.seq_len, self.stats,
                                             self.prompt_keep)
        return self._cache[index]

    def _next_batch(self) -> dict[str, np.ndarray] | None:
        B, T = self.batch_size, self.seq_len
        batch = {
            "inputs": np.full((B, T), specials.PAD_ID, np.int32),
            "targets": np.full((B, T), specials.PAD_ID, np.int32),
            "segment_ids": np.zeros((B, T), np.int32),
            "positions": np.zeros((B, T), np.int32),
            "loss_mask": np.zeros((B, T), bool),
        }
        row, col, seg, pairs = 0, 0, 0, 0
        while row < B:
            index = self._cursor.peek()
            if index is None:
                break
            if index < 0:  # shard padding (evaluation): an empty row
                self._cursor.advance()
                row, col, seg = row + 1, 0, 0
                continue
            tokens, n_prompt = self._tokens(index)
            n = len(tokens) - 1  # (input, target) pairs
            if col > 0 and (not self.pack or col + n > T):
                row, col, seg = row + 1, 0, 0
                continue
            self._cursor.advance()
            seg += 1
            sl = slice(col, col + n)
            batch["inputs"][row, sl] = tokens[:-1]
            batch["targets"][row, sl] = tokens[1:]
            batch["segment_ids"][row, sl] = seg
            batch["positions"][row, sl] = np.arange(n)
            first = col if self.prompt_loss else col + n_prompt - 1  # else: target tokens and EOS only
            batch["loss_mask"][row, first: col + n] = True
            col += n
            pairs += 1
            self.stats["pairs"] += 1
            if not self.pack:
                row, col, seg = row + 1, 0, 0
        if pairs == 0 or (self.drop_remainder and row < B and self._cursor.peek() is None):
            return None
        return batch
