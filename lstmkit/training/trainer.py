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
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from lstmkit.data.batching import as_tensor, batchify, num_windows, windows
from lstmkit.data.text import TextDataError, read_tokens
from lstmkit.data.vocab import EOS, UNK, Vocab
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
from lstmkit.training.loop import (
    DivergedError,
    NonFiniteLossError,
    evaluate_stream,
    train_window,
)
from lstmkit.training.model import LanguageModel, count_parameters

DIVERGED_FACTOR = 2.0  # stop: perplexity this many times a uniform guess after an epoch


@dataclass
class TrainResult:
    out: str
    steps: int
    epochs_completed: int
    best_valid_loss: float | None
    last_valid_loss: float | None
    stopped_by: str  # "finished" | "max_steps" | "dry_run"
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices "
            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} was requested but MPS is not available; use cpu")
    return device


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run; str() says where it can be resumed from. A
    KeyboardInterrupt, so code that stops on Ctrl-C still does."""

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.signal_name = signal_name


def _resume_point(out: Path) -> str:
    """Where an interrupted run can go on from, read from the disk (the saves that an interrupt
    cut short have been undone by then: save_checkpoint removes its copy, swap() puts the
    previous checkpoint back)."""
    for name in ("last", ".last.old"):
        f = out / name / "state.json"
        try:
            step = json.loads(f.read_text(encoding="utf-8"))["state"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return (
            f"{out / 'last'} (step {step}) is intact: run the same command with --resume to "
            f"continue from it"
        )
    return (
        f"no checkpoint had been written to {out} yet, so there is nothing to resume: run the "
        f"same command again (without --resume)"
    )


def _with_resume_advice(e: CheckpointError, out: Path) -> CheckpointError:
    """A failed write (disk full, ulimit -f) says "... and run again"; once RUN/last exists a
    plain rerun is refused as a fresh run over an old one, so say what works: --resume."""
    text = str(e)
    ending = " and run again"
    if not text.endswith(ending) or not (out / "last" / "manifest.json").is_file():
        return e
    return CheckpointError(
        f"{text[: -len(ending)]} and run the same command with --resume (it continues from "
        f"{out / 'last'})"
    )


def build_vocab(tokens: list[str], cfg: TrainConfig) -> Vocab:
    specials = (UNK,) if cfg.level == "char" else (UNK, EOS)
    if cfg.max_vocab is not None and cfg.max_vocab <= len(specials):
        raise ValueError(
            f"--max-vocab {cfg.max_vocab} leaves no room beside the special tokens "
            f"({', '.join(specials)}) of level {cfg.level!r}: every token of the text would be "
            f"{UNK} and there would be nothing to learn. Give --max-vocab >= {len(specials) + 1}"
        )
    vocab = Vocab.build(tokens, min_count=cfg.min_count, max_size=cfg.max_vocab, specials=specials)
    if len(vocab) == len(specials):
        raise ValueError(
            f"no token of {cfg.train_file} occurs at least {cfg.min_count} times (--min-count): "
            f"the vocabulary would hold only {', '.join(specials)}, every token of the text "
            f"would be {UNK} and there would be nothing to learn. Lower --min-count"
        )
    return vocab


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def metric(mean_nats: float, level: str) -> dict:
    """Perplexity for words, bits per character for characters (and nats for both)."""
    out = {"nats": mean_nats}
    if level == "char":
        out["bpc"] = mean_nats / math.log(2)
    else:
        out["ppl"] = math.exp(min(mean_nats, 700.0))
    return out


def _fmt(m: dict) -> str:
    if "bpc" in m:
        return f"bpc {m['bpc']:.3f}"
    return f"ppl {m['ppl']:.2f}" if m["ppl"] < 1e6 else f"ppl {m['ppl']:.3g}"


def _hidden_tensors(hidden) -> dict[str, Tensor]:
    if hidden is None:
        return {}
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    return {f"hidden.{i}": dist_util.gather_columns(h.detach()) for i, h in enumerate(parts)}


def _restore_hidden(tensors: dict[str, Tensor], model: LanguageModel, info, device):
    parts = [tensors[k] for k in sorted(k for k in tensors if k.startswith("hidden."))]
    if not parts:
        return None
    parts = [dist_util.rank_columns(p, info).to(device) for p in parts]
    return tuple(parts) if model.is_lstm else parts[0]


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
            f"training stopped by {what}; {_resume_point(Path(cfg.out))}", name
        ) from None
    finally:
        rundir.release_run_dir(Path(cfg.out))
        dist_util.cleanup()


def _train(cfg: TrainConfig, resume: bool, device: torch.device, info) -> TrainResult:
    out = Path(cfg.out)
    main = info.is_main
    say = tqdm.write if main else (lambda *a, **k: None)  # rank 0 alone talks
    if not cfg.train_file:
        raise ValueError("no training file: pass --train FILE (or train_file in the config file)")
    # before the data is read: a run that cannot be saved, or would overwrite one, stops now
    for note in rundir.prepare_run_dir(out, resume) if main else []:
        say(f"note: {note}")
    if cfg.optimizer in ("adam", "adamw") and cfg.lr > 0.1:
        say(
            f"warning: lr {cfg.lr:g} with {cfg.optimizer} is far above its usual range "
            f"(1e-4 .. 1e-2, default 1e-3); such runs usually diverge at once"
        )
    train_tokens = read_tokens(cfg.train_file, cfg.level, cfg.encoding_errors)
    vocab = build_vocab(train_tokens, cfg)
    train_data = batchify(
        as_tensor(vocab.encode(train_tokens)), cfg.batch_size, info.rank, info.world_size
    ).to(device)  # (N, B/W)
    valid_data = None
    if cfg.valid_file:
        valid_tokens = read_tokens(cfg.valid_file, cfg.level, cfg.encoding_errors)
        if len(valid_tokens) < 2:  # batchify's "use a smaller --batch-size" would not help
            raise TextDataError(
                f"validation file {cfg.valid_file} gives {len(valid_tokens)} token at level "
                f"{cfg.level!r}; validation needs at least 2 (one to read, one to predict). Give "
                f"a longer --valid file"
            )
        valid_data = batchify(
            as_tensor(vocab.encode(valid_tokens)),
            min(cfg.eval_batch_size, max(1, len(valid_tokens) // 2)),
        ).to(device)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model_config = cfg.model_config(len(vocab))
    model = LanguageModel(model_config).to(device)
    optimizer = make_optimizer(model, cfg)
    data_meta = {"level": cfg.level, "encoding_errors": cfg.encoding_errors}
    state = {
        "epoch": 1,
        "window": 0,
        "step": 0,
        "best_valid": None,
        "best_step": None,
        "last_valid": None,
        "initial_valid": None,  # the untrained model's validation loss
        "tokens": 0,
        "history": [],
    }
    hidden = None
    per_epoch = num_windows(train_data, cfg.bptt)
    extra = {"data": data_meta, "train": cfg.to_dict()}  # what every checkpoint's config holds
    if resume:
        last = verify(out / "last")  # read and hashed once for both loads
        loaded = load_checkpoint(last, map_location=device)
        rundir.check_resumable(out, loaded, model_config, vocab, cfg)
        model.load_state_dict(loaded.model.state_dict())
        state, tensors = load_training_state(last, optimizer)
        rundir.check_state(state, per_epoch, out / "last")
        state.setdefault("best_step", None)  # checkpoints from before best_step was kept
        hidden = _restore_hidden(tensors, model, info, device)
        for note in (
            rundir.resume_run_dir(out, state, model, model_config, vocab, extra) if main else []
        ):
            say(f"note: {note}")
        say(
            f"resumed from {out / 'last'} at step {state['step']} (epoch {state['epoch']}, "
            f"window {state['window']})"
        )
    else:
        torch.manual_seed(cfg.seed + info.rank)  # dropout masks differ between ranks
    train_model = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    limit = cfg.dry_run_steps if cfg.dry_run else cfg.max_steps
    total_steps = cfg.epochs * per_epoch
    say(
        f"{len(train_tokens):,} training tokens, vocabulary {len(vocab):,}, model "
        f"{count_parameters(model):,} parameters on {device}"
        + (f", {info.world_size} processes" if info.enabled else "")
        + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
        + f"; {per_epoch} windows of {cfg.bptt} x {cfg.batch_size} per epoch"
    )

    def validate() -> dict | None:
        if valid_data is None:
            return None
        data = valid_data[: cfg.dry_run_steps * cfg.bptt + 1] if cfg.dry_run else valid_data
        total, count = evaluate_stream(model, data, cfg.bptt)
        m = metric(total / count, cfg.level)
        if not math.isfinite(m["nats"]):
            raise NonFiniteLossError(state["step"], m["nats"], " (validation loss)")
        return m

    def check_diverged(valid: dict | None, end_of_epoch: bool) -> None:
        """Worse than a uniform guess over the vocabulary and than the untrained model (whose
        random decoder starts a little above log V): a warning, and `"diverged": true` in the
        log. After a whole epoch at more than twice that perplexity the run stops: a model that
        learnt anything is far better by then (PTB: a diverged RNN reached 3e7 for V = 1e4),
        while a tiny noisy run can wobble just above it. Without validation data the epoch's
        training loss is judged the same way, against the uniform guess alone."""
        entry = state["history"][-1]  # (called right after record())
        loss = valid["nats"] if valid else entry["train_nats"]
        yardstick = math.log(len(vocab))
        if valid:
            yardstick = max(yardstick, state["initial_valid"])
        if loss is None or loss <= yardstick:
            return
        entry["diverged"] = True
        if end_of_epoch and loss > yardstick + math.log(DIVERGED_FACTOR):
            raise DivergedError(
                state["step"], loss, len(vocab), "validation" if valid else "training"
            )
        say(
            f"warning: step {state['step']}: {'validation' if valid else 'training'} loss "
            f"{loss:.3f} nats is worse than a uniform guess over the {len(vocab):,} tokens "
            f"({math.log(len(vocab)):.3f})" + (" and than the untrained model" if valid else "")
        )

    def checkpoint(valid: dict | None, hidden_now) -> None:
        """Save last (all ranks join the hidden-state gather; rank 0 writes), then best when
        this validation improved, then the log line: the order resume_run_dir() relies on."""
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # e.g. a huge lr: the loss was finite, the update was not; keep the last save
            raise NonFiniteLossError(
                state["step"], math.nan, f" (in the parameters after the update: {bad[:3]})"
            )
        tensors = _hidden_tensors(hidden_now)
        if main:
            try:
                save_checkpoint(
                    out / "last",
                    model,
                    model_config,
                    vocab,
                    optimizer=optimizer,
                    state=state,
                    state_tensors=tensors,
                    save_rng=True,
                    **extra,
                )
                if valid is not None and state["best_step"] == state["step"]:
                    save_checkpoint(out / "best", model, model_config, vocab, **extra)
            except CheckpointError as e:
                raise _with_resume_advice(e, out) from e.__cause__
            rundir.append_log(out / rundir.LOG, state["history"][-1])
        dist_util.barrier()

    def record(valid: dict | None, train_nats: float | None) -> None:
        if valid is not None and (
            state["best_valid"] is None or valid["nats"] < state["best_valid"]
        ):
            state["best_valid"], state["best_step"] = valid["nats"], state["step"]
        state["last_valid"] = None if valid is None else valid["nats"]
        state["history"].append(
            {
                "step": state["step"],
                "epoch": state["epoch"],
                "lr": optimizer.param_groups[0]["lr"],
                "train_nats": train_nats,
                "valid": valid,
                "time": time.time(),
            }
        )

    if valid_data is not None and state.get("initial_valid") is None:
        # the untrained model's loss: the yardstick of check_diverged (no RNG is drawn)
        state["initial_valid"] = validate()["nats"]
    bar = tqdm(
        total=min(total_steps, limit) if limit else total_steps,
        initial=state["step"],
        disable=not (main and cfg.progress),
        unit="step",
        dynamic_ncols=True,
    )
    t0, tokens0, stopped_by = time.time(), state["tokens"], "finished"
    run_loss, run_n = 0.0, 0
    if limit and state["step"] >= limit:  # e.g. --resume --max-steps 20 of a run at step 20
        say(f"already at step {state['step']} (--max-steps {limit}): nothing to do")
        bar.close()
        return _result(out, state, "dry_run" if cfg.dry_run else "max_steps")
    try:
        while state["epoch"] <= cfg.epochs:
            epoch = state["epoch"]
            if cfg.schedule == "step":
                for g in optimizer.param_groups:
                    g["lr"] = cfg.lr * cfg.lr_decay ** max(epoch - cfg.decay_after, 0)
            if state["window"] == 0:
                hidden = None  # each epoch starts the streams afresh
            for k, x, y in windows(train_data, cfg.bptt, start=state["window"]):
                loss, hidden = train_window(
                    train_model,
                    optimizer,
                    x,
                    y,
                    hidden,
                    cfg.clip,
                    cfg.loss_per,
                    step=state["step"] + 1,
                )
                state["step"] += 1
                state["window"] = k + 1
                state["tokens"] += y.numel() * info.world_size
                run_loss, run_n = run_loss + loss, run_n + 1
                rate = (state["tokens"] - tokens0) / max(time.time() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix_str(
                    f"epoch {epoch} loss {loss:.3f} "
                    f"{_fmt(metric(loss, cfg.level))} {rate:,.0f} tok/s",
                    False,
                )
                end_of_epoch = state["window"] >= per_epoch
                if cfg.eval_every and state["step"] % cfg.eval_every == 0 and not end_of_epoch:
                    valid = validate()
                    record(valid, run_loss / run_n)
                    run_loss, run_n = 0.0, 0
                    if valid:
                        say(f"step {state['step']}: valid {_fmt(valid)}")
                    check_diverged(valid, end_of_epoch=False)
                    checkpoint(valid, hidden)
                if limit and state["step"] >= limit:
                    stopped_by = "dry_run" if cfg.dry_run else "max_steps"
                    break
            if stopped_by != "finished" and state["window"] < per_epoch:
                if run_n:  # (none: this very step was just validated, recorded and saved)
                    valid = validate() if cfg.dry_run else None
                    record(valid, run_loss / run_n)
                    checkpoint(valid, hidden)  # mid-epoch: resumable from this exact window
                break
            state["epoch"], state["window"] = epoch + 1, 0
            valid = validate()
            if (
                cfg.schedule == "plateau"
                and valid is not None
                and state["best_valid"] is not None
                and valid["nats"] >= state["best_valid"]
            ):
                for g in optimizer.param_groups:
                    g["lr"] *= cfg.lr_decay
            record(valid, run_loss / max(run_n, 1))
            run_loss, run_n = 0.0, 0
            check_diverged(valid, end_of_epoch=True)
            say(
                f"end of epoch {epoch}: step {state['step']}"
                + (f", valid {_fmt(valid)}" if valid else "")
                + f", lr {optimizer.param_groups[0]['lr']:g}"
            )
            checkpoint(valid, None)
            if stopped_by != "finished":
                break
    except KeyboardInterrupt:
        bar.close()
        raise
    except NonFiniteLossError as e:
        bar.close()
        if main:
            kept = out / "last"
            print(
                f"error: {e}\nlast good checkpoint: "
                + (str(kept) if kept.exists() else "none yet (no checkpoint had been written)")
            )
        raise
    bar.close()
    return _result(out, state, stopped_by)


def _result(out: Path, state: dict, stopped_by: str) -> TrainResult:
    return TrainResult(
        out=str(out),
        steps=state["step"],
        epochs_completed=state["epoch"] - 1,
        best_valid_loss=state["best_valid"],
        last_valid_loss=state["last_valid"],
        stopped_by=stopped_by,
        history=state["history"],
    )
