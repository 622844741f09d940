"""Diagnostic probes with control tasks (Hewitt & Liang 2019): is a label in the states, or did
the probe learn something else?

A probe (here logistic regression) trained on recorded states to predict a label can succeed
because the states encode the label, or because the probe is expressive enough to pick up
something that merely goes with it: most often the identity of the current word, which every
recurrent state encodes. Hewitt & Liang's *control task* asks the same probe, on the same rows,
to predict a label that only word identity can give: each word type gets a random label, drawn
once, with the real label's share of ones. Both are measured on held-out sentences.

    selectivity = task accuracy - control accuracy

A probe on the units that carry the subject's number should be accurate on the task and near its
majority baseline on the control; a probe on every unit may be accurate on both, and then its
task accuracy says less about what those units carry.

    rows = probe_selectivity(x, y, words, groups, {"best cell": [12], "all": None})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lstmkit.inspect.cells import _logistic_probe, split_groups


@dataclass
class ProbeResult:
    name: str
    units: list[int] | None  # the state's units the probe reads; None: all of them
    task_accuracy: float  # held-out accuracy on the real label
    control_accuracy: float  # held-out accuracy on the control task
    task_majority: float  # the more frequent label's share (test split), each task
    control_majority: float
    n_train: int
    n_test: int

    @property
    def selectivity(self) -> float:
        return self.task_accuracy - self.control_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "selectivity": self.selectivity}


def control_labels(words: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: a random label per word type (the same at every
    occurrence), 1 with probability `share`. words (N,): any hashable ids or strings."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share of ones must lie in [0, 1], got {share}")
    types, inverse = np.unique(np.asarray(words), return_inverse=True)
    per_type = np.random.default_rng(seed).random(len(types)) < share
    return per_type[inverse].astype(np.int64)


def _majority(y: np.ndarray) -> float:
    return float(max(y.mean(), 1 - y.mean()))


def probe_selectivity(
    x: np.ndarray,
    y: np.ndarray,
    words: np.ndarray,
    groups: np.ndarray,
    unit_sets: dict[str, list[int] | None],
    test_share: float = 0.5,
    seed: int = 0,
) -> list[ProbeResult]:
    """For each named set of units: the probe's held-out accuracy on y and on the control task.

    x (N, H) states; y (N,) binary labels; words (N,) the word at each row (the control task's
    input); groups (N,) one id per sentence, so that training and test hold different sentences
    (both tasks use the same split). A unit set of None means all H units."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(np.int64)
    if not (len(x) == len(y) == len(words) == len(groups)):
        raise ValueError(
            f"x, y, words and groups need one row each: got {len(x)}, {len(y)}, {len(words)} "
            f"and {len(groups)}"
        )
    if set(np.unique(y)) - {0, 1} or len(np.unique(y)) < 2:
        raise ValueError("probe_selectivity needs a binary label with both values present")
    control = control_labels(words, float(y.mean()), seed)
    test = split_groups(groups, test_share, seed)
    results = []
    for name, units in unit_sets.items():
        cols = x if units is None else x[:, list(units)]
        if cols.shape[1] == 0:
            raise ValueError(f"unit set {name!r} is empty")
        task = _logistic_probe(cols[~test], y[~test], cols[test], y[test])
        seen = np.unique(control[~test])
        ctrl = (
            _logistic_probe(cols[~test], control[~test], cols[test], control[test])
            if len(seen) == 2
            else float((control[test] == seen[0]).mean())  # one label to learn: it predicts it
        )
        results.append(
            ProbeResult(
                name=name,
                units=None if units is None else [int(u) for u in units],
                task_accuracy=task,
                control_accuracy=ctrl,
                task_majority=_majority(y[test]),
                control_majority=_majority(control[test]),
                n_train=int((~test).sum()),
                n_test=int(test.sum()),
            )
        )
    return results
