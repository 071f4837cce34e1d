"""Extractive QA batches: ``[BOS] question [SEP] context-window`` with answer spans.

Contexts longer than the room left by the question are cut into windows of
``max_len - len(question) - 2`` tokens that overlap by ``max_len - ... - stride``
tokens (``doc_stride`` is the step between window starts). Training uses, per
question, the first window that contains the first answer (questions whose
answer was cut by truncation are counted and skipped); evaluation uses every
window, and :func:`memgpt_jax.apps.qa.predict` keeps the best span over them.

Batch (``T`` = ``max_len``)::

    inputs int32 [B, T]; kv_valid bool [B, T]
    start, end   int32 [B]   answer token positions in ``inputs`` (inclusive)
    example_valid bool [B]

Records use our layout (:mod:`memgpt_jax.data.squad`) or tfds ``squad``'s
(``answers: {text, answer_start}``), so ``data.name="squad/v1.1"`` works where tfds
has prepared it (``tfds build squad --file_format array_record`` when online).

Token character offsets come from :func:`token_spans` (sentencepiece byte
offsets, bytes, or words for other tokenizers), so predicted spans map back to
exact substrings of the context.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.ordering import CursorIterator

QA_KEYS = ("inputs", "kv_valid", "start", "end", "example_valid")


def token_spans(tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, char_start, char_end)`` of ``text``: token ``i`` covers ``text[start[i]:end[i]]``
    (tokens inside one multi-byte character share its span)."""
    kind = getattr(tokenizer, "kind", "")
    if kind == "sentencepiece":
        proto = tokenizer._sp.encode(text, out_type="proto")
        raw = text.encode("utf-8")
        char_of_byte = np.zeros(len(raw) + 1, np.int64)
        pos = 0
        for ci, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            char_of_byte[pos:pos + n] = ci
            pos += n
        char_of_byte[len(raw)] = len(text)
        ids, starts, ends = [], [], []
        for piece in proto.pieces:
            ids.append(piece.id)
            b, e = piece.begin, max(piece.end, piece.begin)
            s_char, e_char = int(char_of_byte[b]), int(char_of_byte[e]) if e < len(raw) else len(text)
            if e > b and e < len(raw) and char_of_byte[e] == char_of_byte[e - 1]:
                e_char += 1  # ends inside a character
            starts.append(s_char)
            ends.append(max(e_char, s_char))
        # leading whitespace belongs to the piece ("▁word"); point spans at the word itself
        for i in range(len(ids)):
            while starts[i] < ends[i] and text[starts[i]].isspace():
                starts[i] += 1
        return np.asarray(ids, np.int32), np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    if kind == "bytes":
        ids, starts, ends = [], [], []
        for ci, ch in enumerate(text):
            for b in ch.encode("utf-8"):
                ids.append(b + specials.NUM_SPECIAL)
                starts.append(ci)
                ends.append(ci + 1)
        return np.asarray(ids, np.int32), np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    ids, starts, ends = [], [], []  # any tokenizer: word by word
    for m in re.finditer(r"\S+", text):
        word_ids = tokenizer.encode(m.group())
        ids.extend(int(i) for i in word_ids)
        starts.extend([m.start()] * len(word_ids))
        ends.extend([m.end()] * len(word_ids))
    return np.asarray(ids, np.int32), np.asarray(starts, np.int64), np.asarray(ends, np.int64)


def qa_answers(record: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """Gold answer texts and character starts of a record in our layout (``answers``,
    ``answer_starts``) or tfds ``squad``'s (``answers: {text, answer_start}``)."""
    answers = record.get("answers")
    if answers is None:
        return [], []
    if isinstance(answers, Mapping):
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
    else:
        texts, starts = answers, record.get("answer_starts", [])
    return [as_text(t) for t in list(texts)], [int(x) for x in list(starts)]


@dataclasses.dataclass
class QAFeature:
    """One window of one question."""

    example_id: str
    inputs: np.ndarray  # int32 [n]
    context_offset: int  # position in ``inputs`` of the window's first context token
    char_start: np.ndarray  # per window token
    char_end: np.ndarray
    start: int = 0  # answer token positions in ``inputs`` (0: not in this window)
    end: int = 0


def answer_tokens(char_start: np.ndarray, char_end: np.ndarray, a_start: int, a_end: int) -> tuple[int, int] | None:
    """Token indices (inclusive) covering characters ``[a_start, a_end)``."""
    inside = np.nonzero((char_end > a_start) & (char_start < a_end))[0]
    if len(inside) == 0:
        return None
    return int(inside[0]), int(inside[-1])


def make_features(record: Mapping[str, Any], tokenizer: Any, *, max_len: int, doc_stride: int,
                  max_question: int = 64, train: bool) -> list[QAFeature]:
    question = tokenizer.encode(as_text(record["question"]))[:max_question]
    context = as_text(record["context"])
    ids, cs, ce = token_spans(tokenizer, context)
    head = [specials.BOS_ID, *question.tolist(), specials.SEP_ID]
    room = max_len - len(head)
    if room < 8:
        raise ValueError(f"max_len {max_len} leaves {room} context tokens after the question")
    stride = max(1, min(doc_stride, room))
    starts = list(range(0, max(len(ids) - room, 0) + 1, stride))
    if starts[-1] + room < len(ids):
        starts.append(len(ids) - room)
    span = None
    answers, answer_starts = qa_answers(record)
    if answers:
        span = answer_tokens(cs, ce, answer_starts[0], answer_starts[0] + len(answers[0]))
    feats = []
    for w0 in starts:
        w1 = min(w0 + room, len(ids))
        f = QAFeature(example_id=as_text(record.get("id", "")),
                      inputs=np.asarray(head + ids[w0:w1].tolist(), np.int32), context_offset=len(head),
                      char_start=cs[w0:w1], char_end=ce[w0:w1])
        if span is not None and w0 <= span[0] and span[1] < w1:
            f.start, f.end = span[0] - w0 + len(head), span[1] - w0 + len(head)
        if train:
            if f.start:
                return [f]
            continue
        feats.append(f)
    return feats


def pad_features(feats: Sequence[QAFeature], batch_size: int, max_len: int) -> dict[str, np.ndarray]:
    batch = {
        "inputs": np.full((batch_size, max_len), specials.PAD_ID, np.int32),
        "kv_valid": np.zeros((batch_size, max_len), bool),
        "start": np.zeros((batch_size,), np.int32),
        "end": np.zeros((batch_size,), np.int32),
        "example_valid": np.zeros((batch_size,), bool),
    }
    batch["kv_valid"][:, 0] = True
    for r, f in enumerate(feats):
        n = len(f.inputs)
        batch["inputs"][r, :n] = f.inputs
        batch["kv_valid"][r, :n] = True
        batch["start"][r], batch["end"][r] = f.start, f.end
        batch["example_valid"][r] = True
    return batch


class QAIterator(CursorIterator):
    """Training (or span-loss evaluation) batches: one answer-bearing window per question.

    Deterministic and resumable like the other iterators (``get_state``/``set_state``)."""

    kind = "qa"

    def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer: Any, *, batch_size: int, max_len: int,
                 doc_stride: int = 128, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 drop_remainder: bool = True, process_index: int | None = None,
                 process_count: int | None = None) -> None:
        super().__init__(source, tokenizer, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, even=drop_remainder, process_index=process_index,
                         process_count=process_count, max_len=max_len, doc_stride=doc_stride,
                         drop_remainder=drop_remainder)
        self.max_len, self.doc_stride, self.drop_remainder = max_len, doc_stride, drop_remainder

    def _next_batch(self) -> dict[str, np.ndarray] | None:
        feats: list[QAFeature] = []
        rows = 0
        while rows < self.batch_size and (index := self._take()) is not None:
            if index < 0:  # shard padding
                feats.append(None)  # type: ignore[arg-type]
                rows += 1
                continue
            found = make_features(self.source[index], self.tokenizer, max_len=self.max_len,
                                  doc_stride=self.doc_stride, train=True)
            if not found:
                self.stats["answer_outside_windows_skipped"] += 1
                continue
            feats.append(found[0])
            rows += 1
        if rows == 0 or (rows < self.batch_size and self.drop_remainder):
            return None
        # real rows first; shard-padding rows stay invalid (example_valid False)
        return pad_features([f for f in feats if f is not None], self.batch_size, self.max_len)


def iter_eval_features(source: Sequence[Mapping[str, Any]], tokenizer: Any, *, max_len: int,
                       doc_stride: int) -> Iterator[tuple[Mapping[str, Any], list[QAFeature]]]:
    """Every window of every question (for span prediction)."""
    for i in range(len(source)):
        record = source[i]
        yield record, make_features(record, tokenizer, max_len=max_len, doc_stride=doc_stride, train=False)
