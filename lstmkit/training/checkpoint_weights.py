"""model.safetensors, checked from its header before any model is built, then its values.

The header alone (safetensors' safe_open reads no tensor) gives every tensor's dtype and shape:
they must be float32 and fit config.json's sizes, so that a tampered `hidden_size: 100000` or
`num_layers: 100000` is refused at once instead of allocating 160 GB or building 10^5 layers.
The header's metadata also records, since this format revision, the model config, the data
settings and a fingerprint of the vocabulary the weights were saved with: a vocabulary.json
permuted, or a config.json taken from another save, is refused even with a recomputed manifest.
(Checkpoints written before carry no such record and are checked without it.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from lstmkit.data.vocab import Vocab
from lstmkit.training.checkpoint_verify import (
    CONFIG_FILE,
    FORMAT,
    MODEL_FILE,
    USE_ANOTHER,
    VOCAB_FILE,
    CheckpointError,
    cap,
    listing,
    short,
)
from lstmkit.training.model import ModelConfig


def vocab_fingerprint(vocab: Vocab) -> str:
    """SHA-256 of the vocabulary's content (not of the file's bytes): what model.safetensors'
    header records, so that weights are never paired with another (e.g. permuted) vocabulary."""
    return hashlib.sha256(vocab.to_json().encode("utf-8")).hexdigest()


def binding_metadata(config: ModelConfig, data: dict, vocab: Vocab) -> dict[str, str]:
    return {
        "format": FORMAT,
        "model_config": json.dumps(config.to_dict(), sort_keys=True),
        "data": json.dumps(data, sort_keys=True, ensure_ascii=False),
        "vocab_sha256": vocab_fingerprint(vocab),
    }


# ---- model.safetensors -----------------------------------------------------------------------
def weights_header(f: Path) -> tuple[dict[str, str], dict[str, tuple[str, list[int]]]]:
    """(metadata, {name: (dtype, shape)}) from the header alone: no tensor is read."""
    try:
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata() or {}
            slices = {k: h.get_slice(k) for k in h.keys()}  # noqa: SIM118 (not a dict)
            return meta, {k: (s.get_dtype(), s.get_shape()) for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is not a readable safetensors file ({cap(e, 120)})") from e


def _stored_sizes(f: Path, info: dict) -> dict[str, tuple[int, str]]:
    """The model sizes the stored tensors imply, each with the tensor that shows it."""

    def shape(key: str, ndim: int) -> list[int]:
        if key not in info or len(info[key][1]) != ndim:
            found = f"shape {tuple(info[key][1])}" if key in info else "missing"
            raise CheckpointError(
                f"{f}: {key} ({found}) is not the {ndim}-D tensor every lstmkit language model "
                f"has; {USE_ANOTHER}"
            )
        return info[key][1]

    emb, hh = shape("embedding.weight", 2), shape("rnn.weight_hh_l0", 2)
    layers = 0
    while f"rnn.weight_hh_l{layers}" in info:
        layers += 1
    return {
        "vocab_size": (emb[0], f"embedding.weight has shape {tuple(emb)}"),
        "emb_size": (emb[1], f"embedding.weight has shape {tuple(emb)}"),
        "hidden_size": (hh[1], f"rnn.weight_hh_l0 has shape {tuple(hh)}"),
        "num_layers": (layers, f"rnn.weight_hh_l0..l{layers - 1} are stored"),
    }


def check_weights_header(
    path: Path, cfg_json: dict, config: ModelConfig, vocab: Vocab
) -> dict[str, tuple[str, list[int]]]:
    """Before any model is built: float32 tensors, sizes that fit config.json, and (checkpoints
    written since the header records them) the same config, data and vocabulary as saved."""
    f = path / MODEL_FILE
    meta, info = weights_header(f)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{f} has format {short(meta.get('format'))}, expected {FORMAT!r}; {USE_ANOTHER}"
        )
    not_f32 = [f"{k} ({dtype})" for k, (dtype, _) in info.items() if dtype != "F32"]
    if not_f32:
        raise CheckpointError(
            f"{f}: lstmkit checkpoints hold float32 weights (as saved), but {listing(not_f32)} "
            f"{'is' if len(not_f32) == 1 else 'are'} of another type; the file was converted or "
            f"edited: {USE_ANOTHER}"
        )
    for name, (stored, evidence) in _stored_sizes(f, info).items():
        if getattr(config, name) != stored:
            raise CheckpointError(
                f"{f} does not fit {CONFIG_FILE}: {CONFIG_FILE} says {name}="
                f"{short(getattr(config, name))} but the stored weights have {name} {stored} "
                f"({evidence}); the files come from different saves or were edited: {USE_ANOTHER}"
            )
    for key, saved, now in (
        ("model_config", "model", cfg_json["model"]),
        ("data", "data", cfg_json["data"]),
    ):
        recorded = _json_or_none(meta[key]) if key in meta else now
        if recorded != now:
            recorded = recorded if isinstance(recorded, dict) else {}
            diff = [k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k)]
            raise CheckpointError(
                f"{CONFIG_FILE} in {path} is not the one {MODEL_FILE} was saved with: its "
                f"{saved} settings differ in {listing(sorted(diff)) or 'their form'}; the files "
                f"come from different saves or were edited: {USE_ANOTHER}"
            )
    if "vocab_sha256" in meta and meta["vocab_sha256"] != vocab_fingerprint(vocab):
        raise CheckpointError(
            f"{path / VOCAB_FILE} is not the vocabulary {MODEL_FILE} was trained with (another "
            f"order or other tokens: the weights would map ids to the wrong words); "
            f"{USE_ANOTHER}"
        )
    return info


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def check_finite(f: Path, tensors: dict[str, Tensor]) -> None:
    """Every floating tensor finite: a NaN weight makes every output NaN, silently."""
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{f}: {k} holds {bad} NaN/infinite value{'s' if bad > 1 else ''} (of "
                f"{t.numel()}); the saved {'state' if 'state' in f.name else 'model'} is "
                f"broken: {USE_ANOTHER}"
            )
