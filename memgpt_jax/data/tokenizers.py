"""Tokenizers: one protocol, three implementations, one special-token table.

Every tokenizer here follows :class:`Tokenizer`: ``encode(str) -> int32 array``
(no special tokens added; pipelines add BOS/EOS), ``decode(ids) -> str``
(special ids are dropped), ``vocab_size`` and the special ids from
:mod:`memgpt_jax.data.specials`. ``to_config()`` returns a small JSON-able dict
that rebuilds the tokenizer exactly (sentencepiece embeds its ``.model`` bytes),
so a checkpoint can carry its tokenizer; :func:`tokenizer_from_config` and
:func:`load_tokenizer` are the inverse.

- :class:`ByteTokenizer`: UTF-8 bytes, ``id = byte + NUM_SPECIAL`` (LRA's
  byte-level text task; truncation to e.g. 4,096 bytes is the pipeline's job).
- :class:`ListOpsTokenizer`: the 15 ListOps words (digits, operators, ``]``).
- :class:`~memgpt_jax.data.spm.SentencePieceTokenizer`: trained with
  :func:`~memgpt_jax.data.spm.train_sentencepiece`.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from memgpt_jax.data import specials
from memgpt_jax.data.listops import LISTOPS_WORDS
from memgpt_jax.data.spm import SentencePieceTokenizer


@runtime_checkable
class Tokenizer(Protocol):
    """What pipelines, apps and checkpoints need from a tokenizer."""

    kind: str
    pad_id: int
    bos_id: int
    eos_id: int
    sep_id: int
    unk_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int32, 1-D) of ``text``, without BOS/EOS."""

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; special ids are skipped."""

    def to_config(self) -> dict[str, Any]:
        """JSON-able description that :func:`tokenizer_from_config` rebuilds."""


class _SpecialIds:
    """The shared special ids, as attributes (mixed into every tokenizer)."""

    pad_id = specials.PAD_ID
    bos_id = specials.BOS_ID
    eos_id = specials.EOS_ID
    sep_id = specials.SEP_ID
    unk_id = specials.UNK_ID


def _as_int_array(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64).reshape(-1)


class ByteTokenizer(_SpecialIds):
    """UTF-8 byte-level tokenizer: ``vocab_size == 256 + NUM_SPECIAL``.

    Lossless on any text; invalid UTF-8 produced by truncating mid-character is
    decoded with U+FFFD replacement characters rather than raising.
    """

    kind = "bytes"

    @property
    def vocab_size(self) -> int:
        return 256 + specials.NUM_SPECIAL

    def encode(self, text: str) -> np.ndarray:
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Ids of raw bytes (for sources that are bytes already)."""
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + specials.NUM_SPECIAL

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_int_array(ids)
        arr = arr[(arr >= specials.NUM_SPECIAL) & (arr < self.vocab_size)]
        return (arr - specials.NUM_SPECIAL).astype(np.uint8).tobytes().decode("utf-8", "replace")

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind}


class ListOpsTokenizer(_SpecialIds):
    """Word-level tokenizer for ListOps expressions (whitespace separated).

    Words outside the ListOps vocabulary map to ``unk_id`` (never silently
    dropped), and ``count_unknown`` reports how many a text has.
    """

    kind = "listops"

    def __init__(self) -> None:
        self._words = tuple(LISTOPS_WORDS)
        self._ids = {w: i + specials.NUM_SPECIAL for i, w in enumerate(self._words)}

    @property
    def vocab_size(self) -> int:
        return specials.NUM_SPECIAL + len(self._words)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self._ids.get(w, specials.UNK_ID) for w in text.split()], dtype=np.int32)

    def count_unknown(self, text: str) -> int:
        return sum(w not in self._ids for w in text.split())

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        out = []
        for i in _as_int_array(ids).tolist():
            if i == specials.UNK_ID:
                out.append(specials.UNK_PIECE)
            elif specials.NUM_SPECIAL <= i < self.vocab_size:
                out.append(self._words[i - specials.NUM_SPECIAL])
        return " ".join(out)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind}


def tokenizer_from_config(config: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_config()`` output."""
    kind = config.get("kind")
    if kind == ByteTokenizer.kind:
        return ByteTokenizer()
    if kind == ListOpsTokenizer.kind:
        return ListOpsTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer(base64.b64decode(config["model_b64"]))
    raise ValueError(
        f"unknown tokenizer kind {kind!r}; expected 'bytes', 'listops' or 'sentencepiece'"
    )


def load_tokenizer(spec: str | os.PathLike | bytes) -> Tokenizer:
    """Load a tokenizer from a name, a file, or serialized sentencepiece bytes.

    ``spec`` may be ``"bytes"`` or ``"listops"``; a path to a sentencepiece
    ``.model`` file; a path to a ``.json`` file written by :func:`save_tokenizer`;
    or the raw bytes of a sentencepiece model.
    """
    if isinstance(spec, (bytes, bytearray)):
        return SentencePieceTokenizer(bytes(spec))
    if isinstance(spec, str) and spec in (ByteTokenizer.kind, ListOpsTokenizer.kind):
        return tokenizer_from_config({"kind": spec})
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"tokenizer {path!r} is not a file and not one of 'bytes', 'listops'; "
            "train one with `memgpt-jax data tokenizer train ... --output PATH.model`"
        )
    with open(path, "rb") as f:
        blob = f.read()
    if path.endswith(".json"):
        return tokenizer_from_config(json.loads(blob.decode("utf-8")))
    return SentencePieceTokenizer(blob)


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write ``tokenizer.to_config()`` as JSON (sentencepiece bytes in base64)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer.to_config(), f)
