"""What load_checkpoint checks before it trusts a checkpoint directory: files and JSON.

The manifest (size and SHA-256 of every file) catches damage and accidental edits. A manifest
can be recomputed after an edit, though (by hand, or by a tool that "repairs" it), so the loader
also insists on what save_checkpoint writes: every file it reads is listed (a state file present
but unlisted would be used unverified), every listed name is a plain file inside the checkpoint
(never `../../etc/passwd`, never a symbolic link), and every JSON file has the keys and types it
should, down to a vocabulary laid out as Vocab.build lays it out for its data level. The weights
are checked in checkpoint_weights.py, the optimizer and RNG states in checkpoint_state.py.

Every failure is a CheckpointError whose message names the file, what is wrong and what to do,
and stays short whatever the file holds (values and key lists are cut: see short, listing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from lstmkit.data.text import LEVELS
from lstmkit.data.vocab import EOS, UNK, Vocab
from lstmkit.training.model import ModelConfig

FORMAT = "lstmkit.lm-checkpoint/1"
MODEL_FILE, CONFIG_FILE, VOCAB_FILE = "model.safetensors", "config.json", "vocab.json"
STATE_TENSORS, STATE_JSON, MANIFEST = "state.safetensors", "state.json", "manifest.json"
ENCODING_ERRORS = ("strict", "replace")
USE_ANOTHER = "use another checkpoint (e.g. the other of RUN/best and RUN/last)"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, tampered with, or does not fit what it is used for."""


# ---- short messages --------------------------------------------------------------------------
def short(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a tampered file may hold a 10 MB string."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cap(text: object, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listing(items, limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more': a message never dumps a huge key list."""
    items = [str(i) for i in items]
    head = ", ".join(cap(i, 80) for i in items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "a value")


# ---- files and JSON --------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(f: Path) -> Any:
    """Parse a checkpoint's JSON file; refuse duplicate keys (which copy would count?)."""

    def pairs(kv: list) -> dict:
        out: dict = {}
        for k, v in kv:
            if k in out:
                raise CheckpointError(f"{f} has the key {short(k)} twice; {USE_ANOTHER}")
            out[k] = v
        return out

    try:
        return json.loads(f.read_bytes().decode("utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{f} is not UTF-8 text (byte {e.start}); {USE_ANOTHER}") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{f} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file is "
            f"damaged: {USE_ANOTHER}"
        ) from e
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, 10^5 nested lists
        raise CheckpointError(f"{f} cannot be read as JSON ({cap(e, 120)}); {USE_ANOTHER}") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {f} ({e.strerror}); {USE_ANOTHER}") from e


def need(f: Path, obj: Any, key: str, kind: type | tuple, what: str, where: str = "") -> Any:
    """obj[key] when it is of `kind` (never a bool for int), else a sentence naming the file."""
    at = f"{where}.{key}" if where else key
    if not isinstance(obj, dict) or key not in obj:
        raise CheckpointError(f"{f} lacks {at!r} ({what}); the file is damaged: {USE_ANOTHER}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise CheckpointError(
            f"{f}: {at!r} must be {what}, it is {json_kind(value)} ({short(value)}); the file is "
            f"damaged or was edited: {USE_ANOTHER}"
        )
    return value


def _tuple(kind: type | tuple) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def check_object(f: Path, value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{f} must hold a JSON object ({what}); it holds {json_kind(value)}: {USE_ANOTHER}"
        )
    return value


# ---- the manifest ----------------------------------------------------------------------------
def _plain_name(name: str) -> bool:
    seps = {os.sep, os.altsep or os.sep, "/", "\\"}
    return (
        name not in ("", ".", "..", MANIFEST)
        and not any(s in name for s in seps)
        and "\0" not in name
        and not os.path.isabs(name)
    )


def manifest_files(path: Path) -> dict[str, tuple[int, str]]:
    """{name: (bytes, sha256)} from manifest.json, every name checked before anything is opened."""
    f = path / MANIFEST
    manifest = check_object(f, read_json(f), "'format' and 'files'")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{f} has format {short(manifest.get('format'))}, expected {FORMAT!r}: this is not an "
            f"lstmkit checkpoint, or one of another version"
        )
    files = need(f, manifest, "files", dict, "an object {file name: {bytes, sha256}}")
    out = {}
    for name, info in files.items():
        if not _plain_name(name):
            raise CheckpointError(
                f"{f} lists {short(name)}, which is not a plain file name inside the checkpoint "
                f"directory; refusing to open it. The manifest was edited: {USE_ANOTHER}"
            )
        size = need(f, info, "bytes", int, "a file size in bytes", f"files.{name}")
        digest = need(f, info, "sha256", str, "a SHA-256 in hex", f"files.{name}")
        if size < 0 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise CheckpointError(
                f"{f}: the entry for {name} ({short(info)}) is not a size and a SHA-256; "
                f"{USE_ANOTHER}"
            )
        out[name] = (size, digest)
    return out


def verify_files(path: Path) -> dict[str, tuple[int, str]]:
    """Every listed file exists as a regular file with its size and SHA-256, and every file the
    loader may read is listed: a state file present but unlisted would be used unverified."""
    listed = manifest_files(path)
    for required in (MODEL_FILE, CONFIG_FILE, VOCAB_FILE):
        if required not in listed:
            raise CheckpointError(
                f"{path / MANIFEST} lists no {required}, which every checkpoint has; {USE_ANOTHER}"
            )
    for name in (STATE_JSON, STATE_TENSORS):
        if name not in listed and os.path.lexists(path / name):
            raise CheckpointError(
                f"{path / name} is not listed in {MANIFEST}, so it cannot be verified; refusing "
                f"to use it. Delete it to use the weights alone, or {USE_ANOTHER}"
            )
    if (STATE_JSON in listed) != (STATE_TENSORS in listed):
        have, lack = (STATE_JSON, STATE_TENSORS)[:: 1 if STATE_JSON in listed else -1]
        raise CheckpointError(
            f"{path / MANIFEST} lists {have} without {lack}; a resumable checkpoint has both: "
            f"{USE_ANOTHER}"
        )
    for name, (size, digest) in listed.items():
        f = path / name
        try:
            st = os.lstat(f)
        except FileNotFoundError:
            raise CheckpointError(
                f"checkpoint file {f} is missing; the checkpoint is incomplete: {USE_ANOTHER}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise CheckpointError(
                f"checkpoint file {f} is {kind}; a checkpoint holds its own files, refusing to "
                f"follow it: {USE_ANOTHER}"
            )
        if st.st_size != size:
            raise CheckpointError(
                f"checkpoint file {f} is {st.st_size} bytes but was written with {size}: it is "
                f"truncated or was changed. {USE_ANOTHER[0].upper()}{USE_ANOTHER[1:]}"
            )
        if sha256(f) != digest:
            raise CheckpointError(
                f"checkpoint file {f} does not match its SHA-256 in {MANIFEST}: it was modified "
                f"or corrupted; refusing to load it"
            )
    return listed


# ---- config.json -----------------------------------------------------------------------------
def check_data(data: Any, where: str, fix: str) -> dict:
    """The `data` section: how the text was tokenised (save_checkpoint's `data` argument)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: 'data' must be an object, it is {json_kind(data)}; {fix}")
    level = data.get("level")
    if "level" in data and level not in LEVELS:
        raise CheckpointError(
            f"{where}: data.level is {short(level)}, expected one of {', '.join(LEVELS)}; {fix}"
        )
    errors = data.get("encoding_errors")
    if "encoding_errors" in data and errors not in ENCODING_ERRORS:
        raise CheckpointError(
            f"{where}: data.encoding_errors is {short(errors)}, expected 'strict' or 'replace'; "
            f"{fix}"
        )
    return data


def check_config(path: Path, cfg_json: Any) -> ModelConfig:
    """config.json as save_checkpoint writes it: format, model (every ModelConfig field), data,
    train. Returns the saved ModelConfig."""
    f = path / CONFIG_FILE
    check_object(f, cfg_json, "'format', 'model', 'data' and 'train'")
    fmt = need(f, cfg_json, "format", str, f"the format name {FORMAT!r}")
    if fmt != FORMAT:
        raise CheckpointError(f"{f} has format {short(fmt)}, expected {FORMAT!r}")
    model = need(f, cfg_json, "model", dict, "an object of model settings")
    check_data(
        need(f, cfg_json, "data", dict, "an object saying how the text was tokenised"),
        str(f),
        USE_ANOTHER,
    )
    need(f, cfg_json, "train", dict, "an object of training settings")
    known = [fld.name for fld in dataclasses.fields(ModelConfig)]
    unknown = [k for k in model if k not in known]
    missing = [k for k in known if k not in model]
    if unknown or missing:
        raise CheckpointError(
            f"{f}: the model settings "
            + (f"lack {listing(missing)}" if missing else "")
            + (" and " if missing and unknown else "")
            + (f"have unknown keys {listing(unknown)}" if unknown else "")
            + f"; the file was edited or comes from another version: {USE_ANOTHER}"
        )
    try:
        return ModelConfig.from_dict(model)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{f}: model settings: {cap(e)}; {USE_ANOTHER}") from e


# ---- vocab.json ------------------------------------------------------------------------------
def check_vocab_layout(vocab: Vocab, level: str | None, where: str, fix: str) -> None:
    """What every vocabulary of `lstmkit train` (and Vocab.build) looks like: no empty token,
    lstmkit's specials first in the order <unk>, <eos>, the unknown token at id 0 (and "<unk>" it
    when present), and tokens that the level's tokenizer can produce."""
    itos = vocab.itos
    if not itos:
        raise CheckpointError(f"{where}: the vocabulary is empty; {fix}")
    if "" in vocab.stoi:
        raise CheckpointError(f"{where}: id {vocab.stoi['']} is an empty token; {fix}")
    specials = [t for t in (UNK, EOS) if t in vocab.stoi]
    unk_ok = vocab.unk_token == UNK if UNK in vocab.stoi else vocab.unk_id in (None, 0)
    if itos[: len(specials)] != specials or not unk_ok:
        raise CheckpointError(
            f"{where}: the vocabulary must start with its special tokens ({', '.join(specials)}"
            f") and have {UNK!r} (or its id 0) as unknown token, as Vocab.build makes it; it "
            f"starts with {listing(short(t, 20) for t in itos[:3])} and its unknown token is "
            f"{short(vocab.unk_token)}. It was reordered or made by hand; {fix}"
        )
    if level == "char":
        bad = next((t for t in itos[len(specials) :] if len(t) != 1), None)
        rule = "every token is one character"
    elif level in ("word", "ptb"):
        if EOS not in vocab.stoi:
            raise CheckpointError(
                f"{where}: a {level}-level vocabulary has {EOS!r} (every line ends with it), "
                f"this one has not: vocabulary and data.level do not belong together; {fix}"
            )
        bad = next((t for t in itos if any(c.isspace() for c in t)), None)
        rule = "no token holds whitespace"
    else:
        return
    if bad is not None:
        raise CheckpointError(
            f"{where}: at level {level!r} {rule}, but the vocabulary has {short(bad, 30)} (id "
            f"{vocab.stoi[bad]}): vocabulary and data.level do not belong together; {fix}"
        )


def check_vocab(path: Path, level: str | None) -> Vocab:
    f = path / VOCAB_FILE
    try:
        text = f.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{f} is not UTF-8 text (byte {e.start}); {USE_ANOTHER}") from e
    read_json(f)  # duplicate keys, absurd numbers: refused with the other JSON files' words
    try:
        vocab = Vocab.from_json(text)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{f}: {cap(e)}; {USE_ANOTHER}") from e
    check_vocab_layout(vocab, level, str(f), USE_ANOTHER)
    return vocab


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
