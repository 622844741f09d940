"""train(config): the `lstmkit train` loop, importable from Python.

    from lstmkit.training import TrainConfig, train
    result = train(TrainConfig(train_file="train.txt", valid_file="valid.txt", level="char",
                               model={"hidden_size": 512}, optimizer="adam", lr=2e-3))

What it does, in order: read and tokenise the files, build the vocabulary, cut the training
stream into B contiguous columns (this rank's B/W of them under torchrun), then for each epoch
run truncated BPTT over windows of `bptt` steps, carrying the hidden state (detached) from one
window to the next. Every `eval_every` steps and at the end of each epoch it validates, writes
RUN/last (resumable: model, optimizer, schedule, RNG, data position, hidden state) and, when the
validation loss improved, RUN/best (weights only). A NaN/inf loss stops the run before the bad
update, leaving the last good checkpoints untouched.

The loop itself is the one every lstmkit trainer shares (fit.py); this file says what a
language-model run does around it: `_train` reads top to bottom, `LMRun` (lm_run.py) holds the
run's parts and its `TrainState`, and does what a step or an epoch needs (validate, record, save).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from lstmkit.data.batching import windows
from lstmkit.training import distributed as dist_util
from lstmkit.training import rundir
from lstmkit.training.config import TrainConfig
from lstmkit.training.fit import Loop, fit
from lstmkit.training.lm_run import LMRun, TrainState
from lstmkit.training.loop import NonFiniteLossError
from lstmkit.training.model import LanguageModel, count_parameters
from lstmkit.training.prepare import (
    TrainingInterrupted,
    load_data,
    make_optimizer,
    resolve_device,
    resume_point,
)

__all__ = ["TrainResult", "TrainState", "TrainingInterrupted", "resolve_device", "train"]


@dataclass
class TrainResult:
    out: str
    steps: int
    epochs_completed: int
    best_valid_loss: float | None
    last_valid_loss: float | None
    stopped_by: str  # "finished" | "max_steps" | "dry_run"
    history: list[dict] = field(default_factory=list)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a language model as configured; see the module docstring. Raises
    NonFiniteLossError on a NaN/inf loss and CheckpointError when --resume cannot work."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = dist_util.setup(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        return _train(cfg, resume, device, info)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one by the CLI
        name = getattr(e, "signal_name", "SIGINT")
        what = "Ctrl-C (SIGINT)" if name == "SIGINT" else name
        raise TrainingInterrupted(
            f"training stopped by {what}; {resume_point(Path(cfg.out))}", name
        ) from None
    finally:
        rundir.release_run_dir(Path(cfg.out))
        dist_util.cleanup()


def _train(cfg: TrainConfig, resume: bool, device: torch.device, info) -> TrainResult:
    out = Path(cfg.out)
    say = tqdm.write if info.is_main else (lambda *a, **k: None)  # rank 0 alone talks
    if not cfg.train_file:
        raise ValueError("no training file: pass --train FILE (or train_file in the config file)")
    # before the data is read: a run that cannot be saved, or would overwrite one, stops now
    for note in rundir.prepare_run_dir(out, resume) if info.is_main else []:
        say(f"note: {note}")
    if cfg.optimizer in ("adam", "adamw") and cfg.lr > 0.1:
        say(
            f"warning: lr {cfg.lr:g} with {cfg.optimizer} is far above its usual range "
            f"(1e-4 .. 1e-2, default 1e-3); such runs usually diverge at once"
        )

    # the data, the model, the optimizer: the same initial weights on every rank
    data = load_data(cfg, info, device)
    torch.manual_seed(cfg.seed)
    model = LanguageModel(cfg.model_config(len(data.vocab))).to(device)
    run = LMRun(cfg, out, info, data, model, make_optimizer(model, cfg))
    if resume:
        run.resume(say)
    else:
        torch.manual_seed(cfg.seed + info.rank)  # dropout masks differ between ranks
    say(
        f"{data.train_tokens:,} training tokens, vocabulary {len(data.vocab):,}, model "
        f"{count_parameters(model):,} parameters on {device}"
        + (f", {info.world_size} processes" if info.enabled else "")
        + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
        + f"; {run.per_epoch} windows of {cfg.bptt} x {cfg.batch_size} per epoch"
    )

    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        run.train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    state = run.state
    if data.valid is not None and state.initial_valid is None:
        # the untrained model's loss: the yardstick of check_diverged (no RNG is drawn)
        state.initial_valid = run.validate()["nats"]
    limit = cfg.dry_run_steps if cfg.dry_run else cfg.max_steps
    stopped_by = "dry_run" if cfg.dry_run else "max_steps"
    if limit and state.step >= limit:  # e.g. --resume --max-steps 20 of a run at step 20
        say(f"already at step {state.step} (--max-steps {limit}): nothing to do")
        return _result(out, state, stopped_by)

    total = cfg.epochs * run.per_epoch
    run.t0, run.tokens0 = time.time(), state.tokens
    run.bar = tqdm(
        total=min(total, limit) if limit else total,
        initial=state.step,
        disable=not (info.is_main and cfg.progress),
        unit="step",
        dynamic_ncols=True,
    )
    loop = Loop(clip=cfg.clip, max_steps=limit or None, every=cfg.eval_every)
    try:
        while state.epoch <= cfg.epochs:
            run.start_epoch()
            batches = windows(data.train, cfg.bptt, start=state.window)
            fit(
                run.train_model,
                run.optimizer,
                batches,
                run.compute,
                state,
                loop,
                run.after,
                run.mid_epoch,
            )
            if state.stopped_by != "exhausted" and state.window < run.per_epoch:
                run.save_mid_epoch()  # resumable from this exact window
                break
            run.end_epoch()
            if state.stopped_by != "exhausted":
                break
    except NonFiniteLossError as e:
        if info.is_main:
            kept = out / "last"
            print(
                f"error: {e}\nlast good checkpoint: "
                + (str(kept) if kept.exists() else "none yet (no checkpoint had been written)")
            )
        raise
    finally:
        run.bar.close()
    return _result(out, state, "finished" if state.stopped_by == "exhausted" else stopped_by)


def _result(out: Path, state: TrainState, stopped_by: str) -> TrainResult:
    return TrainResult(
        out=str(out),
        steps=state.step,
        epochs_completed=state.epoch - 1,
        best_valid_loss=state.best_valid,
        last_valid_loss=state.last_valid,
        stopped_by=stopped_by,
        history=state.history,
    )
