"""LMRun: one language-model run's parts and state, and what each step, validation, epoch's end
and save does with them. trainer.py's `_train` calls these in order; fit() calls `compute`,
`after` and `mid_epoch`. TrainState is the run's position, saved in RUN/last/state.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from lstmkit.data.batching import num_windows
from lstmkit.training import distributed as dist_util
from lstmkit.training import rundir
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    verify,
)
from lstmkit.training.config import TrainConfig
from lstmkit.training.fit import LoopState, Step
from lstmkit.training.loop import (
    DivergedError,
    NonFiniteLossError,
    evaluate_stream,
    lm_loss,
    metric,
)
from lstmkit.training.model import detach_hidden
from lstmkit.training.prepare import RunData, hidden_tensors, restore_hidden, with_resume_advice

DIVERGED_FACTOR = 2.0  # stop: perplexity this many times a uniform guess after an epoch


@dataclass
class TrainState(LoopState):
    """Where a language-model run stands. Its saved fields are RUN/last/state.json's "state",
    so a resume continues from exactly here (step = (epoch - 1) * windows per epoch + window)."""

    epoch: int = 1
    window: int = 0  # the next window of this epoch
    tokens: int = 0  # training tokens seen, all ranks together
    best_valid: float | None = None  # best validation loss (nats) so far, and its step
    best_step: int | None = None
    last_valid: float | None = None
    initial_valid: float | None = None  # the untrained model's validation loss
    history: list[dict] = field(default_factory=list)  # one record per validation / save

    def to_dict(self) -> dict:
        loop = {f.name for f in fields(LoopState)} - {"step"}  # this process's counters
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in loop}

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


class LMRun:
    """One language-model run: its parts, its TrainState, and what a step, a validation, an
    epoch's end and a save do with them. `_train` calls these in order; `fit` calls `compute`,
    `after` and `mid_epoch`."""

    def __init__(self, cfg: TrainConfig, out: Path, info, data: RunData, model, optimizer):
        self.cfg, self.out, self.info, self.data = cfg, out, info, data
        self.model = self.train_model = model  # train_model: DDP's wrapper under torchrun
        self.optimizer = optimizer
        self.per_epoch = num_windows(data.train, cfg.bptt)
        # what every checkpoint's config holds beside the model's
        self.extra = {
            "data": {"level": cfg.level, "encoding_errors": cfg.encoding_errors},
            "train": cfg.to_dict(),
        }
        self.state = TrainState()
        self.hidden = None  # carried from window to window, detached at each
        self.bar = None
        self.say = tqdm.write if info.is_main else (lambda *a, **k: None)
        self.t0, self.tokens0 = time.time(), 0  # for the tokens/s on the bar
        self.run_loss, self.run_n = 0.0, 0  # training loss since the last record

    def resume(self, say) -> None:
        """Load RUN/last (read and verified once) into the model, optimizer and state."""
        where = self.out / "last"
        last = verify(where)
        loaded = load_checkpoint(last, map_location=self.data.train.device)
        rundir.check_resumable(self.out, loaded, self.model.config, self.data.vocab, self.cfg)
        self.model.load_state_dict(loaded.model.state_dict())
        saved, tensors = load_training_state(last, self.optimizer)
        rundir.check_state(saved, self.per_epoch, where)
        self.state = TrainState.from_dict(saved)
        self.hidden = restore_hidden(tensors, self.model.is_lstm, self.info, self.data.train.device)
        if self.info.is_main:
            notes = rundir.resume_run_dir(
                self.out,
                self.state.to_dict(),
                self.model,
                self.model.config,
                self.data.vocab,
                self.extra,
            )
            for note in notes:
                say(f"note: {note}")
        s = self.state
        say(f"resumed from {where} at step {s.step} (epoch {s.epoch}, window {s.window})")

    # -- what fit() calls -------------------------------------------------------------------

    def compute(self, batch) -> Step:
        """One window: the forward pass from the carried (detached) state, and its loss."""
        k, x, y = batch  # x, y: (bptt, B)
        logits, self.hidden = self.train_model(x, detach_hidden(self.hidden))
        loss = lm_loss(logits, y, self.cfg.loss_per)
        nats = loss.item() / (y.shape[0] if self.cfg.loss_per == "sequence" else 1)
        return Step(loss, nats, extra=(k, y.numel()))

    def after(self, state: TrainState, step: Step) -> None:
        k, n_tokens = step.extra
        state.window = k + 1
        state.tokens += n_tokens * self.info.world_size
        self.run_loss, self.run_n = self.run_loss + step.value, self.run_n + 1
        rate = (state.tokens - self.tokens0) / max(time.time() - self.t0, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix_str(
            f"epoch {state.epoch} loss {step.value:.3f} "
            f"{_fmt(metric(step.value, self.cfg.level))} {rate:,.0f} tok/s",
            False,
        )

    def mid_epoch(self, state: TrainState) -> None:
        """Every eval_every steps (not at an epoch's last window: the epoch's end does it)."""
        if state.window >= self.per_epoch:
            return
        valid = self.validate()
        self.record(valid)
        if valid:
            self.say(f"step {state.step}: valid {_fmt(valid)}")
        self.check_diverged(valid, end_of_epoch=False)
        self.save(valid, self.hidden)

    # -- epochs -----------------------------------------------------------------------------

    def start_epoch(self) -> None:
        if self.cfg.schedule == "step":
            for g in self.optimizer.param_groups:
                g["lr"] = self.cfg.lr * self.cfg.lr_decay ** max(
                    self.state.epoch - self.cfg.decay_after, 0
                )
        if self.state.window == 0:
            self.hidden = None  # each epoch starts the streams afresh

    def end_epoch(self) -> None:
        s, cfg = self.state, self.cfg
        epoch = s.epoch
        s.epoch, s.window = epoch + 1, 0
        valid = self.validate()
        if (
            cfg.schedule == "plateau"
            and valid is not None
            and s.best_valid is not None
            and valid["nats"] >= s.best_valid
        ):
            for g in self.optimizer.param_groups:
                g["lr"] *= cfg.lr_decay
        self.record(valid)
        self.check_diverged(valid, end_of_epoch=True)
        self.say(
            f"end of epoch {epoch}: step {s.step}"
            + (f", valid {_fmt(valid)}" if valid else "")
            + f", lr {self.optimizer.param_groups[0]['lr']:g}"
        )
        self.save(valid, None)

    def save_mid_epoch(self) -> None:
        """A run stopped by --max-steps / --dry-run inside an epoch: resumable from there."""
        if self.run_n:  # (none: this very step was just validated, recorded and saved)
            valid = self.validate() if self.cfg.dry_run else None
            self.record(valid)
            self.save(valid, self.hidden)

    # -- validation, records, saves ---------------------------------------------------------

    def validate(self) -> dict | None:
        if self.data.valid is None:
            return None
        data = self.data.valid
        if self.cfg.dry_run:
            data = data[: self.cfg.dry_run_steps * self.cfg.bptt + 1]
        total, count = evaluate_stream(self.model, data, self.cfg.bptt)
        m = metric(total / count, self.cfg.level)
        if not math.isfinite(m["nats"]):
            raise NonFiniteLossError(self.state.step, m["nats"], " (validation loss)")
        return m

    def record(self, valid: dict | None) -> None:
        """A history record: the training loss since the last one, the validation, the lr."""
        s = self.state
        if valid is not None and (s.best_valid is None or valid["nats"] < s.best_valid):
            s.best_valid, s.best_step = valid["nats"], s.step
        s.last_valid = None if valid is None else valid["nats"]
        s.history.append(
            {
                "step": s.step,
                "epoch": s.epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_nats": self.run_loss / max(self.run_n, 1),
                "valid": valid,
                "time": time.time(),
            }
        )
        self.run_loss, self.run_n = 0.0, 0

    def check_diverged(self, valid: dict | None, end_of_epoch: bool) -> None:
        """Worse than a uniform guess over the vocabulary and than the untrained model (whose
        random decoder starts a little above log V): a warning, and `"diverged": true` in the
        log. After a whole epoch at more than twice that perplexity the run stops: a model that
        learnt anything is far better by then (PTB: a diverged RNN reached 3e7 for V = 1e4),
        while a tiny noisy run can wobble just above it. Without validation data the epoch's
        training loss is judged the same way, against the uniform guess alone."""
        s, V = self.state, len(self.data.vocab)
        entry = s.history[-1]  # (called right after record())
        loss = valid["nats"] if valid else entry["train_nats"]
        yardstick = math.log(V)
        if valid:
            yardstick = max(yardstick, s.initial_valid)
        if loss is None or loss <= yardstick:
            return
        entry["diverged"] = True
        which = "validation" if valid else "training"
        if end_of_epoch and loss > yardstick + math.log(DIVERGED_FACTOR):
            raise DivergedError(s.step, loss, V, which)
        self.say(
            f"warning: step {s.step}: {which} loss {loss:.3f} nats is worse than a uniform "
            f"guess over the {V:,} tokens ({math.log(V):.3f})"
            + (" and than the untrained model" if valid else "")
        )

    def save(self, valid: dict | None, hidden_now) -> None:
        """Save last (all ranks join the hidden-state gather; rank 0 writes), then best when
        this validation improved, then the log line: the order resume_run_dir() relies on."""
        s = self.state
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # e.g. a huge lr: the loss was finite, the update was not; keep the last save
            raise NonFiniteLossError(
                s.step, math.nan, f" (in the parameters after the update: {bad[:3]})"
            )
        tensors = hidden_tensors(hidden_now)
        if self.info.is_main:
            model, config, vocab = self.model, self.model.config, self.data.vocab
            try:
                save_checkpoint(
                    self.out / "last",
                    model,
                    config,
                    vocab,
                    optimizer=self.optimizer,
                    state=s.to_dict(),
                    state_tensors=tensors,
                    save_rng=True,
                    **self.extra,
                )
                if valid is not None and s.best_step == s.step:
                    save_checkpoint(self.out / "best", model, config, vocab, **self.extra)
            except CheckpointError as e:
                raise with_resume_advice(e, self.out) from e.__cause__
            rundir.append_log(self.out / rundir.LOG, s.history[-1])
        dist_util.barrier()


def _fmt(m: dict) -> str:
    if "bpc" in m:
        return f"bpc {m['bpc']:.3f}"
    return f"ppl {m['ppl']:.2f}" if m["ppl"] < 1e6 else f"ppl {m['ppl']:.3g}"
