"""Building the fused engine's compiled CPU loops: the fallback when the build fails, the stale
build lock, and the switch. (That the loops compute the right thing: tests/test_fused_*.py.)"""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

import lstmkit
from lstmkit.engines import cpu_loops


def test_failed_build_warns_once_and_the_engine_still_runs(monkeypatch, tmp_path) -> None:
    def broken_load(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there yet
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


def test_build_lock_waits_for_a_live_build_and_removes_a_stale_one(tmp_path) -> None:
    lock = tmp_path / "lock"
    lock.touch()  # a build in another process, which finishes after 0.3 s
    finisher = threading.Timer(0.3, lock.unlink)
    finisher.start()
    start = time.time()
    cpu_loops._clear_stale_lock(tmp_path, max_age_s=60, poll_s=0.02)
    assert 0.25 < time.time() - start < 30 and not lock.exists()
    finisher.join()
    lock.touch()  # left by a killed build: removed once older than a build can take
    old = time.time() - 3600
    os.utime(lock, (old, old))
    cpu_loops._clear_stale_lock(tmp_path)
    assert not lock.exists()
    lock.touch()
    cpu_loops._clear_stale_lock(tmp_path, max_age_s=0.2, poll_s=0.02)  # ages while we wait
    assert not lock.exists()
    cpu_loops._clear_stale_lock(tmp_path)  # no lock: nothing to do


def test_build_directory_is_keyed_by_versions(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    d = cpu_loops.build_directory("x")
    assert d.parent == tmp_path / "lstmkit"
    assert torch.__version__ in d.name and d.name.startswith("x-py")


def test_build_directory_is_keyed_by_environment(monkeypatch, tmp_path) -> None:
    """Two virtualenvs with the same torch get two build directories: build.ninja records the
    torch include paths, so a shared one would rebuild on every switch."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = cpu_loops.build_directory("x")
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other-venv" / "torch" / "__init__.py"))
    there = cpu_loops.build_directory("x")
    assert here != there and here.name.rsplit("-env", 1)[0] == there.name.rsplit("-env", 1)[0]


def test_a_fresh_build_says_so_with_its_time(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_loops, "_loaded", {})
    monkeypatch.delenv(cpu_loops.ENV_SWITCH, raising=False)
    built = object()

    def fake_load(name, build_directory, **kwargs):
        time.sleep(0.01)
        (tmp_path / "done").touch()
        return built

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.warns(cpu_loops.BuildNotice) as notices:
        assert cpu_loops.cpu_loops() is built
    text = [str(w.message) for w in notices]
    assert "compiling the fused engine's CPU loops" in text[0]
    assert text[1].startswith("lstmkit: compiled CPU loops built in ")


def test_the_build_notice_never_stops_the_build(monkeypatch, tmp_path, capsys) -> None:
    """With warnings turned into errors (-W error) the notice goes to stderr instead."""
    import warnings

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_loops, "_loaded", {})
    monkeypatch.delenv(cpu_loops.ENV_SWITCH, raising=False)
    built = object()
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: built)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_loops.cpu_loops() is built
    err = capsys.readouterr().err
    assert "compiling the fused engine's CPU loops" in err and "built in" in err


def test_build_directory_is_keyed_by_the_sources_location_and_flags(monkeypatch, tmp_path):
    """Two copies of lstmkit (a checkout and mutation testing's copy of it) get two build
    directories: build.ninja records the sources' paths, so a shared one rebuilt on every switch
    between them (a full build each time, under torch's lock). The flags change the build too."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = cpu_loops.build_directory("x", ["-O3"])
    copy = tmp_path / "copy" / "csrc"
    copy.mkdir(parents=True)
    for p in [*cpu_loops.SOURCES, *cpu_loops.HEADERS]:
        (copy / p.name).write_bytes(p.read_bytes())  # the same contents, elsewhere
    monkeypatch.setattr(cpu_loops, "SOURCES", [copy / p.name for p in cpu_loops.SOURCES])
    monkeypatch.setattr(cpu_loops, "HEADERS", [copy / p.name for p in cpu_loops.HEADERS])
    there = cpu_loops.build_directory("x", ["-O3"])
    assert here != there and here.name.rsplit("-env", 1)[0] == there.name.rsplit("-env", 1)[0]
    assert cpu_loops.build_directory("x", ["-O2"]).name.split("-")[-2] != there.name.split("-")[-2]


def test_a_built_extension_is_imported_without_torchs_build_check(monkeypatch) -> None:
    if cpu_loops.cpu_loops() is None:
        pytest.skip("the compiled loops cannot be built here")
    monkeypatch.setattr(cpu_loops, "_loaded", {})

    def no_load(**kwargs):
        raise AssertionError("torch's load() (its lock and ninja) was called for a built library")

    monkeypatch.setattr(cpp_extension, "load", no_load)
    module = cpu_loops.cpu_loops()
    assert module is not None and hasattr(module, "StreamStep")


def test_a_broken_library_is_built_again(monkeypatch, tmp_path) -> None:
    """A library that does not import (a link cut short) is removed, and load() builds it."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_loops, "_loaded", {})
    monkeypatch.delenv(cpu_loops.ENV_SWITCH, raising=False)
    name, flags = cpu_loops._build_flags()
    d = cpu_loops.build_directory(name, flags)
    d.mkdir(parents=True)
    (d / f"{name}.so").write_bytes(b"not a shared library")
    built = object()
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: built)
    assert cpu_loops.cpu_loops() is built
    assert not (d / f"{name}.so").exists()
