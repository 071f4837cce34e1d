"""The IMDb curve keeps points measured by an earlier run whose workdirs are gone."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import imdb_curve  # noqa: E402


def _write(tmp_path, meta, rows, commit="abc1234"):
    payload = {"name": "imdb_curve", "machine": {"commit": commit}, "meta": meta, "rows": rows}
    (tmp_path / "imdb_curve.json").write_text(json.dumps(payload))


def test_committed_points_are_kept_with_their_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    rows = [{"lm_step": 1000, "val_accuracy": 0.87, "test_accuracy": 0.887},
            {"lm_step": 0, "val_accuracy": 0.8, "test_accuracy": 0.81, "source": "this run"},
            {"lm_step": 500, "val_accuracy": 0.85, "test_accuracy": 0.86, "source": "commit 1111111"},
            {"lm_step": 250, "val_accuracy": 0.8, "test_accuracy": 0.8, "max_examples": 64}]
    _write(tmp_path, {"variant": "teacher", "overrides": []}, rows)
    kept = imdb_curve.committed_rows("teacher", [], 0)
    assert sorted(kept) == [0, 500, 1000]  # the 64-example point was measured differently
    assert kept[1000]["source"] == kept[0]["source"] == "commit abc1234"
    assert kept[500]["source"] == "commit 1111111"  # an inherited point keeps its own origin
    assert imdb_curve.committed_rows("teacher", [], 64)[250]["test_accuracy"] == 0.8


def test_a_cached_row_says_this_run_only_at_the_commit_that_measured_it(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "head_commit", lambda: "bbbbbbb")
    path = str(tmp_path / "curve_row.json")
    common.save_cached_row(path, {"lm_step": 500, "val_accuracy": 0.87, "source": "this run"})
    assert json.loads(open(path).read())["measured_at"] == "bbbbbbb"
    assert common.load_cached_row(path)["source"] == "this run"  # same commit: measured by this run
    monkeypatch.setattr(common, "head_commit", lambda: "ccccccc")
    row = common.load_cached_row(path)
    assert row["source"] == "commit bbbbbbb" and row["val_accuracy"] == 0.87  # reused later: its own commit
    with open(path, "w") as f:  # a cache from before commits were recorded
        json.dump({"lm_step": 500, "source": "this run"}, f)
    assert common.load_cached_row(path)["source"] == "an earlier run (commit not recorded)"


def test_points_of_another_config_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    assert imdb_curve.committed_rows("teacher", [], 0) == {}  # nothing committed
    _write(tmp_path, {"variant": "teacher", "overrides": ["train.steps=300"]}, [{"lm_step": 0}])
    assert imdb_curve.committed_rows("teacher", [], 0) == {}
    assert imdb_curve.committed_rows("teacher_long", ["train.steps=300"], 0) == {}
    assert list(imdb_curve.committed_rows("teacher", ["train.steps=300"], 0)) == [0]


def test_ablation_from_an_lm_step_fine_tunes_every_teacher_row_from_it(tmp_path):
    from benchmarks import imdb_ablation

    specs = imdb_ablation.rows_spec(str(tmp_path), lm_step=500)
    assert not [n for n in specs if "student" in n]  # the student rows stay the recipe's
    ab = os.path.join(str(tmp_path), "ablation", "lm500")
    assert specs["teacher"]["workdir"] == os.path.join(ab, "teacher") and specs["teacher"]["base"] is None
    for name, spec in specs.items():
        if spec.get("argv") and spec["argv"][1] == "finetune":
            assert "--config.train.init_step=500" in spec["argv"], name
            assert spec["workdir"].startswith(ab), name
    assert "weight_average" not in specs  # measured on the recipe's finished teacher only
    assert specs["whole_reviews"]["argv"][3] == "configs/imdb.py:teacher_long"
    final = imdb_ablation.rows_spec(str(tmp_path))  # the recipe's finished runs and the student levers
    assert final["teacher"]["argv"] is None and final["teacher"]["base"] == "teacher_512" and "student_unsup" in final
    assert final["teacher_512"]["workdir"] == os.path.join(str(tmp_path), "curve", "lm3000")  # the curve's last point
    assert "--lm-steps 3000" in imdb_ablation.command_text(final["teacher_512"], final)
    assert final["ensemble"]["members"] == ["teacher", "teacher_512"] and "layer_decay" not in final
    average = final["weight_average"]  # the recipe's own teacher, averaged into the ablation directory
    assert average["argv"][3] == os.path.join(str(tmp_path), "teacher") and average["base"] == "teacher"
    assert average["workdir"] == os.path.join(str(tmp_path), "ablation", "weight_average")


def test_ablation_keeps_committed_rows_of_the_same_lm_step(tmp_path, monkeypatch):
    from benchmarks import imdb_ablation

    monkeypatch.setattr(imdb_ablation, "RESULTS_DIR", tmp_path)
    rows = [{"row": "teacher", "lm_step": 500, "val_accuracy": 0.86, "source": "this run", "max_examples": 0},
            {"row": "layer_decay", "lm_step": 500, "val_accuracy": None, "max_examples": 0},
            {"row": "teacher", "lm_step": None, "val_accuracy": 0.88, "max_examples": 0}]
    (tmp_path / "imdb_ablation.json").write_text(json.dumps({"machine": {"commit": "abc1234"}, "rows": rows}))
    at500 = imdb_ablation.committed_rows(500, 0)
    assert list(at500) == ["teacher"] and at500["teacher"]["source"] == "commit abc1234"  # unmeasured: not kept
    assert imdb_ablation.committed_rows(0, 0)["teacher"]["val_accuracy"] == 0.88
    assert imdb_ablation.committed_rows(500, 64) == {}


def test_ablation_table_keeps_the_rows_of_other_lm_steps(tmp_path, monkeypatch):
    from benchmarks import imdb_ablation

    monkeypatch.setattr(imdb_ablation, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    rows = [{"row": "teacher", "lm_step": 500, "val_accuracy": 0.86, "max_examples": 0},
            {"row": "layer_decay", "lm_step": 500, "val_accuracy": None, "max_examples": 0},
            {"row": "teacher", "lm_step": None, "val_accuracy": 0.88, "max_examples": 0}]
    (tmp_path / "imdb_ablation.json").write_text(json.dumps({"machine": {"commit": "abc1234"}, "rows": rows}))
    assert [(r["row"], r["lm_step"]) for r in imdb_ablation.other_steps_rows(0)] == [("teacher", 500), ("layer_decay", 500)]
    assert [r["row"] for r in imdb_ablation.other_steps_rows(500)] == ["teacher"]
    written = {}
    monkeypatch.setattr(imdb_ablation, "write_results", lambda name, rows, cols, meta: written.update(rows=rows))
    specs = {"teacher": {"lever": "base", "base": None, "workdir": str(tmp_path / "t"), "argv": None}}
    monkeypatch.setattr(imdb_ablation, "_final_rows", lambda *args: specs)
    assert imdb_ablation.main(["--runs", str(tmp_path), "--no-results-md"]) == 0  # the finished LM's rows
    got = [(r["row"], r["lm_step"], r["val_accuracy"], r["source"]) for r in written["rows"]]
    assert got == [("teacher", 500, 0.86, "commit abc1234"), ("layer_decay", 500, None, None),
                   ("teacher", None, 0.88, "commit abc1234")]  # step 500 kept first; the final row from its commit


def test_ablation_base_row_comes_from_the_curve_point_of_its_lm_step(tmp_path, monkeypatch):
    from benchmarks import imdb_ablation

    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    assert imdb_ablation.curve_base_row(500, 0) is None  # no curve committed
    _write(tmp_path, {"variant": "teacher", "overrides": []},
           [{"lm_step": 500, "val_accuracy": 0.8664, "finetune_min": 26.8, "source": "this run"},
            {"lm_step": 250, "val_accuracy": None}])
    base = imdb_ablation.curve_base_row(500, 0)
    assert base["val_accuracy"] == 0.8664 and base["train_min"] == 26.8
    assert base["source"] == "imdb_curve point, commit abc1234"
    assert imdb_ablation.curve_base_row(250, 0) is None and imdb_ablation.curve_base_row(1000, 0) is None
    assert imdb_ablation.curve_base_row(500, 64) is None  # measured on the whole split, not 64 examples
    _write(tmp_path, {"variant": "teacher", "overrides": ["train.steps=300"]}, [{"lm_step": 500, "val_accuracy": 0.9}])
    assert imdb_ablation.curve_base_row(500, 0) is None  # another fine-tuning config: not the base run


def test_curve_trend_fits_log_tokens_and_extrapolates_the_crossings():
    rows = [{"lm_step": 0, "lm_tokens_M": 0.0, "lm_cpu_hours": 0.0, "test_accuracy": 0.80},  # not in the fit
            {"lm_step": 250, "lm_tokens_M": 2.0, "lm_cpu_hours": 0.4, "test_accuracy": 0.870},
            {"lm_step": 500, "lm_tokens_M": 4.0, "lm_cpu_hours": 0.6, "test_accuracy": 0.875},
            {"lm_step": 1000, "lm_tokens_M": 8.0, "lm_cpu_hours": 2.0, "test_accuracy": 0.880}]
    t = imdb_curve.trend(rows)
    assert t["points"] == [250, 500, 1000]
    assert abs(t["points_per_doubling"] - 0.5) < 1e-9 and t["cpu_hours_per_M_tokens"] == 0.15
    first = t["crossings"][0]  # 91.3% = 88.0 + 3.3 points = 6.6 doublings past 8M tokens
    assert first["accuracy"] == 0.913 and abs(first["lm_tokens_M"] - 8 * 2 ** 6.6) < 1e-6
    assert abs(first["lm_cpu_hours"] - 0.15 * first["lm_tokens_M"]) < 1e-9
    assert "+0.50 points" in imdb_curve.trend_text(t)
    assert imdb_curve.trend(rows[:3]) is None  # two pretrained points: no line


def test_the_curve_draws_the_measured_baseline_when_committed(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    assert imdb_curve.measured_baseline() is None and imdb_curve.baseline_text(None) == []
    rows = [{"model": "MNB", "features": "1-2-grams", "test_accuracy": 0.86, "val_accuracy": 0.86},
            {"model": "NBSVM (C=1, beta=0.25)", "features": "unigrams", "test_accuracy": 0.87, "val_accuracy": 0.87},
            {"model": "NBSVM (C=1, beta=0.25)", "features": "1-2-grams", "test_accuracy": 0.894, "val_accuracy": 0.888}]
    (tmp_path / "imdb_baselines.json").write_text(json.dumps({"meta": {"train_examples": 22500}, "rows": rows}))
    row = imdb_curve.measured_baseline()
    assert row["test_accuracy"] == 0.894 and row["train_examples"] == 22500
    assert "test sample 89.40%, validation 88.80%" in imdb_curve.baseline_text(row)[0]
    assert "22,500 training reviews" in imdb_curve.baseline_text(row)[0]
    points = [{"lm_step": 0, "lm_cpu_hours": 0.0, "test_accuracy": 0.85}, {"lm_step": 500, "lm_cpu_hours": 1.0,
                                                                            "test_accuracy": 0.88}]
    imdb_curve.plot(points, str(tmp_path / "curve.png"), row)
    assert (tmp_path / "curve.png").stat().st_size > 0
    rows.append({"model": "NBSVM (C=1, beta=0.25)", "features": "1-2-grams", "threshold": "fit on validation (Platt)",
                 "test_accuracy": 0.911, "val_accuracy": 0.91})
    (tmp_path / "imdb_baselines.json").write_text(json.dumps({"meta": {"train_examples": 22500}, "rows": rows}))
    row = imdb_curve.measured_baseline()  # the threshold fit on validation: the stronger baseline
    assert row["test_accuracy"] == 0.911 and "threshold fit on validation" in imdb_curve.baseline_text(row)[0]


def test_recipe_table_keeps_gone_runs_and_adds_the_hybrid_teacher(tmp_path, monkeypatch):
    """On a machine without the recipe's runs the table is rebuilt from the committed rows, with
    the hybrid teacher's row (stacking + NBSVM results) first and the student's ratios to both."""
    import pytest

    from benchmarks import common, imdb_recipe

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(common, "rebuild_results_md", lambda: None)
    with pytest.raises(SystemExit, match="no run of teacher, student, student int8"):
        imdb_recipe.main(["--runs", str(tmp_path / "runs"), "--no-results-md"])
    models = [("teacher", 1000, 0.88, 0.90), ("student", 350, 0.86, 0.873), ("student int8", 350, 0.859, 0.872)]
    rows = [{"model": m, "params": p, "val_accuracy": v, "test_accuracy": t, "train_wall_min": 100.0}
            for m, p, v, t in models]
    (tmp_path / "imdb_recipe.json").write_text(json.dumps(
        {"machine": {"commit": "aaaaaaa"}, "meta": {"lm_pretrain_wall_min": 60.0}, "rows": rows}))
    (tmp_path / "imdb_baselines.json").write_text(json.dumps({"machine": {"commit": "bbbbbbb"}, "rows": [
        {"model": "NBSVM (C=1, beta=0.25)", "features": "unigrams", "n_features": 10, "train_s": 6.0},
        {"model": "NBSVM (C=1, beta=0.25)", "features": "1-2-grams", "n_features": 96, "train_s": 60.0}]}))
    hybrid = {"model": "hybrid: NBSVM-bigram + teacher (stacked on validation)", "val_accuracy": 0.9,
              "val_macro_f1": 0.9, "test_accuracy": 0.92, "test_macro_f1": 0.92}
    (tmp_path / "imdb_hybrid.json").write_text(json.dumps({"machine": {"commit": "ccccccc"}, "rows": [hybrid],
        "meta": {"members": ["teacher"], "nbsvm": "runs/imdb/nbsvm/nbsvm_2gram.npz"}}))
    assert imdb_recipe.main(["--runs", str(tmp_path / "runs"), "--no-results-md"]) == 0
    out = json.loads((tmp_path / "imdb_recipe.json").read_text())
    assert [r["model"] for r in out["rows"]] == [imdb_recipe.HYBRID, "teacher", "student", "student int8"]
    h = out["rows"][0]
    assert h["params"] == 1000 + 96 + 1 + 3 and h["train_wall_min"] == pytest.approx(101.0)
    assert h["source"].startswith("commit ccccccc") and out["rows"][1]["source"] == "commit aaaaaaa"
    meta = out["meta"]
    assert meta["student_accuracy_ratio_test"] == pytest.approx(0.873 / 0.90)
    assert meta["student_accuracy_ratio_test_vs_hybrid"] == pytest.approx(0.873 / 0.92)
    assert meta["int8_accuracy_ratio_val_vs_hybrid"] == pytest.approx(0.859 / 0.9)
    assert meta["lm_pretrain_wall_min"] == 60.0  # kept from the committed table's meta
    section = imdb_recipe.section(out)
    assert "94.9%" in section and "hybrid teacher" in section  # 0.873 / 0.92
    # a hybrid of other members is not the recipe's teacher
    (tmp_path / "imdb_hybrid.json").write_text(json.dumps({"machine": {"commit": "ccccccc"}, "rows": [hybrid],
        "meta": {"members": ["student"], "nbsvm": "runs/imdb/nbsvm/nbsvm_2gram.npz"}}))
    assert imdb_recipe.hybrid_row(out["rows"][1]) is None
