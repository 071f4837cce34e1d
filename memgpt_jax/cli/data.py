"""``memgpt-jax data ...``: prepare datasets, train tokenizers, list what is prepared.

:func:`register` adds the ``data`` command group to an argparse subparsers
object; every leaf command sets ``func``, a handler ``func(args) -> int`` (the
exit code; data problems print a message to stderr and return 2). :func:`main`
runs the group on its own (``python -m memgpt_jax.cli.data ...``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from typing import Callable, Sequence

from memgpt_jax.data import prepared
from memgpt_jax.data.listops import PRESETS
from memgpt_jax.progress import bar as progress_bar

_DATA_DIR_HELP = (f"where prepared datasets go (default: ${prepared.DATA_DIR_ENV}, then "
                  "$TFDS_DATA_DIR, then ~/tensorflow_datasets)")


def _quiet_absl() -> None:
    try:
        from absl import logging as absl_logging  # lazy: only commands that run tfds need it quiet

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with tfds; nothing to quiet otherwise
        pass


def _handler(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn DataError / bad settings into a message and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        _quiet_absl()
        try:
            return run(args)
        except (prepared.DataError, ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapped


def _prepare_imdb(args: argparse.Namespace) -> int:
    from memgpt_jax.data.imdb import imdb_builder  # lazy: keeps --help fast

    start = time.perf_counter()
    builder = imdb_builder(source=args.source, download=args.download, data_dir=args.data_dir,
                           validation_percent=args.validation_percent, seed=args.seed)
    prepared.prepare(builder)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _prepare_text(args: argparse.Namespace) -> int:
    from memgpt_jax.data.text_corpus import text_builder  # lazy: keeps --help fast

    name = args.name or re.sub(r"[^A-Za-z0-9_.\-]", "_", os.path.splitext(os.path.basename(args.files[0]))[0])
    start = time.perf_counter()
    builder = text_builder(name, args.files, data_dir=args.data_dir,
                           validation_percent=args.validation_percent, unit=args.unit)
    prepared.prepare(builder)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _prepare_squad(args: argparse.Namespace) -> int:
    from memgpt_jax.data.squad import squad_builder  # lazy: keeps --help fast

    start = time.perf_counter()
    files = {"train": args.train, "validation": args.validation, "test": args.test}
    builder = squad_builder(files=files, name=args.name, data_dir=args.data_dir,
                            holdout_articles=args.holdout_articles, seed=args.seed)
    prepared.prepare(builder)
    print(f"done in {time.perf_counter() - start:.1f} s (dataset memgpt_squad/{args.name})")
    return 0


def _prepare_pairs(args: argparse.Namespace) -> int:
    from memgpt_jax.data.pairs import pairs_builder, parse_split_spec  # lazy: keeps --help fast

    splits = dict(parse_split_spec(s) for s in args.split)
    start = time.perf_counter()
    builder = pairs_builder(args.name, splits, data_dir=args.data_dir)
    prepared.prepare(builder)
    print(f"done in {time.perf_counter() - start:.1f} s (dataset memgpt_pairs/{args.name})")
    return 0


def _prepare_aeslc(args: argparse.Namespace) -> int:
    from memgpt_jax.data.aeslc import aeslc_builder  # lazy: keeps --help fast

    start = time.perf_counter()
    prepared.prepare(aeslc_builder(args.source, data_dir=args.data_dir))
    print(f"done in {time.perf_counter() - start:.1f} s (dataset memgpt_aeslc/aeslc)")
    return 0


def _prepare_dialogue(args: argparse.Namespace) -> int:
    from memgpt_jax.data.dialogue import dialogue_builder  # lazy: keeps --help fast

    start = time.perf_counter()
    prepared.prepare(dialogue_builder(args.source, name=args.name, data_dir=args.data_dir))
    print(f"done in {time.perf_counter() - start:.1f} s (dataset memgpt_dialogue/{args.name})")
    return 0


def _prepare_listops(args: argparse.Namespace) -> int:
    from memgpt_jax.data.listops import listops_builder  # lazy: keeps --help fast

    overrides = {k: getattr(args, k) for k in ("train", "validation", "test", "min_length",
                                               "max_length", "max_depth", "max_args",
                                               "branch_prob", "seed")}
    start = time.perf_counter()
    builder = listops_builder(args.preset, data_dir=args.data_dir, **overrides)
    prepared.prepare(builder)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _train_tokenizer(args: argparse.Namespace) -> int:
    from memgpt_jax.data.spm import train_sentencepiece  # lazy: keeps --help fast

    splits = [s for s in args.splits.split(",") if s]
    sources = [prepared.load_split(args.dataset, s, args.data_dir) for s in splits]
    total = sum(len(s) for s in sources)
    texts = prepared.iter_texts(sources, key=args.text_key)
    if args.max_texts:
        texts = itertools.islice(texts, args.max_texts)
        total = min(total, args.max_texts)
    print(f"training a {args.model_type} sentencepiece model, vocab {args.vocab_size:,}, "
          f"on {total:,} texts of {args.dataset} [{', '.join(splits)}]", flush=True)
    texts = _with_progress(texts, total)
    stats: dict = {}
    tokenizer = train_sentencepiece(
        texts, vocab_size=args.vocab_size, model_type=args.model_type,
        character_coverage=args.character_coverage, input_sentence_size=args.input_sentence_size,
        seed=args.seed, hard_vocab_limit=not args.soft_vocab_limit, stats=stats)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tokenizer.save(args.output)
    print(f"trained on {stats['texts']:,} texts ({stats['chunks']:,} chunks, "
          f"{stats['bytes'] / 1e6:.1f} MB) in {stats['seconds']:.1f} s; "
          f"vocab {tokenizer.vocab_size:,}; wrote {args.output}")
    return 0


def _with_progress(texts, total: int):
    """Show a bar while sentencepiece reads ``texts``, then say that fitting started."""
    yield from progress_bar(texts, total=total, desc="reading texts", unit=" texts", mininterval=1.0)
    print("fitting the vocabulary (minutes for ~100 MB of text) ...", flush=True)


def _list(args: argparse.Namespace) -> int:
    names = prepared.list_prepared(args.data_dir)
    root = prepared.resolve_data_dir(args.data_dir)
    if not names:
        print(f"no prepared datasets under {root}")
        return 0
    print(f"prepared datasets under {root}:")
    for name in names:
        info = prepared.dataset_report(name, args.data_dir)
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(info["splits"].items()))
        print(f"  {name}: {counts}")
        if args.verbose:
            for line in prepared.format_report(info["report"]):
                print(f"      {line}")
    return 0


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` (prepare / tokenizer / list) to ``subparsers``; return its parser."""
    data = subparsers.add_parser(
        "data", help="prepare datasets (tfds, array_record) and train tokenizers",
        description="Prepare tfds datasets (IMDb, text corpora, ListOps) and train tokenizers.")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    prepare = sub.add_parser("prepare", help="generate a dataset into the data dir",
                             description="Generate a dataset (array_record) and print its split counts.")
    psub = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    imdb = psub.add_parser(
        "imdb", help="IMDb reviews from an aclImdb archive or directory",
        description="IMDb reviews (train/validation/test/unsupervised) from the official aclImdb "
                    "layout. Example: memgpt-jax data prepare imdb --source ../shared/data/aclImdb_dev.tar.gz")
    imdb.add_argument("--source", default=None,
                      help="aclImdb .tar.gz or extracted directory (default: $MEMGPT_IMDB_SOURCE)")
    imdb.add_argument("--download", action="store_true",
                      help="fetch the official archive when no source is given (needs network)")
    imdb.add_argument("--validation-percent", type=int, default=10,
                      help="percent of each train label held out as validation (default: %(default)s)")
    imdb.add_argument("--seed", type=int, default=0, help="seed of the validation carve-out (default: %(default)s)")
    _add_data_dir(imdb)
    imdb.set_defaults(func=_handler(_prepare_imdb))

    text = psub.add_parser(
        "text", help="a plain-text corpus from UTF-8 files",
        description="A corpus of UTF-8 text files; the tail of each file becomes validation. "
                    "Example: memgpt-jax data prepare text --files ../shared/data/tinyshakespeare.txt")
    text.add_argument("--files", nargs="+", required=True, help="one or more UTF-8 text files")
    text.add_argument("--name", default=None, help="dataset config name (default: first file's stem)")
    text.add_argument("--validation-percent", type=int, default=10,
                      help="percent of each file (its tail) held out as validation (default: %(default)s)")
    text.add_argument("--unit", choices=("paragraph", "line", "file"), default="paragraph",
                      help="what one example is (default: %(default)s)")
    _add_data_dir(text)
    text.set_defaults(func=_handler(_prepare_text))

    squad = psub.add_parser(
        "squad", help="extractive QA from SQuAD-format JSON files",
        description="Extractive QA (SQuAD v1.1/v2.0 JSON) into memgpt_squad/NAME. Example: memgpt-jax data "
                    "prepare squad --train train-v1.1.json --validation dev-v1.1.json --name squad_v1")
    squad.add_argument("--train", default=None, help="SQuAD-format JSON for the train split")
    squad.add_argument("--validation", default=None, help="SQuAD-format JSON for the validation split")
    squad.add_argument("--test", default=None, help="SQuAD-format JSON for the test split (optional)")
    squad.add_argument("--name", default="custom", help="dataset config name (default: %(default)s)")
    squad.add_argument("--holdout-articles", type=int, default=0, metavar="N",
                       help="carve the validation split out of --train: N whole articles, chosen with --seed "
                            "(no article's questions are split; default: %(default)s = off)")
    squad.add_argument("--seed", type=int, default=0, help="seed of --holdout-articles (default: %(default)s)")
    _add_data_dir(squad)
    squad.set_defaults(func=_handler(_prepare_squad))

    pairs = psub.add_parser(
        "pairs", help="prompt -> target pairs from JSONL or parallel text files",
        description="Prompt/target pairs (translation, summarization, dialogue) into memgpt_pairs/NAME. "
                    "JSONL lines hold {\"prompt\", \"target\"} or a chat ({\"turns\": [...]} or "
                    "{\"messages\": [{\"role\", \"content\"}]}); parallel files pair line i of SOURCE with "
                    "line i of TARGET (.gz allowed). Example: memgpt-jax data prepare pairs --name multi30k_en_de "
                    "--split train=train.en.gz,train.de.gz --split val=val.en.gz,val.de.gz")
    pairs.add_argument("--name", required=True, help="dataset config name")
    pairs.add_argument("--split", action="append", required=True, metavar="NAME=FILES",
                       help="NAME=FILE.jsonl or NAME=SOURCE,TARGET (repeat per split)")
    _add_data_dir(pairs)
    pairs.set_defaults(func=_handler(_prepare_pairs))

    aeslc = psub.add_parser(
        "aeslc", help="AESLC email -> subject line (official layout)",
        description="AESLC (enron_subject_line/{train,dev,test}/*.subject) into memgpt_aeslc/aeslc: prompt = "
                    "the email body, target = its subject, references = the subject and the annotators' "
                    "subjects. Example: memgpt-jax data prepare aeslc --source "
                    "../shared/data/aeslc/aeslc_train_dev.tar.gz")
    aeslc.add_argument("--source", required=True, help="the AESLC .tar.gz or its extracted directory")
    _add_data_dir(aeslc)
    aeslc.set_defaults(func=_handler(_prepare_aeslc))

    dialogue = psub.add_parser(
        "dialogue", help="knowledge-grounded dialogues (ConvLab-3 unified JSON, e.g. KVRET)",
        description="Unified-format dialogues into memgpt_dialogue/NAME: one example per system turn, prompt = "
                    "its knowledge base + the dialogue so far, target = the system utterance, with the "
                    "entities it mentions for scoring. Example: memgpt-jax data prepare dialogue --source "
                    "../shared/data/kvret/kvret_train_validation.json.gz --name kvret")
    dialogue.add_argument("--source", required=True, help="a unified-format .json or .json.gz (a list of dialogues)")
    dialogue.add_argument("--name", default="kvret", help="dataset config name (default: %(default)s)")
    _add_data_dir(dialogue)
    dialogue.set_defaults(func=_handler(_prepare_dialogue))

    listops = psub.add_parser(
        "listops", help="generated ListOps (no download)",
        description="ListOps as in Long Range Arena, generated from a seed. Presets: tiny "
                    "(2k/200/200, 16-256 tokens, seconds), lra (96k/2k/2k, 500-2,000 tokens). "
                    "Any option below overrides the preset (the config is then named after them).")
    listops.add_argument("--preset", choices=("tiny", "lra"), default="tiny",
                         help="sizes and shape to start from (default: %(default)s)")
    for flag, kind in (("train", int), ("validation", int), ("test", int), ("min-length", int),
                       ("max-length", int), ("max-depth", int), ("max-args", int),
                       ("branch-prob", float), ("seed", int)):
        key = flag.replace("-", "_")
        presets = ", ".join(f"{p}: {PRESETS[p].get(key, 0)}" for p in PRESETS)
        listops.add_argument(f"--{flag}", type=kind, default=None, help=f"preset values {presets}")
    _add_data_dir(listops)
    listops.set_defaults(func=_handler(_prepare_listops))

    tok = sub.add_parser("tokenizer", help="train sentencepiece tokenizers")
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = tsub.add_parser(
        "train", help="train a sentencepiece model on prepared splits",
        description="Train sentencepiece on the texts of prepared splits; writes the .model file. "
                    "Example: memgpt-jax data tokenizer train --dataset memgpt_imdb/val10_seed0 "
                    "--splits train,unsupervised --vocab-size 8000 --output imdb8k.model")
    train.add_argument("--dataset", required=True, help="prepared dataset, builder/config")
    train.add_argument("--splits", "--split", default="train", help="comma-separated splits to train on (default: %(default)s)")
    train.add_argument("--text-key", default="text",
                       help="feature(s) holding the text, comma-separated, e.g. prompt,target (default: %(default)s)")
    train.add_argument("--vocab-size", type=int, default=8000,
                       help="pieces including 5 specials and 256 bytes (default: %(default)s)")
    train.add_argument("--model-type", choices=("unigram", "bpe", "char", "word"), default="unigram",
                       help="sentencepiece algorithm (default: %(default)s)")
    train.add_argument("--character-coverage", type=float, default=0.9995,
                       help="share of characters kept as pieces, the rest via bytes (default: %(default)s)")
    train.add_argument("--input-sentence-size", type=int, default=0,
                       help="train on a seeded sample of this many text chunks (0: all)")
    train.add_argument("--max-texts", type=int, default=0, help="use only the first N texts (0: all)")
    train.add_argument("--soft-vocab-limit", action="store_true",
                       help="allow a smaller vocabulary when the corpus is too small")
    train.add_argument("--seed", type=int, default=0, help="sentencepiece sampling seed (default: %(default)s)")
    train.add_argument("--output", required=True, help="path of the .model file to write")
    _add_data_dir(train)
    train.set_defaults(func=_handler(_train_tokenizer))

    lst = sub.add_parser("list", help="list prepared datasets with split counts")
    lst.add_argument("-v", "--verbose", action="store_true", help="also print preparation reports")
    _add_data_dir(lst)
    lst.set_defaults(func=_handler(_list))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``data ...`` alone: ``main(["data", "prepare", "listops"])``."""
    parser = argparse.ArgumentParser(prog="memgpt-jax")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
