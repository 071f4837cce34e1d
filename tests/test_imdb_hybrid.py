"""The hybrid teacher's stacking (benchmarks/imdb_hybrid.py) on constructed scores."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import imdb_hybrid  # noqa: E402


def _scores(seed: int, n: int = 3000):
    """Labels, and two noisy views of them whose noise is independent (NBSVM-like values and
    a member's probabilities): each alone ~84% right, together better."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 2.0 * y - 1.0
    nb_value = 0.3 * s + 0.3 * rng.normal(size=n) + 0.1  # leans positive: its 0 threshold is off
    member = 1 / (1 + np.exp(-(2.0 * s + 2.0 * rng.normal(size=n))))
    return y, nb_value, member


def test_stacking_beats_each_view_and_reports_every_row():
    y_val, v_val, p_val = _scores(0)
    y_test, v_test, p_test = _scores(1)
    from benchmarks.imdb_baselines import platt

    a, b = platt(v_val, y_val)
    nbsvm = {"val": v_val, "test": v_test, "val_labels": y_val, "test_labels": y_test, "platt": np.array([a, b])}
    member = {"val": p_val, "test": p_test, "val_labels": y_val, "test_labels": y_test}
    rows = imdb_hybrid.stack(nbsvm, {"teacher": member, "other": member})
    names = [r["model"] for r in rows]
    assert names[0].startswith("NBSVM") and names[1:5:2] == ["teacher", "other"]
    assert names[2] == "teacher, threshold fit on validation"
    assert "averaged" in names[5] and names[6].startswith("hybrid")
    nb_acc, member_acc, hybrid = rows[0]["test_accuracy"], rows[1]["test_accuracy"], rows[6]
    assert abs(nb_acc - np.mean((v_test > -b / a) == y_test)) < 1e-12  # the validation threshold, on test
    assert hybrid["test_accuracy"] > max(nb_acc, member_acc) + 0.02  # independent errors: stacking helps
    assert "NBSVM value" in hybrid["weights"] and "teacher log-odds" in hybrid["weights"]


def test_stacking_refuses_members_scored_on_other_examples():
    y, v, p = _scores(0, 50)
    nbsvm = {"val": v, "test": v, "val_labels": y, "test_labels": y, "platt": np.array([1.0, 0.0])}
    other = {"val": p, "test": p, "val_labels": 1 - y, "test_labels": y}
    with pytest.raises(SystemExit, match="different val examples"):
        imdb_hybrid.stack(nbsvm, {"teacher": other})


def test_hybrid_cli_says_what_to_run_first(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        imdb_hybrid.main(["--runs", str(tmp_path), "--no-results-md"])
    assert e.value.code == 2 and "--save-values" in capsys.readouterr().err
    (tmp_path / "nbsvm").mkdir()
    np.savez(tmp_path / "nbsvm" / "nbsvm_2gram.npz", val=np.zeros(2))
    with pytest.raises(SystemExit) as e:
        imdb_hybrid.main(["--runs", str(tmp_path), "--no-results-md"])
    assert e.value.code == 2 and "no trained run" in capsys.readouterr().err
