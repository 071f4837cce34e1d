"""The IMDb recipe's table keeps the rows of runs gone from this machine, with their commit."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def test_committed_rows_are_kept_with_their_commit(tmp_path):
    rows = [{"model": "teacher", "test_accuracy": 0.887}, {"model": "student", "source": "this run"},
            {"model": "student int8", "source": "commit 1111111"}, {"model": "probe", "max_examples": 64}]
    path = tmp_path / "table.json"
    assert common.committed_rows(path, "model", lambda row, meta: True) == {}  # nothing committed
    path.write_text(json.dumps({"machine": {"commit": "abc1234"}, "meta": {"split": "val"}, "rows": rows}))
    kept = common.committed_rows(path, "model", lambda row, meta: "max_examples" not in row and meta["split"] == "val")
    assert sorted(kept) == ["student", "student int8", "teacher"]  # the 64-example row was measured differently
    assert kept["teacher"]["source"] == kept["student"]["source"] == "commit abc1234"
    assert kept["student int8"]["source"] == "commit 1111111"  # an inherited row keeps its own origin
    assert list(common.committed_rows(path, lambda r: r["model"].upper(), lambda row, meta: True))[0] == "TEACHER"


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
