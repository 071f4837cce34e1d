"""SentencePiece tokenizer: train from texts, save/load the ``.model`` bytes.

The trained model reserves the shared special ids of
:mod:`memgpt_jax.data.specials` (pad 0, bos 1, eos 2, sep 3, unk 4) and uses
byte fallback, so no input is ever unrepresentable. ``model_bytes`` is the
serialized ``.model`` file: write it next to a checkpoint (or embed it through
``to_config()``) and :class:`SentencePieceTokenizer` loads it back unchanged.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

from memgpt_jax.data import specials

MODEL_TYPES = ("unigram", "bpe", "char", "word")


class SentencePieceTokenizer:
    """A loaded sentencepiece model that follows the :class:`Tokenizer` protocol."""

    kind = "sentencepiece"
    pad_id = specials.PAD_ID
    bos_id = specials.BOS_ID
    eos_id = specials.EOS_ID
    sep_id = specials.SEP_ID
    unk_id = specials.UNK_ID

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = bytes(model_bytes)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        expected = {
            specials.PAD_PIECE: specials.PAD_ID,
            specials.BOS_PIECE: specials.BOS_ID,
            specials.EOS_PIECE: specials.EOS_ID,
            specials.SEP_PIECE: specials.SEP_ID,
            specials.UNK_PIECE: specials.UNK_ID,
        }
        found = {piece: self._sp.piece_to_id(piece) for piece in expected}
        if found != expected or self._sp.unk_id() != specials.UNK_ID:
            raise ValueError(
                "this sentencepiece model does not use memgpt-jax's special ids "
                f"(expected {expected}, found {found}); train it with "
                "memgpt_jax.data.train_sentencepiece or `memgpt-jax data tokenizer train`"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SentencePieceTokenizer":
        with open(path, "rb") as f:
            return cls(f.read())

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.model`` file (the exact bytes this tokenizer was built from)."""
        with open(path, "wb") as f:
            f.write(self.model_bytes)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode many texts in one call (sentencepiece runs them in C++)."""
        return [np.asarray(ids, dtype=np.int32) for ids in self._sp.encode(list(texts))]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        arr = arr[(arr >= specials.NUM_SPECIAL) | (arr == specials.UNK_ID)]
        return self._sp.decode(arr.tolist())

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_b64": base64.b64encode(self.model_bytes).decode("ascii")}


def chunk_text(text: str, max_bytes: int) -> Iterator[str]:
    """Split ``text`` at spaces into pieces of at most ``max_bytes`` UTF-8 bytes.

    Sentencepiece's trainer silently ignores sentences longer than its
    ``max_sentence_length``; chunking first means no training text is lost.
    A single word longer than ``max_bytes`` is cut between characters.
    """
    if len(text.encode("utf-8")) <= max_bytes:
        if text.strip():
            yield text
        return
    piece: list[str] = []
    size = 0
    for word in text.split(" "):
        wlen = len(word.encode("utf-8")) + 1
        if wlen > max_bytes:  # pathological: no spaces for max_bytes bytes
            if piece:
                yield " ".join(piece)
                piece, size = [], 0
            cut = max_bytes // 4  # a UTF-8 character is at most 4 bytes
            for i in range(0, len(word), cut):
                yield word[i : i + cut]
            continue
        if size + wlen > max_bytes and piece:
            yield " ".join(piece)
            piece, size = [], 0
        piece.append(word)
        size += wlen
    if piece and " ".join(piece).strip():
        yield " ".join(piece)


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_sentence_length: int = 8192,
    input_sentence_size: int = 0,
    byte_fallback: bool = True,
    hard_vocab_limit: bool = True,
    seed: int = 0,
    num_threads: int | None = None,
    stats: dict | None = None,
) -> SentencePieceTokenizer:
    """Train a sentencepiece model on ``texts`` and return it, loaded.

    Args:
      texts: any iterable of strings (e.g. :func:`memgpt_jax.data.iter_texts`
        over a prepared split). Each is chunked to ``max_sentence_length`` bytes.
      vocab_size: total pieces including the 5 specials and 256 byte pieces.
      model_type: ``unigram`` (default), ``bpe``, ``char`` or ``word``.
      input_sentence_size: if > 0, train on a seeded sample of this many chunks.
      hard_vocab_limit: if False, ``vocab_size`` is an upper bound (tiny corpora).
      seed: seeds sentencepiece's sampling, so training is reproducible.
      stats: if given, filled with ``texts``, ``chunks``, ``bytes``, ``seconds``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    counts = {"texts": 0, "chunks": 0, "bytes": 0}

    def sentences() -> Iterator[str]:
        for text in texts:
            counts["texts"] += 1
            for chunk in chunk_text(text, max_sentence_length):
                counts["chunks"] += 1
                counts["bytes"] += len(chunk.encode("utf-8"))
                yield chunk

    chunks = sentences()
    first = next(chunks, None)
    if first is None:
        raise ValueError("train_sentencepiece got no non-empty text to train on")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=itertools.chain([first], chunks),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        max_sentence_length=max_sentence_length,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        byte_fallback=byte_fallback,
        hard_vocab_limit=hard_vocab_limit,
        pad_id=specials.PAD_ID,
        bos_id=specials.BOS_ID,
        eos_id=specials.EOS_ID,
        unk_id=specials.UNK_ID,
        pad_piece=specials.PAD_PIECE,
        bos_piece=specials.BOS_PIECE,
        eos_piece=specials.EOS_PIECE,
        unk_piece=specials.UNK_PIECE,
        control_symbols=[specials.SEP_PIECE],
        num_threads=num_threads or max(1, os.cpu_count() or 1),
        minloglevel=2,
    )
    if stats is not None:
        stats.update(counts, seconds=time.perf_counter() - start)
    return SentencePieceTokenizer(model.getvalue())
