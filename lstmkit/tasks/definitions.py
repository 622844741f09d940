"""The long-lag tasks, defined exactly as in their papers, with their success criteria.

Every task makes batches with `task.sample(batch_size, gen)` and judges a model's outputs with
`task.evaluate(outputs, batch)`, which returns the loss to train on and, per sequence, whether
it was processed correctly. Inputs are time-major and padded: x (T, B, input_size) with
`lengths` (B,); sequences shorter than T are zero past their length.

Adding problem (Hochreiter & Schmidhuber 1997, section 5.4, experiment 4). Each step is a pair
(value, marker): value uniform in [-1, 1]; marker 1.0 on exactly two steps, -1.0 on the first
and last step (unless the first step is marked), 0.0 elsewhere. Length uniform in [T, T + T/10].
The first marked step is one of the first 10; the second is one of the first T/2 - 1 steps that
is not marked yet. When step 0 is marked its value X1 is set to 0 (as in the paper). Target at
the last step: 0.5 + (X1 + X2) / 4. A sequence is correct when |output - target| < 0.04. The
paper stopped when the 2000 most recent sequences were correct and the average error < 0.01.
The minimal time lag is T/2 + 1 steps (from the latest possible X2 to the earliest end).

Temporal order, task 6a (same paper, section 5.6). 8 symbols one-hot: E, B, a, b, c, d, X, Y.
A sequence starts with E, ends with B (the trigger), and is otherwise random a-d except for two
positions t1 in [10, 20] and t2 in [50, 60] (0-based, E at position 0), each X or Y. Length
uniform in [100, 110]. Class at the end: (X, X) -> Q, (X, Y) -> R, (Y, X) -> S, (Y, Y) -> U.
A sequence is correct when the arg-max class is right.

Copy memory (Arjovsky, Shah & Bengio 2016). 10 symbols: 0-7 data, 8 blank, 9 delimiter. Input
length T + 20: 10 data symbols uniform from 0-7, T - 1 blanks, the delimiter, 10 blanks. Target:
T + 10 blanks, then the 10 data symbols in order. Loss: mean cross-entropy over all T + 20 steps;
the memoryless baseline (blanks, then uniform guesses) is 10 ln 8 / (T + 20). A sequence is
correct when all 10 recalled symbols are right (arg-max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Batch:
    x: Tensor  # (T, B, input_size) float32, zero past each length
    lengths: Tensor  # (B,) int64
    target: Tensor  # adding (B,) float; temporal (B,) int64; copy (T, B) int64
    info: dict  # task-specific ground truth, for tests and for plots (e.g. marker positions)


@dataclass
class Evaluation:
    loss: Tensor  # scalar, what the optimiser minimises
    correct: Tensor  # (B,) bool: sequence processed correctly by the task's own criterion
    error: Tensor  # (B,) float: the per-sequence error the paper averages (see each task)


class Task:
    name: str
    input_size: int
    output_size: int
    per_step_output: bool  # True: a prediction at every step (copy); False: at the last step
    max_mean_error: float | None  # the paper's "average training error below ..." (None: unused)

    def __init__(self, lag: int) -> None:
        if lag < 1:
            raise ValueError(f"{self.name}: lag must be a positive number of steps, got {lag}")
        self.lag = lag

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def evaluate(self, outputs: Tensor, batch: Batch) -> Evaluation:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _uniform_int(low: int, high: int, size: int, gen: torch.Generator) -> Tensor:
    """Integers uniform in [low, high] (both ends included)."""
    return torch.randint(low, high + 1, (size,), generator=gen)


class AddingProblem(Task):
    """Adding problem; `lag` is the paper's minimal sequence length T."""

    name = "adding"
    input_size = 2
    output_size = 1
    per_step_output = False
    max_mean_error = 0.01
    tolerance = 0.04

    def __init__(self, lag: int = 100) -> None:
        super().__init__(lag)
        if lag < 22:
            raise ValueError(
                f"adding: T={lag} is too short; the first marker is among the first 10 steps and "
                "the second among the first T/2 - 1, so T must be at least 22"
            )

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        T, B = self.lag, batch_size
        lengths = _uniform_int(T, T + T // 10, B, gen)  # (B,)
        Tmax = int(lengths.max())
        steps = torch.arange(Tmax)[:, None]  # (Tmax, 1)
        valid = steps < lengths[None, :]  # (Tmax, B)
        values = (torch.rand(Tmax, B, generator=gen) * 2 - 1) * valid
        first = _uniform_int(0, 9, B, gen)  # (B,)
        # Second marker: uniform over the first T/2 - 1 steps other than `first`.
        n_second = T // 2 - 1
        second = _uniform_int(0, n_second - 2, B, gen)
        second = second + (second >= first).long()  # skip the first marker's slot
        markers = torch.zeros(Tmax, B)
        cols = torch.arange(B)
        markers[0] = -1.0
        markers[lengths - 1, cols] = -1.0
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        values[0, first == 0] = 0.0  # "in the rare case where the first pair is marked, X1 = 0"
        x1, x2 = values[first, cols], values[second, cols]
        target = 0.5 + (x1 + x2) / 4.0  # (B,) in [0, 1]
        x = torch.stack([values, markers], dim=-1)  # (Tmax, B, 2)
        info = {"first": first, "second": second, "x1": x1, "x2": x2}
        return Batch(x=x, lengths=lengths, target=target, info=info)

    def evaluate(self, outputs: Tensor, batch: Batch) -> Evaluation:
        pred = outputs.reshape(-1)  # (B,)
        diff = pred - batch.target
        error = diff.pow(2)
        return Evaluation(
            loss=error.mean(), correct=diff.abs() < self.tolerance, error=error.detach()
        )

    def describe(self) -> str:
        return (
            f"adding problem, T={self.lag} (length {self.lag}-{self.lag + self.lag // 10}, "
            f"minimal lag {self.lag // 2 + 1}); correct when |error| < {self.tolerance}"
        )


TEMPORAL_SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")
TEMPORAL_CLASSES = ("Q", "R", "S", "U")  # (X,X), (X,Y), (Y,X), (Y,Y)


class TemporalOrder(Task):
    """Temporal order task 6a. `lag` scales the paper's layout: the paper's is lag=100 (length
    100-110, t1 in [10, 20], t2 in [50, 60]); lag=L uses length L..L+L/10, t1 in [L/10, L/5],
    t2 in [L/2, 3L/5]."""

    name = "temporal"
    input_size = len(TEMPORAL_SYMBOLS)
    output_size = len(TEMPORAL_CLASSES)
    per_step_output = False
    max_mean_error = None

    def __init__(self, lag: int = 100) -> None:
        super().__init__(lag)
        if lag < 20:
            raise ValueError(f"temporal: length {lag} is too short; use at least 20 (paper: 100)")
        L = lag
        self.t1_range = (L // 10, L // 5)
        self.t2_range = (L // 2, (3 * L) // 5)

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        L, B = self.lag, batch_size
        lengths = _uniform_int(L, L + L // 10, B, gen)
        Tmax = int(lengths.max())
        cols = torch.arange(B)
        sym = torch.randint(2, 6, (Tmax, B), generator=gen)  # a, b, c, d
        sym[0] = 0  # E
        sym[lengths - 1, cols] = 1  # B, the trigger
        t1 = _uniform_int(*self.t1_range, B, gen)
        t2 = _uniform_int(*self.t2_range, B, gen)
        is_y1 = torch.randint(0, 2, (B,), generator=gen)
        is_y2 = torch.randint(0, 2, (B,), generator=gen)
        sym[t1, cols] = 6 + is_y1
        sym[t2, cols] = 6 + is_y2
        target = 2 * is_y1 + is_y2  # Q=XX, R=XY, S=YX, U=YY
        valid = (torch.arange(Tmax)[:, None] < lengths[None, :]).unsqueeze(-1)
        x = F.one_hot(sym, self.input_size).float() * valid  # (Tmax, B, 8)
        info = {"symbols": sym, "t1": t1, "t2": t2}
        return Batch(x=x, lengths=lengths, target=target, info=info)

    def evaluate(self, outputs: Tensor, batch: Batch) -> Evaluation:
        ce = F.cross_entropy(outputs, batch.target, reduction="none")  # (B,)
        correct = outputs.argmax(-1) == batch.target
        return Evaluation(loss=ce.mean(), correct=correct, error=ce.detach())

    def describe(self) -> str:
        return (
            f"temporal order 6a, length {self.lag}-{self.lag + self.lag // 10}, t1 in "
            f"{list(self.t1_range)}, t2 in {list(self.t2_range)}; 4 classes"
        )


COPY_DATA, COPY_BLANK, COPY_DELIM, COPY_RECALL = 8, 8, 9, 10


class CopyMemory(Task):
    """Copy memory; `lag` is T, the number of steps between the data and the delimiter + 1."""

    name = "copy"
    input_size = 10
    output_size = 9  # data symbols 0-7 and the blank; the delimiter is never a target
    per_step_output = True
    max_mean_error = None

    def sample(self, batch_size: int, gen: torch.Generator) -> Batch:
        T, B, K = self.lag, batch_size, COPY_RECALL
        data = torch.randint(0, COPY_DATA, (K, B), generator=gen)  # (10, B)
        blanks = torch.full((T - 1, B), COPY_BLANK)
        inp = torch.cat(
            [data, blanks, torch.full((1, B), COPY_DELIM), torch.full((K, B), COPY_BLANK)]
        )  # (T + 20, B)
        target = torch.cat([torch.full((T + K, B), COPY_BLANK), data])  # (T + 20, B)
        x = F.one_hot(inp, self.input_size).float()
        lengths = torch.full((B,), T + 2 * K, dtype=torch.long)
        return Batch(x=x, lengths=lengths, target=target, info={"data": data, "input": inp})

    def baseline_loss(self) -> float:
        """Cross-entropy of the memoryless strategy: 10 ln 8 / (T + 20)."""
        return COPY_RECALL * math.log(COPY_DATA) / (self.lag + 2 * COPY_RECALL)

    def evaluate(self, outputs: Tensor, batch: Batch) -> Evaluation:
        # outputs (T + 20, B, 9)
        ce = F.cross_entropy(outputs.permute(1, 2, 0), batch.target.T, reduction="none")  # (B, T)
        recall = outputs[-COPY_RECALL:].argmax(-1)  # (10, B)
        correct = (recall == batch.target[-COPY_RECALL:]).all(0)
        return Evaluation(loss=ce.mean(), correct=correct, error=ce.mean(1).detach())

    def describe(self) -> str:
        return (
            f"copy memory, T={self.lag} (length {self.lag + 20}), memoryless baseline "
            f"cross-entropy {self.baseline_loss():.4f}"
        )


TASKS: dict[str, type[Task]] = {
    "adding": AddingProblem,
    "temporal": TemporalOrder,
    "copy": CopyMemory,
}


def make_task(name: str, lag: int) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](lag)
