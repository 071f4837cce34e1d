"""Grain against our input pipelines: throughput and exact resume, same data, same batches.

    pip install grain                      # not a memgpt-jax dependency; only this benchmark needs it
    python -m benchmarks.data_grain        # ~5 min on 2 cores
    python -m benchmarks.data_grain --workers 0 2 --threads 0 --batches 50 --repeats 3

IMDb comes from --imdb-source (default as ``benchmarks.data``: $MEMGPT_IMDB_SOURCE, else
$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz) and is prepared into a fresh temporary directory
(or read from --data-dir where it is already prepared). Both sides read the same tfds
``array_record`` data source and use the same sentencepiece tokenizer (--tokenizer, else an
8k unigram model trained on the first --spm-texts train reviews).

Pipelines (``B`` = --batch-size, ``T`` = --seq-len, IMDb train):

- classification: our :class:`ClassificationIterator` vs Grain
  ``MapDataset.source(src).shuffle(seed).repeat().map(row).batch(B)``;
- LM packing: our :class:`PackedLMIterator` vs Grain ``...map(document)`` +
  ``ConcatThenSplitIterDataset`` (split documents, segment ids, restarting positions) + ``batch(B)``.

Grain runs with each --workers (0: in this process; N: ``mp_prefetch`` worker processes)
and each --threads (reader threads per process; 16 is Grain's default, 0 reads in line like
ours). Checks: with shuffling off, Grain's first --check-batches batches equal ours bit for
bit (so tokenization, padding, masks, dtypes and shapes are the same). Resume: run the
--resume-split split (small, so the runs cross epochs), and at every --resume-every-th
batch up to --resume-at (only at --resume-at with worker processes, which take seconds
to start) restore the state saved there into a fresh iterator, take --resume-more
batches, and compare them with the uninterrupted run; once with the state passed as the
object and once through JSON, as checkpoints store it (ours: the training loop's metadata;
Grain: its own checkpoint handler). The same for LM packing after every row of a short
synthetic stream, where rows often end exactly at a document's end.
Writes benchmarks/results/data_grain.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Iterator

import numpy as np

from benchmarks.common import write_results
from benchmarks.data import default_imdb_source
from memgpt_jax import data as D
from memgpt_jax.data import specials

DATASET = "memgpt_imdb/val10_seed0"
PIPELINES = ("classification", "lm")


# -- Grain's side: the same rows as ours, as picklable functions for worker processes ------------
@dataclasses.dataclass(frozen=True)
class ClassificationRow:
    """One row of :class:`ClassificationIterator` (BOS, right truncation, no EOS)."""

    tokenizer: Any
    max_len: int

    def __call__(self, record: dict) -> dict[str, np.ndarray]:
        tokens = self.tokenizer.encode(D.as_text(record["text"]))[: self.max_len - 1]
        n = len(tokens) + 1
        inputs = np.full(self.max_len, specials.PAD_ID, np.int32)
        inputs[0], inputs[1:n] = specials.BOS_ID, tokens
        kv_valid = np.zeros(self.max_len, bool)
        kv_valid[:n] = True
        return {"inputs": inputs, "kv_valid": kv_valid, "length": np.int32(n),
                "label": np.int32(record["label"]), "example_valid": np.True_}


@dataclasses.dataclass(frozen=True)
class LMDocument:
    """A document's (input, target) pairs, as :class:`PackedLMIterator` packs them."""

    tokenizer: Any

    def __call__(self, record: dict) -> dict[str, np.ndarray]:
        tokens = self.tokenizer.encode(D.as_text(record["text"]))
        doc = np.concatenate([[specials.BOS_ID], tokens, [specials.EOS_ID]]).astype(np.int32)
        return {"inputs": doc[:-1], "targets": doc[1:]}


def lm_row(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ConcatThenSplit's packed row under our batch keys."""
    segment_ids = packed["inputs_segment_ids"]
    return {"inputs": packed["inputs"], "targets": packed["targets"], "segment_ids": segment_ids,
            "positions": packed["inputs_positions"], "loss_mask": segment_ids > 0}


def grain_dataset(pipeline: str, source, tokenizer, args, *, shuffle: bool, workers: int, threads: int):
    import grain

    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=args.seed)  # reshuffled every epoch of the repeat
    ds = ds.repeat(None)
    read = grain.ReadOptions(num_threads=threads)
    if pipeline == "classification":
        ds = ds.map(ClassificationRow(tokenizer, args.seq_len)).batch(args.batch_size, drop_remainder=True)
        ds = ds.to_iter_dataset(read)
    else:
        ds = grain.experimental.ConcatThenSplitIterDataset(
            ds.map(LMDocument(tokenizer)).to_iter_dataset(read),
            length_struct={"inputs": args.seq_len, "targets": args.seq_len}, split_full_length_features=True)
        ds = ds.map(lm_row).batch(args.batch_size, drop_remainder=True)
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return ds


def ours(pipeline: str, source, tokenizer, args, *, shuffle: bool) -> D.CursorIterator:
    common = dict(batch_size=args.batch_size, seed=args.seed, shuffle=shuffle, process_index=0, process_count=1)
    if pipeline == "classification":
        return D.ClassificationIterator(source, tokenizer, max_len=args.seq_len, **common)
    return D.PackedLMIterator(source, tokenizer, seq_len=args.seq_len, **common)


# -- measurements --------------------------------------------------------------------------------
def close(it: Iterator) -> None:
    """Stop Grain's worker processes and threads (ours hold none)."""
    if hasattr(it, "close"):
        it.close()


def same_batches(a: list[dict], b: list[dict]) -> int | None:
    """Index of the first batch that differs (keys, dtype or values), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x.keys() != y.keys() or any(x[k].dtype != y[k].dtype or not np.array_equal(x[k], y[k]) for k in x):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def throughput(make: Callable[[], Iterator], args) -> dict[str, Any]:
    """First-batch latency, then batches/s of --repeats runs of --batches after --warmup batches."""
    start = time.perf_counter()
    it = make()
    next(it)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        next(it)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        rates.append(args.batches / (time.perf_counter() - start))
    close(it)
    return {"first_batch_s": first, "rates": rates}


def rate_summary(rates: list[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(rates)
    return {"batches_per_s": median, "examples_per_s": median * batch_size,
            "min_batches_per_s": min(rates), "max_batches_per_s": max(rates)}


def resume(make: Callable[[], Iterator], args, points: list[int]) -> dict[str, Any]:
    """Restore, at each of ``points`` (batches taken), the state saved there into a fresh
    iterator, passed as the object and through JSON; take --resume-more batches and compare
    them with the uninterrupted run."""
    straight = make()
    states, expected = [], []
    for _ in range(max(points) + args.resume_more):
        expected.append(next(straight))
        states.append(copy.deepcopy(straight.get_state()))
    close(straight)
    out: dict[str, Any] = {"resume_points": len(points), "state_bytes": max(len(json.dumps(s)) for s in states)}
    restore_s = []
    for via in ("object", "json"):
        exact, first_wrong = 0, None
        for n in points:
            state = states[n - 1] if via == "object" else json.loads(json.dumps(states[n - 1]))
            start = time.perf_counter()
            resumed = make()
            resumed.set_state(copy.deepcopy(state))
            got = [next(resumed)]
            restore_s.append(time.perf_counter() - start)
            got += [next(resumed) for _ in range(args.resume_more - 1)]
            close(resumed)
            if same_batches(got, expected[n:n + args.resume_more]) is None:
                exact += 1
            elif first_wrong is None:
                first_wrong = n
        out[f"resume_exact_{via}"] = f"{exact}/{len(points)}"
        out[f"resume_first_wrong_{via}"] = first_wrong
    out["restore_s"] = statistics.median(restore_s)
    return out


def identical_to_ours(pipeline: str, train, tokenizer, args, **grain_settings) -> bool:
    """Unshuffled, Grain's first batches equal ours bit for bit."""
    mine = ours(pipeline, train, tokenizer, args, shuffle=False)
    it = iter(grain_dataset(pipeline, train, tokenizer, args, shuffle=False, **grain_settings))
    theirs = [next(it) for _ in range(args.check_batches)]
    close(it)
    return same_batches([next(mine) for _ in range(args.check_batches)], theirs) is None


def tokenizer_for(args, train) -> tuple[Any, str]:
    if args.tokenizer:
        return D.load_tokenizer(args.tokenizer), os.path.abspath(args.tokenizer)
    texts = (D.as_text(train[i]["text"]) for i in range(min(args.spm_texts, len(train))))
    return D.train_sentencepiece(texts, vocab_size=8000), f"sentencepiece unigram 8k, first {args.spm_texts} train reviews"


def short_documents_rows(args, grain_version: str) -> list[dict[str, Any]]:
    """Resume after every row of a stream of 2-12 token documents in rows of 8, where many
    rows end exactly at a document's end (rare with IMDb reviews in rows of 512)."""
    rng = np.random.default_rng(args.seed)
    source = [{"text": "x" * int(n)} for n in rng.integers(0, 11, 40)]
    tiny = argparse.Namespace(**{**vars(args), "batch_size": 1, "seq_len": 8, "resume_more": 10})
    tokenizer, points = D.ByteTokenizer(), list(range(1, 61))
    base = {"pipeline": "lm, short documents", "shape": "1 x 8"}
    return [
        {**base, "implementation": "ours", **resume(lambda: ours("lm", source, tokenizer, tiny, shuffle=True), tiny, points)},
        {**base, "implementation": f"grain {grain_version}, 0 workers, 0 threads",
         **resume(lambda: iter(grain_dataset("lm", source, tokenizer, tiny, shuffle=True, workers=0, threads=0)),
                  tiny, points)},
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_grain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imdb-source", default=None, help="aclImdb archive or directory")
    p.add_argument("--data-dir", default=None, help=f"where {DATASET} is already prepared (default: prepare it)")
    p.add_argument("--tokenizer", default=None, help="tokenizer spec (default: train an 8k sentencepiece)")
    p.add_argument("--spm-texts", type=int, default=5000)
    p.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="Grain worker processes to try")
    p.add_argument("--threads", type=int, nargs="+", default=[0, 16], help="Grain reader threads to try")
    p.add_argument("--batches", type=int, default=100, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--check-batches", type=int, default=20)
    p.add_argument("--resume-split", default="validation")
    p.add_argument("--resume-at", type=int, default=100, help="the last resume point (the only one with workers)")
    p.add_argument("--resume-every", type=int, default=10, help="resume points in this process: every Nth batch")
    p.add_argument("--resume-more", type=int, default=20, help="batches compared after each resume")
    args = p.parse_args(argv)
    try:
        import grain  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"this benchmark needs Grain ({e}); pip install grain") from e
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
    if args.data_dir:
        measure(args, args.data_dir)
        return
    with tempfile.TemporaryDirectory(prefix="memgpt_data_grain_") as work:
        data_dir = os.path.join(work, "tfds")
        D.prepare(D.imdb_builder(source=args.imdb_source or default_imdb_source(), data_dir=data_dir))
        measure(args, data_dir)


def measure(args, data_dir: str) -> None:
    import grain

    train = D.load_split(DATASET, "train", data_dir)
    small = D.load_split(DATASET, args.resume_split, data_dir)
    tokenizer, tokenizer_name = tokenizer_for(args, train)
    every_point = list(range(args.resume_every, args.resume_at + 1, args.resume_every))

    rows = []
    for pipeline in args.pipelines:
        base = {"pipeline": pipeline, "shape": f"{args.batch_size} x {args.seq_len}"}
        make_ours = functools.partial(ours, pipeline, train, tokenizer, args, shuffle=True)
        mine = {**base, "implementation": "ours", **throughput(make_ours, args),
                **resume(lambda: ours(pipeline, small, tokenizer, args, shuffle=True), args, every_point)}
        grain_rows = []
        for workers in args.workers:
            for threads in args.threads:
                settings = dict(workers=workers, threads=threads)
                row = {**base, "implementation": f"grain {grain.__version__}, {workers} workers, {threads} threads",
                       **throughput(lambda: iter(grain_dataset(pipeline, train, tokenizer, args, shuffle=True,
                                                               **settings)), args),
                       **resume(lambda: iter(grain_dataset(pipeline, small, tokenizer, args, shuffle=True, **settings)),
                                args, every_point if workers == 0 else [args.resume_at])}
                if workers == 0:  # with workers the batch order interleaves the workers' shards
                    row["identical_batches"] = identical_to_ours(pipeline, train, tokenizer, args, **settings)
                grain_rows.append(row)
                print(row["implementation"], f"{statistics.median(row['rates']):.1f} batches/s", flush=True)
        # ours is timed before and after Grain, so that a noisy neighbour weighs on both sides
        mine["rates"] += throughput(make_ours, args)["rates"]
        for row in [mine, *grain_rows]:
            row.update(rate_summary(row["rates"], args.batch_size))
            row["vs_ours"] = row["batches_per_s"] / mine["batches_per_s"]
            rows.append(row)
        print(pipeline, "ours", f"{mine['batches_per_s']:.1f} batches/s", flush=True)
    rows += short_documents_rows(args, grain.__version__)
    print(rows[-2:], flush=True)
    columns = ["pipeline", "shape", "implementation", "batches_per_s", "examples_per_s", "vs_ours",
               "min_batches_per_s", "max_batches_per_s", "first_batch_s", "identical_batches", "resume_points",
               "resume_exact_object", "resume_exact_json", "resume_first_wrong_json", "restore_s", "state_bytes"]
    meta = {"dataset": DATASET, "train_examples": len(train), "resume_split": args.resume_split,
            "resume_examples": len(small), "tokenizer": tokenizer_name, "vocab_size": tokenizer.vocab_size,
            "grain": grain.__version__, "batches_per_run": args.batches, "repeats": args.repeats,
            "warmup": args.warmup, "resume_at": args.resume_at, "resume_every": args.resume_every,
            "resume_more": args.resume_more, "check_batches": args.check_batches,
            "examples": "rows: one review each for classification, a packed row of seq_len tokens for lm"}
    print(write_results("data_grain", rows, columns, meta))


if __name__ == "__main__":
    main()
