"""Data benchmark: IMDb preparation, sentencepiece training, pipeline throughput.

    python -m benchmarks.data                      # everything (~4 min on 2 cores)
    python -m benchmarks.data --vocab-sizes 8000   # fewer sentencepiece runs
    python -m benchmarks.data --skip-spm           # no tokenizer training (bytes only)

The IMDb archive comes from --imdb-source, else $MEMGPT_IMDB_SOURCE, else
$MEMGPT_SHARED_DATA/aclImdb_dev.tar.gz (MEMGPT_SHARED_DATA defaults to
<repo>/../shared/data). Prepared data goes to a fresh temporary directory
(--work-dir to keep it). Writes benchmarks/results/data.{json,md} and the
"Data" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.common import RESULTS_DIR, machine, machine_line, rebuild_results_md  # noqa: E402
from memgpt_jax import data as D  # noqa: E402



def default_imdb_source() -> str:
    if os.environ.get(D.IMDB_SOURCE_ENV):
        return os.environ[D.IMDB_SOURCE_ENV]
    shared = os.environ.get("MEMGPT_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
    return os.path.join(shared, "aclImdb_dev.tar.gz")


def throughput(make_iter, *, batches: int, repeats: int) -> dict:
    """Median batches/s over ``repeats`` timed runs of ``batches`` each, after warm-up."""
    it = make_iter()
    for _ in range(20):
        next(it)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches / (time.perf_counter() - start))
    return {"batches_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "runs": repeats, "batches_per_run": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imdb-source", default=None)
    parser.add_argument("--work-dir", default=None, help="keep prepared data here (default: temp dir)")
    parser.add_argument("--vocab-sizes", default="8000,16000")
    parser.add_argument("--skip-spm", action="store_true")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="memgpt_data_bench_")
    data_dir = os.path.join(work, "tfds")
    source = args.imdb_source or default_imdb_source()
    results: dict = {"machine": machine(), "imdb_source": os.path.abspath(source)}

    start = time.perf_counter()
    counts = D.prepare(D.imdb_builder(source=source, data_dir=data_dir))
    report = D.dataset_report("memgpt_imdb/val10_seed0", data_dir)["report"]
    results["imdb_prepare"] = {
        "seconds": time.perf_counter() - start, "splits": counts,
        "train_before_validation": sum(report["train_before_validation"].values()),
    }

    name = "memgpt_imdb/val10_seed0"
    lm_src = D.load_split(name, "train", data_dir)
    tokenizers = {"bytes": D.ByteTokenizer()}
    results["spm"] = []
    if not args.skip_spm:
        # The official train split (train + validation) and unsup: 75,000 reviews.
        sources = [D.load_split(name, s, data_dir) for s in ("train+validation", "unsupervised")]
        for vocab in [int(v) for v in args.vocab_sizes.split(",") if v]:
            stats: dict = {}
            tok = D.train_sentencepiece(D.iter_texts(sources), vocab_size=vocab, stats=stats)
            tokenizers[f"spm{vocab // 1000}k"] = tok
            sample = [D.as_text(lm_src[i]["text"]) for i in range(1000)]
            mean_tokens = statistics.mean(len(tok.encode(t)) for t in sample)
            results["spm"].append({"vocab_size": vocab, "model_type": "unigram", "texts": stats["texts"],
                                   "megabytes": stats["bytes"] / 1e6, "seconds": stats["seconds"],
                                   "mean_tokens_per_review": mean_tokens})
            print(f"sentencepiece {vocab}: {stats['seconds']:.1f} s", flush=True)

    tok_name = "spm8k" if "spm8k" in tokenizers else "bytes"
    tok = tokenizers[tok_name]
    listops_dir = os.path.join(work, "tfds")
    D.prepare(D.listops_builder("tiny", data_dir=listops_dir))
    listops = D.load_split("memgpt_listops/tiny", "train", listops_dir)
    one = dict(process_index=0, process_count=1, seed=0)
    cases = {
        f"LM packing, IMDb train, {tok_name}, 8 x 128": lambda: D.PackedLMIterator(
            lm_src, tok, batch_size=8, seq_len=128, **one),
        f"classification, IMDb train, {tok_name}, 8 x 128": lambda: D.ClassificationIterator(
            lm_src, tok, batch_size=8, max_len=128, **one),
        "classification, IMDb train, bytes, 8 x 4096 (LRA text)": lambda: D.ClassificationIterator(
            lm_src, tokenizers["bytes"], batch_size=8, max_len=4096, **one),
        "classification, ListOps tiny, listops words, 8 x 256": lambda: D.ClassificationIterator(
            listops, D.ListOpsTokenizer(), batch_size=8, max_len=256, **one),
    }
    results["throughput"] = {}
    for label, make in cases.items():
        results["throughput"][label] = throughput(make, batches=args.batches, repeats=args.repeats)
        print(f"{label}: {results['throughput'][label]['batches_per_s']:.0f} batches/s", flush=True)
    write(results)


def model_rate_note() -> list[str]:
    """A line quoting the model's forward rate from benchmarks/results/forward.json, if any."""
    path = RESULTS_DIR / "forward.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text()).get("rows", [])
    if not rows:
        return []
    fastest = min(rows, key=lambda r: r["median_ms"])
    return [f"For scale: the model's forward pass alone (`python -m benchmarks.forward`, preset "
            f"{fastest['preset']}, {fastest['batch']} x {fastest['seq_len']}, {fastest['compute_dtype']}) "
            f"runs {1000 / fastest['median_ms']:.1f} batches/s on this machine, and a training step "
            "costs about three forward passes, so the input pipeline is not the bottleneck.", ""]


def section(results: dict) -> str:
    """The RESULTS.md section, from ``results/data.json``."""
    prep = results["imdb_prepare"]
    s = prep["splits"]
    lines = [
        "## Data", "",
        f"`python -m benchmarks.data` — {machine_line(results['machine'])} (shared, noisy); "
        "tables also in `benchmarks/results/data.{json,md}`.", "",
        f"IMDb preparation from `{os.path.basename(results['imdb_source'])}` (the work of "
        f"`memgpt-jax data prepare imdb --source ...`, without interpreter start-up): "
        f"**{prep['seconds']:.1f} s**. Official train {prep['train_before_validation']:,} = train "
        f"{s['train']:,} + validation {s['validation']:,} (10 % per label, seed 0); unsupervised "
        f"{s['unsupervised']:,}; test {s['test']:,} (the dev archive's test sample).", "",
    ]
    if results["spm"]:
        lines += ["| sentencepiece (unigram, byte fallback) on IMDb train + unsup | texts | MB | train time (s) | tokens / review |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in results["spm"]:
            lines.append(f"| vocab {r['vocab_size']:,} | {r['texts']:,} | {r['megabytes']:.1f} | "
                         f"{r['seconds']:.1f} | {r['mean_tokens_per_review']:.0f} |")
        lines += ["", "Unigram training prunes a large seed vocabulary down to the target, so a "
                  "smaller vocabulary can take longer. Train + unsup is the official train split "
                  "(our train + validation) plus the 50,000 unlabeled reviews.", ""]
    lines += ["| pipeline (one process, one thread, NumPy batches) | batches/s (median of runs) | min | max |",
              "| --- | ---: | ---: | ---: |"]
    for label, r in results["throughput"].items():
        lines.append(f"| {label} | {r['batches_per_s']:,.0f} | {r['min']:,.0f} | {r['max']:,.0f} |")
    lines += [""] + model_rate_note()
    return "\n".join(lines).rstrip("\n") + "\n"


def write(results: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "data.json", "w") as f:
        json.dump(results, f, indent=2)
    text = section(results)
    (RESULTS_DIR / "data.md").write_text(text)
    rebuild_results_md()
    print(text)
