"""Tokenizers: shared special ids, byte/ListOps round trips, sentencepiece train/save/load."""

import io
import json
import random

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings, strategies as st

from memgpt_jax.data import (
    ByteTokenizer,
    ListOpsTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    save_tokenizer,
    specials,
    tokenizer_from_config,
    train_sentencepiece,
)
from memgpt_jax.data.spm import chunk_text

WORDS = "the movie was great bad actor plot boring fun scene ending music café naïve 日本".split()


def corpus(n=400, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def sp_tok():
    return train_sentencepiece(corpus(), vocab_size=400, hard_vocab_limit=False, num_threads=1)


def test_special_ids_defined_once_and_shared(sp_tok):
    assert (specials.PAD_ID, specials.BOS_ID, specials.EOS_ID, specials.SEP_ID, specials.UNK_ID) == (0, 1, 2, 3, 4)
    for tok in (ByteTokenizer(), ListOpsTokenizer(), sp_tok):
        assert isinstance(tok, Tokenizer)
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3, 4)
    for i, piece in enumerate(specials.SPECIAL_PIECES):
        assert sp_tok.id_to_piece(i) == piece


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(max_size=200))
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert len(ids) == len(text.encode("utf-8"))
    assert ids.min(initial=specials.NUM_SPECIAL) >= specials.NUM_SPECIAL and ids.max(initial=0) < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(np.concatenate([[specials.BOS_ID], ids, [specials.EOS_ID, specials.PAD_ID]])) == text


def test_byte_tokenizer_truncated_multibyte_decodes_with_replacement():
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    assert tok.vocab_size == 261
    assert tok.decode(ids[:1]) == "\ufffd"


def test_byte_ids_agree_with_sentencepiece_byte_fallback(sp_tok):
    byte_tok = ByteTokenizer()
    rare = "\u2603"  # snowman: not in the training corpus, so byte fallback is used
    sp_ids = sp_tok.encode(rare)
    assert sp_ids.tolist()[-3:] == byte_tok.encode(rare).tolist()


def test_listops_tokenizer():
    tok = ListOpsTokenizer()
    text = "[MAX 2 9 [MIN 4 7 ] 0 ]"
    ids = tok.encode(text)
    assert len(ids) == 9 and tok.vocab_size == 20
    assert tok.decode(ids) == text
    assert tok.count_unknown("[MAX 2 x ]") == 1
    assert tok.encode("[MAX 2 x ]")[2] == specials.UNK_ID


def test_sentencepiece_round_trip_and_serialization(tmp_path, sp_tok):
    text = "the movie was great café"
    ids = sp_tok.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= specials.NUM_SPECIAL
    assert sp_tok.decode(ids) == text
    # .model file, raw bytes, JSON config and the generic loader all rebuild it exactly.
    path = tmp_path / "tok.model"
    sp_tok.save(path)
    assert path.read_bytes() == sp_tok.model_bytes
    json_path = tmp_path / "tok.json"
    save_tokenizer(sp_tok, json_path)
    json.loads(json_path.read_text())
    for again in (load_tokenizer(path), load_tokenizer(sp_tok.model_bytes), load_tokenizer(json_path),
                  tokenizer_from_config(sp_tok.to_config())):
        assert again.vocab_size == sp_tok.vocab_size
        assert again.encode(text).tolist() == ids.tolist()
    assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
    with pytest.raises(FileNotFoundError, match="data tokenizer train"):
        load_tokenizer(tmp_path / "missing.model")


def test_sentencepiece_training_is_deterministic_and_respects_vocab_size():
    a = train_sentencepiece(corpus(), vocab_size=320, model_type="bpe", num_threads=1)
    b = train_sentencepiece(corpus(), vocab_size=320, model_type="bpe", num_threads=1)
    assert a.vocab_size == 320
    assert a.model_bytes == b.model_bytes


def test_sentencepiece_rejects_foreign_special_ids():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=model, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)  # spm defaults: unk=0
    with pytest.raises(ValueError, match="special ids"):
        SentencePieceTokenizer(model.getvalue())


def test_sentencepiece_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no non-empty text"):
        train_sentencepiece(["", "   "], vocab_size=100)


def test_long_texts_are_chunked_not_dropped():
    stats = {}
    long_text = " ".join(corpus(200))  # ~20 kB, above sentencepiece's sentence limit
    tok = train_sentencepiece([long_text], vocab_size=400, hard_vocab_limit=False,
                              max_sentence_length=1000, stats=stats, num_threads=1)
    assert stats["texts"] == 1 and stats["chunks"] > 10
    assert stats["bytes"] >= len(long_text.encode()) - stats["chunks"]
    assert tok.decode(tok.encode("great café")) == "great café"


@settings(max_examples=80, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("ab é日 ")), max_size=300), st.integers(8, 40))
def test_chunk_text_keeps_every_word_within_the_limit(text, max_bytes):
    chunks = list(chunk_text(text, max_bytes))
    assert all(len(c.encode("utf-8")) <= max_bytes for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
