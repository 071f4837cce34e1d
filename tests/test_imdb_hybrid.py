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
    assert names[0].startswith("NBSVM-bigram")  # the default order; the file's own when it says
    assert imdb_hybrid.stack({**nbsvm, "ngrams": np.array(1)}, {"teacher": member})[0]["model"].startswith("NBSVM-unigram")


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


def test_write_offsets_scores_labelled_reviews_out_of_fold(tmp_path, monkeypatch):
    from benchmarks import imdb_baselines

    rng = np.random.default_rng(0)
    words = {1: ["great", "fun", "moving"], 0: ["dull", "bad", "boring"]}
    docs, labels = [], []
    for i in range(40):
        label = i % 2 if i < 30 else -1  # ten unlabelled reviews at the end
        pool = words[label if label >= 0 else i % 2] + ["film", "plot"]
        docs.append(list(rng.choice(pool, 6)))
        labels.append(label)
    monkeypatch.setattr(imdb_baselines, "load", lambda *a: (docs, np.asarray(labels)))
    theta = np.array([2.0, 0.5, -0.25])
    out = tmp_path / "offsets.npz"
    done = imdb_hybrid.write_offsets(str(out), "any", "train+unsupervised", theta, folds=3, n=1)
    assert done["records"] == 40 and done["labelled"] == 30 and done["out_of_fold_accuracy"] > 0.8
    with np.load(out) as f:
        offsets, scale, values = f["offsets"], float(f["teacher_scale"]), f["values"]
        assert str(f["split"]) == "train+unsupervised"
    assert offsets.shape == (40, 2) and scale == 0.5 and np.all(offsets[:, 0] == 0)
    np.testing.assert_allclose(offsets[:, 1], 2.0 * values - 0.25, rtol=1e-6)
    y = np.asarray(labels)
    full = imdb_baselines.nbsvm_values(docs[:30], y[:30], docs[30:], 1)  # the unlabelled: every labelled review
    np.testing.assert_allclose(values[30:], full, rtol=1e-6)
    parts = np.array_split(np.random.default_rng(0).permutation(np.arange(30)), 3)
    held = parts[0]
    fit = np.setdiff1d(np.arange(30), held)
    oof = imdb_baselines.nbsvm_values([docs[i] for i in fit], y[fit], [docs[i] for i in held], 1)
    np.testing.assert_allclose(values[held], oof, rtol=1e-6)  # never scored by a model that saw it
    with pytest.raises(SystemExit, match="one member"):
        imdb_hybrid.write_offsets(str(out), "any", "train", np.ones(4))
