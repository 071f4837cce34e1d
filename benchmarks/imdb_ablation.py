"""IMDb: what each lever of issue 19 gives, measured on the validation split.

    python -m benchmarks.imdb_ablation --runs runs/imdb --lm-step 500     # the teacher levers
    python -m benchmarks.imdb_ablation --runs runs/imdb                   # the recipe's models, student levers
    python -m benchmarks.imdb_ablation --runs runs/imdb --rows teacher student_no_kd

The teacher levers (whole reviews, layer-wise rates, label smoothing, mean + max pooling,
longer fine-tuning, a second seed and the ensemble) are measured from the
LM checkpoint of ``--lm-step N``, each against the plain teacher (first 512 tokens) fine-tuned
from it (all in ``RUNS/ablation/lmN/``): a base that a fresh machine rebuilds in under an hour
(``memgpt-jax pretrain ... --stop-at N``). Without ``--lm-step``, the rows are the recipe's
finished models: its teacher (whole reviews) against the plain teacher from the same LM
(the IMDb curve's last point), the two as an ensemble, the teacher's last three
checkpoints averaged (weight averaging is measured there only: on the finished teacher it
is the recipe's own option), and the student levers (no
distillation; distillation on the unlabelled reviews too). The table keeps the rows of every
LM step measured.

Each row is one command (printed in the table): a ``memgpt-jax finetune`` / ``distill``
run in ``RUNS/ablation/<row>`` (rerun to resume), or an existing run of the recipe
(``RUNS/teacher``, ``RUNS/student``), or an ensemble of finished rows (their
probabilities averaged, ``memgpt_jax.training.teacher.open_teacher``). Every row is
evaluated on validation only (models are chosen there; the test sample is reported by
``benchmarks.imdb_recipe`` for the recipe's final models). A finished row is cached in
its run directory and not evaluated again. Writes ``benchmarks/results/imdb_ablation.{json,md}``
and its RESULTS.md section; rows not run yet are listed as such.

A row whose run is gone but which the committed ``imdb_ablation.json`` holds for the same
LM step is kept from there (``source``: its commit); a plain teacher row, if not there, from
the committed IMDb curve's point at that step (the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from benchmarks.common import RESULTS_DIR, machine_line, markdown_table, rebuild_results_md, write_results
from benchmarks.common import committed_rows as committed_rows_of, load_cached_row, save_cached_row

COLUMNS = ["row", "lever", "model", "lm_step", "val_accuracy", "val_macro_f1", "delta_vs_base", "train_min",
           "source", "command"]
CONFIG = "configs/imdb.py"


def rows_spec(runs: str, lm_step: int = 0) -> dict[str, dict]:
    """name -> {lever, base (the row it is compared with), workdir, argv (None: an existing run) or members}.

    ``lm_step``: the teacher levers, each a fine-tune from that LM checkpoint (the base teacher
    among them). 0: the recipe's finished models: its teacher (whole reviews), the same
    fine-tuning on the first 512 tokens (the curve's point at the LM's last step), their
    ensemble, and the student levers."""
    if lm_step:
        specs = _teacher_rows(os.path.join(runs, "ablation", f"lm{lm_step}"), lm_step)
    else:
        specs = _final_rows(runs, os.path.join(runs, "ablation"))
    for name, spec in specs.items():
        spec["name"] = name
    return specs


def lm_steps() -> int:
    """The recipe LM's last step (``configs/imdb.py:pretrain``'s ``train.steps``)."""
    from memgpt_jax import run_config

    return run_config.load(f"{_config_path()}:pretrain").train.steps


def _config_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), CONFIG)


def _command(ab: str, verb: str, variant: str, name: str, *overrides: str) -> dict:
    workdir = os.path.join(ab, name)
    return {"workdir": workdir, "argv": ["memgpt-jax", verb, "--config", f"{CONFIG}:{variant}", "--workdir",
                                         workdir, *(f"--config.{o}" for o in overrides)]}


def _average(runs: str, ab: str) -> dict:
    """The row averaging the last 3 checkpoints of ``runs/teacher`` into ``ab/weight_average``."""
    out = os.path.join(ab, "weight_average")
    return {"workdir": out, "argv": ["memgpt-jax", "average", "--checkpoint", os.path.join(runs, "teacher"),
                                     "--last", "3", "--out", out]}


def _teacher_rows(ab: str, lm_step: int) -> dict[str, dict]:
    """The teacher levers, each against the plain teacher (first 512 tokens) from LM step ``lm_step``."""

    def cmd(variant: str, name: str, *extra: str) -> dict:
        return _command(ab, "finetune", variant, name, f"train.init_step={lm_step}", *extra)

    return {
        "teacher": {"lever": f"the teacher (first 512 tokens), fine-tuned from LM step {lm_step}", "base": None,
                    **cmd("teacher", "teacher")},
        "whole_reviews": {"lever": "whole reviews: 1,024 tokens, head+tail", "base": "teacher",
                          **cmd("teacher_long", "whole_reviews")},
        "layer_decay": {"lever": "layer-wise rates (optim.layer_decay=0.8)", "base": "teacher",
                        **cmd("teacher", "layer_decay", "optim.layer_decay=0.8")},
        "label_smoothing": {"lever": "label smoothing 0.1 (train.label_smoothing)", "base": "teacher",
                            **cmd("teacher", "label_smoothing", "train.label_smoothing=0.1")},
        "meanmax_pooling": {"lever": "mean + max pooling (model.pooling=meanmax)", "base": "teacher",
                            **cmd("teacher", "meanmax_pooling", "model.pooling=meanmax")},
        "finetune_2x": {"lever": "twice the fine-tuning steps (1,000)", "base": "teacher",
                        **cmd("teacher", "finetune_2x", "train.steps=1000")},
        "teacher_seed1": {"lever": "the teacher again, seed 1 (an ensemble member)", "base": "teacher",
                          **cmd("teacher", "teacher_seed1", "train.seed=1")},
        "ensemble": {"lever": "ensemble: teacher + teacher_seed1 (probabilities averaged)", "base": "teacher",
                     "workdir": None, "members": ["teacher", "teacher_seed1"]},
    }


def _final_rows(runs: str, ab: str) -> dict[str, dict]:
    """The recipe's finished models (``train/imdb_recipe.sh``) and the student levers."""
    final = lm_steps()
    return {
        "teacher_512": {"lever": f"teacher on the first 512 tokens (LM {final:,} steps; the curve's last point)",
                        "base": None, "workdir": os.path.join(runs, "curve", f"lm{final}"), "argv": None,
                        "command": f"python -m benchmarks.imdb_curve --runs {runs} --lm-steps {final}"},
        "teacher": {"lever": f"the recipe's teacher: whole reviews (LM {final:,} steps, configs/imdb.py:teacher_long)",
                    "base": "teacher_512", "workdir": os.path.join(runs, "teacher"), "argv": None},
        "ensemble": {"lever": "ensemble: teacher + teacher_512 (probabilities averaged)", "base": "teacher",
                     "workdir": None, "members": ["teacher", "teacher_512"]},
        "weight_average": {"lever": "the mean of the teacher's last 3 checkpoints (memgpt-jax average)",
                           "base": "teacher", **_average(runs, ab)},
        # students (the recipe's student is the base: KD from the teacher on the 22,500 labelled reviews)
        "student": {"lever": "the recipe's student (KD on labelled reviews)", "base": None,
                    "workdir": os.path.join(runs, "student"), "argv": None},
        "student_no_kd": {"lever": "no distillation (labels only)", "base": "student",
                          **_command(ab, "finetune", "student", "student_no_kd", "distill.teacher=")},
        "student_unsup": {"lever": "KD on labelled + 50,000 unlabelled reviews", "base": "student",
                          **_command(ab, "distill", "student", "student_unsup", "data.train_split=train+unsupervised")},
        "student_hybrid": {"lever": "KD from the teacher stacked with NBSVM-bigram (the hybrid), labelled + unlabelled",
                           "base": "student", **_command(ab, "distill", "student_hybrid", "student_hybrid")},
    }


def command_text(spec: dict, specs: dict) -> str:
    if spec.get("members"):
        dirs = ",".join(specs[m]["workdir"] for m in spec["members"])
        return f"python -m benchmarks.imdb_ablation --rows {spec['name']}  (evaluates the ensemble {dirs})"
    if spec.get("command"):
        return spec["command"]
    if spec["argv"] is None:
        return "train/imdb_recipe.sh"
    return shlex.join(spec["argv"])


def evaluate_row(name: str, spec: dict, specs: dict, max_examples: int) -> dict | None:
    """Trains (resumes) the row's run if needed and evaluates it on validation; None if it cannot run yet."""
    from memgpt_jax.apps.classify import evaluate_classifier
    from memgpt_jax.training.teacher import open_teacher

    if spec.get("members"):
        dirs = [specs[m]["workdir"] for m in spec["members"]]
        if not all(os.path.isfile(os.path.join(d, "summary.json")) for d in dirs):
            return None
        run, train_min = open_teacher(",".join(dirs)), sum(_wall_min(d) for d in dirs)
    else:
        workdir = spec["workdir"]
        averaging = spec["argv"] is not None and spec["argv"][1] == "average"
        if averaging and not os.path.isdir(os.path.join(spec["argv"][3], "checkpoints")):
            return None  # the run it averages is not trained yet
        if spec["argv"] is not None and not (averaging and os.path.isdir(os.path.join(workdir, "checkpoints"))):
            print(f"== {name}: {shlex.join(spec['argv'])}", file=sys.stderr, flush=True)
            # the console script's module, with this interpreter (the same environment)
            extra = [] if averaging else ["--no-progress"]
            done = subprocess.run([sys.executable, "-m", "memgpt_jax.cli", *spec["argv"][1:], *extra])
            if done.returncode != 0:
                raise SystemExit(f"error: row {name}: the command failed (exit {done.returncode})")
        elif not os.path.isfile(os.path.join(workdir, "summary.json")):
            return None
        run = open_teacher(workdir)
        train_min = 0.0 if averaging else _wall_min(workdir)  # averaging: seconds, no training
    rep = evaluate_classifier(run, "validation", max_examples=max_examples, progress=False)
    return {"val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"], "train_min": train_min,
            "examples": rep["examples"], "max_examples": max_examples}


def _trained(spec: dict, specs: dict) -> bool:
    """Whether the row's run (or every member of an ensemble) exists on this machine."""
    dirs = [specs[m]["workdir"] for m in spec["members"]] if spec.get("members") else [spec["workdir"]]
    return all(os.path.isfile(os.path.join(d, "summary.json")) or os.path.isdir(os.path.join(d, "checkpoints"))
               for d in dirs)


def committed_rows(lm_step: int, max_examples: int) -> dict[str, dict]:
    """The measured rows of the committed ``imdb_ablation.json`` for this LM step, by name, each
    with ``source``: the commit that measured it."""

    def keep(row: dict, meta: dict) -> bool:
        return (row.get("val_accuracy") is not None and (row.get("lm_step") or 0) == lm_step
                and row.get("max_examples", 0) == max_examples)

    return committed_rows_of(RESULTS_DIR / "imdb_ablation.json", "row", keep)


def other_steps_rows(lm_step: int) -> list[dict]:
    """The committed table's rows of every other LM step (measured or not), in their order."""

    def keep(row: dict, meta: dict) -> bool:
        return (row.get("lm_step") or 0) != lm_step

    rows = committed_rows_of(RESULTS_DIR / "imdb_ablation.json", lambda r: (r["row"], r.get("lm_step")), keep)
    return [r if r.get("val_accuracy") is not None else {**r, "source": None} for r in rows.values()]  # unmeasured


def curve_base_row(lm_step: int, max_examples: int) -> dict | None:
    """The base teacher row at ``lm_step`` from the committed IMDb curve, or None.

    The curve's point at that LM step is the same run as this table's base row
    (``configs/imdb.py:teacher``, no overrides, fine-tuned from LM checkpoint ``lm_step``;
    training is deterministic), so a fresh machine need not train it again to compare a
    lever with it. Only its validation accuracy is on record there."""
    from benchmarks import imdb_curve

    point = imdb_curve.committed_rows("teacher", [], max_examples).get(lm_step)
    if point is None or point.get("val_accuracy") is None:
        return None
    return {"val_accuracy": point["val_accuracy"], "val_macro_f1": None, "train_min": point.get("finetune_min"),
            "examples": None, "max_examples": max_examples, "source": f"imdb_curve point, {point['source']}"}


def _wall_min(run: str) -> float:
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["wall_s"] / 60.0


def section(payload: dict) -> str:
    return "\n".join([
        "## IMDb: ablation of the levers (validation)", "",
        f"`{payload.get('command', 'python -m benchmarks.imdb_ablation')}` — {machine_line(payload['machine'])}. "
        "Each row's command is in its last column; `delta_vs_base`: validation accuracy minus that of the row "
        "it changes (the recipe's teacher or student). train_min: CPU wall minutes of the row's own training "
        "(its LM pretraining not included; an ensemble: its members together).", "",
        markdown_table(payload["rows"], payload.get("columns") or COLUMNS),
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/imdb", help="the recipe's runs (teacher/, student/); rows go to ablation/")
    p.add_argument("--rows", nargs="+", help="rows to run (default: all); finished rows are reused")
    p.add_argument("--max-examples", type=int, default=0, help="evaluate only this many validation examples")
    p.add_argument("--lm-step", type=int, default=0,
                   help="measure the teacher levers, each fine-tuned from this LM checkpoint (default 0: the "
                        "recipe's finished models and the student levers)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)
    specs = rows_spec(args.runs, args.lm_step)
    earlier = committed_rows(args.lm_step, args.max_examples)
    # a plain teacher (first 512 tokens) is the curve's point of the same LM step: the same run
    plain = ("teacher", args.lm_step) if args.lm_step else ("teacher_512", lm_steps() if "teacher_512" in specs else 0)
    if plain[1] and plain[0] not in earlier:
        base = curve_base_row(plain[1], args.max_examples)
        if base is not None:
            earlier[plain[0]] = base
    unknown = sorted(set(args.rows or ()) - set(specs))
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {sorted(specs)}")
    rows = []
    for name, spec in specs.items():
        cache = os.path.join(spec["workdir"] or os.path.join(args.runs, "ablation", name), "ablation_row.json")
        result = None
        if os.path.isfile(cache):
            result = load_cached_row(cache)
            if result.get("max_examples") != args.max_examples:
                result = None
        if result is None and name in earlier and not _trained(spec, specs):
            result = {k: earlier[name].get(k) for k in ("val_accuracy", "val_macro_f1", "train_min", "examples",
                                                         "max_examples", "source")}
        elif result is None and (args.rows is None or name in args.rows):
            result = evaluate_row(name, spec, specs, args.max_examples)
            if result is not None:
                result["source"] = "this run"
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                save_cached_row(cache, result)
        row = {"row": name, "lever": spec["lever"], "model": "student" if "student" in name else "teacher",
               "lm_step": None if "student" in name else (args.lm_step or None), "command": command_text(spec, specs)}
        row.update(result or {"val_accuracy": None})
        rows.append(row)
        print(f"{name}: " + (f"val {result['val_accuracy']:.4f}" if result else "not run yet"), file=sys.stderr)
    by_name = {r["row"]: r for r in rows}
    for row in rows:
        base = by_name.get(specs[row["row"]]["base"] or "")
        if base and base.get("val_accuracy") is not None and row.get("val_accuracy") is not None:
            row["delta_vs_base"] = row["val_accuracy"] - base["val_accuracy"]
    print(markdown_table(rows, COLUMNS))
    # the table holds every LM step measured: the rows of the other steps stay as committed
    table = sorted(other_steps_rows(args.lm_step) + rows, key=lambda r: r.get("lm_step") or float("inf"))
    write_results("imdb_ablation", table, COLUMNS, {"runs": args.runs, "max_examples": args.max_examples,
                                                    "lm_steps": sorted({r.get("lm_step") or 0 for r in table})})
    if not args.no_results_md:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
