import json
import math
from pathlib import Path

import pytest
import torch
from lm_helpers import TINY_MODEL, patterned_corpus, tiny_corpus, write_corpus

from lstmkit.training import (
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    load_checkpoint,
    predict,
    train,
)
from lstmkit.training.checkpoint import load_training_state


def _cfg(tmp_path, out, **kw):
    train_file, valid_file = tiny_corpus(tmp_path)
    base = dict(
        train_file=str(train_file),
        valid_file=str(valid_file),
        out=str(tmp_path / out),
        model=dict(TINY_MODEL),
        batch_size=4,
        bptt=8,
        epochs=2,
        eval_every=5,
        progress=False,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return load_checkpoint(path).model.state_dict()


@pytest.mark.parametrize(
    "optimizer, schedule, stop_at",
    [
        ("sgd", "step", 7),  # mid-epoch, between validations
        ("adam", "plateau", 10),  # right after a validation
    ],
)
def test_resume_gives_the_same_numbers_as_uninterrupted(tmp_path, optimizer, schedule, stop_at):
    """Dropout is on, so the RNG state matters; momentum/Adam state and the lr schedule too."""
    extra = dict(
        optimizer=optimizer,
        schedule=schedule,
        lr=0.5 if optimizer == "sgd" else 1e-2,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        decay_after=1,
        lr_decay=0.5,
        model=dict(TINY_MODEL, dropout=0.3, embed_dropout=0.1),
    )
    full = train(_cfg(tmp_path, "full", **extra))
    part = train(_cfg(tmp_path, "split", max_steps=stop_at, **extra))
    assert part.stopped_by == "max_steps" and part.steps == stop_at
    state, _ = load_training_state(tmp_path / "split" / "last")
    assert state["step"] == stop_at and state["window"] > 0
    rest = train(_cfg(tmp_path, "split", **extra), resume=True)
    assert rest.steps == full.steps and rest.epochs_completed == full.epochs_completed == 2
    a, b = _weights(tmp_path / "full" / "last"), _weights(tmp_path / "split" / "last")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    valid = [h["valid"]["nats"] for h in full.history]
    resumed = [h["valid"]["nats"] for h in rest.history if h["valid"]]
    assert resumed == valid  # every validation, bit for bit
    assert full.best_valid_loss == rest.best_valid_loss


def test_best_and_last_and_log(tmp_path):
    r = train(_cfg(tmp_path, "run", epochs=1))
    best, last = load_checkpoint(tmp_path / "run" / "best"), tmp_path / "run" / "last"
    assert best.meta["state"] is None  # best is weights only
    assert load_checkpoint(last).meta["state"]["state"]["step"] == r.steps
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(r.history) >= 2
    assert min(json.loads(x)["valid"]["nats"] for x in lines) == r.best_valid_loss


def test_training_learns_a_learnable_text(tmp_path):
    tr = patterned_corpus(tmp_path, 150, 0, "p_train.txt")
    va = patterned_corpus(tmp_path, 30, 1, "p_valid.txt")
    r = train(
        _cfg(
            tmp_path,
            "run",
            train_file=str(tr),
            valid_file=str(va),
            epochs=3,
            optimizer="adam",
            lr=2e-2,
            eval_every=0,
        )
    )
    first, best = r.history[0]["valid"]["nats"], r.best_valid_loss
    # 4 sentences in random order: about ln(4)/6 nats per word is left once they are learned
    assert best < 0.7 < first, (first, best)
    top = predict(tmp_path / "run" / "best", "i drank apple", k=1)
    assert top[0][0] == "juice" and top[0][1] > 0.6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from lstmkit.training import lm_run

    real, calls = lm_run.lm_loss, {"n": 0}

    def loss_that_turns_nan(logits, y, per="token"):  # step 9 produces NaN, like a blow-up
        calls["n"] += 1
        loss = real(logits, y, per)
        return loss * float("nan") if calls["n"] == 9 else loss

    monkeypatch.setattr(lm_run, "lm_loss", loss_that_turns_nan)
    cfg = _cfg(tmp_path, "run", eval_every=4)
    with pytest.raises(NonFiniteLossError, match="at step 9") as info:
        train(cfg)
    assert info.value.step == 9
    out = capsys.readouterr().out
    assert "last good checkpoint: " + str(tmp_path / "run" / "last") in out
    state, _ = load_training_state(tmp_path / "run" / "last")
    assert state["step"] == 8  # the last save before the NaN, untouched
    for v in _weights(tmp_path / "run" / "last").values():
        assert torch.isfinite(v).all()


def test_nan_detected_before_the_update(tmp_path):
    from lstmkit.training.loop import train_window
    from lstmkit.training.model import LanguageModel, ModelConfig

    m = LanguageModel(ModelConfig(vocab_size=5, emb_size=4, hidden_size=4))
    with torch.no_grad():
        m.decoder.bias[0] = float("nan")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    x = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        train_window(m, opt, x, x, None, step=7)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) or k == "decoder.bias" for k in before)


def test_resume_refuses_a_different_vocabulary_or_model(tmp_path):
    train(_cfg(tmp_path, "run", max_steps=3))
    other = write_corpus(tmp_path, 50, 7, "other.txt")
    with pytest.raises(CheckpointError, match="vocabulary"):
        train(_cfg(tmp_path, "run", train_file=str(other), min_count=3), resume=True)
    with pytest.raises(CheckpointError, match="hidden_size"):
        train(_cfg(tmp_path, "run", model=dict(TINY_MODEL, hidden_size=14)), resume=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(_cfg(tmp_path, "never"), resume=True)
    with pytest.raises(CheckpointError, match="already holds a run .*a fresh run would overwrite"):
        train(_cfg(tmp_path, "run", max_steps=3))


def test_char_level_reports_bits_per_character(tmp_path):
    """The validation at step 6 reports bits per character: its mean nats (recomputed here by
    running the saved model over the whole validation text as one stream) divided by ln 2."""
    # eval_batch_size=1: one stream, so the mean loss is that of the text read in one pass
    kw = dict(level="char", epochs=1, bptt=16, max_steps=6, eval_every=6, eval_batch_size=1)
    cfg = _cfg(tmp_path, "run", **kw)
    r = train(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    assert "<eos>" not in ckpt.vocab and "\n" in ckpt.vocab and r.steps == 6
    (valid,) = [h["valid"] for h in r.history if h["valid"] is not None]
    assert set(valid) == {"nats", "bpc"}  # characters: bits per character, no perplexity
    assert r.best_valid_loss == valid["nats"]
    # by hand: characters of the validation file -> ids -> cross-entropy of each next character
    text = Path(cfg.valid_file).read_bytes().decode("utf-8")
    ids = torch.tensor([ckpt.vocab.stoi.get(ch, ckpt.vocab.unk_id) for ch in text])
    with torch.no_grad():
        logits = ckpt.model(ids[:-1, None])[0][:, 0].double()
    nats = -torch.log_softmax(logits, -1).gather(1, ids[1:, None]).mean().item()
    assert valid["nats"] == pytest.approx(nats, rel=1e-5)
    assert valid["bpc"] == pytest.approx(nats / math.log(2), rel=1e-5)
    assert valid["bpc"] == pytest.approx(valid["nats"] / math.log(2), rel=1e-12)
    log_lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in log_lines]
    assert [e["valid"] for e in logged if e["valid"] is not None] == [valid]


def test_the_shared_optimizer_step_stops_before_a_bad_update() -> None:
    from lstmkit.training.loop import check_loss, optimizer_step

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = (model(torch.randn(4, 3)) * float("inf")).sum()
    with pytest.raises(NonFiniteLossError, match="at step 5 .in the gradient norm"):
        optimizer_step(model, opt, loss, clip=1.0, step=5)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # the update never happened
    with pytest.raises(NonFiniteLossError, match="became nan at step 2"):
        check_loss(float("nan"), 2)


def test_the_tasks_loop_stops_on_a_nan(monkeypatch) -> None:
    from lstmkit.tasks import TaskConfig, train_task
    from lstmkit.tasks import train as task_train

    original = task_train.TaskModel.forward

    def poisoned(self, x, lengths):  # a model whose output went bad
        return original(self, x, lengths) * float("nan")

    monkeypatch.setattr(task_train.TaskModel, "forward", poisoned)
    # steps count from 1 in every loop (fit.py): the first step is step 1
    with pytest.raises(NonFiniteLossError, match="at step 1\\b"):
        train_task(TaskConfig(task="adding", lag=22, max_sequences=64), progress=False)
