"""Crash injection: kill a training run at every point of every save, resume, and check that
RUN/last, RUN/best and RUN/log.jsonl end exactly as in a run that never stopped.

A "point" is each file-system operation a save makes: creating the temporary directory, each
file opened for writing, each safetensors write, each fsync, each rename and each removal. The
crash is modelled in-process (fast enough to try every point): at point k a BaseException is
raised, and from then on every patched operation does nothing, so no cleanup code can run, as
under kill -9 (data already handed to the kernel survives a kill -9, which is what a point
*before* an operation leaves). test_kill_9_in_a_real_process checks the model against one real
SIGKILL between the two renames of a save.

After the crash the user's recovery is the documented one: `--resume` when RUN/last (or the
.last.old a crash between the renames leaves) exists, else the same command again.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from lm_helpers import TINY_MODEL, tiny_corpus

import lstmkit.training.checkpoint as checkpoint_module
from lstmkit.training import TrainConfig, load_checkpoint, train


class Killed(BaseException):
    """The process died here (not an Exception: no `except Exception` may see it)."""


class Injector:
    """Counts the file-system operations of a run; raises Killed at operation `kill_at`."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.count, self.dead = kill_at, 0, False
        self.where: list[str] = []

    def point(self, what: str) -> None:
        if self.dead:
            raise Killed(what)
        self.count += 1
        self.where.append(what)
        if self.count == self.kill_at:
            self.dead = True
            raise Killed(what)

    def install(self, monkeypatch) -> None:
        def wrap(owner, name, writes=lambda *a, **k: True):
            real = getattr(owner, name)

            def patched(*args, **kwargs):
                if writes(*args, **kwargs):
                    if self.dead:  # after death nothing runs: no cleanup, no rollback
                        if name == "rmtree":
                            return None
                        raise Killed(name)
                    self.point(f"{name} {Path(str(args[0])).name if args else ''}")
                return real(*args, **kwargs)

            monkeypatch.setattr(owner, name, patched)

        def writing(file, mode="r", *a, **k):
            return any(c in mode for c in "wax+")

        def opening(path, flags, *a, **k):
            return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

        for name in ("replace", "rename", "fsync", "write", "ftruncate"):
            wrap(os, name)
        wrap(os, "open", opening)  # the log is appended with os.open / os.write
        wrap(shutil, "rmtree")
        wrap(tempfile, "mkdtemp")
        wrap(builtins, "open", writing)
        wrap(checkpoint_module, "save_file")


def _config(tmp: Path, out: Path) -> TrainConfig:
    train_file, valid_file = tiny_corpus(tmp)
    return TrainConfig(
        train_file=str(train_file),
        valid_file=str(valid_file),
        out=str(out),
        model=dict(TINY_MODEL, num_layers=1, dropout=0.2),  # dropout: the RNG must resume too
        batch_size=4,
        bptt=8,
        epochs=1,
        eval_every=4,
        max_steps=12,  # saves at steps 4, 8, 12: last, best when improved, log
        optimizer="adam",
        lr=3e-3,
        progress=False,
        seed=5,
    )


def _outcome(run: Path) -> dict:
    """What must agree: last's weights and state, best's weights, the log without timestamps."""
    last, best = load_checkpoint(run / "last"), load_checkpoint(run / "best")
    state = dict(last.meta["state"]["state"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for entry in [*log, *state["history"]]:
        entry.pop("time")
    state.pop("history")
    return {
        "last": {k: v.clone() for k, v in last.model.state_dict().items()},
        "best": {k: v.clone() for k, v in best.model.state_dict().items()},
        "state": state,
        "log": log,
        "history": [json.loads(json.dumps(e)) for e in last.meta["state"]["state"]["history"]],
        "leftovers": sorted(p.name for p in run.iterdir() if p.name.startswith(".")),
    }


def _same(a: dict, b: dict) -> None:
    for part in ("last", "best"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}/{k} differs"
    for h in (a["history"], b["history"]):
        for e in h:
            e.pop("time", None)
    assert a["state"] == b["state"]
    assert a["log"] == b["log"] == b["history"]
    assert a["leftovers"] == b["leftovers"] == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    injector = Injector()
    with pytest.MonkeyPatch.context() as mp:
        injector.install(mp)
        train(_config(tmp, tmp / "run"))
    return _outcome(tmp / "run"), injector.where


def _recover(cfg: TrainConfig) -> None:
    run = Path(cfg.out)
    resumable = (run / "last").exists() or (run / ".last.old").exists()
    train(cfg, resume=resumable)


def test_the_runs_saves_have_every_kind_of_point(reference):
    _, where = reference
    kinds = {w.split()[0] for w in where}
    assert kinds >= {"mkdtemp", "open", "write", "save_file", "fsync", "replace", "rmtree"}, kinds
    assert len(where) > 60  # three saves of last, best (each improving step) and the log


def test_kill_at_every_point_of_every_save_then_resume(tmp_path, reference):
    want, where = reference
    for k in range(1, len(where) + 1):
        run = tmp_path / f"k{k}"
        cfg = _config(tmp_path, run)
        injector = Injector(kill_at=k)
        with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
            injector.install(mp)
            train(cfg)
        _recover(cfg)
        try:
            _same(_outcome(run), want)
        except AssertionError as e:
            raise AssertionError(f"killed before {where[k - 1]!r} (point {k}): {e}") from e
        shutil.rmtree(run)


_KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import test_lm_crash as t
from lstmkit.training import train
calls = []
real = os.replace
def replace(a, b, *args, **kw):
    real(a, b, *args, **kw)
    calls.append(b)
    if os.path.basename(str(b)) == ".last.old" and len(calls) > 2:  # 2nd save, renames half done
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
train(t._config(__import__("pathlib").Path({tmp!r}), __import__("pathlib").Path({run!r})))
"""


def test_kill_9_in_a_real_process(tmp_path, reference):
    """One real SIGKILL between the two renames of the second save of `last`: the resumed run
    ends exactly as the uninterrupted one."""
    want, _ = reference
    run = tmp_path / "run"
    code = _KILLER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), run=str(run))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (run / "last").exists() and (run / ".last.old").is_dir()
    _recover(_config(tmp_path, run))
    _same(_outcome(run), want)
