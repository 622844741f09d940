"""The engine benchmark's smoke run (--quick) works end to end and writes what it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "engines.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_engines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_table(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    try:
        bench.main(["--quick", "--threads", "1", "--no-memory", "--out", str(out), "--md", str(md)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    env = report["environment"]
    for key in ("torch", "git_commit", "cpu", "torch_threads", "command"):
        assert key in env
    assert [r["config"] for r in report["results"]] == [list(c) for c in bench.QUICK_CONFIGS]
    for r in report["results"]:
        assert set(r["cases"]) == set(bench.CASES)
        for c in r["cases"].values():
            assert len(c["fwd+bwd_all_s"]) == 3 and c["fwd+bwd_median_s"] > 0
    assert "torch.nn.LSTM" in md.read_text() and "ln fused speed-up" in md.read_text()


def test_memory_probe_runs_in_a_subprocess(bench) -> None:
    grown = bench.measure_memory("fused", (8, 4, 16, 32))
    assert isinstance(grown, int) and grown >= 0
