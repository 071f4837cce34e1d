"""The NBSVM / MNB baselines (benchmarks/imdb_baselines.py): features, the log-count ratio,
the SVM's solution and the scores, against hand-computed values."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import imdb_baselines as nb  # noqa: E402


def test_tokens_and_binarized_ngrams():
    words = nb.tokens("A great film.<br /><br />Great, GREAT acting!")
    assert words == ["a", "great", "film", ".", "great", ",", "great", "acting", "!"]
    assert nb.ngrams(["a", "b", "a", "b"], 2) == {"a", "b", "a b", "b a"}  # each once
    assert nb.ngrams(["a", "b", "c"], 3) == {"a", "b", "c", "a b", "b c", "a b c"}


def test_featurize_builds_the_vocab_on_train_and_drops_unseen_ngrams():
    x, vocab = nb.featurize([["good", "film"], ["bad", "film"]], 2)
    assert set(vocab) == {"good", "film", "bad", "good film", "bad film"}
    assert x.shape == (2, 5) and x.sum() == 6 and x.max() == 1
    xs, _ = nb.featurize([["good", "good", "plot"]], 2, vocab)
    assert xs.shape == (1, 5) and xs.sum() == 1 and xs[0, vocab["good"]] == 1  # "plot", "good good" unseen


def test_log_count_ratio_by_hand():
    x, vocab = nb.featurize([["good"], ["good", "fun"], ["bad"]], 1)
    r = nb.log_count_ratio(x, np.array([1, 1, 0]), alpha=1.0)
    # p = 1 + [good 2, fun 1, bad 0] = [3, 2, 1] (sum 6); q = 1 + [0, 0, 1] = [1, 1, 2] (sum 4)
    expected = {"good": np.log(3 / 6) - np.log(1 / 4), "fun": np.log(2 / 6) - np.log(1 / 4),
                "bad": np.log(1 / 6) - np.log(2 / 4)}
    for word, value in expected.items():
        assert r[vocab[word]] == pytest.approx(value)


def test_l2svm_solves_its_primal():
    from scipy import sparse

    rng = np.random.default_rng(0)
    dense = rng.normal(size=(60, 5))
    y = (dense @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.3 > 0).astype(int)
    w, b, record = nb.train_l2svm(sparse.csr_matrix(dense), y, c=1.0)
    assert record["svm_converged"]
    s = np.where(y == 1, 1.0, -1.0)
    active = np.maximum(1 - s * (dense @ w + b), 0)
    # stationarity of 0.5|w|^2 + C sum active^2: w = 2C sum s_i active_i x_i and sum s_i active_i = 0
    np.testing.assert_allclose(w, 2 * (s * active) @ dense, atol=1e-4)
    assert abs((s * active).sum()) < 1e-4
    assert np.mean(((dense @ w + b) > 0) == y) > 0.95


def test_scores_accuracy_and_macro_f1_by_hand():
    accuracy, macro_f1 = nb.scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    # class 1: P 1/2 R 1 F1 2/3; class 0: P 1 R 2/3 F1 4/5
    assert accuracy == 0.75 and macro_f1 == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_platt_recovers_a_shifted_threshold_and_fit_and_score_reports_both_rules():
    rng = np.random.default_rng(0)
    v = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(3.0 * v - 1.5)))).astype(int)  # P(y=1) = sigmoid(3 v - 1.5)
    a, b = nb.platt(v, y)
    assert a == pytest.approx(3.0, rel=0.15) and -b / a == pytest.approx(0.5, abs=0.08)
    # a tiny corpus whose validation split needs a threshold away from 0
    train = ([["good"], ["good", "fun"], ["bad"], ["bad", "dull"]], np.array([1, 1, 0, 0]))
    val = ([["good"], ["fun"], ["bad"], ["dull"], ["good", "bad"]], np.array([1, 1, 0, 0, 0]))
    values = {}
    rows = nb.fit_and_score(train, {"val": val, "test": val}, 1, values=values)
    assert [(r["model"].split(" ")[0], r["threshold"]) for r in rows] == [
        ("MNB", nb.PAPER), ("MNB", nb.ON_VAL), ("NBSVM", nb.PAPER), ("NBSVM", nb.ON_VAL)]
    assert set(values) == {"val", "test", "platt", "val_labels", "test_labels"}
    assert values["val"].shape == (5,) and list(values["val_labels"]) == [1, 1, 0, 0, 0]
    threshold = -values["platt"][1] / values["platt"][0]
    expected = np.mean((values["val"] > threshold) == val[1])
    assert rows[3]["val_accuracy"] == pytest.approx(expected) and rows[3]["test_accuracy"] == rows[3]["val_accuracy"]
