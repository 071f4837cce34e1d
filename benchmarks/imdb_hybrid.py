"""IMDb: the recipe's Transformer and NBSVM-bigram stacked, a hybrid teacher.

    python -m benchmarks.imdb_baselines --ngrams 2 --save-values runs/imdb/nbsvm   # NBSVM's decision values
    python -m benchmarks.imdb_hybrid --runs runs/imdb                               # stacks them with the teacher
    python -m benchmarks.imdb_hybrid --runs runs/imdb --members teacher curve/lm3000
    python -m benchmarks.imdb_hybrid --runs runs/imdb --write-offsets train+unsupervised  # for a student

The two models see reviews differently (the Transformer reads up to 1,024 sentencepiece
tokens in order; NBSVM every word and word pair of the whole review, unordered), so their
errors differ. The hybrid is a logistic regression on [NBSVM's decision value, each member's
log-odds, 1], fit on the validation split by log-loss (a handful of weights, chosen on
validation as everything else is); the test sample is only reported. Rows: NBSVM with its
threshold fit on validation, each member alone (as trained, and with its own threshold fit
on validation), the members' probabilities averaged (when more than one), and the hybrid.

Each member's class probabilities on validation and the test sample are computed once
(`memgpt_jax.apps.classify.Classifier`, the run's own truncation) and cached in
``RUNS/hybrid/<member>.npz`` with the checkpoint step they came from.

``--write-offsets SPLIT`` turns the hybrid into a distillation teacher
(``distill.teacher_offsets``, `write_offsets`): the student's step runs the Transformer
teacher and adds NBSVM's part per training review, scored out of fold.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results
from benchmarks.imdb_baselines import logistic_fit, platt, scores

COLUMNS = ["model", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "weights"]
SPLITS = (("val", "validation"), ("test", "test"))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def member_probabilities(run_dir: str, cache: str) -> dict[str, np.ndarray]:
    """``{"val": P(positive), "test": ..., "val_labels": ..., "test_labels": ..., "step": ...}`` of
    one classifier run on its own data, from ``cache`` when it holds the run's current checkpoint."""
    from memgpt_jax.apps.classify import Classifier
    from memgpt_jax.data.cls_pipeline import KEEP
    from memgpt_jax.data.prepared import as_text
    from memgpt_jax.training.inputs import load_source
    from memgpt_jax.training.teacher import open_teacher

    run = open_teacher(run_dir)
    if os.path.isfile(cache):
        with np.load(cache) as f:
            if int(f["step"]) == run.step:
                return {k: f[k] for k in f.files}
    dc = run.config.data
    classifier = Classifier(run, batch_size=64, truncate=KEEP[dc.kept()])
    out: dict[str, np.ndarray] = {"step": np.array(run.step)}
    for key, split in SPLITS:
        records = [r for r in load_source(dc, split)]
        print(f"  {run_dir}: {split}, {len(records):,} reviews...", file=sys.stderr, flush=True)
        out[key] = classifier.predict([as_text(r[dc.text_key]) for r in records])[:, 1]
        out[f"{key}_labels"] = np.asarray([int(r["label"]) for r in records])
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    np.savez(cache, **out)
    return out


def _features(nbsvm: dict[str, np.ndarray], members: dict[str, dict[str, np.ndarray]], key: str) -> np.ndarray:
    """[NBSVM's value, each member's log-odds, 1] of split ``key``."""
    return np.stack([nbsvm[key], *(logit(m[key]) for m in members.values()), np.ones_like(nbsvm[key])], axis=1)


def stack_weights(nbsvm: dict[str, np.ndarray], members: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """The hybrid's weights on `_features`, fit on validation by log-loss."""
    return logistic_fit(_features(nbsvm, members, "val"), nbsvm["val_labels"])


def write_offsets(path: str, dataset: str, split: str, theta: np.ndarray, *, folds: int = 5, seed: int = 0,
                  n: int = 2, data_dir: str | None = None) -> dict:
    """``distill.teacher_offsets`` for a student distilled from the hybrid (one member): for each
    record of ``split``, ``offsets = [0, theta_nbsvm * v + theta_1]`` and ``teacher_scale =
    theta_member``, so the step's ``scale * teacher logits + offset`` is the hybrid's log-odds.

    ``v`` is NBSVM's decision value, out of fold for the labelled records (``folds`` seeded
    folds: each record scored by an NBSVM that never saw it, as the teacher's own value on a
    training review would otherwise be overfit) and from an NBSVM on every labelled record
    for the unlabelled ones."""
    from benchmarks.imdb_baselines import load, nbsvm_values

    if len(theta) != 3:
        raise SystemExit("error: --write-offsets stacks one member with NBSVM (give one --members run)")
    docs, y = load(dataset, split, data_dir)
    values = np.zeros(len(docs), np.float64)
    labelled = np.flatnonzero(y >= 0)
    parts = np.array_split(np.random.default_rng(seed).permutation(labelled), folds)
    for k, held in enumerate(parts):
        fit = np.setdiff1d(labelled, held)
        print(f"  NBSVM fold {k + 1}/{folds}: {len(fit):,} reviews -> {len(held):,}", file=sys.stderr, flush=True)
        values[held] = nbsvm_values([docs[i] for i in fit], y[fit], [docs[i] for i in held], n)
    unlabelled = np.flatnonzero(y < 0)
    if len(unlabelled):
        print(f"  NBSVM on all {len(labelled):,} labelled reviews -> {len(unlabelled):,} unlabelled", file=sys.stderr,
              flush=True)
        values[unlabelled] = nbsvm_values([docs[i] for i in labelled], y[labelled], [docs[i] for i in unlabelled], n)
    offsets = np.zeros((len(docs), 2), np.float32)
    offsets[:, 1] = theta[0] * values + theta[2]
    fold_accuracy = float(np.mean((values[labelled] > 0) == (y[labelled] == 1)))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(path, offsets=offsets, teacher_scale=np.float32(theta[1]), split=split, values=values, theta=theta,
             folds=folds, seed=seed)
    return {"records": len(docs), "labelled": len(labelled), "out_of_fold_accuracy": fold_accuracy}


def nbsvm_label(nbsvm: dict) -> str:
    """"NBSVM-bigram" and the like, from the n-gram order the values were saved with."""
    n = int(nbsvm.get("ngrams", 2))
    return "NBSVM-" + {1: "unigram", 2: "bigram", 3: "trigram"}.get(n, f"{n}-gram")


def stack(nbsvm: dict[str, np.ndarray], members: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """The table's rows from NBSVM's decision values and each member's probabilities (all on
    the same ``val`` / ``test`` examples, in the same order)."""
    for name, m in members.items():
        for key, _ in SPLITS:
            if not np.array_equal(m[f"{key}_labels"], nbsvm[f"{key}_labels"]):
                raise SystemExit(f"error: {name} and NBSVM were scored on different {key} examples")
    y = {key: nbsvm[f"{key}_labels"] for key, _ in SPLITS}

    def row(model: str, decide, weights: str = "") -> dict:
        out = {"model": model, "weights": weights}
        for key, _ in SPLITS:
            out[f"{key}_accuracy"], out[f"{key}_macro_f1"] = scores(decide(key).astype(int), y[key])
        return out

    a, b = nbsvm["platt"]
    label = nbsvm_label(nbsvm)
    rows = [row(f"{label}, threshold fit on validation", lambda k: a * nbsvm[k] + b > 0,
                f"{a:.3g} v + {b:.3g}")]
    for name, m in members.items():
        rows.append(row(name, lambda k, m=m: m[k] > 0.5))
        ma, mb = platt(logit(m["val"]), y["val"])
        rows.append(row(f"{name}, threshold fit on validation", lambda k, m=m, ma=ma, mb=mb: ma * logit(m[k]) + mb > 0,
                        f"{ma:.3g} x log-odds + {mb:.3g}"))
    if len(members) > 1:
        rows.append(row(" + ".join(members) + " (probabilities averaged)",
                        lambda k: np.mean([m[k] for m in members.values()], axis=0) > 0.5))

    def features(key: str) -> np.ndarray:
        return _features(nbsvm, members, key)

    theta = stack_weights(nbsvm, members)
    names = ["NBSVM value", *(f"{n} log-odds" for n in members), "1"]
    rows.append(row(f"hybrid: {label} + " + " + ".join(members) + " (stacked on validation)",
                    lambda k: features(k) @ theta > 0, ", ".join(f"{t:.3g} x {n}" for t, n in zip(theta, names))))
    return rows


def section(payload: dict) -> str:
    meta = payload.get("meta") or {}
    return "\n".join([
        "## IMDb: the Transformer and NBSVM stacked (a hybrid teacher)", "",
        f"`{payload.get('command', 'python -m benchmarks.imdb_hybrid')}` — {machine_line(payload['machine'])}. "
        f"NBSVM's decision values from `{meta.get('nbsvm', '?')}` (`python -m benchmarks.imdb_baselines --ngrams 2 "
        "--save-values ...`); members' probabilities from their runs (checkpoint steps: "
        f"{', '.join(f'{m} {s}' for m, s in (meta.get('steps') or {}).items()) or '?'}). Weights fit on validation; "
        "the test sample is only reported.", "",
        markdown_table(payload["rows"], payload.get("columns") or COLUMNS),
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/imdb", help="the IMDb recipe's runs")
    p.add_argument("--members", nargs="+", default=["teacher"],
                   help="classifier runs under --runs to stack with NBSVM (default: the recipe's teacher)")
    p.add_argument("--nbsvm", help="NBSVM's decision values (default: RUNS/nbsvm/nbsvm_2gram.npz, written by "
                                   "`python -m benchmarks.imdb_baselines --ngrams 2 --save-values RUNS/nbsvm`)")
    p.add_argument("--write-offsets", metavar="SPLIT",
                   help="also write distill.teacher_offsets for a student distilled from the hybrid on this training "
                        "split (e.g. train+unsupervised) to RUNS/hybrid/offsets_SPLIT.npz (NBSVM out of fold: "
                        "minutes per fold)")
    p.add_argument("--folds", type=int, default=5, help="--write-offsets: NBSVM folds over the labelled reviews")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)
    if args.write_offsets and len(args.members) != 1:
        p.error("--write-offsets stacks one member with NBSVM: give one --members run")
    if args.folds < 2:
        p.error("--folds: at least 2")
    nbsvm_path = args.nbsvm or os.path.join(args.runs, "nbsvm", "nbsvm_2gram.npz")
    if not os.path.isfile(nbsvm_path):
        p.error(f"no NBSVM decision values at {nbsvm_path}: run `python -m benchmarks.imdb_baselines --ngrams 2 "
                f"--save-values {os.path.dirname(nbsvm_path)}` first")
    missing = [m for m in args.members if not os.path.isdir(os.path.join(args.runs, m, "checkpoints"))]
    if missing:
        p.error(f"no trained run at {', '.join(os.path.join(args.runs, m) for m in missing)}")
    with np.load(nbsvm_path) as f:
        nbsvm = {k: f[k] for k in f.files}
    match = re.search(r"nbsvm_(\d+)gram", os.path.basename(nbsvm_path))
    nbsvm.setdefault("ngrams", np.array(int(match.group(1)) if match else 2))  # files written before the key
    members = {m: member_probabilities(os.path.join(args.runs, m),
                                       os.path.join(args.runs, "hybrid", m.replace("/", "_") + ".npz"))
               for m in args.members}
    rows = stack(nbsvm, members)
    for r in rows:
        print(f"{r['model']}: val {r['val_accuracy']:.4f}, test {r['test_accuracy']:.4f}", file=sys.stderr)
    print(markdown_table(rows, COLUMNS))
    write_results("imdb_hybrid", rows, COLUMNS, {"runs": args.runs, "members": args.members, "nbsvm": nbsvm_path,
                                                 "steps": {m: int(v["step"]) for m, v in members.items()}})
    if not args.no_results_md:
        rebuild_results_md()
    if args.write_offsets:
        run_dir = os.path.join(args.runs, args.members[0])
        from memgpt_jax.training.teacher import open_teacher

        dataset = open_teacher(run_dir).config.data.name
        out = os.path.join(args.runs, "hybrid", f"offsets_{args.write_offsets}.npz")
        done = write_offsets(out, dataset, args.write_offsets, stack_weights(nbsvm, members), folds=args.folds)
        print(f"wrote {out}: {done['records']:,} records ({done['labelled']:,} labelled; NBSVM out of fold "
              f"{100 * done['out_of_fold_accuracy']:.2f}% right on them)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
