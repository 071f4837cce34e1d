"""Plain-text corpus builder and generated ListOps."""

import collections

import pytest

from memgpt_jax.data import (
    DataError,
    ListOpsTokenizer,
    as_text,
    dataset_report,
    evaluate_listops,
    listops_builder,
    listops_config,
    load_split,
    prepare,
    text_builder,
)
from memgpt_jax.data.listops import apply_op, generate_example
from memgpt_jax.data.text_corpus import split_point


def quiet(_line):
    pass


def texts(name, split, data_dir):
    source = load_split(name, split, data_dir)
    return [as_text(source[i]["text"]) for i in range(len(source))]


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def paragraphs(n, tag):
    return "\n\n".join(f"{tag} paragraph {i}\nsecond line {i}" for i in range(n)) + "\n"


def test_text_corpus_split_is_contiguous_per_file_and_loses_nothing(tmp_path):
    a = write(tmp_path / "a.txt", paragraphs(20, "A"))
    b = write(tmp_path / "b.txt", paragraphs(10, "B"))
    data_dir = str(tmp_path / "tfds")
    counts = prepare(text_builder("two", [a, b], data_dir=data_dir), echo=quiet)
    assert counts["train"] + counts["validation"] == 30
    train, val = texts("memgpt_text/two", "train", data_dir), texts("memgpt_text/two", "validation", data_dir)
    assert {t.split()[0] for t in val} == {"A", "B"}  # each file contributes its tail
    # Every paragraph appears exactly once across the splits.
    expected = paragraphs(20, "A").split("\n\n") + paragraphs(10, "B").split("\n\n")
    assert sorted(t.strip() for t in train + val) == sorted(p.strip() for p in expected)
    last_train_a = max(int(t.split()[2]) for t in train if t.startswith("A"))
    first_val_a = min(int(t.split()[2]) for t in val if t.startswith("A"))
    assert first_val_a == last_train_a + 1  # a contiguous holdout, not a sample


def test_text_units_and_split_point(tmp_path):
    f = write(tmp_path / "c.txt", "l1\nl2\n\nl3\nl4\nl5\nl6\nl7\nl8\nl9\nl10\n")
    counts = prepare(text_builder("c", [f], data_dir=str(tmp_path / "t"), unit="line",
                                  validation_percent=20), echo=quiet)
    assert counts == {"train": 8, "validation": 2}
    text = "x" * 50 + "\n" + "y" * 49 + "\n"
    assert split_point(text, 50) == 51
    assert split_point(text, 0) == len(text)


def test_empty_file_is_skipped_and_reported_all_empty_is_an_error(tmp_path):
    full = write(tmp_path / "full.txt", paragraphs(10, "F"))
    empty = write(tmp_path / "empty.txt", "\n  \n")
    bad = write(tmp_path / "bad.txt", b"caf\xe9 au lait\n\nmore text here\n")
    data_dir = str(tmp_path / "tfds")
    prepare(text_builder("mix", [full, empty, bad], data_dir=data_dir), echo=quiet)
    report = dataset_report("memgpt_text/mix", data_dir)["report"]
    assert report["empty_files_skipped"] == {"empty.txt": 1}
    assert "bad.txt" in report["invalid_utf8_files"]
    assert any("caf\ufffd" in t for t in texts("memgpt_text/mix", "train", data_dir))
    with pytest.raises(DataError, match="every corpus file is empty"):
        prepare(text_builder("none", [empty], data_dir=data_dir), echo=quiet)
    with pytest.raises(DataError, match="not found: .*missing.txt"):
        prepare(text_builder("gone", [str(tmp_path / "missing.txt")], data_dir=data_dir), echo=quiet)


def test_reusing_a_name_with_other_settings_is_refused(tmp_path):
    f = write(tmp_path / "a.txt", paragraphs(10, "A"))
    data_dir = str(tmp_path / "tfds")
    prepare(text_builder("a", [f], data_dir=data_dir), echo=quiet)
    prepare(text_builder("a", [f], data_dir=data_dir), echo=quiet)  # same settings: reused
    with pytest.raises(DataError, match="prepared with"):
        prepare(text_builder("a", [f], data_dir=data_dir, unit="line"), echo=quiet)


@pytest.mark.parametrize("text,value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[SM 3 [MED 1 8 2 ] 6 ]", 1),
    ("[MED 1 4 ]", 2),
    ("[MIN [MAX 0 1 ] [SM 9 9 ] ]", 1),
])
def test_listops_evaluation(text, value):
    assert evaluate_listops(text) == value


def test_listops_evaluation_rejects_malformed():
    for bad in ("[MAX 1 2", "[MAX ]", "1 2", "[FOO 1 ]"):
        with pytest.raises(ValueError):
            evaluate_listops(bad)
    assert apply_op("[MED", [1, 2, 3, 9]) == 2


def test_listops_generation_is_deterministic_bounded_and_labelled_right():
    cfg = listops_config("tiny", min_length=30, max_length=120)
    examples = [generate_example(cfg, "train", i) for i in range(300)]
    assert examples == [generate_example(cfg, "train", i) for i in range(300)]
    assert generate_example(cfg, "validation", 0) != examples[0]
    tok = ListOpsTokenizer()
    for ex in examples:
        assert 30 <= ex["length"] <= cfg.max_length == 120
        assert len(tok.encode(ex["text"])) == ex["length"] and tok.count_unknown(ex["text"]) == 0
        assert evaluate_listops(ex["text"]) == ex["label"]
        assert 2 <= ex["depth"] <= cfg.max_depth
    labels = collections.Counter(ex["label"] for ex in examples)
    assert len(labels) == 10  # all ten classes occur


def test_listops_prepare_and_sizes(tmp_path):
    data_dir = str(tmp_path / "tfds")
    counts = prepare(listops_builder("tiny", data_dir=data_dir, train=60, validation=10, test=5), echo=quiet)
    assert counts == {"train": 60, "validation": 10, "test": 5}
    name = "memgpt_listops/n60-10-5_len16-256_d6_a6_p35_seed0"
    source = load_split(name, "train", data_dir)
    first = {as_text(source[i]["text"]) for i in range(len(source))}
    # The same settings regenerate identical data; example i never depends on the sizes.
    cfg = listops_config("tiny", train=60, validation=10, test=5)
    assert first == {generate_example(cfg, "train", i)["text"] for i in range(60)}
    with pytest.raises(ValueError, match="min_length"):
        listops_config("tiny", min_length=300)


def test_empty_splits_are_left_out_or_explained(tmp_path):
    one_line = write(tmp_path / "one.txt", "ab\n")  # the 10 % tail is just the newline
    data_dir = str(tmp_path / "tfds")
    assert prepare(text_builder("whole", [one_line], data_dir=data_dir, validation_percent=0),
                   echo=quiet) == {"train": 1}
    with pytest.raises(DataError, match="too short for a validation split"):
        prepare(text_builder("tail", [one_line], data_dir=data_dir), echo=quiet)
    counts = prepare(listops_builder("tiny", data_dir=data_dir, train=5, validation=2, test=0), echo=quiet)
    assert counts == {"train": 5, "validation": 2}
