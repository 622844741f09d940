"""What one time step costs on CPU: the figures behind the fused engine's compiled loops.

At one configuration (default the smallest of the engine benchmark, T=200, B=16, I=H=128), in
one process with interleaved repeats and medians, it times

    small eager op           one torch.sigmoid on a (B, 4H) tensor: the cost of one eager call
    recurrent addmm          the step's matmul alone, xp_t + h W_hh^T into a reused buffer
    fused forward, python    lstmkit.LSTM(engine="fused") inference forward, pure-PyTorch loop
    fused forward, compiled  the same with the compiled loops (lstmkit/engines/cpu_loops.py)
                             (both per step: whole forward / T, input projection included)
    zoneout masks            drawing the two (T, B, H) zoneout masks of one layer, per run
    fwd+bwd ratios           fused LSTM with zoneout vs without; fused GRU vs torch.nn.GRU
    build (s)                building the compiled loops from scratch, in a fresh process with an
                             empty TORCH_EXTENSIONS_DIR (what the first fused LSTM call costs)

    python benchmarks/step_cost.py --threads 1     # ~1.5 min; writes benchmarks/results/step-cost.*

Results: benchmarks/results/step-cost.json and .md, with machine, versions and commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, interleaved, provenance, write  # noqa: E402
from engines import REPO_ROOT  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit.cells.regularizers import bernoulli_mask  # noqa: E402
from lstmkit.engines import cpu_loops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--config", default="200,16,128,128", help="T,B,I,H (steps, batch, units)")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per case (median)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--no-build", action="store_true", help="skip timing a fresh build")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/step-cost.json"))
    p.add_argument("--md", default=str(REPO_ROOT / "benchmarks/results/step-cost.md"))
    return p.parse_args(argv)


def _fwd_bwd(module, x):
    def run():
        os.environ[cpu_loops.ENV_SWITCH] = "1"  # the compiled loops, as by default
        for p in module.parameters():
            p.grad = None
        module(x)[0].sum().backward()

    return run


def _forward(module, x, compiled: bool):
    def run():
        os.environ[cpu_loops.ENV_SWITCH] = "1" if compiled else "0"
        with torch.no_grad():
            module(x)

    return run


def measure(T: int, B: int, I: int, H: int, repeats: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    xg = x.clone().requires_grad_(True)
    pre, buf = torch.randn(B, 4 * H), torch.empty(B, 4 * H)
    h, w_t = torch.randn(B, H), torch.randn(H, 4 * H) * 0.1
    fused = lstmkit.LSTM(I, H, engine="fused")
    zoned = lstmkit.LSTM(I, H, engine="fused", zoneout=0.1)
    gru, torch_gru = lstmkit.GRU(I, H, engine="fused"), torch.nn.GRU(I, H)
    steps = {  # name -> (function, steps per call, calls per timed sample)
        "small eager op (us)": (lambda: torch.sigmoid(pre, out=buf), 1, 1000),
        "recurrent addmm (us)": (lambda: torch.addmm(pre, h, w_t, out=buf), 1, 1000),
        "fused forward per step, python loops (us)": (_forward(fused, x, False), T, 1),
        "fused forward per step, compiled loops (us)": (_forward(fused, x, True), T, 1),
        "two zoneout masks (ms)": (lambda: [bernoulli_mask((T, B, H), 0.1, x) for _ in "hc"], 1, 1),
        "fused fwd+bwd (ms)": (_fwd_bwd(fused, xg), 1, 1),
        "fused zoneout fwd+bwd (ms)": (_fwd_bwd(zoned, xg), 1, 1),
        "fused GRU fwd+bwd (ms)": (_fwd_bwd(gru, xg), 1, 1),
        "torch.nn.GRU fwd+bwd (ms)": (_fwd_bwd(torch_gru, xg), 1, 1),
    }
    before = os.environ.get(cpu_loops.ENV_SWITCH)
    try:  # 2 warm-up rounds, then every case once per repeat, in a rotating order
        timed = interleaved(
            {name: fn for name, (fn, _, _) in steps.items()},
            repeats,
            calls={name: inner for name, (_, _, inner) in steps.items()},
        )
    finally:
        os.environ.pop(cpu_loops.ENV_SWITCH, None)
        if before is not None:
            os.environ[cpu_loops.ENV_SWITCH] = before
    scale = {"(us)": 1e6, "(ms)": 1e3}
    out = {
        name: timed[name]["median"] / per * scale[name[-4:]] for name, (_, per, _) in steps.items()
    }
    fwd_bwd = {k: v for k, v in out.items() if "fwd+bwd" in k}
    out["zoneout extra fwd+bwd (ms)"] = (
        fwd_bwd["fused zoneout fwd+bwd (ms)"] - fwd_bwd["fused fwd+bwd (ms)"]
    )
    out["fused GRU / torch.nn.GRU"] = (
        fwd_bwd["fused GRU fwd+bwd (ms)"] / fwd_bwd["torch.nn.GRU fwd+bwd (ms)"]
    )
    return out


def build_seconds() -> float:
    """Wall time of a fresh build of the compiled loops (a new process, an empty cache)."""
    code = (
        "import time; t = time.perf_counter(); from lstmkit.engines.cpu_loops import cpu_loops; "
        "assert cpu_loops() is not None; print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": cache, cpu_loops.ENV_SWITCH: "1"}
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    return float(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    T, B, I, H = (int(v) for v in args.config.split(","))
    env = environment()
    figures = measure(T, B, I, H, args.repeats)
    if not args.no_build:
        figures["build of the compiled loops, fresh cache (s)"] = build_seconds()
    rows = [f"| {name} | {value:.2f} |" for name, value in figures.items()]
    table = ["| quantity (medians) | value |", "|---|---|", *rows]
    print("\n".join(table))
    report = {"environment": env, "config": [T, B, I, H], "repeats": args.repeats, **figures}
    md = [
        "# Step cost on CPU (lstmkit benchmarks/step_cost.py)",
        "",
        f"Config T, B, I, H = {T}, {B}, {I}, {H}; float32. " + provenance(env),
        "",
        *table,
        "",
    ]
    write(args.out, report, args.md, md)
    print(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
