"""Probes with control tasks (lstmkit/inspect/probes.py, Hewitt & Liang 2019), on states built
by hand so that what each unit carries is known."""

from __future__ import annotations

import numpy as np
import pytest

from lstmkit.inspect.cells import split_groups
from lstmkit.inspect.probes import control_labels, probe_selectivity


def _states(n_sentences: int = 200, steps: int = 6, vocab: int = 12, seed: int = 0):
    """Unit 0 carries the sentence's label (plus noise); units 1..vocab one-hot the current
    word, which is independent of the label; the last unit is noise."""
    rng = np.random.default_rng(seed)
    rows, ys, words, groups = [], [], [], []
    for k in range(n_sentences):
        label = k % 2
        for _ in range(steps):
            w = int(rng.integers(vocab))
            x = np.zeros(vocab + 2)
            x[0] = (2 * label - 1) + 0.3 * rng.standard_normal()
            x[1 + w] = 1.0
            x[-1] = rng.standard_normal()
            rows.append(x)
            ys.append(label)
            words.append(f"w{w}")
            groups.append(k)
    return np.array(rows), np.array(ys), np.array(words), np.array(groups)


def test_control_labels_are_one_random_label_per_word_type() -> None:
    words = np.array(["a", "b", "a", "c", "b", "a"] * 50 + [f"t{i}" for i in range(400)])
    lab = control_labels(words, share=0.3, seed=1)
    for w in ("a", "b", "c"):
        assert len(set(lab[words == w])) == 1  # the same label at every occurrence
    rare = lab[-400:]  # 400 types seen once each: about 30% ones
    assert 0.22 < rare.mean() < 0.38
    assert not np.array_equal(lab, control_labels(words, 0.3, seed=2))
    assert control_labels(words, 0.0).sum() == 0 and control_labels(words, 1.0).all()
    with pytest.raises(ValueError, match="share of ones"):
        control_labels(words, 1.5)


def test_a_unit_that_carries_the_label_is_selective_and_word_units_are_not() -> None:
    x, y, words, groups = _states()
    res = {
        r.name: r
        for r in probe_selectivity(
            x, y, words, groups, {"label unit": [0], "word units": list(range(1, 13)),
                                  "noise": [13], "all": None}
        )
    }  # fmt: skip
    label, word, noise, every = res["label unit"], res["word units"], res["noise"], res["all"]
    # unit 0 = +-1 + N(0, 0.3): a threshold at 0 errs with P(N > 1/0.3 sd) ~ 4e-4
    assert label.task_accuracy > 0.99
    assert label.control_accuracy < label.control_majority + 0.05  # knows no word
    assert label.selectivity > 1 - label.control_majority - 0.05  # 12 types: majority ~0.67
    # the one-hot word units know every word (a linear probe can read any labelling of 12
    # types) and nothing of the label, which is independent of the words
    assert word.control_accuracy > 0.99
    assert abs(word.task_accuracy - 0.5) < 0.06
    assert word.selectivity < -0.4
    assert abs(noise.task_accuracy - 0.5) < 0.06  # noise carries neither
    assert every.task_accuracy > 0.99 and every.control_accuracy > 0.99  # all units: both
    assert abs(every.selectivity) < 0.02
    assert label.n_train + label.n_test == len(y) == 1200
    assert label.to_dict()["selectivity"] == pytest.approx(label.selectivity)


def test_training_and_test_hold_different_sentences() -> None:
    groups = np.repeat(np.arange(50), 4)
    test = split_groups(groups, 0.5, seed=3)
    assert test.sum() == 100
    for g in range(50):
        assert len(set(test[groups == g])) == 1  # all rows of a sentence on one side
    with pytest.raises(ValueError, match="too few groups"):
        split_groups(np.zeros(10), 0.5)


def test_bad_input_says_what_is_wrong() -> None:
    x, y, words, groups = _states(20)
    with pytest.raises(ValueError, match="one row each"):
        probe_selectivity(x[:-1], y, words, groups, {"all": None})
    with pytest.raises(ValueError, match="both values"):
        probe_selectivity(x, np.zeros_like(y), words, groups, {"all": None})
    with pytest.raises(ValueError, match="empty"):
        probe_selectivity(x, y, words, groups, {"none": []})
