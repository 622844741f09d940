"""Training a recurrent net on a long-lag task until the task's success criterion holds.

    result = train_task(TaskConfig(task="adding", lag=100, cell="lstm"))
    result.solved, result.sequences          # solved? after how many training sequences?

The criterion follows Hochreiter & Schmidhuber 1997: the `window` most recent training sequences
(default 2000) must all be processed correctly (and, for the adding problem, their mean squared
error must be below 0.01). Because we train in minibatches, "sequences needed" is the number of
training sequences seen when the criterion first held, counted in whole batches. The solved
model is then tested on `test_size` fresh sequences (the paper used 2560).

Training is bounded by `max_sequences` and `max_seconds`; a run that hits a bound is reported as
not solved, with its accuracy so far. Nothing here is specific to one task: see definitions.py.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from lstmkit.cells.registry import cell_names
from lstmkit.nn.layers import layer_class
from lstmkit.tasks.definitions import Task, make_task
from lstmkit.training.fit import Loop, LoopState, Step, fit


@dataclass
class TaskConfig:
    task: str = "adding"  # adding | temporal | copy
    lag: int = 100  # T of the task (see definitions.py)
    cell: str = "lstm"  # rnn | gru | lstm
    hidden_size: int = 64
    batch_size: int = 32
    lr: float = 3e-3  # Adam learning rate
    clip: float = 1.0  # gradient-norm clipping
    forget_bias: float = 3.0  # initial LSTM forget-gate bias (ignored for rnn / gru)
    window: int = 2000  # success: this many most recent sequences all correct
    required_accuracy: float = 1.0  # share of the window that must be correct (paper: 1.0)
    max_sequences: int = 200_000  # give up after this many training sequences
    max_seconds: float = 600.0  # ... or after this much wall time
    test_size: int = 2560  # fresh sequences for the final test (paper: 2560)
    seed: int = 0
    log_every: int = 50  # batches between progress-bar updates / curve points


@dataclass
class TaskResult:
    config: dict
    task: str
    description: str
    solved: bool
    sequences: int  # training sequences seen (when solved: when the criterion first held)
    seconds: float
    window_accuracy: float  # share correct over the last `window` training sequences
    window_error: float  # mean per-sequence error over that window
    test_accuracy: float
    test_wrong: int
    test_size: int
    parameters: int
    curve: list[dict] = field(default_factory=list)  # {"sequences", "accuracy", "error"}
    stopped_because: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class TaskModel(nn.Module):
    """A one-layer RNN / GRU / LSTM and a linear read-out, at the last step or at every step."""

    def __init__(self, task: Task, cell: str, hidden_size: int, forget_bias: float = 1.0):
        super().__init__()
        if cell not in cell_names():
            raise ValueError(f"unknown cell {cell!r}; expected one of {cell_names()}")
        extra = {"forget_bias": forget_bias} if cell == "lstm" else {}
        self.rnn = layer_class(cell)(task.input_size, hidden_size, **extra)
        self.head = nn.Linear(hidden_size, task.output_size)
        self.per_step = task.per_step_output

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Run over the padded batch without packing: padding comes after each sequence's end,
        # so it cannot change the outputs up to that end, and torch's packed kernels are many
        # times slower on CPU than the padded ones.
        out, _ = self.rnn(x)  # (T, B, H)
        if self.per_step:
            return self.head(out)  # (T, B, output_size)
        last = out[lengths - 1, torch.arange(out.shape[1])]  # (B, H): output at each length
        return self.head(last)  # (B, output_size)


def evaluate_model(
    model: TaskModel, task: Task, n: int, gen: torch.Generator, batch_size: int = 256
) -> tuple[int, int]:
    """(number correct, number tested) on n fresh sequences."""
    model.eval()
    right = done = 0
    with torch.no_grad():
        while done < n:
            b = task.sample(min(batch_size, n - done), gen)
            ev = task.evaluate(model(b.x, b.lengths), b)
            right += int(ev.correct.sum())
            done += len(ev.correct)
    model.train()
    return right, done


def train_task(cfg: TaskConfig, progress: bool = True) -> TaskResult:
    """Train until solved or a bound is hit, then test. Shows a tqdm bar when progress=True."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = make_task(cfg.task, cfg.lag)
    model = TaskModel(task, cfg.cell, cfg.hidden_size, cfg.forget_bias)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    recent_ok: deque[bool] = deque(maxlen=cfg.window)
    recent_err: deque[float] = deque(maxlen=cfg.window)
    curve: list[dict] = []
    bar = tqdm(
        total=cfg.max_sequences,
        unit="seq",
        unit_scale=True,
        disable=not progress,
        desc=f"{cfg.cell} {cfg.task} T={cfg.lag}",
        leave=False,
    )

    def compute(batch) -> Step:
        ev = task.evaluate(model(batch.x, batch.lengths), batch)
        return Step(ev.loss, extra=ev)

    def after(state: LoopState, step: Step) -> str | None:
        """The window of recent sequences, and the success criterion on it."""
        recent_ok.extend(step.extra.correct.tolist())
        recent_err.extend(step.extra.error.tolist())
        bar.update(cfg.batch_size)
        acc, err = _window(recent_ok, recent_err)
        if state.step % cfg.log_every == 0:
            curve.append({"sequences": state.step * cfg.batch_size, "accuracy": acc, "error": err})
            bar.set_postfix(acc=f"{acc:.3f}", err=f"{err:.4f}")
        full = len(recent_ok) == cfg.window
        err_ok = task.max_mean_error is None or err < task.max_mean_error
        if full and acc >= cfg.required_accuracy and err_ok:
            return "success criterion met"
        if state.step * cfg.batch_size >= cfg.max_sequences:
            return f"reached max_sequences={cfg.max_sequences}"
        return None

    batches = (task.sample(cfg.batch_size, gen) for _ in itertools.count())
    loop = Loop(clip=cfg.clip, max_seconds=cfg.max_seconds)
    state = fit(model, opt, batches, compute, LoopState(), loop, after=after)
    solved = state.stopped_by == "success criterion met"
    why = state.stopped_by
    if why == "max_seconds":
        why = f"reached max_seconds={cfg.max_seconds:g}"
    seen = state.step * cfg.batch_size
    acc, err = _window(recent_ok, recent_err)
    bar.close()
    seconds = state.seconds
    curve.append({"sequences": seen, "accuracy": acc, "error": err})
    right, tested = evaluate_model(
        model, task, cfg.test_size, torch.Generator().manual_seed(cfg.seed + 1_000_003)
    )
    return TaskResult(
        config=asdict(cfg),
        task=cfg.task,
        description=task.describe(),
        solved=solved,
        sequences=seen,
        seconds=seconds,
        window_accuracy=acc,
        window_error=err,
        test_accuracy=right / tested,
        test_wrong=tested - right,
        test_size=tested,
        parameters=sum(p.numel() for p in model.parameters()),
        curve=curve,
        stopped_because=why,
    )


def _window(ok: deque[bool], err: deque[float]) -> tuple[float, float]:
    """Share correct and mean error over the recent sequences."""
    return sum(ok) / len(ok), sum(err) / len(err)


def sweep(
    base: TaskConfig, cells: list[str], lags: list[int], progress: bool = True
) -> list[TaskResult]:
    """Accuracy against lag: one training run per (cell, lag), same seed and budget for all."""
    results = []
    for lag in lags:
        for cell in cells:
            cfg = TaskConfig(**{**asdict(base), "cell": cell, "lag": lag})
            results.append(train_task(cfg, progress=progress))
    return results


def format_table(results: list[TaskResult]) -> str:
    """A plain-text table: one row per run."""
    head = (
        f"{'task':9} {'cell':5} {'T':>5} {'solved':>6} {'sequences':>10} {'seconds':>8} "
        f"{'win acc':>8} {'test acc':>8} {'wrong':>7} {'params':>7}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        c = r.config
        rows.append(
            f"{r.task:9} {c['cell']:5} {c['lag']:>5} {'yes' if r.solved else 'no':>6} "
            f"{r.sequences:>10,} {r.seconds:>8.1f} {r.window_accuracy:>8.3f} "
            f"{r.test_accuracy:>8.3f} {r.test_wrong:>4}/{r.test_size:<4} {r.parameters:>5}"
        )
    return "\n".join(rows)
