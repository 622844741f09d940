"""TrainConfig: everything `lstmkit train` needs, from a TOML/JSON file and/or command-line flags.

A config file holds training keys at the top level and the model in a [model] table:

    train_file = "data/train.txt"          # TOML (JSON: the same keys as an object)
    valid_file = "data/valid.txt"
    level = "word"
    epochs = 6
    lr = 20.0
    [model]
    hidden_size = 650
    num_layers = 2
    dropout = 0.5
    tie_weights = true

Flags given on the command line override the file; anything in neither takes the defaults below.
Unknown keys are an error (a typo would otherwise silently train the wrong model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lstmkit.data.text import LEVELS
from lstmkit.training.model import ModelConfig
from lstmkit.training.typed import check_types, check_values

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau")
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")
# SGD wants a large step (PyTorch's word_language_model uses 20); Adam's usual step is 1e-3, and
# Adam at SGD's 20 diverges at once (validation perplexity 1.7e129 in issue 10)
DEFAULT_LR = {"sgd": 20.0, "adam": 1e-3, "adamw": 1e-3}
MAX_SEED = 2**63 - 1 - 1024  # torch takes a signed 64-bit seed; each rank adds its rank


@dataclass
class TrainConfig:
    train_file: str = ""
    valid_file: str | None = None
    out: str = "runs/lm"  # run directory: out/last, out/best, out/log.jsonl
    # data
    level: str = "word"  # "char" | "word" | "ptb"
    encoding_errors: str = "strict"  # "strict" | "replace"
    min_count: int = 1
    max_vocab: int | None = None
    # model: ModelConfig fields except vocab_size (filled in from the vocabulary)
    model: dict = field(default_factory=dict)
    # optimisation
    optimizer: str = "sgd"
    lr: float | None = None  # None = DEFAULT_LR[optimizer]
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 0.25  # max gradient L2 norm, 0 = no clipping
    loss_per: str = "token"  # "token" | "sequence" (summed over bptt steps, Zaremba et al.)
    schedule: str = "plateau"  # "constant" | "step" | "plateau"
    lr_decay: float = 0.25  # step: factor per epoch after decay_after; plateau: factor per miss
    decay_after: int = 0  # step schedule: epochs at the initial lr
    epochs: int = 10
    batch_size: int = 20  # global: split across processes under torchrun
    bptt: int = 35
    eval_batch_size: int = 10
    eval_every: int = 0  # steps between validations (0 = once per epoch)
    max_steps: int = 0  # stop after this many steps in all (0 = no limit); `last` is saved
    dry_run: bool = False  # a few steps of everything, for checking a setup
    dry_run_steps: int = 5
    seed: int = 1111
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    threads: int = 1  # torch CPU threads, 0 = torch's default (one per core); as every command
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        choices = [
            (self.level in LEVELS, f"level must be one of {LEVELS}, got {self.level!r}"),
            (
                self.encoding_errors in ("strict", "replace"),
                f"encoding_errors must be 'strict' or 'replace', got {self.encoding_errors!r}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}",
            ),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
            ),
            (
                self.loss_per in ("token", "sequence"),
                f"loss_per must be 'token' or 'sequence', got {self.loss_per!r}",
            ),
        ]
        for ok, message in choices:
            if not ok:
                raise ValueError(message)
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.clip >= 0, f"clip must be >= 0 (0 = off), got {self.clip}"),
            (
                0 < self.lr_decay <= 1,
                f"lr_decay multiplies the lr, so it must be in (0, 1] (1 = no decay), got "
                f"{self.lr_decay}; a factor <= 0 would make the lr zero or negative",
            ),
            (self.decay_after >= 0, f"decay_after counts epochs, >= 0, got {self.decay_after}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (
                self.batch_size >= 1 and self.eval_batch_size >= 1,
                f"batch sizes must be >= 1, got batch_size={self.batch_size}, "
                f"eval_batch_size={self.eval_batch_size}",
            ),
            (self.bptt >= 1, f"bptt must be >= 1, got {self.bptt}"),
            (
                self.eval_every >= 0,
                f"eval_every must be >= 0 (0 = per epoch), got {self.eval_every}",
            ),
            (self.max_steps >= 0, f"max_steps must be >= 0 (0 = no limit), got {self.max_steps}"),
            (self.dry_run_steps >= 1, f"dry_run_steps must be >= 1, got {self.dry_run_steps}"),
            (self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}"),
            (
                self.max_vocab is None or self.max_vocab >= 1,
                f"max_vocab must be >= 1 (specials included), got {self.max_vocab}",
            ),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, 2**63 - 1025], got {self.seed}"),
            (
                0 <= self.threads <= 4 * (os.cpu_count() or 1),
                f"threads must be in [0, {4 * (os.cpu_count() or 1)}] (0 = torch's default, one "
                f"per core; more than 4 per core only oversubscribes the CPU), got {self.threads}",
            ),
            (bool(self.out), "out (the run directory) must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_device_name(self.device)
        unknown = sorted(set(self.model) - set(MODEL_KEYS))
        if unknown:
            raise ValueError(f"unknown model keys {unknown}; known: {list(MODEL_KEYS)}")
        # the model's own checks (types, ranges) now, not after the data has been read
        ModelConfig.from_dict({"vocab_size": 1, **self.model})

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            hint = [k for k in unknown if k in MODEL_KEYS]
            more = f" ({hint} belong in the [model] table)" if hint else ""
            raise ValueError(f"{source}: unknown keys {unknown}{more}; known keys: {sorted(known)}")
        if not isinstance(d.get("model", {}), dict):
            raise ValueError(
                f"{source}: model must be a table of model settings ([model] in TOML, an object "
                f"in JSON), got {d['model']!r}"
            )
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


def check_device_name(name: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; anything else (tpu, meta, cuda:x) is refused up front."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def read_config_file(path: str) -> dict:
    """A TOML (.toml) or JSON (.json) config file as a dict."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    if not p.is_file():
        kind = "a directory" if p.is_dir() else "not a regular file"
        raise ValueError(f"config file {path!r} is {kind}; give a .toml or .json file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"config file {path!r} is not UTF-8 text (byte {e.start}); TOML and JSON files are "
            f"UTF-8: save it as UTF-8"
        ) from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ValueError(f"config file {path!r} must end in .toml or .json")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"config file {path!r} could not be parsed: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a table/object of settings")
    return data


def merge_config(file_values: dict, flag_values: dict, source: str = "config") -> TrainConfig:
    """File values, then explicitly given flags on top; model keys may be given either way."""
    merged = {k: v for k, v in file_values.items() if k != "model"}
    model = file_values.get("model", {})
    if not isinstance(model, dict):
        raise ValueError(
            f"{source}: model must be a table of model settings ([model] in TOML, an object in "
            f"JSON), got {model!r}"
        )
    model = dict(model)
    try:  # the file's own values, before flags hide a mistake in it
        check_values(TrainConfig, {k: v for k, v in merged.items() if k != "model"})
        check_values(ModelConfig, model)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    for k, v in flag_values.items():
        if k in MODEL_KEYS:
            model[k] = v
        else:
            merged[k] = v
    merged["model"] = model
    return TrainConfig.from_dict(merged, source)
