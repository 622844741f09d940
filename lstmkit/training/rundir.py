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

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from lstmkit.data.vocab import Vocab
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    recover_interrupted_saves,
    save_checkpoint,
    verify_checkpoint,
)
from lstmkit.training.checkpoint_atomic import failure_message
from lstmkit.training.config import TrainConfig

LOG = "log.jsonl"
LOG_TMP = f".{LOG}.tmp"  # write_log's copy; a kill can leave it
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
    if resume and not out.is_dir():
        raise CheckpointError(
            f"cannot resume: the run directory {out} does not exist. Check --out, or start the "
            f"run without --resume"
        )
    _check_writable(out)
    _lock(out)  # before anything is cleaned: another run's save in progress looks unfinished
    for name in ("last", "best"):
        if (out / name).is_symlink():  # a save replaces the link itself, then cannot remove it
            raise CheckpointError(
                f"{out / name} is a symbolic link; every save replaces {name} with a new "
                f"directory (the link's target is never updated), so it must be a directory of "
                f"its own. Replace the link with a copy of its target, or choose another --out"
            )
    notes = recover_interrupted_saves(out)
    if (out / LOG_TMP).is_file():  # write_log was killed before its rename: the log is intact
        (out / LOG_TMP).unlink()
        notes.append(f"removed {out / LOG_TMP}, the unfinished copy of an interrupted log rewrite")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not resume and found:
        raise CheckpointError(
            f"{out} already holds a run ({', '.join(found)}): a fresh run would overwrite or "
            f"mix with it. Add --resume to continue that run, or choose another --out"
        )
    if resume and not (out / "last").exists() and os.path.lexists(out / ".last.old"):
        # recover_interrupted_saves left it alone: it is not a complete checkpoint either
        raise CheckpointError(
            f"cannot resume: {out / 'last'} is missing and {out / '.last.old'} (the copy an "
            f"interrupted save keeps) is not a complete checkpoint, so nothing in {out} can be "
            f"resumed. Look at it, then move {out} away (or choose another --out) and start a "
            f"new run"
        )
    if resume and not (out / "last").exists():
        raise CheckpointError(
            f"cannot resume: {out / 'last'} does not exist (no checkpoint was written yet). "
            f"Start the run without --resume"
        )
    return notes


_LOCKS: dict[str, int] = {}  # run directory -> the open descriptor that holds its lock


def _lock(out: Path) -> None:
    """Hold an exclusive lock on the run directory until release_run_dir(): two runs in one
    directory (the same command started twice) would mix their checkpoints and logs, and each
    would delete the other's save in progress as the leftover of a crash."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the runs are not guarded
        return
    key = str(out.resolve())
    if key in _LOCKS:
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(
            f"another `lstmkit train` is writing to {out} right now: two runs in one directory "
            f"would mix their checkpoints and logs. Let it finish (or stop it), or choose "
            f"another --out"
        ) from None
    except OSError:  # a file system without locks (some network mounts): go on unguarded
        os.close(fd)
        return
    _LOCKS[key] = fd


def release_run_dir(out: Path) -> None:
    """Give up the lock prepare_run_dir took (a no-op when none is held)."""
    fd = _LOCKS.pop(str(out.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its flock


def _check_writable(out: Path) -> None:
    """Create `out` and write a file in it now, before any data is read: a run whose directory
    cannot be written (a file as a parent, /proc, a read-only mount) must not train first and
    fail at its first save."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise CheckpointError(
            f"cannot write the run directory {out} ({reason}); nothing was trained. Give an "
            f"--out where files can be written"
        ) from e


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
    missing = [k for k in TRAJECTORY_KEYS if k not in train]
    if missing:  # then the settings below could not be compared: the resume would be unchecked
        raise CheckpointError(
            f"cannot resume: {where / 'config.json'} lacks the training settings "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}, so this resume cannot "
            f"be checked against the saved run; the checkpoint was edited or not written by "
            f"`lstmkit train`. Start a new run with another --out"
        )
    diffs = {k: (train[k], now[k]) for k in TRAJECTORY_KEYS if train[k] != now[k]}
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
    # every step is one window, so the counters agree: step = (epoch - 1) * per_epoch + window
    if (
        state["epoch"] < 1
        or not 0 <= state["window"] < per_epoch
        or state["step"] != (state["epoch"] - 1) * per_epoch + state["window"]
    ):
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
    best = out / "best"
    if state.get("best_step") is not None and state["best_step"] == state["step"]:
        if not _same_weights(best, model):
            save_checkpoint(best, model, model_config, vocab, **extra)
            notes.append(f"{best} was behind {out / 'last'} (a save was interrupted): rewritten")
    elif state.get("best_step") is not None and not _complete(best):
        # not a crash (saves are atomic): deleted or damaged by hand; its weights are gone
        notes.append(
            f"{best} is missing or damaged, and the weights of its step {state['best_step']} "
            f"are not in {out / 'last'} (step {state['step']}): there is no best checkpoint "
            f"until the validation loss improves on its {state.get('best_valid')} nats"
        )
    # log: every record is in last's history; lines written after last (none) or lost are redone
    lines = [json.dumps(entry) + "\n" for entry in state["history"]]
    log = out / LOG
    if os.path.lexists(log) and not log.is_file():
        raise CheckpointError(
            f"{log} is not a file (a directory?); it is the run's log, which --resume rewrites "
            f"from {out / 'last'}. Move it away and run the same command again"
        )
    old = log.read_bytes() if log.exists() else b""  # bytes: a garbled log is rewritten too
    if old != "".join(lines).encode("utf-8"):
        write_log(log, lines)
        notes.append(f"{log} did not match the history in {out / 'last'}: rewritten from it")
    return notes


def _complete(path: Path) -> bool:
    """`path` is a checkpoint that passes verification (files and JSON; no model is built)."""
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


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


def _log_error(log: Path, e: OSError, what: str) -> CheckpointError:
    """One sentence for a failed log write (disk full, file-size limit, ...): the checkpoints
    are intact and --resume rewrites the log from RUN/last."""
    text = failure_message(log, e).split(";")[0]  # "disk full while saving RUN/log.jsonl"
    text = text.replace(f"while saving {log}", f"while {what} {log}")
    return CheckpointError(
        f"{text}; the checkpoints in {log.parent} are intact and --resume rewrites the log from "
        f"{log.parent / 'last'}. Free some space (or fix the cause) and run the same command with "
        f"--resume"
    )


def write_log(log: Path, lines: list[str]) -> None:
    """Replace the log atomically (write beside it, flush, rename)."""
    tmp = log.with_name(LOG_TMP)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, log)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _log_error(log, e, "rewriting") from e


def append_log(log: Path, entry: dict) -> None:
    """One record, flushed to disk before the run goes on (a crash then loses no line that a
    checkpoint already holds; the few it could lose are rewritten at --resume). A failed write
    (disk full) is cut back off, so the log never ends in half a line."""
    data = memoryview((json.dumps(entry) + "\n").encode("utf-8"))
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise _log_error(log, e, "appending to") from e
    size = os.fstat(fd).st_size
    try:
        while data:  # unbuffered: nothing is left to be flushed again after a failure
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise _log_error(log, e, "appending to") from e
    finally:
        os.close(fd)
