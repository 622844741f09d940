import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from lstmkit.data.vocab import Vocab
from lstmkit.training import checkpoint as ck
from lstmkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    recover_interrupted_saves,
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
    with pytest.raises(CheckpointError, match="does not fit config.json: .*hidden_size=9 .*8"):
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
    expected = CheckpointError if fail_at == "write" else KeyboardInterrupt
    with pytest.raises(expected) as info:
        save_checkpoint(tmp_path / "last", m_new, cfg, VOCAB)
    if fail_at == "write":  # a sentence for the user, the OSError kept as the cause
        assert "disk full while saving" in str(info.value) and "previous checkpoint is intact" in (
            str(info.value)
        )
        assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    loaded, *_ = load_checkpoint(tmp_path / "last")
    assert _same_weights(loaded, m_old)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no debris left
    save_checkpoint(tmp_path / "last", m_new, cfg, VOCAB)  # and saving works again
    assert _same_weights(load_checkpoint(tmp_path / "last").model, m_new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def _saved(path, seed=0, resumable=False):
    m, cfg = _model(seed=seed)
    extra = {}
    if resumable:
        opt = torch.optim.SGD(m.parameters(), lr=1, momentum=0.9)
        m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
        opt.step()
        extra = dict(optimizer=opt, state={"step": 1}, save_rng=True)
    save_checkpoint(path, m, cfg, VOCAB, data={"level": "word"}, **extra)
    return m


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ---- issue 10, item 16: a full disk or a file-size limit during a save -------------------------
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _rust_enospc(*a, **k):
    raise SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


def _replace_fails_at(n):
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == n:
            _enospc()
        real(src, dst)

    return replace


@pytest.mark.parametrize(
    "target, fake",
    [
        ("save_file", _enospc),
        ("save_file", _rust_enospc),
        ("_write_json", _enospc),
        ("finish_files", _enospc),
        ("os.replace", 1),
        ("os.replace", 2),  # old moved aside, new not in place: put back
    ],
    ids=["weights", "weights-rust", "json", "fsync", "rename-1", "rename-2"],
)
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, fake):
    _saved(tmp_path / "last")
    before = _snapshot(tmp_path / "last")
    m, cfg = _model(seed=5)
    if target == "os.replace":  # a fresh counter per run (the test may run twice in a process)
        monkeypatch.setattr(ck.os, "replace", _replace_fails_at(fake))
    else:
        monkeypatch.setattr(ck, target, fake)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path / "last", m, cfg, VOCAB, data={"level": "word"})
    monkeypatch.undo()
    assert str(info.value).startswith(f"disk full while saving {tmp_path / 'last'}; the previous")
    assert "intact" in str(info.value) and info.value.__cause__ is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no .tmp-*, no .old
    assert _snapshot(tmp_path / "last") == before


def test_first_save_on_a_full_disk_says_nothing_was_written(tmp_path, monkeypatch):
    m, cfg = _model()
    monkeypatch.setattr(ck, "save_file", _enospc)
    with pytest.raises(CheckpointError, match="disk full while saving .*nothing was written"):
        save_checkpoint(tmp_path / "last", m, cfg, VOCAB)
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    """A real RLIMIT_FSIZE in a child process (SIGXFSZ ignored, so writes fail with EFBIG)."""
    _saved(tmp_path / "last")
    before = _snapshot(tmp_path / "last")
    limit = (tmp_path / "last" / "model.safetensors").stat().st_size // 2
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_lm_checkpoint import VOCAB, _model
        from lstmkit.training.checkpoint import CheckpointError, save_checkpoint
        m, cfg = _model(seed=5)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        try:
            save_checkpoint({str(tmp_path / "last")!r}, m, cfg, VOCAB)
        except CheckpointError as e:
            print("REFUSED", e, "| cause:", repr(e.__cause__))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED file-size limit reached" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "previous checkpoint is intact" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert _snapshot(tmp_path / "last") == before


# ---- issue 10, item 3: what a kill -9 during a save leaves, and recover_interrupted_saves -------
def test_recover_removes_unfinished_copies_and_restores_old(tmp_path):
    run = tmp_path / "run"
    _saved(run / "last", resumable=True)
    m, cfg = _model(seed=4)
    save_checkpoint(run / "best", m, cfg, VOCAB)
    (run / ".last.tmp-ab12_x9z").mkdir()
    (run / ".last.tmp-ab12_x9z" / "model.safetensors").write_bytes(b"half")
    (run / ".best.tmp-q").mkdir()
    (run / ".keep.tmp-file").write_text("a file, not a save's directory")
    (run / "notes.old").mkdir()
    os.replace(run / "best", run / ".best.old")  # a crash between the two renames
    shutil.copytree(run / "last", run / ".last.old")  # a crash while deleting the old copy
    notes = recover_interrupted_saves(run)
    assert len(notes) == 4, notes
    assert any("restored" in n and "best" in n for n in notes)
    names = sorted(p.name for p in run.iterdir())
    assert names == [".keep.tmp-file", "best", "last", "notes.old"]
    assert _same_weights(load_checkpoint(run / "best").model, m)
    load_training_state(run / "last", restore_rng=False)
    assert recover_interrupted_saves(run) == [] and recover_interrupted_saves(tmp_path / "no") == []


@pytest.mark.parametrize("point", ["weights", "manifest", "rename-1", "rename-2"])
def test_kill_at_each_point_of_a_save_then_recover(tmp_path, point):
    """A forked child saves and dies (os._exit: no cleanup runs) at `point`."""
    _saved(tmp_path / "last")
    before = _snapshot(tmp_path / "last")
    m, cfg = _model(seed=6)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            die = lambda *a, **k: os._exit(9)  # noqa: E731
            if point == "weights":
                ck.save_file = die
            elif point == "manifest":
                ck.finish_files = die
            else:
                real, n = os.replace, int(point[-1])
                calls = []
                ck.os.replace = lambda s, d: (
                    calls.append(1),
                    real(s, d),
                    len(calls) == n and die(),
                )
            save_checkpoint(tmp_path / "last", m, cfg, VOCAB)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] >> 8 == 9
    debris = sorted(p.name for p in tmp_path.iterdir() if p.name != "last")
    assert debris, "the kill left nothing to recover"
    notes = recover_interrupted_saves(tmp_path)
    assert notes and sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    loaded = load_checkpoint(tmp_path / "last").model
    if point == "rename-2":  # the new checkpoint was complete and in place
        assert _same_weights(loaded, m)
    else:
        assert _snapshot(tmp_path / "last") == before


def test_a_verified_checkpoint_is_hashed_once_for_both_loads(tmp_path, monkeypatch):
    from lstmkit.training import checkpoint_verify as cv

    m = _saved(tmp_path / "ck", resumable=True)
    calls = []
    real = cv.verify_files
    monkeypatch.setattr(cv, "verify_files", lambda p: calls.append(p) or real(p))
    verified = ck.verify(tmp_path / "ck")
    loaded = load_checkpoint(verified)
    opt = torch.optim.SGD(loaded.model.parameters(), lr=1, momentum=0.9)
    state, _ = load_training_state(verified, opt)
    assert len(calls) == 1 and state == {"step": 1}
    assert _same_weights(loaded.model, m)
    load_checkpoint(tmp_path / "ck")  # a path is verified again: nothing is trusted by name
    assert len(calls) == 2
