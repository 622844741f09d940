"""Finding cells: LSTMVis-style select / match, and the cells that predict a label.

select (Strobelt et al. 2018, LSTMVis): given a span of tokens in one sentence, the cells whose
value is >= `threshold` at every step of the span, and (with `off_around` = k > 0) below the
threshold at the k steps before and after it. Ranked by how far above the threshold they stay.

match: the other places in the corpus where the selected cells light up the same way: maximal
runs of steps at which at least `min_share` of the selected cells are on. A run scores the mean
share of selected cells on, minus the mean share of the other cells on (cells that are on
everywhere do not make a match); runs with a length within `length_slack` of the query's are
kept, best first, the query itself excluded.

predictive_cells: for a binary label per token (e.g. the subject's number at every step between
subject and verb), each cell's best single-threshold accuracy, fitted on a training split and
measured on a held-out split, plus a logistic-regression probe on all cells together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lstmkit.inspect.states import StateSet


def select_cells(
    values: np.ndarray, start: int, end: int, threshold: float = 0.3, off_around: int = 0
) -> list[int]:
    """Cells on across values[start:end] (values (T, H) of one sentence), best first."""
    T = values.shape[0]
    if not 0 <= start < end <= T:
        raise ValueError(
            f"span [{start}, {end}) must lie inside the sentence's {T} steps "
            f"and hold at least one step"
        )
    span = values[start:end]  # (L, H)
    ok = (span >= threshold).all(0)  # (H,)
    if off_around > 0:
        around = np.concatenate(
            [values[max(0, start - off_around) : start], values[end : end + off_around]]
        )
        if len(around):
            ok &= (around < threshold).all(0)
    cells = np.flatnonzero(ok)
    strength = span.min(0)[cells]
    return [int(c) for c in cells[np.argsort(-strength, kind="stable")]]


@dataclass
class Match:
    sentence: int
    start: int
    end: int  # exclusive
    score: float
    share: float  # mean share of the selected cells on over the run


def match_cells(
    states: StateSet,
    name: str,
    cells: list[int],
    threshold: float = 0.3,
    length: int | None = None,
    length_slack: int = 2,
    min_share: float = 1.0,
    exclude: tuple[int, int, int] | None = None,
    top: int = 10,
) -> list[Match]:
    """Places where `cells` are on together; exclude=(sentence, start, end) drops the query."""
    if not cells:
        return []
    matches = []
    sel = np.zeros(states.hidden_size, dtype=bool)
    sel[cells] = True
    for k, vals in enumerate(states.values[name]):
        on = vals >= threshold  # (T, H)
        share = on[:, sel].mean(1)  # (T,)
        other = on[:, ~sel].mean(1) if (~sel).any() else np.zeros(len(on))
        good = share >= min_share
        t = 0
        while t < len(good):
            if not good[t]:
                t += 1
                continue
            s = t
            while t < len(good) and good[t]:
                t += 1
            if length is not None and abs((t - s) - length) > length_slack:
                continue
            if exclude is not None and exclude == (k, s, t):
                continue
            score = float(share[s:t].mean() - other[s:t].mean())
            matches.append(Match(k, s, t, score, float(share[s:t].mean())))
    matches.sort(key=lambda m: (-m.score, m.sentence, m.start))
    return matches[:top]


def _best_threshold(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of x (N, H): the threshold and polarity (+1: y=1 above) with the best
    training accuracy for predicting the binary y (N,). Returns (accuracy, threshold, sign)."""
    N, H = x.shape
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, 0)  # (N, H)
    ys = y[order]  # (N, H)
    pos_below = np.vstack([np.zeros((1, H)), np.cumsum(ys, 0)])  # (N+1, H): positives in [0, k)
    neg_below = np.arange(N + 1)[:, None] - pos_below
    P = ys.sum(0)
    acc_up = (neg_below + (P - pos_below)) / N  # predict 1 above the cut
    acc_down = (pos_below + ((N - P) - neg_below)) / N  # predict 1 below the cut
    k_up, k_down = acc_up.argmax(0), acc_down.argmax(0)
    a_up, a_down = acc_up.max(0), acc_down.max(0)
    cut_values = np.vstack([xs[:1] - 1, (xs[:-1] + xs[1:]) / 2, xs[-1:] + 1])  # (N+1, H)
    cols = np.arange(H)
    sign = np.where(a_up >= a_down, 1, -1)
    thr = np.where(sign > 0, cut_values[k_up, cols], cut_values[k_down, cols])
    return np.maximum(a_up, a_down), thr, sign


@dataclass
class CellRanking:
    cells: list[int]  # best first
    train_accuracy: list[float]
    test_accuracy: list[float]
    thresholds: list[float]
    signs: list[int]  # +1: label 1 when the value is above the threshold
    probe_test_accuracy: float  # logistic regression on all cells
    majority_accuracy: float  # always predicting the more frequent label (test split)
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _logistic_probe(xtr, ytr, xte, yte, steps: int = 200) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    Xtr = torch.tensor((xtr - mu) / sd, dtype=torch.float64)
    Xte = torch.tensor((xte - mu) / sd, dtype=torch.float64)
    Ytr = torch.tensor(ytr, dtype=torch.float64)
    w = torch.zeros(Xtr.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xtr @ w + b, Ytr)
        loss = loss + 1e-3 * w.pow(2).sum()  # a little L2 so separable data stays finite
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (Xte @ w + b > 0).numpy()
    return float((pred == yte.astype(bool)).mean())


def split_groups(groups: np.ndarray, test_share: float = 0.5, seed: int = 0) -> np.ndarray:
    """A (N,) bool mask of test rows: a random `test_share` of the groups (e.g. sentences), with
    every row of a group on the same side."""
    g = np.asarray(groups)
    uniq = np.unique(g)
    rng = np.random.default_rng(seed)
    test_groups = rng.choice(uniq, size=max(1, int(len(uniq) * test_share)), replace=False)
    test = np.isin(g, test_groups)
    if test.all() or not test.any():
        raise ValueError("too few groups to split into training and test parts")
    return test


def predictive_cells(
    x: np.ndarray,
    y: np.ndarray,
    top: int = 10,
    test_share: float = 0.5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> CellRanking:
    """Rank cells by held-out single-threshold accuracy on the binary label y.

    x (N, H) cell values, y (N,) in {0, 1}. `groups` (N,) keeps all rows of one group (e.g. one
    sentence) on the same side of the split, so the test measures new sentences."""
    y = np.asarray(y).astype(np.int64)
    if set(np.unique(y)) - {0, 1} or len(np.unique(y)) < 2:
        raise ValueError("predictive_cells needs a binary label with both values present")
    test = split_groups(np.arange(len(y)) if groups is None else groups, test_share, seed)
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    acc, thr, sign = _best_threshold(xtr, ytr)
    pred = np.where(sign[None, :] > 0, xte > thr[None, :], xte <= thr[None, :])  # (Nte, H)
    test_acc = (pred == yte[:, None].astype(bool)).mean(0)
    order = np.argsort(-test_acc, kind="stable")[:top]
    majority = max(yte.mean(), 1 - yte.mean())
    return CellRanking(
        cells=[int(c) for c in order],
        train_accuracy=[float(acc[c]) for c in order],
        test_accuracy=[float(test_acc[c]) for c in order],
        thresholds=[float(thr[c]) for c in order],
        signs=[int(sign[c]) for c in order],
        probe_test_accuracy=_logistic_probe(xtr, ytr, xte, yte),
        majority_accuracy=float(majority),
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
    )
