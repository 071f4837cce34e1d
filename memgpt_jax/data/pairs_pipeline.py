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

**Multi-turn** (``multi_turn=True``, ``data.multi_turn``): for prompts that are chats
rendered by :func:`memgpt_jax.data.pairs.render_chat` (``User: ...`` / ``Assistant: ...``
lines), every earlier assistant reply is read the way the target is, ``Assistant:[SEP]
reply [EOS]``, and is trained on too; a conversation is then trained once, from its last
turn: a pair whose ``prompt + " " + target`` begins another pair's prompt is left out
(counted in ``stats["turns_in_longer_pairs"]``). Each reply's loss sees exactly the
context it sees as its own pair, so one pass over a conversation trains all its
replies for the price of the longest (KVRET: 2.6 replies per dialogue, each prompt
repeating the knowledge base). Decoding and ``memgpt-jax chat`` read a run's prompts the
same way (:func:`encode_prompt`). A reply is the rest of its ``Assistant:`` line.

Batch keys and shapes are those of :class:`~memgpt_jax.data.PackedLMIterator`
(``inputs, targets, segment_ids, positions, loss_mask``), so LM training,
LM distillation and evaluation work unchanged.
"""

from __future__ import annotations

import bisect
import collections
import re
from typing import Any, Mapping, Sequence

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.cls_pipeline import KEEP, truncate_tokens
from memgpt_jax.data.pairs import ASSISTANT
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.ordering import CursorIterator


_REPLY = re.compile(rf"^{re.escape(ASSISTANT)}(.*)$", re.M)  # a history line "Assistant: reply"


def chat_pieces(prompt: str) -> list[tuple[str, bool]]:
    """A rendered chat prompt as ``(text, is_reply)`` pieces: each earlier assistant reply
    (the rest of its ``Assistant: `` line) on its own, the text around it (``...Assistant:``,
    then ``\nUser: ...``) between. A prompt without replies is one piece."""
    pieces, at = [], 0
    for found in _REPLY.finditer(prompt):
        pieces.append((prompt[at:found.start(1)].rstrip(" "), False))
        pieces.append((found.group(1).strip(), True))
        at = found.end(1)
    pieces.append((prompt[at:], False))
    return [(text, reply) for text, reply in pieces if text or reply]


def _turn_tokens(tokenizer: Any, prompt: str, multi_turn: bool) -> tuple[list[int], list[bool]]:
    """``[BOS] prompt`` (no final SEP) and, per token, whether it is a reply token to predict."""
    tokens, labelled = [specials.BOS_ID], [False]
    for text, reply in chat_pieces(prompt) if multi_turn else [(prompt, False)]:
        ids = tokenizer.encode(text).tolist()
        if reply:
            ids = [specials.SEP_ID, *ids, specials.EOS_ID]
        tokens += ids
        labelled += [reply] * len(ids)
        if reply:
            labelled[-len(ids)] = False  # the SEP is read, not predicted
    return tokens, labelled


def encode_prompt(tokenizer: Any, prompt: str, multi_turn: bool = False) -> list[int]:
    """What the model reads before generating a target: ``[BOS] prompt [SEP]``; with
    ``multi_turn``, earlier assistant replies inside it as ``[SEP] reply [EOS]``."""
    return [*_turn_tokens(tokenizer, prompt, multi_turn)[0], specials.SEP_ID]


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


def multi_turn_tokens(tokenizer: Any, prompt: str, target: str, seq_len: int,
                      stats: collections.Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, labelled)``: ``[BOS] ...Assistant:[SEP] r1 [EOS] ...Assistant:[SEP] target [EOS]``
    and, per token, whether it is predicted (every reply's tokens and EOS). Too long: the
    oldest tokens after BOS go (the target, at the end, stays)."""
    tokens, labelled = _turn_tokens(tokenizer, prompt, True)
    t = tokenizer.encode(target).tolist() + [specials.EOS_ID]
    tokens, labelled = tokens + [specials.SEP_ID, *t], labelled + [False] + [True] * len(t)
    if len(tokens) > seq_len + 1:
        if stats is not None:
            stats["truncated_pairs"] += 1
        cut = len(tokens) - seq_len
        tokens, labelled = tokens[:1] + tokens[cut:], labelled[:1] + labelled[cut:]
    return np.asarray(tokens, np.int32), np.asarray(labelled, bool)


def last_turns(source: Sequence[Mapping[str, Any]], prompt_key: str = "prompt",
               target_key: str = "target") -> list[int]:
    """Indices of the pairs that do not begin a longer pair's prompt (``prompt + " " +
    target``): each conversation's last turn, which holds all of its replies."""
    records = [source[i] for i in range(len(source))]
    prompts = [as_text(r[prompt_key]) for r in records]
    ordered = sorted(prompts)
    kept = []
    for i, (prompt, r) in enumerate(zip(prompts, records)):
        head = f"{prompt} {as_text(r[target_key]).strip()}"
        at = bisect.bisect_left(ordered, head)
        if not (at < len(ordered) and ordered[at].startswith(head)):
            kept.append(i)
    return kept


class _Subset(Sequence):
    def __init__(self, source: Sequence[Mapping[str, Any]], indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Mapping[str, Any]:
        return self.source[self.indices[i]]


class PackedPairsIterator(CursorIterator):
    """Iterator of (packed) prompt/target LM batches over a random-access source."""

    kind = "pairs"

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer: Any, *, batch_size: int, seq_len: int,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = None, pack: bool = True,
                 prompt_key: str = "prompt", target_key: str = "target", drop_remainder: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 prompt_keep: str = "tail", prompt_loss: bool = False, multi_turn: bool = False) -> None:
        if multi_turn:
            if prompt_loss:
                raise ValueError("multi_turn trains on the replies; prompt_loss (every prompt token) excludes it")
            full = len(source)
            source = _Subset(source, last_turns(source, prompt_key, target_key))
        super().__init__(source, tokenizer, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, even=drop_remainder, process_index=process_index,
                         process_count=process_count, seq_len=seq_len, pack=pack,
                         drop_remainder=drop_remainder, **({"multi_turn": True} if multi_turn else {}))
        self.seq_len, self.pack, self.drop_remainder = seq_len, pack, drop_remainder
        self.prompt_key, self.target_key, self.prompt_keep = prompt_key, target_key, prompt_keep
        self.prompt_loss = prompt_loss  # the loss also predicts the prompt's tokens (and the separator)
        self.multi_turn = multi_turn
        if multi_turn:
            self.stats["turns_in_longer_pairs"] = full - len(source)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _tokens(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's tokens and, per token, whether it is predicted."""
        if index not in self._cache:
            if len(self._cache) > 100_000:
                self._cache.clear()
            r = self.source[index]
            prompt, target = as_text(r[self.prompt_key]), as_text(r[self.target_key])
            if self.multi_turn:
                self._cache[index] = multi_turn_tokens(self.tokenizer, prompt, target, self.seq_len, self.stats)
            else:
                tokens, n_prompt = pair_tokens(self.tokenizer, prompt, target, self.seq_len, self.stats,
                                               self.prompt_keep)
                first = 1 if self.prompt_loss else n_prompt  # else: target tokens and EOS only
                self._cache[index] = tokens, np.arange(len(tokens)) >= first
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
            tokens, labelled = self._tokens(index)
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
            batch["loss_mask"][row, sl] = labelled[1:]  # position i predicts token i + 1
            col += n
            pairs += 1
            self.stats["pairs"] += 1
            if not self.pack:
                row, col, seg = row + 1, 0, 0
        if pairs == 0 or (self.drop_remainder and row < B and self._cursor.peek() is None):
            return None
        return batch
