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


def test_points_of_another_config_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_curve, "RESULTS_DIR", tmp_path)
    assert imdb_curve.committed_rows("teacher", [], 0) == {}  # nothing committed
    _write(tmp_path, {"variant": "teacher", "overrides": ["train.steps=300"]}, [{"lm_step": 0}])
    assert imdb_curve.committed_rows("teacher", [], 0) == {}
    assert imdb_curve.committed_rows("teacher_long", ["train.steps=300"], 0) == {}
    assert list(imdb_curve.committed_rows("teacher", ["train.steps=300"], 0)) == [0]
