"""The long-lag task generators against their published definitions, and the training loop."""

from __future__ import annotations

import math

import pytest
import torch

from lstmkit.tasks import (
    AddingProblem,
    CopyMemory,
    TaskConfig,
    TaskModel,
    TemporalOrder,
    make_task,
    train_task,
)
from lstmkit.tasks.definitions import COPY_BLANK, COPY_DELIM, TEMPORAL_SYMBOLS


@pytest.fixture(autouse=True)
def one_thread():
    """Small nets: one thread is fastest and does not fight other processes for the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("T", [22, 50, 100, 200])
def test_adding_matches_the_1997_definition(T):
    task = AddingProblem(T)
    b = task.sample(512, gen(T))
    assert b.x.shape == (int(b.lengths.max()), 512, 2)
    assert int(b.lengths.min()) >= T and int(b.lengths.max()) <= T + T // 10
    for k in range(512):
        L = int(b.lengths[k])
        values, markers = b.x[:L, k, 0], b.x[:L, k, 1]
        assert (b.x[L:, k] == 0).all(), "padding past the length must be zero"
        assert values.abs().max() <= 1
        marked = (markers == 1).nonzero().flatten().tolist()
        assert len(marked) == 2
        first, second = int(b.info["first"][k]), int(b.info["second"][k])
        assert sorted(marked) == sorted([first, second])
        assert 0 <= first <= 9 and 0 <= second <= T // 2 - 2 and first != second
        assert markers[L - 1] == -1
        assert markers[0] == (1 if first == 0 or second == 0 else -1)
        others = [t for t in range(1, L - 1) if t not in marked]
        assert (markers[others] == 0).all()
        x1 = 0.0 if first == 0 else float(values[first])
        assert float(b.target[k]) == pytest.approx(0.5 + (x1 + float(values[second])) / 4, abs=1e-6)


def test_adding_first_marked_step_has_x1_zero():
    task = AddingProblem(40)
    b = task.sample(4000, gen(1))
    hit = (b.info["first"] == 0).nonzero().flatten()
    assert len(hit) > 100  # 1 in 10 sequences
    assert (b.x[0, hit, 0] == 0).all() and (b.info["x1"][hit] == 0).all()


def test_adding_correct_means_error_below_004():
    task = AddingProblem(30)
    b = task.sample(4, gen())
    out = (b.target + torch.tensor([0.0, 0.039, -0.041, 0.2]))[:, None]
    ev = task.evaluate(out, b)
    assert ev.correct.tolist() == [True, True, False, False]
    assert float(ev.loss) == pytest.approx((0.039**2 + 0.041**2 + 0.2**2) / 4, rel=1e-5)


@pytest.mark.parametrize("lag", [100, 40])
def test_temporal_order_6a(lag):
    task = TemporalOrder(lag)
    b = task.sample(400, gen(lag))
    sym = b.x.argmax(-1)  # (T, B)
    for k in range(400):
        L = int(b.lengths[k])
        s = "".join(TEMPORAL_SYMBOLS[int(i)] for i in sym[:L, k])
        assert s[0] == "E" and s[-1] == "B" and lag <= L <= lag + lag // 10
        xy = [t for t, c in enumerate(s) if c in "XY"]
        assert xy == [int(b.info["t1"][k]), int(b.info["t2"][k])]
        assert task.t1_range[0] <= xy[0] <= task.t1_range[1]
        assert task.t2_range[0] <= xy[1] <= task.t2_range[1]
        assert set(s[1:-1]) - set("XY") <= set("abcd")
        assert (
            "QRSU"[int(b.target[k])]
            == {"XX": "Q", "XY": "R", "YX": "S", "YY": "U"}[s[xy[0]] + s[xy[1]]]
        )
    if lag == 100:
        assert task.t1_range == (10, 20) and task.t2_range == (50, 60)


@pytest.mark.parametrize("T", [1, 10, 100])
def test_copy_memory(T):
    task = CopyMemory(T)
    b = task.sample(8, gen(T))
    inp = b.info["input"]
    assert inp.shape == (T + 20, 8) and b.target.shape == (T + 20, 8)
    assert (inp[:10] < 8).all()
    assert (inp[10 : T + 9] == COPY_BLANK).all() and (inp[T + 9] == COPY_DELIM).all()
    assert (inp[T + 10 :] == COPY_BLANK).all()
    assert (b.target[: T + 10] == COPY_BLANK).all() and (b.target[T + 10 :] == inp[:10]).all()
    assert task.baseline_loss() == pytest.approx(10 * math.log(8) / (T + 20))
    # the memoryless strategy scores exactly the baseline
    logits = torch.full((T + 20, 8, 9), -1e9)
    logits[: T + 10, :, COPY_BLANK] = 0
    logits[T + 10 :, :, :8] = 0
    ev = task.evaluate(logits, b)
    assert float(ev.loss) == pytest.approx(task.baseline_loss(), rel=1e-5)
    perfect = torch.nn.functional.one_hot(b.target, 9).float() * 50
    assert task.evaluate(perfect, b).correct.all()


def test_bad_lags_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="at least 22"):
        AddingProblem(10)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope", 10)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_model_reads_each_sequence_at_its_own_end(cell):
    """Padding after a sequence's end must not change its prediction."""
    torch.manual_seed(0)
    task = AddingProblem(30)
    model = TaskModel(task, cell, 8).double()
    b = task.sample(5, gen(3))
    out = model(b.x.double(), b.lengths)
    for k in range(5):
        L = int(b.lengths[k])
        alone = model(b.x[:L, k : k + 1].double(), b.lengths[k : k + 1])
        assert torch.allclose(out[k], alone[0], atol=1e-12)


class RecordingTaskModel(TaskModel):
    """TaskModel that keeps what it saw and answered in evaluation mode (the final test)."""

    seen: list = []

    def forward(self, x, lengths):
        out = super().forward(x, lengths)
        if not self.training:
            RecordingTaskModel.seen.append((x.clone(), lengths.clone(), out.detach().clone()))
        return out


def _adding_accuracy_by_hand(seen) -> tuple[int, int]:
    """(right, tested) over the recorded test batches, by the 1997 definition: the target is
    0.5 + (X1 + X2) / 4 over the two marked values, correct when |output - target| < 0.04."""
    right = tested = 0
    for x, _, out in seen:
        values, markers = x[..., 0], x[..., 1]
        assert torch.all((markers == 1).sum(0) == 2)
        target = 0.5 + (values * (markers == 1)).sum(0) / 4  # X1 is already 0 when step 0
        right += int(((out.reshape(-1) - target).abs() < 0.04).sum())
        tested += x.shape[1]
    return right, tested


def _temporal_class(x) -> torch.Tensor:
    """The class of each recorded temporal-order sequence, read off its one-hot input: the two
    X / Y symbols (indices 6, 7) in order, (X, X) -> 0 (Q), (X, Y) -> 1 (R), (Y, X) -> 2 (S),
    (Y, Y) -> 3 (U)."""
    classes = []
    for b in range(x.shape[1]):
        where = (x[:, b, 6] + x[:, b, 7]).nonzero().flatten().tolist()
        assert len(where) == 2
        first_y, second_y = (int(x[t, b, 7]) for t in where)
        classes.append(2 * first_y + second_y)
    return torch.tensor(classes)


def test_success_criterion_and_budget(monkeypatch):
    import lstmkit.tasks.train as train_module

    monkeypatch.setattr(train_module, "TaskModel", RecordingTaskModel)
    RecordingTaskModel.seen = []
    # a window of one batch and no accuracy demand: solved after exactly one batch
    cfg = TaskConfig(
        task="temporal",
        lag=20,
        cell="rnn",
        hidden_size=4,
        window=16,
        batch_size=16,
        required_accuracy=0.0,
        test_size=32,
    )
    r = train_task(cfg, progress=False)
    assert r.solved and r.sequences == 16 and r.test_size == 32
    # the test accuracy is the share of the 32 test sequences whose arg-max class is right
    tested = sum(x.shape[1] for x, _, _ in RecordingTaskModel.seen)
    right = sum(
        int((out.argmax(-1) == _temporal_class(x)).sum()) for x, _, out in RecordingTaskModel.seen
    )
    assert tested == 32 and 0 < right < 32
    assert r.test_wrong == 32 - right and r.test_accuracy == right / 32
    # an impossible demand: stops at the budget, not solved, says why
    RecordingTaskModel.seen = []
    cfg = TaskConfig(
        task="adding",
        lag=22,
        cell="lstm",
        hidden_size=4,
        window=10_000,
        batch_size=16,
        lr=0.03,  # enough to move the outputs near the targets: some test sequences come right
        max_sequences=128,
        test_size=32,
    )
    r = train_task(cfg, progress=False)
    assert not r.solved and r.sequences == 128 and "max_sequences" in r.stopped_because
    right, tested = _adding_accuracy_by_hand(RecordingTaskModel.seen)
    assert tested == r.test_size == 32 and 0 < right < 32
    assert r.test_wrong == 32 - right and r.test_accuracy == right / 32


@pytest.mark.slow
def test_lstm_solves_the_adding_problem_at_t30():
    cfg = TaskConfig(
        task="adding",
        lag=30,
        cell="lstm",
        hidden_size=32,
        lr=1e-3,
        forget_bias=1.0,
        max_sequences=400_000,
    )
    r = train_task(cfg, progress=False)
    assert r.solved and r.test_accuracy > 0.99
