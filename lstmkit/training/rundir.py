"""The run directory of `lstmkit train`: what may be in it, and how it is kept consistent.

    RUN/last/       resumable checkpoint (model, optimizer, RNG, data position, history)
    RUN/best/       weights of the best validation loss so far
    RUN/log.jsonl   one line per validation / save: the same records as last's history

The three are written in that order at every save, and `last` is the reference: its state holds
the whole history and the step at which the best loss was reached. A crash (kill -9, power loss)
can leave `best` one save behind or `log.jsonl` a few lines short, and leftover temporary
directories; resume_run_dir() repairs all of that from `last` before training continues, so that
after `--resume` the three agree exactly as if the run had never stopped.

A fresh run refuses a directory that holds any of them: it would mix two runs' models and logs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from lstmkit.data.vocab import Vocab
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    recover_interrupted_saves,
    save_checkpoint,
)
from lstmkit.training.config import TrainConfig

LOG = "log.jsonl"
# what a previous run leaves: a fresh run must not write over (or beside) any of these
RUN_FILES = ("last", ".last.old", "best", ".best.old", LOG)
# settings that decide the numbers a run produces from its data position on: a resume with any of
# them changed would continue another run than the saved one (another --bptt reads other windows,
# another --lr is not applied because the optimizer's saved lr wins, another --batch-size does not
# fit the carried state), so they must be the saved ones
TRAJECTORY_KEYS = (
    "level",
    "encoding_errors",
    "min_count",
    "max_vocab",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "clip",
    "loss_per",
    "schedule",
    "lr_decay",
    "decay_after",
    "batch_size",
    "bptt",
    "eval_batch_size",
    "seed",
    "valid_file",
)
STATE_KEYS = {"epoch": int, "window": int, "step": int, "tokens": int, "history": list}


def prepare_run_dir(out: Path, resume: bool) -> list[str]:
    """Check `out` before any data is read; clean what interrupted saves left. Returns notes
    (one line each) on what was repaired."""
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {str(out)!r} is a file; it must be a run directory (or not exist yet)"
        )
    notes = recover_interrupted_saves(out) if out.is_dir() else []
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not resume and found:
        raise CheckpointError(
            f"{out} already holds a run ({', '.join(found)}): a fresh run would overwrite or "
            f"mix with it. Add --resume to continue that run, or choose another --out"
        )
    if resume and not (out / "last").exists():
        raise CheckpointError(
            f"cannot resume: {out / 'last'} does not exist (no checkpoint was written yet). "
            f"Start the run without --resume"
        )
    return notes


def check_resumable(out: Path, saved, model_config, vocab: Vocab, cfg: TrainConfig) -> None:
    """Refuse a resume whose settings would not continue the saved run. `saved` is
    load_checkpoint(out / "last")."""
    where = out / "last"
    if saved.vocab != vocab:
        diff = next(
            (i for i, (a, b) in enumerate(zip(saved.vocab.itos, vocab.itos)) if a != b),
            min(len(saved.vocab), len(vocab)),
        )
        raise CheckpointError(
            f"cannot resume: the vocabulary in {where} ({len(saved.vocab)} tokens) is not the "
            f"one built from {cfg.train_file} with these settings ({len(vocab)} tokens; first "
            f"difference at id {diff}). Resume with the same training file, --level, "
            f"--min-count and --max-vocab"
        )
    if saved.config != model_config:
        a, b = saved.config.to_dict(), model_config.to_dict()
        diffs = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        raise CheckpointError(
            f"cannot resume: the model in {where} differs from the one these settings build: "
            f"{{key: (saved, now)}} = {diffs}. Give the saved run's model flags again"
        )
    train, now = saved.meta["train"], cfg.to_dict()
    diffs = {k: (train[k], now[k]) for k in TRAJECTORY_KEYS if k in train and train[k] != now[k]}
    if saved.meta["data"].get("level", cfg.level) != cfg.level:
        diffs["level"] = (saved.meta["data"].get("level"), cfg.level)
    if diffs:
        raise CheckpointError(
            f"cannot resume: these settings differ from the run in {where}: {{key: (saved, "
            f"now)}} = {diffs}. A resume continues the saved run exactly, so give its settings "
            f"again (its config is in {where / 'config.json'}); to change them, start a new run "
            f"with another --out"
        )


def check_state(state: dict, per_epoch: int, where: Path) -> None:
    """The data position and counters of a resumed state must make sense for this data."""
    for key, kind in STATE_KEYS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{where}/state.json: {key!r} must be {kind.__name__}, got {value!r}; the "
                f"checkpoint is damaged. Resume from another copy, or start a new run"
            )
    if state["epoch"] < 1 or state["step"] < 0 or not 0 <= state["window"] < per_epoch:
        raise CheckpointError(
            f"{where}/state.json: data position epoch {state['epoch']}, window "
            f"{state['window']}, step {state['step']} does not fit this training data "
            f"({per_epoch} windows per epoch); the checkpoint was damaged or made from other data"
        )
    best = state.get("best_valid")
    if best is not None and not (isinstance(best, float) and math.isfinite(best)):
        raise CheckpointError(f"{where}/state.json: best_valid must be a finite number, got {best}")


def resume_run_dir(out: Path, state: dict, model: nn.Module, model_config, vocab, extra) -> list:
    """Make best/ and log.jsonl agree with last/ (the state just loaded from it). Returns notes."""
    notes = []
    # best: saved right after last at an improving step, so it is stale exactly when last itself
    # is at the best step; then last's weights are the best ones, and best is written from them
    if state.get("best_step") is not None and state["best_step"] == state["step"]:
        best = out / "best"
        if not _same_weights(best, model):
            save_checkpoint(best, model, model_config, vocab, **extra)
            notes.append(f"{best} was behind {out / 'last'} (a save was interrupted): rewritten")
    # log: every record is in last's history; lines written after last (none) or lost are redone
    lines = [json.dumps(entry) + "\n" for entry in state["history"]]
    log = out / LOG
    old = log.read_text(encoding="utf-8") if log.exists() else ""
    if old != "".join(lines):
        write_log(log, lines)
        notes.append(f"{log} did not match the history in {out / 'last'}: rewritten from it")
    return notes


def _same_weights(path: Path, model: nn.Module) -> bool:
    if not path.exists():
        return False
    try:  # building the model draws initial weights: the resumed run's RNG must not move
        with torch.random.fork_rng(devices=[]):
            saved = load_checkpoint(path).model.state_dict()
    except CheckpointError:  # damaged or half-written: rewrite it
        return False
    mine = getattr(model, "module", model).state_dict()
    return saved.keys() == mine.keys() and all(
        torch.equal(saved[k], mine[k].detach().cpu()) for k in saved
    )


def write_log(log: Path, lines: list[str]) -> None:
    """Replace the log atomically (write beside it, flush, rename)."""
    tmp = log.with_name(f".{log.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, log)


def append_log(log: Path, entry: dict) -> None:
    """One record, flushed to disk before the run goes on (a crash then loses no line that a
    checkpoint already holds; the few it could lose are rewritten at --resume)."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
