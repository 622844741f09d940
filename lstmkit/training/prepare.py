"""What a language-model run needs before its first step, and what it says when it stops early.

    device = resolve_device(cfg.device)
    data = load_data(cfg, info, device)      # vocabulary + batchified train / valid streams
    optimizer = make_optimizer(model, cfg)

The trainer (trainer.py) reads top to bottom; the details of each preparation live here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lstmkit.data.batching import as_tensor, batchify
from lstmkit.data.text import TextDataError, read_tokens
from lstmkit.data.vocab import EOS, UNK, Vocab
from lstmkit.training import distributed as dist_util
from lstmkit.training.checkpoint import CheckpointError
from lstmkit.training.config import TrainConfig


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run; str() says where it can be resumed from. A
    KeyboardInterrupt, so code that stops on Ctrl-C still does."""

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.signal_name = signal_name


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


@dataclass
class RunData:
    vocab: Vocab
    train: Tensor  # (N, B/W) token ids: this rank's columns of the training stream
    valid: Tensor | None  # (N', B_eval) the whole validation stream, on every rank
    train_tokens: int  # tokens in the training file


def load_data(cfg: TrainConfig, info: dist_util.DistInfo, device: torch.device) -> RunData:
    """Read and tokenise the files, build the vocabulary from the training file, and cut the
    training stream into B contiguous columns (this rank's B/W of them under torchrun)."""
    tokens = read_tokens(cfg.train_file, cfg.level, cfg.encoding_errors)
    vocab = build_vocab(tokens, cfg)
    train = batchify(as_tensor(vocab.encode(tokens)), cfg.batch_size, info.rank, info.world_size)
    valid = None
    if cfg.valid_file:
        valid_tokens = read_tokens(cfg.valid_file, cfg.level, cfg.encoding_errors)
        if len(valid_tokens) < 2:  # batchify's "use a smaller --batch-size" would not help
            raise TextDataError(
                f"validation file {cfg.valid_file} gives {len(valid_tokens)} token at level "
                f"{cfg.level!r}; validation needs at least 2 (one to read, one to predict). Give "
                f"a longer --valid file"
            )
        valid = batchify(
            as_tensor(vocab.encode(valid_tokens)),
            min(cfg.eval_batch_size, max(1, len(valid_tokens) // 2)),
        ).to(device)
    return RunData(vocab, train.to(device), valid, len(tokens))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def hidden_tensors(hidden) -> dict[str, Tensor]:
    """The carried hidden state as checkpoint tensors: every rank's columns, gathered."""
    if hidden is None:
        return {}
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    return {f"hidden.{i}": dist_util.gather_columns(h.detach()) for i, h in enumerate(parts)}


def restore_hidden(tensors: dict[str, Tensor], is_lstm: bool, info, device):
    """hidden_tensors' inverse: this rank's columns, on `device`; None when none was saved."""
    parts = [tensors[k] for k in sorted(k for k in tensors if k.startswith("hidden."))]
    if not parts:
        return None
    parts = [dist_util.rank_columns(p, info).to(device) for p in parts]
    return tuple(parts) if is_lstm else parts[0]


def resume_point(out: Path) -> str:
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


def with_resume_advice(e: CheckpointError, out: Path) -> CheckpointError:
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
