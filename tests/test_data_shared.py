"""The real data in ../shared/data (or $MEMGPT_SHARED_DATA); skipped when absent."""

import hashlib
import os

import numpy as np
import pytest

from memgpt_jax.data import (
    ByteTokenizer,
    ClassificationIterator,
    PackedLMIterator,
    as_text,
    dataset_report,
    imdb_builder,
    load_split,
    prepare,
    text_builder,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MEMGPT_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
IMDB = os.path.join(SHARED, "aclImdb_dev.tar.gz")
SHAKESPEARE = os.path.join(SHARED, "tinyshakespeare.txt")


def needs(path):
    return pytest.mark.skipif(not os.path.exists(path), reason=f"{path} not present")


@pytest.fixture(scope="module")
def imdb_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("shared_tfds"))
    counts = prepare(imdb_builder(source=IMDB, data_dir=data_dir), echo=lambda _: None)
    return data_dir, counts


@pytest.mark.slow
@needs(IMDB)
def test_imdb_dev_archive_counts(imdb_dir):
    data_dir, counts = imdb_dir
    assert counts == {"train": 22_500, "validation": 2_500, "test": 2_000, "unsupervised": 50_000}
    report = dataset_report("memgpt_imdb/val10_seed0", data_dir)["report"]
    assert report["train_before_validation"] == {"neg": 12_500, "pos": 12_500}
    assert report["validation_held_out"] == {"neg": 1_250, "pos": 1_250}
    test = load_split("memgpt_imdb/val10_seed0", "test", data_dir)
    labels = np.array([test[i]["label"] for i in range(len(test))])
    assert (labels == 1).sum() == 1_000 and (labels == 0).sum() == 1_000


@pytest.mark.slow
@needs(IMDB)
def test_imdb_dev_pipelines_run(imdb_dir):
    data_dir, _ = imdb_dir
    source = load_split("memgpt_imdb/val10_seed0", "validation", data_dir)
    it = ClassificationIterator(source, ByteTokenizer(), batch_size=8, max_len=4096, num_epochs=1,
                                drop_remainder=False, process_index=0, process_count=1)
    batches = list(it)
    assert sum(int(b["example_valid"].sum()) for b in batches) == 2_500
    assert it.stats["examples"] == 2_500


@needs(SHAKESPEARE)
def test_tiny_shakespeare_loses_no_text(tmp_path):
    with open(SHAKESPEARE, "rb") as f:
        raw = f.read()
    assert hashlib.sha256(raw).hexdigest().startswith("86c4e6aa9db7c042")
    data_dir = str(tmp_path / "tfds")
    counts = prepare(text_builder("tinyshakespeare", [SHAKESPEARE], data_dir=data_dir), echo=lambda _: None)
    assert counts["train"] > 5_000 and counts["validation"] > 500
    chars = 0
    for split in ("train", "validation"):
        source = load_split("memgpt_text/tinyshakespeare", split, data_dir)
        chars += sum(len(as_text(source[i]["text"]).replace("\n", "")) for i in range(len(source)))
    assert chars == len(raw.decode("utf-8").replace("\n", ""))  # only blank separators dropped
    source = load_split("memgpt_text/tinyshakespeare", "train", data_dir)
    batch = next(PackedLMIterator(source, ByteTokenizer(), batch_size=8, seq_len=256,
                                  process_index=0, process_count=1))
    assert batch["loss_mask"].all()
