"""Input pipelines: packing invariants, determinism, sharding, exact resumption."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memgpt_jax.data import (
    CLS_KEYS,
    LM_KEYS,
    ByteTokenizer,
    ClassificationIterator,
    PackedLMIterator,
    PackedPairsIterator,
    QAIterator,
    Shard,
    epoch_order,
    specials,
    split_for_devices,
    to_global_arrays,
)

TOK = ByteTokenizer()
ONE = dict(process_index=0, process_count=1)


def docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [{"text": "".join(rng.choice(letters, n)), "label": i % 3} for i, n in enumerate(lengths)]


def pieces(batches):
    """(tokens incl. last target, starts_row) of every segment, in stream order."""
    out = []
    for b in batches:
        for r in range(b["inputs"].shape[0]):
            seg = b["segment_ids"][r]
            for s in range(1, seg.max(initial=0) + 1):
                where = np.flatnonzero(seg == s)
                toks = np.concatenate([b["inputs"][r, where], b["targets"][r, where[-1:]]])
                out.append((toks, where[0] == 0))
    return out


def check_row_layout(b, seq_len):
    assert set(b) == set(LM_KEYS)
    for k in LM_KEYS:
        assert b[k].shape == b["inputs"].shape and b[k].shape[1] == seq_len
    assert b["loss_mask"].dtype == bool and b["inputs"].dtype == np.int32
    np.testing.assert_array_equal(b["loss_mask"], b["segment_ids"] > 0)
    pad = b["segment_ids"] == 0
    assert (b["inputs"][pad] == 0).all() and (b["targets"][pad] == 0).all() and (b["positions"][pad] == 0).all()
    for r in range(b["inputs"].shape[0]):
        seg = b["segment_ids"][r]
        real = seg[seg > 0]
        assert (np.diff(real) >= 0).all() and (np.diff(real) <= 1).all()  # 1, 1, 2, 2, 2, 3 ...
        assert (np.flatnonzero(seg > 0) == np.arange(len(real))).all()  # padding only at the end
        for s in np.unique(real):
            np.testing.assert_array_equal(b["positions"][r][seg == s], np.arange((seg == s).sum()))
            # inputs[i+1] == targets[i] inside a segment: targets are the next tokens.
            idx = np.flatnonzero(seg == s)
            np.testing.assert_array_equal(b["inputs"][r, idx[1:]], b["targets"][r, idx[:-1]])


@settings(max_examples=40, deadline=None, database=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=25), seq_len=st.integers(2, 24),
       batch_size=st.integers(1, 3), split=st.booleans(), seed=st.integers(0, 5))
def test_packing_keeps_every_document_whole_and_in_order(lengths, seq_len, batch_size, split, seed):
    source = docs(lengths, seed)
    it = PackedLMIterator(source, TOK, batch_size=batch_size, seq_len=seq_len, seed=seed,
                          num_epochs=1, drop_remainder=False, split_documents=split, **ONE)
    batches = list(it)
    for b in batches:
        check_row_layout(b, seq_len)
    order = epoch_order(len(source), seed=seed, epoch=0, shuffle=True, shard=Shard(), even=False)
    expected = [np.concatenate([[specials.BOS_ID], TOK.encode(source[i]["text"]), [specials.EOS_ID]])
                for i in order if lengths[i] > 0]
    # Consecutive pieces of one document overlap by one token (a piece's last target is
    # the next piece's first input); only a document's last piece ends with EOS.
    rebuilt, current = [], None
    for toks, _ in pieces(batches):
        current = toks if current is None else np.concatenate([current, toks[1:]])
        if toks[-1] == specials.EOS_ID:
            rebuilt.append(current)
            current = None
    assert current is None
    assert len(rebuilt) == len(expected)
    for got, want in zip(rebuilt, expected):
        np.testing.assert_array_equal(got, want)
    assert it.stats["empty_documents_skipped"] == lengths.count(0)
    if not split:  # a document is cut only when it exceeds a whole row
        for toks, starts_row in pieces(batches):
            if toks[-1] != specials.EOS_ID:
                assert starts_row and len(toks) == seq_len + 1


def test_lm_rows_are_full_until_the_end_and_count_long_documents():
    source = docs([300, 5, 7, 200, 3] * 4)
    it = PackedLMIterator(source, TOK, batch_size=4, seq_len=64, num_epochs=1, drop_remainder=False, **ONE)
    batches = list(it)
    assert all(b["loss_mask"].all() for b in batches[:-1])
    assert it.stats["documents_longer_than_seq_len"] == 8
    assert it.stats["documents"] == 20 and it.stats["document_cuts"] > 0
    total = sum(int(b["loss_mask"].sum()) for b in batches)
    assert total == sum(len(d["text"]) + 1 for d in source)  # n + 2 tokens -> n + 1 pairs
    dropped = PackedLMIterator(source, TOK, batch_size=4, seq_len=64, num_epochs=1, **ONE)
    kept = list(dropped)
    assert len(kept) == len(batches) - 1
    assert dropped.stats["final_tokens_dropped"] == int(batches[-1]["loss_mask"].sum())


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


RESUME_SOURCE = docs(list(np.random.default_rng(1).integers(0, 90, size=37)))


def make_iterator(kind):
    """One of every pipeline, each on the shared CursorIterator base."""
    source = [{**r, "prompt": r["text"][:7], "target": r["text"][7:19], "question": "what is the end?",
               "context": r["text"] + " the end", "answers": ["the end"], "answer_starts": [len(r["text"]) + 1]}
              for r in RESUME_SOURCE]
    return {
        "lm": lambda: PackedLMIterator(source, TOK, batch_size=3, seq_len=32, seed=5, **ONE),
        "cls": lambda: ClassificationIterator(source, TOK, batch_size=4, max_len=24, seed=5, **ONE),
        "pairs": lambda: PackedPairsIterator(source, TOK, batch_size=2, seq_len=24, seed=5, **ONE),
        "qa": lambda: QAIterator(source, TOK, batch_size=4, max_len=48, doc_stride=16, seed=5, **ONE),
    }[kind]()


@pytest.mark.parametrize("kind", ["lm", "cls", "pairs", "qa"])
@pytest.mark.parametrize("stop", [0, 1, 7, 23])
def test_resume_from_saved_state_yields_identical_batches(kind, stop):
    straight = make_iterator(kind)
    expected = take(straight, stop + 15)  # crosses several epoch boundaries
    interrupted = make_iterator(kind)
    take(interrupted, stop)
    state = json.loads(json.dumps(interrupted.get_state()))  # must survive JSON
    resumed = make_iterator(kind)
    resumed.set_state(state)
    assert_same(take(resumed, 15), expected[stop:])
    assert resumed.get_state() == straight.get_state()
    assert resumed.batches == stop + 15


# Written by get_state() after 20 batches, before the pipelines shared CursorIterator:
# checkpoints hold states of this form, and they must keep restoring.
SAVED_STATES = {
    "lm": {"epoch": 1, "cursor": 4, "offset": 9, "batches": 20, "fingerprint": {
        "kind": "lm", "num_records": 37, "seed": 5, "shuffle": True, "batch_size": 3, "seq_len": 32,
        "add_bos": True, "split_documents": True, "process_index": 0, "process_count": 1, "vocab_size": 261}},
    "cls": {"epoch": 2, "cursor": 6, "batches": 20, "fingerprint": {
        "kind": "classification", "num_records": 37, "seed": 5, "shuffle": True, "batch_size": 4,
        "max_len": 24, "add_bos": True, "add_eos": False, "truncate": "right", "drop_remainder": True,
        "process_index": 0, "process_count": 1, "vocab_size": 261}},
}


@pytest.mark.parametrize("kind", sorted(SAVED_STATES))
def test_states_saved_by_earlier_versions_restore(kind):
    straight = make_iterator(kind)
    take(straight, 20)
    assert straight.get_state() == SAVED_STATES[kind]
    resumed = make_iterator(kind)
    resumed.set_state(SAVED_STATES[kind])
    assert_same(take(resumed, 5), take(straight, 5))


def test_restoring_state_from_another_pipeline_is_refused():
    source = docs([10] * 8)
    a = PackedLMIterator(source, TOK, batch_size=2, seq_len=16, seed=0, **ONE)
    b = PackedLMIterator(source, TOK, batch_size=2, seq_len=32, seed=0, **ONE)
    with pytest.raises(ValueError, match="seq_len: saved 16 vs now 32"):
        b.set_state(a.get_state())


def test_shuffle_is_deterministic_per_seed_and_changes_per_epoch():
    a = epoch_order(100, seed=3, epoch=0, shuffle=True, shard=Shard(), even=True)
    assert (a == epoch_order(100, seed=3, epoch=0, shuffle=True, shard=Shard(), even=True)).all()
    assert (a != epoch_order(100, seed=4, epoch=0, shuffle=True, shard=Shard(), even=True)).any()
    assert (a != epoch_order(100, seed=3, epoch=1, shuffle=True, shard=Shard(), even=True)).any()
    assert sorted(a) == list(range(100))
    assert (epoch_order(5, seed=0, epoch=0, shuffle=False, shard=Shard(), even=True) == np.arange(5)).all()


@pytest.mark.parametrize("count", [2, 3])
def test_training_shards_are_disjoint_and_equal(count):
    n = 50
    source = [{"text": f"r{i}", "label": i} for i in range(n)]
    seen = []
    for index in range(count):
        it = ClassificationIterator(source, TOK, batch_size=count, max_len=8, num_epochs=1,
                                    process_index=index, process_count=count)
        labels = np.concatenate([b["label"] for b in it])
        seen.append(labels)
        assert it.batch_size == 1
    assert len({len(s) for s in seen}) == 1
    flat = np.concatenate(seen)
    assert len(flat) == n - n % count and len(set(flat.tolist())) == len(flat)


def test_eval_shards_cover_every_example_once_with_equal_batch_counts():
    n, count = 23, 3
    source = [{"text": f"review {i}", "label": i} for i in range(n)]
    per_process = []
    for index in range(count):
        it = ClassificationIterator(source, TOK, batch_size=6, max_len=16, num_epochs=1, shuffle=False,
                                    drop_remainder=False, process_index=index, process_count=count)
        per_process.append(list(it))
    assert len({len(b) for b in per_process}) == 1
    labels = [int(l) for bs in per_process for b in bs for l in b["label"][b["example_valid"]]]
    assert sorted(labels) == list(range(n))
    for b in (b for bs in per_process for b in bs):
        assert set(b) == set(CLS_KEYS)
        assert b["kv_valid"].any(axis=1).all()  # no empty softmax row, even on padding
        assert (b["kv_valid"].sum(axis=1) == b["length"]).all()


def test_classification_truncation_padding_and_masks():
    source = [{"text": "x" * 50, "label": 1}, {"text": "hi", "label": 0}, {"text": "", "label": 1}]
    it = ClassificationIterator(source, TOK, batch_size=3, max_len=10, shuffle=False, num_epochs=1,
                                add_bos=True, add_eos=True, drop_remainder=False, **ONE)
    b = next(it)
    assert b["inputs"].shape == (3, 10) and b["inputs"].dtype == np.int32 and b["kv_valid"].dtype == bool
    assert b["inputs"][0, 0] == specials.BOS_ID and b["inputs"][0, -1] == specials.EOS_ID
    assert b["length"].tolist() == [10, 4, 2]
    assert b["inputs"][1, 1:3].tolist() == TOK.encode("hi").tolist() and (b["inputs"][1, 4:] == 0).all()
    assert b["kv_valid"][1].tolist() == [True] * 4 + [False] * 6
    assert b["label"].tolist() == [1, 0, 1] and b["example_valid"].all()
    assert it.stats["truncated"] == 1 and it.stats["tokens_truncated"] == 42 and it.stats["empty_texts"] == 1
    left = ClassificationIterator(source[:1], TOK, batch_size=1, max_len=5, truncate="left",
                                  add_bos=False, **ONE)
    assert TOK.decode(next(left)["inputs"][0]) == "xxxxx"


def test_unlabeled_examples_are_an_error_for_classification():
    it = ClassificationIterator([{"text": "a", "label": -1}], TOK, batch_size=1, max_len=4, **ONE)
    with pytest.raises(ValueError, match="unlabeled"):
        next(it)


def test_global_batch_must_split_over_processes():
    with pytest.raises(ValueError, match="multiple of the process count"):
        PackedLMIterator(docs([3]), TOK, batch_size=3, seq_len=8, process_index=0, process_count=2)


def test_device_layouts(n_devices):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    it = PackedLMIterator(docs([50] * 20), TOK, batch_size=n_devices * 2, seq_len=16, **ONE)
    batch = next(it)
    split = split_for_devices(batch, n_devices)
    assert split["inputs"].shape == (n_devices, 2, 16)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    arrays = to_global_arrays(batch, NamedSharding(mesh, P("data")))
    assert arrays["segment_ids"].shape == (n_devices * 2, 16)
    np.testing.assert_array_equal(np.asarray(arrays["targets"]), batch["targets"])
    per_key = {k: NamedSharding(mesh, P("data") if k == "inputs" else P()) for k in batch}
    placed = to_global_arrays(batch, per_key)
    assert placed["inputs"].sharding.spec == P("data") and placed["targets"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match="does not split"):
        split_for_devices(batch, n_devices * 2 + 1)


def test_length_buckets_pad_to_the_longest_and_resume_exactly():
    """Training batches drawn in length-sorted pools: each padded to the smallest bucket
    holding its longest text, every text once per epoch, the state exact mid-pool."""
    from memgpt_jax.data import ClassificationIterator
    from memgpt_jax.data.tokenizers import ByteTokenizer

    rng = np.random.default_rng(0)
    source = [{"text": "x" * int(n), "label": i % 2} for i, n in enumerate(rng.integers(1, 120, size=96))]
    make = lambda: ClassificationIterator(source, ByteTokenizer(), batch_size=4, max_len=128, seed=3,  # noqa: E731
                                          length_buckets=(16, 32, 64), pool_batches=4)
    it = make()
    epoch = [next(it) for _ in range(24)]  # 96 texts / 4 = one epoch
    assert sorted(int(n) for b in epoch for n in b["length"]) == sorted(len(r["text"]) + 1 for r in source)
    for b in epoch:
        t = b["inputs"].shape[1]
        assert t in (16, 32, 64, 128) and b["length"].max() <= t
        assert t == 16 or b["length"].max() > {32: 16, 64: 32, 128: 64}[t]  # the smallest that fits
    assert len({b["inputs"].shape[1] for b in epoch}) >= 3
    # resume mid-pool: the same batches as an uninterrupted run
    first = make()
    for _ in range(6):  # 1.5 pools
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    resumed = make()
    resumed.set_state(state)
    for _ in range(10):
        a, b = next(first), next(resumed)
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["label"], b["label"])
    with pytest.raises(ValueError, match="training"):
        ClassificationIterator(source, ByteTokenizer(), batch_size=4, max_len=128, shuffle=False,
                               drop_remainder=False, length_buckets=(16,))
