"""Building the fused engine's compiled CPU loops: the fallback when the build fails, the stale
build lock, and the switch. (That the loops compute the right thing: tests/test_fused_*.py.)"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

import lstmkit
from lstmkit.engines import cpu_loops


def test_failed_build_warns_once_and_the_engine_still_runs(monkeypatch) -> None:
    def broken_load(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    monkeypatch.setattr(cpu_loops, "_loaded", {})  # forget this process's build
    monkeypatch.delenv(cpu_loops.ENV_SWITCH, raising=False)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        assert cpu_loops.cpu_loops() is None
    assert cpu_loops.cpu_loops() is None  # remembered: no second attempt, no second warning
    torch.manual_seed(0)
    fused = lstmkit.LSTM(3, 4, engine="fused", dtype=torch.float64)
    ref = lstmkit.LSTM(3, 4, engine="reference", dtype=torch.float64)
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-12, rtol=0)


def test_switch_off(monkeypatch) -> None:
    monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    assert cpu_loops.cpu_loops() is None


def test_stale_lock_is_removed_fresh_lock_kept(tmp_path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    cpu_loops._clear_stale_lock(tmp_path)
    assert lock.exists()  # a build may be running right now
    old = time.time() - 3600
    os.utime(lock, (old, old))
    cpu_loops._clear_stale_lock(tmp_path)
    assert not lock.exists()
    cpu_loops._clear_stale_lock(tmp_path)  # no lock: nothing to do


def test_build_directory_is_keyed_by_versions(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    d = cpu_loops.build_directory("x")
    assert d.parent == tmp_path / "lstmkit"
    assert torch.__version__ in d.name and d.name.startswith("x-py")
