import json
import os
import pickle

import pytest
import torch

from lstmkit.data.vocab import Vocab
from lstmkit.training import checkpoint as ck
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from lstmkit.training.model import LanguageModel, ModelConfig

VOCAB = Vocab.build(["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog"])


def _model(tie=False, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(VOCAB), emb_size=8, hidden_size=8, tie_weights=tie, **kw)
    return LanguageModel(cfg), cfg


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_round_trip(tmp_path, tie, cell):
    m, cfg = _model(tie, cell=cell)
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB, data={"level": "word"})
    m2, cfg2, vocab2, meta = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg and vocab2 == VOCAB and meta["data"] == {"level": "word"}
    assert _same_weights(m, m2) and not m2.training
    assert (m2.decoder.weight is m2.embedding.weight) == tie
    x = torch.randint(0, len(VOCAB), (5, 2))
    m.eval()
    assert torch.equal(m(x)[0], m2(x)[0])


def test_optimizer_rng_and_tensors_round_trip(tmp_path):
    m, cfg = _model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(2):
        m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
        opt.step()
    torch.manual_seed(123)
    h = torch.randn(2, 3, 8)
    save_checkpoint(
        tmp_path / "ck",
        m,
        cfg,
        VOCAB,
        optimizer=opt,
        state={"step": 2},
        state_tensors={"hidden.0": h},
        save_rng=True,
    )
    expected_draw = torch.rand(5)
    torch.manual_seed(999)  # scramble the RNG; loading must bring it back
    m2, *_ = load_checkpoint(tmp_path / "ck")
    opt2 = torch.optim.Adam(m2.parameters(), lr=1.0)
    state, tensors = load_training_state(tmp_path / "ck", opt2)
    assert state == {"step": 2} and torch.equal(tensors["hidden.0"], h)
    assert torch.equal(torch.rand(5), expected_draw)
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.8, 0.9)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))


def test_loading_runs_no_pickle(tmp_path, monkeypatch):
    m, cfg = _model()
    opt = torch.optim.SGD(m.parameters(), lr=1, momentum=0.9)
    m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB, optimizer=opt, save_rng=True)

    def forbidden(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    m2, *_ = load_checkpoint(tmp_path / "ck")
    load_training_state(tmp_path / "ck", torch.optim.SGD(m2.parameters(), lr=1, momentum=0.9))
    for f in os.listdir(tmp_path / "ck"):
        assert f.endswith((".json", ".safetensors")), f


def test_tampered_and_truncated_files_are_refused(tmp_path):
    m, cfg = _model()
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB)
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path / "ck")
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete lstmkit checkpoint"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")


RESUMABLE_FILES = (
    "config.json",
    "model.safetensors",
    "state.json",
    "state.safetensors",
    "vocab.json",
)


def _change_one_byte(path):
    """Same size, one byte changed, the file still well-formed: only the manifest can tell. JSON:
    one digit changed (inside a number or a string); safetensors: the last byte of the tensor
    data (after the header)."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        k = next(i for i, b in enumerate(data) if chr(b).isdigit())
        data[k] = ord("7") if data[k] != ord("7") else ord("3")
        json.loads(data.decode("utf-8"))  # still valid JSON
    else:
        data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", RESUMABLE_FILES)
def test_every_file_in_the_manifest_is_verified(tmp_path, name):
    """A resumable checkpoint: tampering with any one file the manifest lists (training state
    included) makes both loading and resuming refuse it."""
    m, cfg = _model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
    opt.step()
    ck_dir = save_checkpoint(
        tmp_path / "ck",
        m,
        cfg,
        VOCAB,
        optimizer=opt,
        state={"step": 12, "epoch": 1},
        state_tensors={"hidden.0": torch.randn(2, 2, 8)},
        save_rng=True,
    )
    listed = json.loads((ck_dir / "manifest.json").read_text())["files"]
    assert sorted(listed) == sorted(RESUMABLE_FILES)
    load_checkpoint(ck_dir)  # untouched: loads
    load_training_state(ck_dir, torch.optim.Adam(m.parameters(), lr=1e-2))
    _change_one_byte(ck_dir / name)
    assert (ck_dir / name).stat().st_size == listed[name]["bytes"]
    with pytest.raises(CheckpointError, match=f"{name} does not match its SHA-256"):
        load_checkpoint(ck_dir)
    with pytest.raises(CheckpointError, match=f"{name} does not match its SHA-256"):
        load_training_state(ck_dir, torch.optim.Adam(m.parameters(), lr=1e-2))
    with pytest.raises(CheckpointError, match=f"{name} does not match its SHA-256"):
        ck.verify_checkpoint(ck_dir)


def test_config_that_does_not_fit_weights_is_refused(tmp_path):
    m, cfg = _model()
    save_checkpoint(tmp_path / "ck", m, cfg, VOCAB)
    cpath = tmp_path / "ck" / "config.json"
    c = json.loads(cpath.read_text())
    c["model"]["hidden_size"] = 9
    cpath.write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="was written with"):  # the manifest notices
        load_checkpoint(tmp_path / "ck")
    # a consistent manifest for the edited config (a hand-made mix): the shapes notice
    mpath = tmp_path / "ck" / "manifest.json"
    man = json.loads(mpath.read_text())
    man["files"]["config.json"] = {"bytes": cpath.stat().st_size, "sha256": ck._sha256(cpath)}
    mpath.write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="has shape .* config.json implies"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="vocabulary has"):
        save_checkpoint(tmp_path / "ck2", m, ModelConfig(vocab_size=3), VOCAB)


@pytest.mark.parametrize("fail_at", ["write", "swap"])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    m_old, cfg = _model(seed=0)
    save_checkpoint(tmp_path / "last", m_old, cfg, VOCAB)
    m_new, _ = _model(seed=1)
    calls = {"n": 0}
    if fail_at == "write":
        real = ck.save_file

        def exploding_save(tensors, path, metadata=None):
            real(tensors, path, metadata=metadata)
            with open(path, "r+b") as f:  # half-written file, then the "disk is full"
                f.truncate(os.path.getsize(path) // 2)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ck, "save_file", exploding_save)
    else:
        real_replace = os.replace

        def crash_after_first_rename(src, dst):
            calls["n"] += 1
            real_replace(src, dst)
            if calls["n"] == 1:  # old moved aside, new not yet in place: the worst moment
                raise KeyboardInterrupt("killed")

        monkeypatch.setattr(ck.os, "replace", crash_after_first_rename)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(tmp_path / "last", m_new, cfg, VOCAB)
    monkeypatch.undo()
    loaded, *_ = load_checkpoint(tmp_path / "last")
    assert _same_weights(loaded, m_old)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no debris left
    save_checkpoint(tmp_path / "last", m_new, cfg, VOCAB)  # and saving works again
    assert _same_weights(load_checkpoint(tmp_path / "last").model, m_new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
