"""`memgpt-jax data ...` through memgpt_jax.cli.data.main and register()."""

import argparse

import pytest

from memgpt_jax.data import load_split, load_tokenizer
from memgpt_jax.cli.data import main, register
from memgpt_jax.data.testing import write_aclimdb


def test_register_adds_a_data_group_to_any_parser(capsys):
    parser = argparse.ArgumentParser(prog="memgpt-jax")
    subs = parser.add_subparsers(dest="command")
    register(subs)
    args = parser.parse_args(["data", "prepare", "imdb", "--source", "x.tar.gz"])
    assert args.source == "x.tar.gz" and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "prepare", "imdb", "--help"])
    help_text = capsys.readouterr().out
    assert "--source" in help_text and "MEMGPT_IMDB_SOURCE" in help_text and "--download" in help_text


def test_prepare_imdb_prints_counts(tmp_path, capsys):
    src = write_aclimdb(str(tmp_path / "imdb.tar.gz"))
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "prepare", "imdb", "--source", src, "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    for line in ("train                 36", "validation             4", "test                  12",
                 "unsupervised          10", "train_before_validation: 40"):
        assert line in out
    assert main(["data", "list", "--data-dir", data_dir, "-v"]) == 0
    assert "memgpt_imdb/val10_seed0: test 12, train 36, unsupervised 10, validation 4" in capsys.readouterr().out


def test_missing_source_exits_2_with_a_helpful_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEMGPT_IMDB_SOURCE", raising=False)
    code = main(["data", "prepare", "imdb", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--source PATH" in err and "MEMGPT_IMDB_SOURCE" in err


def test_prepare_text_and_listops_then_train_a_tokenizer(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"To be or not to be, line {i}.\nThat is the question." for i in range(200)))
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "prepare", "text", "--files", str(corpus), "--data-dir", data_dir]) == 0
    assert main(["data", "prepare", "listops", "--train", "30", "--validation", "5", "--test", "5",
                 "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "memgpt_text/corpus" in out and "train                 30 examples" in out
    model = tmp_path / "tok" / "shakes.model"
    assert main(["data", "tokenizer", "train", "--dataset", "memgpt_text/corpus", "--splits",
                 "train,validation", "--vocab-size", "300", "--soft-vocab-limit", "--output", str(model),
                 "--data-dir", data_dir]) == 0
    assert "on 200 texts" in capsys.readouterr().out
    tok = load_tokenizer(model)
    assert tok.decode(tok.encode("To be or not to be")) == "To be or not to be"
    assert len(load_split("memgpt_text/corpus", "validation", data_dir)) == 20
    code = main(["data", "tokenizer", "train", "--dataset", "memgpt_text/nothere", "--output",
                 str(model), "--data-dir", data_dir])
    assert code == 2 and "no prepared dataset 'memgpt_text/nothere'" in capsys.readouterr().err
