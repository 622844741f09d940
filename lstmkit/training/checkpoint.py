"""Checkpoints: a directory anyone can sample or evaluate from, with nothing else at hand.

    run/last/
      model.safetensors    weights (tied decoder weight stored once); its header also records
                           the model config, data settings and vocabulary they belong to
      config.json          {"model": ModelConfig, "data": how text was tokenised, "train": ...}
      vocab.json           the Vocab
      state.safetensors    [training only] optimizer tensors, RNG states, the carried hidden state
      state.json           [training only] optimizer settings, LR schedule, step, data position
      manifest.json        size and SHA-256 of every file above, written last

No pickle anywhere: tensors are safetensors, everything else JSON, so loading a checkpoint never
runs code from it. The manifest catches truncated and tampered files before anything is read;
what is checked beyond it, in case a manifest was recomputed after an edit, is listed in
checkpoint_verify.py (files, JSON, vocabulary), checkpoint_weights.py (dtypes, shapes against
config.json before any model is built, finiteness, which config and vocabulary the weights were
saved with) and checkpoint_state.py (optimizer and RNG states). Every failure is a
CheckpointError: a sentence naming the file, what is wrong and what to do.

Writes are atomic: the new checkpoint is written to a hidden sibling directory, flushed to disk,
then swapped in with two renames (old -> .NAME.old, new -> NAME) and the old one deleted. A crash
or a full disk at any point leaves either the previous checkpoint or the new one, never a mix; a
failed write (disk full, file-size limit) is a CheckpointError that says the previous checkpoint
is intact. load_checkpoint() finds `.NAME.old` if a crash fell between the two renames, and
recover_interrupted_saves() cleans up after a crash (kill -9) before a run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lstmkit.data.vocab import Vocab
from lstmkit.training import checkpoint_verify as cv
from lstmkit.training import checkpoint_weights as cw
from lstmkit.training.checkpoint_atomic import (
    failure_message,
    finish_files,
    old_path,
    recover_interrupted_saves,
    swap,
)
from lstmkit.training.checkpoint_state import (
    check_rng,
    check_state_json,
    optimizer_from_flat,
    optimizer_to_flat,
    restore_optimizer,
    rng_state,
    set_rng_state,
)
from lstmkit.training.checkpoint_verify import (
    CONFIG_FILE,
    FORMAT,
    MANIFEST,
    MODEL_FILE,
    STATE_JSON,
    STATE_TENSORS,
    VOCAB_FILE,
    CheckpointError,
)
from lstmkit.training.checkpoint_verify import sha256 as _sha256
from lstmkit.training.model import LanguageModel, ModelConfig

__all__ = [
    "FORMAT",
    "CheckpointError",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_training_state",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "recover_interrupted_saves",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify",
    "verify_checkpoint",
    "VerifiedCheckpoint",
]


class LoadedCheckpoint(NamedTuple):
    model: LanguageModel
    config: ModelConfig
    vocab: Vocab
    meta: dict  # {"data": ..., "train": ..., "state": state.json or None, "path": str}


# ---- saving ----------------------------------------------------------------------------------
def _model_tensors(model: LanguageModel) -> dict[str, Tensor]:
    sd = model.state_dict()
    if model.config.tie_weights:
        sd.pop("decoder.weight")  # the same storage as embedding.weight; stored once
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


def _check_saveable(path: Path, weights: dict[str, Tensor], config, vocab, data) -> None:
    """Refuse, before anything is written, what load_checkpoint would refuse: a checkpoint that
    cannot be loaded must not replace one that can (e.g. the weights of a diverged run)."""
    fix = "nothing was written"
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"vocabulary has {len(vocab)} tokens but the model config says "
            f"vocab_size={config.vocab_size}; they must be the same ({fix})"
        )
    cv.check_data(data, f"cannot save {path}", fix)
    cv.check_vocab_layout(vocab, data.get("level"), f"cannot save {path}", fix)
    other = [f"{k} ({v.dtype})" for k, v in weights.items() if v.dtype != torch.float32]
    if other:
        raise CheckpointError(
            f"cannot save {path}: checkpoints hold float32 weights, and {cv.listing(other)} "
            f"{'is' if len(other) == 1 else 'are'} not; save model.float() instead ({fix})"
        )
    for k, v in weights.items():
        if not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"cannot save {path}: the model's {k} holds NaN/infinite values (training "
                f"diverged?); {fix}, the previous checkpoint is kept. Lower the learning rate"
            )


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    vocab: Vocab,
    *,
    data: dict | None = None,
    train: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    state: dict | None = None,
    state_tensors: dict[str, Tensor] | None = None,
    save_rng: bool = False,
) -> Path:
    """Write a checkpoint directory atomically; return its path.

    `data` says how text is tokenised ({"level": "word"|"char"|"ptb", ...}); `train` is the
    training config (JSON-able). For resumable checkpoints also pass `optimizer`, `state` (JSON:
    step, schedule, data position, ...), `state_tensors` (e.g. the carried hidden state) and
    save_rng=True. Raises CheckpointError (the previous checkpoint kept) when the weights are not
    finite float32, or when writing fails (disk full, file-size limit: OSError is the cause)."""
    path = Path(path)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    data = {} if data is None else data
    weights = _model_tensors(model)
    _check_saveable(path, weights, config, vocab, data)
    tmp = None
    prefix = f".{path.name}.tmp-"
    before: set[str] = set()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = old_path(path)
        if not path.exists() and old.exists():  # a previous save died between its two renames
            os.replace(old, path)
        before = {p.name for p in path.parent.iterdir() if p.name.startswith(prefix)}
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        _write_files(tmp, weights, config, vocab, data, train)
        if save_rng or optimizer is not None or state is not None or state_tensors:
            _write_state(tmp, optimizer, state, state_tensors, save_rng)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in tmp.iterdir()}
        _write_json(tmp / MANIFEST, {"format": FORMAT, "files": dict(sorted(files.items()))})
        finish_files(tmp)
        swap(tmp, path)
    except BaseException as e:
        if tmp is None:  # interrupted inside mkdtemp (Ctrl-C, SIGTERM): find what it made
            with contextlib.suppress(OSError):
                made = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
                tmp = next((p for p in made if p.name not in before), None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise CheckpointError(failure_message(path, e)) from e
        raise
    return path


def _write_files(tmp: Path, weights, config: ModelConfig, vocab: Vocab, data, train) -> None:
    meta = cw.binding_metadata(config, data, vocab)
    save_file(weights, tmp / MODEL_FILE, metadata=meta)
    cfg = {"format": FORMAT, "model": config.to_dict(), "data": data, "train": train or {}}
    _write_json(tmp / CONFIG_FILE, cfg)
    vocab.save(tmp / VOCAB_FILE)


def _write_state(tmp: Path, optimizer, state, state_tensors, save_rng: bool) -> None:
    tensors = {
        f"tensor.{k}": v.detach().cpu().contiguous() for k, v in (state_tensors or {}).items()
    }
    meta: dict[str, Any] = {"state": state or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = optimizer_to_flat(optimizer)
        tensors.update(opt_tensors)
    if save_rng:
        rng_tensors, meta["rng"] = rng_state()
        tensors.update(rng_tensors)
    save_file(tensors, tmp / STATE_TENSORS, metadata={"format": FORMAT})
    _write_json(tmp / STATE_JSON, meta)


# ---- loading ---------------------------------------------------------------------------------
def _resolve(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    old = old_path(path)
    if not path.exists() and (old / MANIFEST).is_file():
        return old  # the save that replaces it was interrupted between its two renames
    if not path.exists():
        raise CheckpointError(
            f"checkpoint directory {str(path)!r} does not exist; pass a "
            f"directory written by `lstmkit train` (e.g. RUN/best or RUN/last)"
        )
    raise CheckpointError(
        f"{str(path)!r} is not a complete lstmkit checkpoint: {MANIFEST} is "
        f"missing (a save was interrupted, or this is not a checkpoint)"
    )


class VerifiedCheckpoint(NamedTuple):
    """A checkpoint whose files all matched the manifest (size, SHA-256) and whose JSON was
    checked: what the loaders need, read once (`verify`), for a caller that loads twice."""

    path: Path
    cfg_json: dict
    config: ModelConfig
    vocab: Vocab
    state_json: dict | None


def verify(path: str | os.PathLike | VerifiedCheckpoint) -> VerifiedCheckpoint:
    """Manifest, then every JSON file: nothing of the checkpoint is used before this passes."""
    if isinstance(path, VerifiedCheckpoint):  # verified already: the files are not read again
        return path
    path = _resolve(Path(path))
    listed = cv.verify_files(path)
    cfg_json = cv.read_json(path / CONFIG_FILE)
    config = cv.check_config(path, cfg_json)
    vocab = cv.check_vocab(path, cfg_json["data"].get("level"))
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{path}: vocab.json has {len(vocab)} tokens but config.json says "
            f"vocab_size={config.vocab_size}; {cv.USE_ANOTHER}"
        )
    state_json = None
    if STATE_JSON in listed:
        state_json = check_state_json(path / STATE_JSON, cv.read_json(path / STATE_JSON))
    return VerifiedCheckpoint(path, cfg_json, config, vocab, state_json)


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check every file against the manifest (size, then SHA-256) and every JSON file's form;
    return the config JSON."""
    return verify(path).cfg_json


def _load_tensors(f: Path) -> dict[str, Tensor]:
    try:
        return load_file(f)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f} is not a readable safetensors file ({cv.cap(e, 150)})") from e


def load_checkpoint(
    path: str | os.PathLike | VerifiedCheckpoint,
    *,
    map_location: str | torch.device = "cpu",
    engine: str | None = None,
) -> LoadedCheckpoint:
    """Verify and load a checkpoint; returns (model, config, vocab, meta). The model is in eval
    mode. `engine` overrides the stored engine choice (e.g. "reference" to get gate traces).
    `path` may be a VerifiedCheckpoint (from `verify`): then its files are not hashed again."""
    path, cfg_json, config, vocab, state_json = verify(path)
    # sizes against the stored shapes first: config.json alone must not decide what is built
    cw.check_weights_header(path, cfg_json, config, vocab)
    if engine is not None:
        try:
            config = ModelConfig.from_dict({**config.to_dict(), "engine": engine})
        except ValueError as e:
            raise CheckpointError(f"engine={engine!r}: {cv.cap(e)}") from e
    try:
        model = LanguageModel(config)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {cv.cap(e)}; {cv.USE_ANOTHER}") from e
    weights = _load_tensors(path / MODEL_FILE)
    expected = _model_tensors(model)
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path / MODEL_FILE} does not fit config.json: "
            + (f"missing {cv.listing(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {cv.listing(extra)}" if extra else "")
            + f"; {cv.USE_ANOTHER}"
        )
    for k, v in expected.items():
        if weights[k].shape != v.shape:
            raise CheckpointError(
                f"{path / MODEL_FILE}: {k} has shape {tuple(weights[k].shape)}"
                f", config.json implies {tuple(v.shape)}; {cv.USE_ANOTHER}"
            )
    cw.check_finite(path / MODEL_FILE, weights)
    model.load_state_dict(weights, strict=not config.tie_weights)
    model.to(map_location).eval()
    meta = {
        "data": cfg_json["data"],
        "train": cfg_json["train"],
        "state": state_json,
        "path": str(path),
    }
    return LoadedCheckpoint(model, config, vocab, meta)


def load_training_state(
    path: str | os.PathLike | VerifiedCheckpoint,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> tuple[dict, dict[str, Tensor]]:
    """Restore optimizer and RNG states in place from a resumable checkpoint; return its JSON
    state and its extra tensors (the names given to save_checkpoint's state_tensors). Everything
    is checked first: on a CheckpointError neither the optimizer nor an RNG was changed."""
    checked = verify(path)
    path, meta = checked.path, checked.state_json
    if meta is None:
        raise CheckpointError(
            f"{path} holds weights only (no {STATE_JSON}); it cannot resume "
            f"training. Start a new run from it, or resume from RUN/last"
        )
    f = path / STATE_TENSORS
    tensors = _load_tensors(f)
    unknown = [k for k in tensors if not k.startswith(("optim.", "rng.", "tensor."))]
    if unknown:
        raise CheckpointError(f"{f} holds unknown tensors {cv.listing(unknown)}; {cv.USE_ANOTHER}")
    cw.check_finite(f, tensors)
    if ("rng" in meta) != ("rng.torch" in tensors):  # one without the other: edited
        raise CheckpointError(
            f"{path}: {STATE_JSON} and {STATE_TENSORS} disagree on whether RNG states were "
            f"saved; {cv.USE_ANOTHER}"
        )
    if restore_rng and "rng" in meta:
        check_rng(path / STATE_JSON, f, tensors, meta["rng"])
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path} has no optimizer state to resume from")
        restore_optimizer(path / STATE_JSON, optimizer, tensors, meta["optimizer"])
    if restore_rng and "rng" in meta:
        set_rng_state(tensors, meta["rng"])
    extra = {k[len("tensor.") :]: v for k, v in tensors.items() if k.startswith("tensor.")}
    return meta["state"], extra
