"""Checkpoint behaviour that the mutation run (docs/mutation-report.md) found unpinned.

Each test pins one behaviour of checkpoint.py, checkpoint_verify.py, checkpoint_weights.py or
checkpoint_atomic.py that a surviving mutant changed: what a save writes (which files, their
encoding, permissions, the state header), what a failed or interrupted save leaves and raises,
how recovery treats what a crash left, and the small helpers every message is built with.
Expected values are written out by hand (or with hashlib), never taken from the code under test.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from test_lm_checkpoint_hostile import (
    VOCAB,
    _edit_json,
    _edit_tensors,
    _model,
    _reseal,
    _same,
    _save,
)

from lstmkit.data.vocab import Vocab
from lstmkit.training import checkpoint as ck
from lstmkit.training import checkpoint_atomic as ca
from lstmkit.training import checkpoint_verify as cv
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    recover_interrupted_saves,
    save_checkpoint,
    verify,
)
from lstmkit.training.model import LanguageModel, ModelConfig

FORMAT = "lstmkit.lm-checkpoint/1"  # written out: the format name every file must carry
WEIGHT_FILES = ["config.json", "manifest.json", "model.safetensors", "vocab.json"]
RESUMABLE_FILES = sorted(WEIGHT_FILES + ["state.json", "state.safetensors"])
DATA = {"level": "word", "encoding_errors": "strict"}


def _plain_save(path: Path, seed: int = 0) -> LanguageModel:
    """A weights-only checkpoint of a tiny model."""
    m, cfg = _model(seed)
    save_checkpoint(path, m, cfg, VOCAB, data=dict(DATA))
    return m


def _manifest(d: Path, files: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"format": FORMAT, "files": files}))
    return d


# ---- the message helpers: results, whatever a file holds ------------------------------------
def test_short_cuts_reprs_to_sixty_characters():
    """short(): JSON's 'null' for None, a repr of up to 60 characters whole, a longer one cut
    to 57 characters and '...'."""
    assert cv.short(None) == "null"
    assert cv.short("a" * 58) == "'" + "a" * 58 + "'"  # repr of exactly 60 characters
    assert cv.short("a" * 59) == "'" + "a" * 56 + "..."  # 61 characters: cut
    assert cv.short(list(range(100))) == "[" + ", ".join(map(str, range(100)))[:56] + "..."
    assert cv.short("xyz", 4) == "'..."


def test_cap_cuts_text_to_three_hundred_characters():
    """cap(): str() of up to 300 characters whole, longer cut to 297 and '...'."""
    assert cv.cap("b" * 300) == "b" * 300
    assert cv.cap("b" * 301) == "b" * 297 + "..."
    assert cv.cap(12345, 4) == "1..."


def test_listing_joins_five_items_and_counts_the_rest():
    """listing(): 'a, b', each item cut to 80 characters, ' and N more' only past five."""
    assert cv.listing(["a", "b"]) == "a, b"
    assert cv.listing("abcde") == "a, b, c, d, e"
    assert cv.listing("abcdefg") == "a, b, c, d, e and 2 more"
    assert cv.listing(["c" * 100]) == "c" * 77 + "..."
    assert cv.listing([]) == ""


@pytest.mark.parametrize(
    "value, kind",
    [
        (None, "null"),
        (True, "true/false"),
        (False, "true/false"),
        (0, "a number"),
        (2.5, "a number"),
        ("", "a string"),
        ([1], "a list"),
        ({}, "an object"),
        ((1, 2), "a value"),
    ],
)
def test_json_kind_names_each_json_type(value, kind):
    """json_kind(): the JSON name of a parsed value's type ('a value' for anything else)."""
    assert cv.json_kind(value) == kind


def test_need_refuses_a_bool_unless_bool_is_asked_for(tmp_path):
    """need(): true/false is not an int (JSON's true would pass isinstance), unless the kinds
    asked for include bool."""
    f = tmp_path / "x.json"
    assert cv.need(f, {"k": 3}, "k", int, "a number") == 3
    with pytest.raises(CheckpointError):
        cv.need(f, {"k": True}, "k", int, "a number")
    assert cv.need(f, {"k": True}, "k", (int, bool), "a number or true/false") is True
    assert cv.need(f, {"k": 4}, "k", (int, bool), "a number or true/false") == 4


@pytest.mark.parametrize(
    "value, finite",
    [(1, True), (2.5, True), (-0.0, True), (math.nan, False), (math.inf, False), (-math.inf, False),
     (True, False), ("1", False), (None, False)],
)  # fmt: skip
def test_is_finite_number(value, finite):
    """is_finite_number(): a finite int or float, never a bool, NaN, infinity or a string."""
    assert cv.is_finite_number(value) is finite


def test_duplicate_json_keys_are_refused(tmp_path):
    """read_json(): a key given twice (at any depth) is refused, not resolved to the last copy."""
    f = tmp_path / "config.json"
    f.write_bytes(b'{"a": 1, "a": 2}')
    with pytest.raises(CheckpointError, match="twice"):
        cv.read_json(f)
    f.write_bytes(b'{"a": {"b": 1, "b": 1}}')
    with pytest.raises(CheckpointError, match="twice"):
        cv.read_json(f)
    f.write_bytes('{"a": [1, "\u00e9"]}'.encode())
    assert cv.read_json(f) == {"a": [1, "\u00e9"]}


# ---- the manifest: names and entries ---------------------------------------------------------
@pytest.mark.parametrize("name", [".", "a\\b", "\\etc", "a\x00b"])
def test_manifest_names_that_are_not_plain_file_names(tmp_path, name):
    """A '.', a name with a backslash (a separator on Windows) or with a NUL byte is refused
    while the manifest is read, before anything is opened."""
    entry = {"bytes": 5, "sha256": "0" * 64}
    d = _manifest(tmp_path / "ck", {"config.json": entry, name: entry})
    with pytest.raises(CheckpointError, match="not a plain file name"):
        cv.manifest_files(d)


def test_manifest_entry_with_a_nul_byte_is_a_checkpoint_error_on_load(tmp_path):
    """A NUL byte in a listed name ends in a CheckpointError, never os.lstat's ValueError."""
    _plain_save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "manifest.json", lambda m: m["files"].update({"a\x00b": {
        "bytes": 1, "sha256": "0" * 64}}))  # fmt: skip
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")


def test_manifest_entries_sizes_and_digests(tmp_path):
    """An entry is a size >= 0 (an empty file is fine) and 64 lower-case hex digits: a negative
    size or another digest is refused whatever the other half says."""
    empty = hashlib.sha256(b"").hexdigest()
    d = _manifest(tmp_path / "ok", {"empty.txt": {"bytes": 0, "sha256": empty}})
    assert cv.manifest_files(d) == {"empty.txt": (0, empty)}
    for bad in (
        {"bytes": -1, "sha256": empty},
        {"bytes": 0, "sha256": empty.upper()},
        {"bytes": 3, "sha256": "abc"},
    ):
        d = _manifest(tmp_path / "bad", {"x.txt": bad})
        with pytest.raises(CheckpointError, match="not a size and a SHA-256"):
            cv.manifest_files(d)


# ---- config.json data section and vocabulary layout ------------------------------------------
def test_unknown_encoding_errors_are_refused(tmp_path):
    """data.encoding_errors must be 'strict' or 'replace': refused when read and when saved."""
    assert cv.check_data({"encoding_errors": "replace"}, "w", "f") == {"encoding_errors": "replace"}
    with pytest.raises(CheckpointError, match="encoding_errors"):
        cv.check_data({"encoding_errors": "ignore"}, "w", "f")
    m, cfg = _model()
    with pytest.raises(CheckpointError, match="encoding_errors"):
        save_checkpoint(tmp_path / "ck", m, cfg, VOCAB, data={"encoding_errors": "ignore"})
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("level", ["word", "ptb", None])
def test_an_empty_token_is_refused_at_every_level(level):
    """An empty token is refused at every level, including those whose own rule it passes."""
    vocab = Vocab(["<unk>", "<eos>", "", "a"])
    with pytest.raises(CheckpointError, match="empty token"):
        cv.check_vocab_layout(vocab, level, "w", "f")


def test_an_unknown_token_other_than_unk_must_have_id_zero():
    """Without '<unk>', the unknown token must be id 0 (as Vocab.build makes it) or absent."""
    cv.check_vocab_layout(Vocab(["?", "a", "b"], unk_token="?"), None, "w", "f")
    cv.check_vocab_layout(Vocab(["a", "b"], unk_token=None), None, "w", "f")
    with pytest.raises(CheckpointError, match="special tokens"):
        cv.check_vocab_layout(Vocab(["a", "?", "b"], unk_token="?"), None, "w", "f")


def test_char_level_vocabularies_hold_single_characters():
    """At level 'char' a vocabulary of single characters (a space included) is accepted and one
    with a longer token is refused."""
    cv.check_vocab_layout(Vocab.build(list("hello world")), "char", "w", "f")
    cv.check_vocab_layout(Vocab(["a", "b"], unk_token=None), "char", "w", "f")
    with pytest.raises(CheckpointError, match="one character"):
        cv.check_vocab_layout(Vocab(["<unk>", "<eos>", "a", "ab"]), "char", "w", "f")


def test_ptb_level_follows_the_word_level_rules():
    """At level 'ptb', as at 'word', the vocabulary has '<eos>' and no token holds whitespace."""
    cv.check_vocab_layout(Vocab(["<unk>", "<eos>", "a", "b"]), "ptb", "w", "f")
    with pytest.raises(CheckpointError, match="whitespace"):
        cv.check_vocab_layout(Vocab(["<unk>", "<eos>", "a b"]), "ptb", "w", "f")
    with pytest.raises(CheckpointError, match="<eos>"):
        cv.check_vocab_layout(Vocab(["<unk>", "a"]), "ptb", "w", "f")


# ---- what a save writes ----------------------------------------------------------------------
def _opt(m):
    return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)


@pytest.mark.parametrize("given", ["optimizer", "state", "state_tensors", "save_rng"])
def test_any_one_training_argument_makes_a_resumable_checkpoint(tmp_path, given):
    """Each of optimizer, state, state_tensors and save_rng=True alone writes the state files,
    and the checkpoint resumes with what was given (no RNG states unless asked for)."""
    m, cfg = _model()
    hidden = torch.arange(6.0).reshape(2, 3)
    kw = {
        "optimizer": {"optimizer": _opt(m)},
        "state": {"state": {"step": 3}},
        "state_tensors": {"state_tensors": {"h": hidden}},
        "save_rng": {"save_rng": True},
    }[given]
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB, data=dict(DATA), **kw)
    assert sorted(os.listdir(tmp_path / "ck")) == RESUMABLE_FILES
    opt = _opt(_model()[0]) if given == "optimizer" else None
    state, extra = load_training_state(tmp_path / "ck", opt)
    assert state == ({"step": 3} if given == "state" else {})
    assert extra.keys() == ({"h"} if given == "state_tensors" else set())
    if given == "state_tensors":
        assert torch.equal(extra["h"], hidden)
    assert ("rng" in json.loads((tmp_path / "ck" / "state.json").read_text())) == (
        given == "save_rng"
    )


def test_a_save_without_training_arguments_holds_weights_only(tmp_path):
    """No optimizer, state, tensors or save_rng: four files, nothing to resume, meta state None."""
    m = _plain_save(tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "ck")) == WEIGHT_FILES
    with pytest.raises(CheckpointError, match="weights only"):
        load_training_state(tmp_path / "ck")
    assert verify(tmp_path / "ck").state_json is None
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.meta["state"] is None
    assert _same(loaded.model, m)


def test_loaded_meta_holds_data_train_state_and_path(tmp_path):
    """meta is {'data', 'train', 'state', 'path'} with what the save was given."""
    _save(tmp_path / "ck")
    meta = load_checkpoint(tmp_path / "ck").meta
    assert meta == {
        "data": {"level": "word", "encoding_errors": "strict"},
        "train": {"lr": 0.01},
        "state": meta["state"],
        "path": str(tmp_path / "ck"),
    }
    assert meta["state"]["state"] == {"step": 2, "epoch": 1, "window": 2}
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["train"] == {"lr": 0.01}


def test_a_wrapped_model_is_saved_as_the_module_it_wraps(tmp_path):
    """A wrapper with .module (as DistributedDataParallel) is saved as the wrapped model."""

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    m, cfg = _model()
    save_checkpoint(tmp_path / "ck", Wrapper(m), cfg, VOCAB, data=dict(DATA))
    assert _same(load_checkpoint(tmp_path / "ck").model, m)


def test_missing_parent_directories_are_created(tmp_path):
    """A save into runs/a/b/last makes runs/a/b first."""
    m = _plain_save(tmp_path / "runs" / "a" / "b" / "last")
    assert _same(load_checkpoint(tmp_path / "runs" / "a" / "b" / "last").model, m)


def test_json_files_are_utf8_whatever_the_locale(tmp_path, monkeypatch):
    """config.json is UTF-8 text with non-ASCII kept as is, even where open()'s default
    encoding is another (simulated here: Latin-1 for every text file the save opens)."""

    def latin1_open(file, mode="r", buffering=-1, encoding=None, *args, **kwargs):
        if "b" not in mode and encoding is None:
            encoding = "latin-1"
        return builtins.open(file, mode, buffering, encoding, *args, **kwargs)

    monkeypatch.setattr(ck, "open", latin1_open, raising=False)
    m, cfg = _model()
    data = {"level": "word", "source": "caf\u00e9.txt"}
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB, data=data, train={"note": "na\u00efve"})
    raw = (tmp_path / "ck" / "config.json").read_bytes()
    assert b'"caf\xc3\xa9.txt"' in raw and b'"na\xc3\xafve"' in raw
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.meta["data"] == data and loaded.meta["train"] == {"note": "na\u00efve"}


def test_state_header_names_the_format(tmp_path):
    """state.safetensors' header records the checkpoint format, as model.safetensors' does."""
    _save(tmp_path / "ck")
    with safe_open(str(tmp_path / "ck" / "state.safetensors"), framework="pt") as h:
        assert h.metadata() == {"format": FORMAT}


@pytest.mark.parametrize(
    "umask, file_mode, dir_mode",
    [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)],
    ids=["umask-022", "umask-002"],
)
def test_files_and_directory_get_the_usual_permissions(tmp_path, umask, file_mode, dir_mode):
    """The files get 0666 and the directory 0777 less the umask (not mkdtemp's 0700 or
    safetensors' 0600); the umask itself is left as it was."""
    old = os.umask(umask)
    try:
        _plain_save(tmp_path / "ck")
        assert os.umask(umask) == umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "ck").st_mode) == dir_mode
    for p in (tmp_path / "ck").iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == file_mode, p.name


# ---- saving over what a crash or a user left -------------------------------------------------
def test_a_save_beside_a_stale_old_copy_replaces_both(tmp_path):
    """A complete checkpoint plus a leftover .last.old: the save succeeds, the leftover goes."""
    _plain_save(tmp_path / "last")
    (tmp_path / ".last.old").mkdir()
    (tmp_path / ".last.old" / "junk").write_text("x")
    m = _plain_save(tmp_path / "last", seed=1)
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert _same(load_checkpoint(tmp_path / "last").model, m)


@pytest.mark.parametrize("where", ["last", ".last.old"])
def test_a_save_over_a_plain_file_removes_it(tmp_path, where):
    """A regular file where the checkpoint (or its .old copy) would be is replaced and removed,
    not left behind or fatal."""
    if where == ".last.old":
        _plain_save(tmp_path / "last")
    (tmp_path / where).write_text("not a checkpoint")
    m = _plain_save(tmp_path / "last", seed=1)
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert _same(load_checkpoint(tmp_path / "last").model, m)


# ---- a save that fails or is interrupted -----------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_mkdtemp_failing_before_making_anything(tmp_path, monkeypatch):
    """mkdtemp failing on a full disk (nothing made): a CheckpointError saying so, nothing left."""
    monkeypatch.setattr(ck.tempfile, "mkdtemp", _enospc)
    m, cfg = _model()
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(tmp_path / "run" / "last", m, cfg, VOCAB, data=dict(DATA))
    assert os.listdir(tmp_path / "run") == []


def test_mkdtemp_failing_with_the_directory_gone(tmp_path, monkeypatch):
    """The run directory removed under a save (mkdtemp fails, listing it fails too): still the
    CheckpointError of the failed write, not an error from the clean-up."""

    def vanish(*args, **kwargs):
        shutil.rmtree(tmp_path / "run")
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(ck.tempfile, "mkdtemp", vanish)
    m, cfg = _model()
    with pytest.raises(CheckpointError, match="nothing was written"):
        save_checkpoint(tmp_path / "run" / "last", m, cfg, VOCAB, data=dict(DATA))


def test_failing_to_restore_old_before_a_save(tmp_path, monkeypatch):
    """A crash left only .last.old (and an unfinished copy); putting it back fails (disk full):
    a CheckpointError, and .last.old is still there to load."""
    m0 = _plain_save(tmp_path / "last")
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    (tmp_path / ".last.tmp-stale").mkdir()
    m, cfg = _model(1)
    with monkeypatch.context() as mp:
        mp.setattr(ck.os, "replace", _enospc)
        with pytest.raises(CheckpointError, match="disk full"):
            save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data=dict(DATA))
    assert _same(load_checkpoint(tmp_path / "last").model, m0)


def test_both_renames_failing_keeps_the_old_copy(tmp_path, monkeypatch):
    """The new copy cannot be renamed in, nor the previous one back: a CheckpointError (the
    cause, not an error of the clean-up), and loading finds the previous one in .last.old."""
    m0 = _plain_save(tmp_path / "last")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) > 1:
            _enospc()
        real(src, dst)

    m, cfg = _model(1)
    with monkeypatch.context() as mp:
        mp.setattr(ck.os, "replace", replace)
        with pytest.raises(CheckpointError, match="disk full"):
            save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data=dict(DATA))
    assert calls[0] == ("last", ".last.old") and calls[2] == (".last.old", "last")
    assert sorted(os.listdir(tmp_path)) == [".last.old"]
    assert _same(load_checkpoint(tmp_path / "last").model, m0)


def test_an_interrupt_just_after_the_rename_keeps_the_new_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C after the new copy was renamed in: the KeyboardInterrupt itself comes out (the
    copy already gone is no error), and the new checkpoint is in place."""
    _plain_save(tmp_path / "last")

    def interrupted(d):
        raise KeyboardInterrupt

    m, cfg = _model(1)
    with monkeypatch.context() as mp:
        mp.setattr(ca, "fsync_dir", interrupted)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data=dict(DATA))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    assert _same(load_checkpoint(tmp_path / "last").model, m)


def test_a_safetensors_error_without_an_os_error(tmp_path, monkeypatch):
    """A SafetensorError that names no OS error is a CheckpointError, the previous checkpoint
    kept, and no copy left."""
    m0 = _plain_save(tmp_path / "last")

    def broken(*args, **kwargs):
        raise SafetensorError("Error while serializing: something else")

    m, cfg = _model(1)
    with monkeypatch.context() as mp:
        mp.setattr(ck, "save_file", broken)
        with pytest.raises(CheckpointError, match="something else"):
            save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data=dict(DATA))
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert _same(load_checkpoint(tmp_path / "last").model, m0)


def test_failure_messages(tmp_path):
    """failure_message(): what happened by errno (EDQUOT is a full disk too; an error without
    one says what it says), what is left at the path, and what to do."""
    p = tmp_path / "last"
    assert ca.failure_message(p, OSError(errno.EDQUOT, "Disk quota exceeded")) == (
        f"disk full while saving {p}; nothing was written there. Free some space (or write "
        f"elsewhere) and run again"
    )
    e = SafetensorError("Error while serializing: bad")
    assert ca.failure_message(p, e) == (
        f"write failed (Error while serializing: bad) while saving {p}; nothing was written "
        f"there. Fix the cause and run again"
    )
    p.mkdir()  # a directory, but not a checkpoint: nothing kept there
    assert ca.failure_message(p, OSError(errno.EIO, "I/O error")) == (
        f"write failed (I/O error) while saving {p}; nothing was written there. Fix the cause "
        f"and run again"
    )
    (p / "manifest.json").write_text("{}")
    assert ca.failure_message(p, OSError(errno.EFBIG, "File too large")) == (
        f"file-size limit reached (ulimit -f) while saving {p}; the previous checkpoint is "
        f"intact. Raise the limit (or write elsewhere) and run again"
    )


def test_swap_failing_never_replaces_what_is_at_the_path(tmp_path, monkeypatch):
    """swap() failing while `path` still exists (an empty directory here) puts nothing over
    it: .NAME.old is moved back only where the path is missing."""
    path, old, tmp = tmp_path / "last", tmp_path / ".last.old", tmp_path / ".last.tmp-x"
    path.mkdir()
    old.mkdir()
    (old / "keep").write_text("x")
    tmp.mkdir()

    def busy(p):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(ca, "_remove", busy)
    with pytest.raises(OSError):
        ca.swap(tmp, path)
    assert os.listdir(path) == [] and os.listdir(old) == ["keep"] and tmp.is_dir()


# ---- loading what a crash left, and recovering ----------------------------------------------
def test_loading_finds_old_only_when_the_checkpoint_is_missing(tmp_path):
    """A crash between the renames left only .last.old: loading `last` loads it. With `last`
    present but incomplete it is refused, not silently replaced by .last.old."""
    m = _plain_save(tmp_path / "last")
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    loaded = load_checkpoint(tmp_path / "last")
    assert _same(loaded.model, m) and loaded.meta["path"] == str(tmp_path / ".last.old")
    (tmp_path / "last").mkdir()
    with pytest.raises(CheckpointError, match="not a complete"):
        load_checkpoint(tmp_path / "last")


def test_load_moves_the_model_to_map_location(tmp_path):
    """map_location is where the model's tensors end up."""
    _plain_save(tmp_path / "ck")
    model = load_checkpoint(tmp_path / "ck", map_location="meta").model
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_recover_leaves_a_symlinked_old_copy_alone(tmp_path):
    """A .last.old that is a symbolic link (to a complete checkpoint) is not one of ours:
    never restored as `last`, never followed."""
    _plain_save(tmp_path / "elsewhere")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.old").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert recover_interrupted_saves(run) == []
    assert sorted(os.listdir(run)) == [".last.old"]
    assert (tmp_path / "elsewhere" / "manifest.json").is_file()


def test_recover_keeps_old_when_the_checkpoint_is_incomplete(tmp_path):
    """`last` an incomplete directory and .last.old complete: .last.old is kept (it may be the
    only good copy), with one sentence saying so."""
    _plain_save(tmp_path / "last")
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    (tmp_path / "last").mkdir()
    done = recover_interrupted_saves(tmp_path)
    assert len(done) == 1 and isinstance(done[0], str) and "left" in done[0]
    assert (tmp_path / ".last.old" / "manifest.json").is_file()


def test_recover_removes_an_old_copy_beside_a_complete_checkpoint(tmp_path):
    """`last` and .last.old both complete: .last.old is removed, reported in one sentence."""
    _plain_save(tmp_path / "last")
    shutil.copytree(tmp_path / "last", tmp_path / ".last.old")
    done = recover_interrupted_saves(tmp_path)
    assert len(done) == 1 and isinstance(done[0], str) and str(tmp_path / ".last.old") in done[0]
    assert sorted(os.listdir(tmp_path)) == ["last"]


# ---- resuming --------------------------------------------------------------------------------
def test_unknown_state_tensors_are_refused(tmp_path):
    """A tensor in state.safetensors outside optim.*, rng.* and tensor.* is refused."""
    _save(tmp_path / "ck")
    _edit_tensors(tmp_path / "ck", "state.safetensors", lambda t: t.update(evil=torch.zeros(1)))
    with pytest.raises(CheckpointError, match="unknown tensors"):
        load_training_state(tmp_path / "ck")


def test_a_non_finite_state_tensor_is_refused(tmp_path):
    """A NaN in a saved state tensor is a CheckpointError naming state.safetensors."""
    _save(tmp_path / "ck")

    def nan(t):
        t["tensor.hidden.0"][0, 0, 0] = math.nan

    _edit_tensors(tmp_path / "ck", "state.safetensors", nan)
    with pytest.raises(CheckpointError, match="state.safetensors.*NaN"):
        load_training_state(tmp_path / "ck")


def test_restore_rng_false_leaves_the_generators_alone(tmp_path):
    """restore_rng=False: the torch generator is exactly as it was, although RNG states were
    saved."""
    _save(tmp_path / "ck")
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    load_training_state(tmp_path / "ck", restore_rng=False)
    assert torch.equal(torch.get_rng_state(), before)


# ---- weights bound to their config.json ------------------------------------------------------
def test_a_config_from_another_save_is_refused(tmp_path):
    """config.json taken from a save of another (same-sized) config, manifest recomputed: the
    weights' header says which model settings they were saved with."""
    for name, dropout in (("a", 0.0), ("b", 0.5)):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=len(VOCAB), emb_size=8, hidden_size=8, dropout=dropout)
        save_checkpoint(tmp_path / name, LanguageModel(cfg), cfg, VOCAB, data=dict(DATA))
    shutil.copy(tmp_path / "b" / "config.json", tmp_path / "a" / "config.json")
    _reseal(tmp_path / "a")
    with pytest.raises(CheckpointError, match="dropout"):
        load_checkpoint(tmp_path / "a")


def test_edited_data_settings_are_refused(tmp_path):
    """data.encoding_errors edited in config.json (a valid value), manifest recomputed: the
    weights' header says which data settings they were saved with."""
    _plain_save(tmp_path / "ck")
    _edit_json(
        tmp_path / "ck", "config.json", lambda c: c["data"].update(encoding_errors="replace")
    )
    with pytest.raises(CheckpointError, match="encoding_errors"):
        load_checkpoint(tmp_path / "ck")


def test_weights_without_an_embedding_are_refused(tmp_path):
    """model.safetensors without embedding.weight (header and manifest otherwise fine) is a
    CheckpointError, found from the header."""
    _plain_save(tmp_path / "ck")
    _edit_tensors(tmp_path / "ck", "model.safetensors", lambda t: t.pop("embedding.weight"))
    with pytest.raises(CheckpointError, match="embedding.weight"):
        load_checkpoint(tmp_path / "ck")


# ---- second checkpoint run: failure messages, RNG and optimizer states, the weights' header ----
def test_failure_message_cuts_the_reason_to_120_characters(tmp_path):
    """A failed write's reason (an error without a known errno) is kept whole up to 120
    characters and cut to 117 and '...' past that, so the sentence stays one line."""
    p = tmp_path / "last"
    tail = f" while saving {p}; nothing was written there. Fix the cause and run again"
    assert ca.failure_message(p, OSError(errno.EIO, "r" * 120)) == (
        f"write failed ({'r' * 120})" + tail
    )
    assert ca.failure_message(p, OSError(errno.EIO, "r" * 121)) == (
        f"write failed ({'r' * 117}...)" + tail
    )


def test_failure_message_names_the_old_copy_that_is_kept(tmp_path):
    """NAME missing and .NAME.old complete (a crash between the renames, then a failed save):
    the sentence says where the previous checkpoint is."""
    p = tmp_path / "last"
    (tmp_path / ".last.old").mkdir()
    (tmp_path / ".last.old" / "manifest.json").write_text("{}")
    assert ca.failure_message(p, OSError(errno.ENOSPC, "No space left on device")) == (
        f"disk full while saving {p}; the previous checkpoint is intact in "
        f"{tmp_path / '.last.old'}. Free some space (or write elsewhere) and run again"
    )


class _Counting(torch.optim.Optimizer):
    """An optimizer of one's own whose per-parameter state is a number only (no tensor): the
    whole state is in state.json's scalars."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                self.state[p]["n"] = self.state[p].get("n", 0) + 1
                p.add_(p.grad, alpha=-g["lr"])


def _counting_run(d: Path, groups) -> _Counting:
    """A resumable checkpoint of the tiny model after two _Counting steps."""
    m, cfg = _model(0)
    opt = _Counting(groups(list(m.parameters())), lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
        opt.step()
    save_checkpoint(d, m, cfg, VOCAB, data=dict(DATA), optimizer=opt, state={"step": 2})
    return opt


def test_an_optimizer_state_of_numbers_only_resumes(tmp_path):
    """Parameters whose state is only numbers (no tensor in state.safetensors) get that state
    back: {pid: {'n': 2}} for every parameter, after two steps."""
    _counting_run(tmp_path / "ck", lambda ps: ps)
    n_params = len(list(_model(1)[0].parameters()))
    fresh = _Counting(_model(1)[0].parameters(), lr=0.5)
    load_training_state(tmp_path / "ck", fresh)
    assert fresh.state_dict()["state"] == {pid: {"n": 2} for pid in range(n_params)}
    assert fresh.param_groups[0]["lr"] == 0.05
    flat = ck.optimizer_from_flat({}, {"scalars": {"3": {"n": 7}}, "param_groups": []})
    assert flat == {"state": {3: {"n": 7}}, "param_groups": []}


def test_settings_of_every_group_of_an_unknown_optimizer_are_checked(tmp_path):
    """An optimizer lstmkit does not know, with two parameter groups: a setting of the wrong
    kind in the second group is refused as well as one in the first."""
    _counting_run(tmp_path / "ck", lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.2}])
    _edit_json(tmp_path / "ck", "state.json",
               lambda s: s["optimizer"]["param_groups"][1].update(lr="x"))  # fmt: skip
    ps = list(_model(1)[0].parameters())
    fresh = _Counting([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.5)
    with pytest.raises(CheckpointError, match="parameter group 1: lr is 'x' where _Counting"):
        load_training_state(tmp_path / "ck", fresh)
    assert fresh.state_dict()["state"] == {}


@pytest.mark.parametrize("pid", ["99", "x"])
def test_scalars_for_no_parameter_of_the_groups_are_refused(tmp_path, pid):
    """optimizer.scalars keyed by a parameter id the groups do not hold (99 of 6 parameters), or
    by no number at all, is a CheckpointError, never a KeyError or ValueError."""
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "state.json",
               lambda s: s["optimizer"]["scalars"].update({pid: {"step": 1.0}}))  # fmt: skip
    fresh = torch.optim.Adam(_model(1)[0].parameters(), lr=0.5)
    with pytest.raises(CheckpointError, match=f"optimizer.scalars has '{pid}', not a parameter id"):
        load_training_state(tmp_path / "ck", fresh)


@pytest.mark.parametrize("pos", [0, 624])
def test_numpy_rng_positions_at_both_ends_restore(tmp_path, pos):
    """NumPy's pos may be 0 or 624 (624, as right after seeding: the next draw regenerates the
    key): both restore, and the global generator then draws what a RandomState set by hand to
    the same state draws."""
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "state.json", lambda s: s["rng"]["numpy"].__setitem__(2, pos))
    saved = json.loads((tmp_path / "ck" / "state.json").read_text())["rng"]["numpy"]
    load_training_state(tmp_path / "ck", torch.optim.Adam(_model(1)[0].parameters()))
    assert np.random.get_state()[2] == pos
    by_hand = np.random.RandomState()
    by_hand.set_state((saved[0], np.array(saved[1], dtype=np.uint32), pos, saved[3], saved[4]))
    assert np.random.random(5).tolist() == by_hand.random(5).tolist()


def test_cuda_rng_states_of_more_than_ten_devices_are_restored_in_device_order(
    tmp_path, monkeypatch
):
    """Twelve CUDA generators: rng.cuda.10 and rng.cuda.11 go to devices 10 and 11, after
    device 9 (by number, not by name, where 'rng.cuda.10' < 'rng.cuda.2')."""
    _save(tmp_path / "ck")
    saved = [torch.full((8,), i, dtype=torch.uint8) for i in range(12)]
    _edit_tensors(tmp_path / "ck", "state.safetensors", lambda t: t.update(
        {f"rng.cuda.{i}": saved[i] for i in (5, 11, 0, 2, 10, 1, 3, 4, 6, 7, 8, 9)}
    ))  # fmt: skip
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    load_training_state(tmp_path / "ck", torch.optim.Adam(_model(1)[0].parameters()))
    assert len(calls) == 1
    assert [int(s[0]) for s in calls[0]] == list(range(12))


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (lambda t: t.pop("embedding.weight"), "embedding.weight (missing) is not the 2-D tensor"),
        (
            lambda t: t.update({"rnn.weight_hh_l0": t["rnn.weight_hh_l0"].reshape(4, 8, 8)}),
            "rnn.weight_hh_l0 (shape (4, 8, 8)) is not the 2-D tensor",
        ),
    ],
    ids=["missing", "3-D"],
)
def test_weights_refused_from_the_header_say_what_was_found(tmp_path, edit, phrase):
    """A tensor every model has, missing or of another rank (the LSTM's 32 x 8 weight_hh_l0
    reshaped to 4 x 8 x 8): the message says which, before any model is built."""
    _plain_save(tmp_path / "ck")
    _edit_tensors(tmp_path / "ck", "model.safetensors", edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ck")
    assert phrase in str(info.value)


def test_a_layer_count_that_does_not_fit_names_the_stored_layers(tmp_path):
    """config.json edited to 3 layers over weights of 2: the message names the stored layers
    rnn.weight_hh_l0..l1."""
    _plain_save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "config.json", lambda c: c["model"].update(num_layers=3))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ck")
    assert (
        "says num_layers=3 but the stored weights have num_layers 2 (rnn.weight_hh_l0..l1 are "
        "stored)"
    ) in str(info.value)


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda d: d.update(encoding_errors="replace"), "encoding_errors"),
        (lambda d: d.update(source="a.txt"), "source"),
        (lambda d: d.update(encoding_errors="replace", source="a.txt"), "encoding_errors, source"),
    ],
    ids=["changed", "added", "both"],
)
def test_only_the_data_settings_that_differ_are_named(tmp_path, edit, named):
    """config.json's data edited (manifest recomputed): the message names exactly the settings
    that differ from the weights' record, a changed one and one the record lacks, never the
    unchanged 'level'."""
    _plain_save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "config.json", lambda c: edit(c["data"]))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ck")
    assert f"its data settings differ in {named}; the files come from" in str(info.value)


@pytest.mark.parametrize("record", ["not json", "[1, 2]"], ids=["not-json", "a-list"])
def test_an_unreadable_data_record_in_the_weights_header_names_every_setting(tmp_path, record):
    """The weights' header 'data' record replaced by hand by something that is not a JSON object
    (manifest recomputed): a CheckpointError that names every data setting of config.json."""
    _plain_save(tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata()
    tensors = load_file(f)
    save_file(tensors, f, {**meta, "data": record})
    _reseal(tmp_path / "ck")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ck")
    assert "its data settings differ in encoding_errors, level; the files" in str(info.value)


@pytest.mark.parametrize("value, found", [(5, "a number (5)"), ([], "a list ([])")])
def test_scalars_of_one_parameter_that_are_no_object_name_the_file_and_the_entry(
    tmp_path, value, found
):
    """optimizer.scalars['0'] edited to a number or a list (manifest recomputed): the message
    names state.json and the entry 'optimizer.scalars.0' and says what it must be."""
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "state.json",
               lambda s: s["optimizer"]["scalars"].__setitem__("0", value))  # fmt: skip
    fresh = torch.optim.Adam(_model(1)[0].parameters(), lr=0.5)
    with pytest.raises(CheckpointError) as info:
        load_training_state(tmp_path / "ck", fresh)
    assert str(info.value).startswith(
        f"{tmp_path / 'ck' / 'state.json'}: 'optimizer.scalars.0' must be an object of settings, "
        f"it is {found}; the file is damaged or was edited"
    )
    assert fresh.state_dict()["state"] == {}


# ---- a save after a crash between the two renames -----------------------------------------
def test_a_save_after_a_crash_between_the_renames_replaces_the_old_copy(tmp_path):
    """`last` missing and `.last.old` complete (a kill between swap's renames): the next save
    puts the old copy back first, then swaps as usual. It succeeds and leaves `last` only."""
    _plain_save(tmp_path / "last", seed=1)
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    m = _plain_save(tmp_path / "last", seed=2)
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert _same(load_checkpoint(tmp_path / "last").model, m)


def test_a_failed_save_after_such_a_crash_leaves_the_old_copy_under_its_name(tmp_path, monkeypatch):
    """The same crash, then a save that fails while writing: the previous checkpoint is back
    under `last` (not only in `.last.old`), whole, and the error says it is intact."""
    old = _plain_save(tmp_path / "last", seed=1)
    before = {p.name: p.read_bytes() for p in sorted((tmp_path / "last").iterdir())}
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    monkeypatch.setattr(ck, "_write_files", _enospc)
    m, cfg = _model(seed=2)
    with pytest.raises(CheckpointError, match="disk full.*the previous checkpoint is intact\\."):
        save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data=dict(DATA))
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "last").iterdir())} == before
    assert _same(load_checkpoint(tmp_path / "last").model, old)
