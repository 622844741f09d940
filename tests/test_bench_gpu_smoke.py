"""The GPU benchmark script runs end to end (on CPU, Triton interpreter, tiny size). Slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_engines_gpu_quick_runs(tmp_path):
    pytest.importorskip("triton")
    out, md = tmp_path / "g.json", tmp_path / "g.md"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "engines_gpu.py"),
        "--quick",
        "--device",
        "cpu",
        "--dtypes",
        "float32",
        "--out",
        str(out),
        "--md",
        str(md),
    ]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["results"]
    assert {r["case"] for r in rows} >= {"cudnn LSTM", "triton LSTM", "triton LN-LSTM"}
    assert all(r["engine"] in ("cudnn", "triton") for r in rows)
    assert "| T | B | H |" in md.read_text()
