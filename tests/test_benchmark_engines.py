"""The engine benchmark's smoke run (--quick) works end to end and writes what it promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "engines.py"


@pytest.fixture(scope="module")
def bench():
    # as `python benchmarks/engines.py` would: its folder first on the path (benchmarks/common.py)
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
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
    """The probe reports bytes (whole KiB, as /proc counts) and sees the step's activations: the
    fused LSTM keeps its gate activations (T, B, 4H) and its c and h (T, B, H) in float32 for
    the backward pass, all alive at once, in fresh pages (each block is far above malloc's
    mmap threshold). So the peak grows by at least their size and by not absurdly more."""
    T, B, I, H = 64, 32, 16, 128
    grown = bench.measure_memory("fused", (T, B, I, H))
    saved = T * B * (4 * H + 2 * H) * 4  # 6.3 MB
    assert isinstance(grown, int) and grown % 1024 == 0
    assert saved <= grown <= 16 * saved, (grown, saved)


def test_plain_loop_baseline_is_the_same_cell() -> None:
    """The layer-norm target's baseline computes lstmkit's LSTM(layer_norm=True), gradients too."""
    import sys

    import lstmkit

    sys.path.insert(0, str(SCRIPT.parent))
    from ln_lstm_loop import PlainLayerNormLSTM

    torch.manual_seed(0)
    layer = lstmkit.LSTM(5, 7, layer_norm=True, engine="reference", dtype=torch.float64)
    with torch.no_grad():  # non-trivial gains and shifts
        for name, p in layer.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    plain = PlainLayerNormLSTM(layer)
    x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
    (a, (ha, ca)), (b, (hb, cb)) = layer(x), plain(x)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    torch.testing.assert_close(hb, ha[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(cb, ca[0], atol=1e-10, rtol=0)
    ga = torch.autograd.grad(a.square().sum(), [x, *layer.parameters()])
    gb = torch.autograd.grad(b.square().sum(), [x, *layer.parameters()])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, atol=1e-10, rtol=0)


def test_option_cases_run(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    out, md = tmp_path / "o.json", tmp_path / "o.md"
    cases = ["torch.nn.LSTM", *bench.OPTION_CASES]
    try:
        bench.main(
            ["--quick", "--threads", "1", "--no-memory", "--cases", ",".join(cases)]
            + ["--out", str(out), "--md", str(md)]
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    for r in report["results"]:
        assert list(r["cases"]) == cases
    with pytest.raises(SystemExit, match="unknown case"):
        bench.main(["--quick", "--cases", "no such case", "--out", str(out), "--md", str(md)])


def test_step_cost_runs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("step_cost", SCRIPT.parent / "step_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    out, md = tmp_path / "s.json", tmp_path / "s.md"
    try:
        module.main(
            ["--config", "4,2,3,5", "--repeats", "1", "--no-build"]
            + ["--out", str(out), "--md", str(md)]
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert report["config"] == [4, 2, 3, 5]
    assert report["recurrent addmm (us)"] > 0 and report["fused GRU / torch.nn.GRU"] > 0
