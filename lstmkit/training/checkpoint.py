"""Checkpoints: a directory anyone can sample or evaluate from, with nothing else at hand.

    run/last/
      model.safetensors    weights (tied decoder weight stored once)
      config.json          {"model": ModelConfig, "data": how text was tokenised, "train": ...}
      vocab.json           the Vocab
      state.safetensors    [training only] optimizer tensors, RNG states, the carried hidden state
      state.json           [training only] optimizer settings, LR schedule, step, data position
      manifest.json        size and SHA-256 of every file above, written last

No pickle anywhere: tensors are safetensors, everything else JSON, so loading a checkpoint never
runs code from it. The manifest catches truncated and tampered files before anything is read.

Writes are atomic: the new checkpoint is written to a hidden sibling directory, flushed to disk,
then swapped in with two renames (old -> .NAME.old, new -> NAME) and the old one deleted. A crash
or a full disk at any point leaves either the previous checkpoint or the new one, never a mix;
load_checkpoint() finds `.NAME.old` if the crash fell between the two renames.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lstmkit.data.vocab import Vocab
from lstmkit.training.model import LanguageModel, ModelConfig

FORMAT = "lstmkit.lm-checkpoint/1"
MODEL_FILE, CONFIG_FILE, VOCAB_FILE = "model.safetensors", "config.json", "vocab.json"
STATE_TENSORS, STATE_JSON, MANIFEST = "state.safetensors", "state.json", "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, tampered with, or does not fit what it is used for."""


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


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state_dict as (tensors, JSON-able rest), so that no pickle is needed."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {
        "param_groups": sd["param_groups"],
        "scalars": scalars,
        "tensor_pids": sorted({int(k.split(".")[1]) for k in tensors}),
    }


def optimizer_from_flat(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]  # JSON turned tuples to lists
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, Tensor], dict]:
    """Every RNG a training step may touch: torch (CPU and CUDA), Python, NumPy."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {
        "python": [version, list(mt), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(tensors: dict[str, Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = meta["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


def _finish_files(d: Path) -> None:
    """Flush every file to disk and give the directory and files the usual permissions
    (mkdtemp makes 0700 and safetensors writes 0600; a checkpoint is meant to be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in d.iterdir():
        os.chmod(p, 0o666 & ~umask)
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    os.chmod(d, 0o777 & ~umask)


def _fsync_dir(d: Path) -> None:
    """Make the renames themselves durable (POSIX: fsync the directory that holds them)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the renames are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _old_path(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


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
    save_rng=True."""
    path = Path(path)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"vocabulary has {len(vocab)} tokens but the model config says "
            f"vocab_size={config.vocab_size}; they must be the same"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    old = _old_path(path)
    if not path.exists() and old.exists():  # a previous save died between its two renames
        os.replace(old, path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file(_model_tensors(model), tmp / MODEL_FILE, metadata={"format": FORMAT})
        _write_json(
            tmp / CONFIG_FILE,
            {"format": FORMAT, "model": config.to_dict(), "data": data or {}, "train": train or {}},
        )
        vocab.save(tmp / VOCAB_FILE)
        if optimizer is not None or state is not None or state_tensors or save_rng:
            tensors = {
                f"tensor.{k}": v.detach().cpu().contiguous()
                for k, v in (state_tensors or {}).items()
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
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())
        }
        _write_json(tmp / MANIFEST, {"format": FORMAT, "files": files})
        _finish_files(tmp)
        # the swap: at every instant either `path` or `.path.old` is a complete checkpoint
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ---- loading ---------------------------------------------------------------------------------
def _resolve(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    old = _old_path(path)
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


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check every file against the manifest (size, then SHA-256); return the config JSON."""
    path = _resolve(Path(path))
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / MANIFEST} is damaged ({e}); use another checkpoint") from e
    for required in (MODEL_FILE, CONFIG_FILE, VOCAB_FILE):
        if required not in files:
            raise CheckpointError(f"checkpoint {str(path)!r} lists no {required}")
    for name, info in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing; the checkpoint is incomplete")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(
                f"checkpoint file {f} is {size} bytes but was written with "
                f"{info['bytes']}: it is truncated or was changed. Use another "
                f"checkpoint (e.g. the other of best/last)"
            )
        if _sha256(f) != info["sha256"]:
            raise CheckpointError(
                f"checkpoint file {f} does not match its SHA-256 in "
                f"{MANIFEST}: it was modified or corrupted; refusing to load it"
            )
    return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))


def _load_tensors(f: Path) -> dict[str, Tensor]:
    try:
        return load_file(f)
    except SafetensorError as e:
        raise CheckpointError(f"{f} is not a readable safetensors file ({e})") from e


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", engine: str | None = None
) -> LoadedCheckpoint:
    """Verify and load a checkpoint; returns (model, config, vocab, meta). The model is in eval
    mode. `engine` overrides the stored engine choice (e.g. "reference" to get gate traces)."""
    path = _resolve(Path(path))
    cfg_json = verify_checkpoint(path)
    if cfg_json.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {cfg_json.get('format')!r}, expected {FORMAT!r}")
    model_cfg = dict(cfg_json["model"])
    if engine is not None:
        model_cfg["engine"] = engine
    config = ModelConfig.from_dict(model_cfg)
    vocab = Vocab.load(path / VOCAB_FILE)
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{path}: vocab.json has {len(vocab)} tokens but config.json says "
            f"vocab_size={config.vocab_size}"
        )
    model = LanguageModel(config)
    weights = _load_tensors(path / MODEL_FILE)
    expected = _model_tensors(model)
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path / MODEL_FILE} does not fit config.json: missing {missing}, unexpected {extra}"
        )
    for k, v in expected.items():
        if weights[k].shape != v.shape:
            raise CheckpointError(
                f"{path / MODEL_FILE}: {k} has shape {tuple(weights[k].shape)}"
                f", config.json implies {tuple(v.shape)}"
            )
    model.load_state_dict(weights, strict=not config.tie_weights)
    model.to(map_location).eval()
    meta = {
        "data": cfg_json.get("data", {}),
        "train": cfg_json.get("train", {}),
        "state": None,
        "path": str(path),
    }
    if (path / STATE_JSON).is_file():
        meta["state"] = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    return LoadedCheckpoint(model, config, vocab, meta)


def load_training_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> tuple[dict, dict[str, Tensor]]:
    """Restore optimizer and RNG states in place from a resumable checkpoint; return its JSON
    state and its extra tensors (the names given to save_checkpoint's state_tensors)."""
    path = _resolve(Path(path))
    verify_checkpoint(path)
    if not (path / STATE_JSON).is_file():
        raise CheckpointError(
            f"{path} holds weights only (no {STATE_JSON}); it cannot resume "
            f"training. Start a new run from it, or resume from RUN/last"
        )
    meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    tensors = _load_tensors(path / STATE_TENSORS)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path} has no optimizer state to resume from")
        try:
            optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"the optimizer state in {path} does not fit this optimizer "
                f"({e}); resume with the same --optimizer and model"
            ) from e
    if restore_rng and "rng" in meta:
        set_rng_state(tensors, meta["rng"])
    extra = {k[len("tensor.") :]: v for k, v in tensors.items() if k.startswith("tensor.")}
    return meta["state"], extra
