"""IMDb builder on tiny official-layout archives the tests write."""

import os
import random

import numpy as np
import pytest

from memgpt_jax.data import DataError, as_text, dataset_report, imdb_builder, load_split, prepare
from memgpt_jax.data.imdb import read_aclimdb, validation_ids
from memgpt_jax.data.testing import aclimdb_files, write_aclimdb

NAME = "memgpt_imdb/val10_seed0"


def quiet(_line):
    pass


def prepare_tiny(tmp_path, files=None, as_dir=False, **kwargs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = write_aclimdb(str(tmp_path / ("src" if as_dir else "imdb.tar.gz")), files, as_dir=as_dir)
    data_dir = str(tmp_path / "tfds")
    counts = prepare(imdb_builder(source=src, data_dir=data_dir, **kwargs), echo=quiet)
    return counts, data_dir


def all_records(source):
    return [source[i] for i in range(len(source))]


def test_tiny_archive_splits_features_and_stratified_validation(tmp_path):
    counts, data_dir = prepare_tiny(tmp_path)
    assert counts == {"train": 36, "validation": 4, "test": 12, "unsupervised": 10}
    val = all_records(load_split(NAME, "validation", data_dir))
    assert sorted(r["label"] for r in val) == [0, 0, 1, 1]  # 10 % of 20 per label
    train = all_records(load_split(NAME, "train", data_dir))
    assert not {r["id"] for r in val} & {r["id"] for r in train}
    files = aclimdb_files()
    for r in train + val:
        rel = as_text(r["id"])
        assert as_text(r["text"]) == files[rel].decode()
        assert r["label"] == (1 if "/pos/" in rel else 0)
        assert r["rating"] == int(rel.split("_")[1].split(".")[0])
    unsup = all_records(load_split(NAME, "unsupervised", data_dir))
    assert {r["label"] for r in unsup} == {-1} and {r["rating"] for r in unsup} == {0}
    assert len(load_split(NAME, "train+validation", data_dir)) == 40
    report = dataset_report(NAME, data_dir)["report"]
    assert report["train_before_validation"] == {"neg": 20, "pos": 20}


def test_directory_source_gives_the_same_data(tmp_path):
    _, tar_dir = prepare_tiny(tmp_path / "a")
    _, dir_dir = prepare_tiny(tmp_path / "b", as_dir=True)
    for split in ("train", "validation", "test", "unsupervised"):
        a = sorted((as_text(r["id"]), r["text"]) for r in all_records(load_split(NAME, split, tar_dir)))
        b = sorted((as_text(r["id"]), r["text"]) for r in all_records(load_split(NAME, split, dir_dir)))
        assert a == b


def test_validation_choice_is_seeded_and_independent_of_order():
    ids = list(range(100, 200))
    chosen = validation_ids(ids, 1, 10, seed=0)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert validation_ids(shuffled, 1, 10, seed=0) == chosen
    assert len(chosen) == 10 and chosen <= set(ids)
    assert validation_ids(ids, 1, 10, seed=1) != chosen
    assert validation_ids(ids, 0, 10, seed=0) != chosen  # labels draw independently


def test_other_seed_and_percent_make_another_config(tmp_path):
    counts, data_dir = prepare_tiny(tmp_path, validation_percent=25, seed=3)
    assert counts["validation"] == 10 and counts["train"] == 30
    assert os.path.isdir(os.path.join(data_dir, "memgpt_imdb", "val25_seed3"))


def test_empty_reviews_and_invalid_utf8_are_counted(tmp_path):
    files = aclimdb_files()
    files["train/unsup/900_0.txt"] = b"   \n"
    files["test/neg/901_2.txt"] = b"bad \xff\xfe bytes"
    files["train/pos/notes.txt"] = b"not a review"
    counts, data_dir = prepare_tiny(tmp_path, files)
    assert counts["unsupervised"] == 10 and counts["test"] == 13
    report = dataset_report(NAME, data_dir)["report"]
    assert report["empty_reviews_skipped"] == {"unsupervised": 1}
    assert report["invalid_utf8_replaced"] == {"test": 1}
    assert report["unexpected_files_ignored"] == 1
    texts = [as_text(r["text"]) for r in all_records(load_split(NAME, "test", data_dir))]
    assert "bad \ufffd\ufffd bytes" in texts


def test_archive_missing_a_split_names_it(tmp_path):
    files = aclimdb_files(skip=("test/pos", "test/neg"))
    with pytest.raises(DataError, match=r"missing aclImdb/test/neg, aclImdb/test/pos.*--source"):
        prepare_tiny(tmp_path, files)


def test_missing_or_malformed_source_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMGPT_IMDB_SOURCE", raising=False)
    data_dir = str(tmp_path / "tfds")
    missing = str(tmp_path / "nope.tar.gz")
    with pytest.raises(DataError, match="nope.tar.gz.*does not exist.*--download"):
        prepare(imdb_builder(source=missing, data_dir=data_dir), echo=quiet)
    with pytest.raises(DataError, match="MEMGPT_IMDB_SOURCE not set"):
        prepare(imdb_builder(data_dir=data_dir), echo=quiet)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(DataError, match="could not read .*junk.tar.gz"):
        read_aclimdb(str(junk))


def test_source_from_environment(tmp_path, monkeypatch):
    src = write_aclimdb(str(tmp_path / "imdb.tar.gz"))
    monkeypatch.setenv("MEMGPT_IMDB_SOURCE", src)
    monkeypatch.setenv("MEMGPT_DATA_DIR", str(tmp_path / "env_tfds"))
    counts = prepare(imdb_builder(), echo=quiet)
    assert counts["train"] == 36
    assert len(load_split(NAME, "test")) == 12  # data dir from $MEMGPT_DATA_DIR too


def test_too_few_train_reviews_for_a_validation_split(tmp_path):
    with pytest.raises(DataError, match="cannot be split 90/10"):
        prepare_tiny(tmp_path, aclimdb_files(n_train=3))
