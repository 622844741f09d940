"""Hostile checkpoints at load time (issue 10, items 11, 15 and 17; the save side, items 16 and
3, is in test_lm_checkpoint.py: full disks, file-size limits, kills and their recovery).

A manifest can be recomputed after an edit, so most tests here edit a file and then "reseal" the
checkpoint as a forger would: a new manifest, and (where said) a model.safetensors header without
the record of config, data and vocabulary that binds the files together (as an older checkpoint,
or a forger who rewrites the weights file too). Whatever the edit, loading must either give the
saved model or raise CheckpointError with a short sentence: never another exception.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lm_helpers import WORDS
from safetensors.torch import load_file, save_file

from lstmkit.data.vocab import Vocab
from lstmkit.training import checkpoint as ck
from lstmkit.training import checkpoint_verify as cv
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from lstmkit.training.model import LanguageModel, ModelConfig

VOCAB = Vocab.build(list(WORDS) + ["<eos>"] * 5)
JSON_FILES = ("config.json", "vocab.json", "state.json", "manifest.json")


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(VOCAB), emb_size=8, hidden_size=8, num_layers=2, **kw)
    return LanguageModel(cfg), cfg


def _save(d: Path, seed=0):
    """A resumable checkpoint of a tiny model after two Adam steps."""
    m, cfg = _model(seed)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(2):
        m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
        opt.step()
    save_checkpoint(
        d,
        m,
        cfg,
        VOCAB,
        data={"level": "word", "encoding_errors": "strict"},
        train={"lr": 1e-2},
        optimizer=opt,
        state={"step": 2, "epoch": 1, "window": 2},
        state_tensors={"hidden.0": torch.randn(2, 2, 8), "hidden.1": torch.randn(2, 2, 8)},
        save_rng=True,
    )
    return m, opt


def _reseal(d: Path, strip_binding=False) -> None:
    """What a forger does after an edit: a manifest that fits every file again (and, with
    strip_binding, a weights header that no longer records config, data and vocabulary)."""
    if strip_binding:
        save_file(
            load_file(d / "model.safetensors"), d / "model.safetensors", {"format": ck.FORMAT}
        )
    man = json.loads((d / "manifest.json").read_text())
    for name in man["files"]:
        p = d / name
        man["files"][name] = {"bytes": p.stat().st_size, "sha256": cv.sha256(p)}
    (d / "manifest.json").write_text(json.dumps(man))


class _Whole:
    """An edit's result that replaces the whole JSON document (other edits change it in place)."""

    def __init__(self, value):
        self.value = value


def _edit_json(d: Path, name: str, edit, strip_binding=False) -> None:
    obj = json.loads((d / name).read_text())
    result = edit(obj)
    obj = result.value if isinstance(result, _Whole) else obj
    (d / name).write_text(json.dumps(obj))
    if name != "manifest.json":
        _reseal(d, strip_binding)


def _edit_tensors(d: Path, name: str, edit, strip_binding=False) -> None:
    from safetensors import safe_open

    with safe_open(str(d / name), framework="pt") as h:
        meta = h.metadata()
    tensors = load_file(d / name)
    edit(tensors)
    save_file(tensors, d / name, meta)
    _reseal(d, strip_binding)


def _refused(fn, *args, match=None, **kwargs):
    """fn(*args, **kwargs) raises a CheckpointError: a short sentence that `match` finds."""
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert len(msg) < 700 and " " in msg, msg
    if match:
        assert re.search(match, msg), msg
    return msg


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ---- item 11: silent wrong results ------------------------------------------------------------
@pytest.mark.parametrize("how", ["everything", "ordinary tokens"])
@pytest.mark.parametrize("strip", [False, True])
def test_permuted_vocabulary(tmp_path, how, strip):
    _save(tmp_path / "ck")

    def permute(v):
        k = 0 if how == "everything" else 2  # ids 0, 1 are <unk>, <eos>
        v["itos"][k:] = v["itos"][k:][::-1]

    _edit_json(tmp_path / "ck", "vocab.json", permute, strip_binding=strip)
    if how == "ordinary tokens" and strip:
        # a consistent forgery of weights and vocabulary: nothing in the checkpoint can tell (the
        # training text can: the trainer's resume compares the vocabulary it rebuilds from it)
        assert load_checkpoint(tmp_path / "ck").vocab != VOCAB
        return
    match = "must start with its special tokens" if how == "everything" else "trained with"
    _refused(load_checkpoint, tmp_path / "ck", match=match)


def test_resume_refuses_a_permuted_vocabulary(tmp_path):
    from lm_helpers import TINY_MODEL, tiny_corpus

    from lstmkit.training import TrainConfig, train

    train_file, _ = tiny_corpus(tmp_path)
    cfg = dict(train_file=str(train_file), out=str(tmp_path / "run"), model=dict(TINY_MODEL))
    cfg.update(batch_size=4, bptt=8, epochs=1, max_steps=3, progress=False)
    train(TrainConfig(**cfg))
    last = tmp_path / "run" / "last"
    _edit_json(last, "vocab.json", lambda v: v["itos"].__setitem__(slice(2, 6), v["itos"][5:1:-1]))
    _reseal(last, strip_binding=True)
    _refused(
        train, TrainConfig(**{**cfg, "max_steps": 6}), True, match="vocabulary .*difference at id 2"
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.update({"decoder.bias": t["decoder.bias"].double()}), "float32 .*F64"),
        (lambda t: t.update({"decoder.bias": t["decoder.bias"].long()}), "float32 .*I64"),
        (lambda t: t["rnn.weight_hh_l1"].view(-1)[3].fill_(float("nan")), "weight_hh_l1 .*NaN"),
        (lambda t: t["embedding.weight"].view(-1)[0].fill_(float("inf")), "embedding.*NaN/inf"),
    ],
    ids=["float64", "int64", "nan", "inf"],
)
def test_weights_of_another_dtype_or_not_finite(tmp_path, edit, match):
    _save(tmp_path / "ck")
    _edit_tensors(tmp_path / "ck", "model.safetensors", edit)
    _refused(load_checkpoint, tmp_path / "ck", match=match)


def test_non_finite_or_float64_weights_are_never_saved(tmp_path):
    m, cfg = _model()
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB)
    before = _snapshot(tmp_path / "ck")
    with torch.no_grad():
        m.decoder.bias[0] = float("nan")
    _refused(save_checkpoint, tmp_path / "ck", m, cfg, VOCAB, match="decoder.bias .*NaN")
    _refused(save_checkpoint, tmp_path / "ck", m.double(), cfg, VOCAB, match="float32")
    assert _snapshot(tmp_path / "ck") == before


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("level, match", [("words", "data.level"), ("char", "one character|saved")])
def test_another_data_level(tmp_path, strip, level, match):
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "config.json", lambda c: c["data"].update(level=level), strip)
    _refused(load_checkpoint, tmp_path / "ck", match=match)


def test_missing_or_foreign_optimizer_state(tmp_path):
    _save(tmp_path / "ck")
    fresh = lambda: torch.optim.Adam(_model(1)[0].parameters(), lr=0.5)  # noqa: E731
    d = tmp_path / "ck"
    shutil.copytree(d, tmp_path / "one")
    _edit_tensors(tmp_path / "one", "state.safetensors", lambda t: t.pop("optim.3.exp_avg_sq"))
    opt = fresh()
    _refused(load_training_state, tmp_path / "one", opt, match="parameter 3 .*same --optimizer")
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 0.5  # untouched
    shutil.copytree(d, tmp_path / "all")
    drop = lambda t: [t.pop(k) for k in [k for k in t if k.startswith("optim.")]]  # noqa: E731
    _edit_tensors(tmp_path / "all", "state.safetensors", drop)
    _refused(load_training_state, tmp_path / "all", fresh(), match="missing .*restart")
    sgd = torch.optim.SGD(_model(1)[0].parameters(), lr=1, momentum=0.9)
    _refused(load_training_state, d, sgd, match="saved by 'Adam' .*same --optimizer")
    adamw = torch.optim.AdamW(_model(1)[0].parameters())
    _refused(load_training_state, d, adamw, match="saved by 'Adam'")
    _edit_json(d, "state.json", lambda s: s["optimizer"].pop("class"))  # an older checkpoint
    _refused(load_training_state, d, sgd, match="lacks SGD's settings .*momentum")


def test_older_optimizer_state_without_newer_settings_still_resumes(tmp_path):
    """Settings torch added since a save (Adam's decoupled_weight_decay, ...) are filled in by
    torch itself, as load_state_dict does; only the ones it cannot fill are refused."""
    m, _ = _save(tmp_path / "ck")
    newer = ("decoupled_weight_decay", "maximize", "foreach", "capturable", "fused")
    group = lambda s: s["optimizer"]["param_groups"][0]  # noqa: E731
    _edit_json(tmp_path / "ck", "state.json", lambda s: [group(s).pop(k) for k in newer])
    opt = torch.optim.Adam(m.parameters(), lr=0.5)
    load_training_state(tmp_path / "ck", opt)
    assert opt.param_groups[0]["lr"] == 1e-2 and len(opt.state) == len(list(m.parameters()))


@pytest.mark.parametrize("level", ["word", "char", None])
def test_a_vocabulary_that_does_not_fit_its_level_is_not_saved(tmp_path, level):
    m, cfg = _model()
    shuffled = Vocab(VOCAB.itos[2:] + VOCAB.itos[:2])  # <unk>, <eos> last
    data = {} if level is None else {"level": level}
    _refused(save_checkpoint, tmp_path / "ck", m, cfg, shuffled, data=data, match="special tok")
    assert not (tmp_path / "ck").exists()
    if level is None:  # a hand-made vocabulary without specials, and no level: saved and loaded
        plain = Vocab([f"w{i}" for i in range(len(VOCAB))], unk_token=None)
        save_checkpoint(tmp_path / "ck", m, cfg, plain)
        assert load_checkpoint(tmp_path / "ck").vocab == plain
    else:
        what = "one character" if level == "char" else "whitespace"
        spaced = Vocab(VOCAB.itos[:-1] + ["two words"])
        _refused(save_checkpoint, tmp_path / "ck", m, cfg, spaced, data=data, match=what)


@pytest.mark.parametrize("name", ["state.json", "state.safetensors"])
def test_state_file_dropped_from_the_manifest(tmp_path, name):
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "manifest.json", lambda m: m["files"].pop(name))
    _refused(load_checkpoint, tmp_path / "ck", match="lists state|not listed")
    _edit_json(tmp_path / "ck", "manifest.json", lambda m: m["files"].pop(_other(name)))
    for fn in (load_checkpoint, load_training_state):
        _refused(fn, tmp_path / "ck", match=f"{name} is not listed|is not listed")


def _other(name: str) -> str:
    return "state.safetensors" if name == "state.json" else "state.json"


@pytest.mark.parametrize("entry", ["../../../../etc/passwd", "/etc/passwd", "a/b", "..", ""])
def test_manifest_entry_outside_the_checkpoint_is_not_opened(tmp_path, monkeypatch, entry):
    _save(tmp_path / "ck")
    info = {"bytes": 1, "sha256": "0" * 64}
    _edit_json(tmp_path / "ck", "manifest.json", lambda m: m["files"].update({entry: info}))
    opened = []
    monkeypatch.setattr(cv, "sha256", lambda p: opened.append(p) or "0" * 64)
    real_lstat = os.lstat
    monkeypatch.setattr(cv.os, "lstat", lambda p: opened.append(p) or real_lstat(p))
    _refused(load_checkpoint, tmp_path / "ck", match="not a plain file name")
    assert opened == []


def test_symlinked_file_is_not_followed(tmp_path):
    _save(tmp_path / "ck")
    (tmp_path / "outside").write_text("secret")
    (tmp_path / "ck" / "notes").symlink_to(tmp_path / "outside")
    info = {"bytes": 6, "sha256": cv.sha256(tmp_path / "outside")}
    _edit_json(tmp_path / "ck", "manifest.json", lambda m: m["files"].update(notes=info))
    _refused(load_checkpoint, tmp_path / "ck", match="symbolic link")


# ---- item 15: malformed JSON gives a sentence naming the file ---------------------------------
MALFORMED = {
    "config.json": [
        lambda c: c.pop("model"),
        lambda c: c["model"].pop("cell"),
        lambda c: c["model"].update(hidden_size="8"),
        lambda c: c["model"].update(num_layers=2.0),
        lambda c: c["model"].update(dropout=None),
        lambda c: c.update(data=[]),
        lambda c: _Whole(["not", "an", "object"]),
    ],
    "vocab.json": [
        lambda v: v.pop("itos"),
        lambda v: v.update(itos="abc"),
        lambda v: v.update(unk_token=3),
        lambda v: v.pop("unk_token"),
        lambda v: v.update(unk_token=None),
        lambda v: v["itos"].append(v["itos"][3]),
        lambda v: v["itos"].__setitem__(4, 7),
    ],
    "state.json": [
        lambda s: s.pop("state"),
        lambda s: s["optimizer"].update(param_groups="x"),
        lambda s: s["optimizer"]["param_groups"][0].pop("lr"),
        lambda s: s["optimizer"]["param_groups"][0]["params"].__setitem__(1, 0),
        lambda s: s["optimizer"]["param_groups"][0].update(betas="x"),
        lambda s: s["rng"].update(python="x"),
        lambda s: s["rng"]["numpy"].pop(),
    ],
    "manifest.json": [
        lambda m: m.pop("files"),
        lambda m: m["files"]["model.safetensors"].pop("sha256"),
        lambda m: m["files"]["vocab.json"].pop("bytes"),
        lambda m: m["files"]["config.json"].update(bytes="12"),
        lambda m: m.update(format=None),
    ],
}
CASES = [(name, i) for name, edits in MALFORMED.items() for i in range(len(edits))]


@pytest.mark.parametrize("name, i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_malformed_json_is_a_sentence(tmp_path, name, i):
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", name, MALFORMED[name][i], strip_binding=True)
    fn = load_training_state if name == "state.json" else load_checkpoint
    args = (
        (tmp_path / "ck", torch.optim.Adam(_model()[0].parameters()))
        if name == "state.json"
        else (tmp_path / "ck",)
    )
    _refused(fn, *args, match=name)


def test_json_that_is_not_json(tmp_path):
    for name in JSON_FILES:
        d = tmp_path / name
        _save(d)
        (d / name).write_bytes(b'{"format": \xff')
        if name != "manifest.json":
            _reseal(d)
        _refused(load_training_state, d, match=f"{name} is not")


# ---- item 17: sizes are checked before anything is built --------------------------------------
@pytest.mark.parametrize("key", ["hidden_size", "num_layers", "emb_size"])
def test_huge_config_sizes_are_refused_before_building(tmp_path, monkeypatch, key):
    _save(tmp_path / "ck")
    _edit_json(tmp_path / "ck", "config.json", lambda c: c["model"].update({key: 100000}), True)
    monkeypatch.setattr(ck, "LanguageModel", lambda *a: pytest.fail("built before the check"))
    t0 = time.perf_counter()
    _refused(load_checkpoint, tmp_path / "ck", match=f"{key}=100000 .*weights have {key} ")
    assert time.perf_counter() - t0 < 2


def test_long_key_lists_are_summarised(tmp_path):
    _save(tmp_path / "ck")
    junk = {f"junk.{i}": torch.zeros(1) for i in range(3000)}
    _edit_tensors(tmp_path / "ck", "model.safetensors", lambda t: t.update(junk))
    _refused(load_checkpoint, tmp_path / "ck", match="unexpected junk.* and 2995 more")
    _edit_json(tmp_path / "ck", "config.json", lambda c: c["model"].update(cell="x" * 10**6))
    _refused(load_checkpoint, tmp_path / "ck", match="cell")


# ---- the fuzz layer: random edits of the JSON files -------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    m, opt = _save(d / "bound")
    shutil.copytree(d / "bound", d / "stripped")
    _reseal(d / "stripped", strip_binding=True)
    return d, m, opt


def _paths(obj, prefix=()):
    """Key paths into a JSON tree (of a list: its first two and its last element)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i in sorted({0, 1, len(obj) - 1} & set(range(len(obj)))):
            out += _paths(obj[i], (*prefix, i))
    return out


def _kind(v):
    return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v)


WRONG = [None, "x", "", -1, 1.5, 10**30, True, [], [1, "a"], {}, {"a": 1}]


def _wrong_values(v):
    """Values of another JSON type than v. (A number never replaces a number: JSON cannot say
    whether 0 was an integer setting or a float one; MALFORMED gives num_layers 2.0.)"""
    same = {_kind(v)} | ({"number", bool} if v is None else set())  # null: an unset setting
    return [w for w in WRONG if _kind(w) not in same]


@pytest.mark.parametrize("name", JSON_FILES)
@given(data=st.data())
def test_fuzz_json_edits_load_the_saved_model_or_refuse(base, name, data):
    """One to three random edits of one JSON file (a key deleted, a value of another type), the
    manifest recomputed: loading and resuming give the saved model and optimizer, or refuse."""
    root, model, opt = base
    src = root / data.draw(st.sampled_from(["bound", "stripped"]))
    obj = json.loads((src / name).read_text())
    edited: list[tuple] = []
    for _ in range(data.draw(st.integers(1, 3))):
        # a value edited once is not edited again: "x" then 1.5 would be a number again
        paths = [p for p in _paths(obj) if not any(p[: len(e)] == e for e in edited)]
        if not paths:
            break
        *parents, last = path = data.draw(st.sampled_from(paths))
        edited.append(path)
        holder = _get(obj, parents)
        if data.draw(st.booleans()):
            del holder[last]
        else:
            holder[last] = copy.deepcopy(data.draw(st.sampled_from(_wrong_values(holder[last]))))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ck"
        shutil.copytree(src, d)
        _edit_json(d, name, lambda _: _Whole(obj))
        try:
            loaded = load_checkpoint(d)
        except CheckpointError as e:
            assert len(str(e)) < 700
        else:
            assert _same(loaded.model, model) and loaded.vocab == VOCAB
            assert loaded.config == _model()[1]
        opt2 = torch.optim.Adam(_model(1)[0].parameters(), lr=1e-2)
        try:
            load_training_state(d, opt2)
        except CheckpointError as e:
            assert len(str(e)) < 700
        else:
            a, b = opt.state_dict(), opt2.state_dict()
            assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
            for k in a["state"]:
                assert all(torch.equal(a["state"][k][n], b["state"][k][n]) for n in a["state"][k])


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def test_an_interrupt_inside_mkdtemp_leaves_no_copy_behind(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM that lands after mkdtemp made the copy but before save_checkpoint knew
    its name left `.ck.tmp-*` for good (a real SIGTERM at the first sight of the copy hit it)."""
    _save(tmp_path / "ck")
    before = _snapshot(tmp_path / "ck")
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a signal handler would, on mkdtemp's way back

    with monkeypatch.context() as m:
        m.setattr(ck.tempfile, "mkdtemp", mkdtemp)
        with pytest.raises(KeyboardInterrupt):
            _save(tmp_path / "ck", seed=1)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    assert _snapshot(tmp_path / "ck") == before
