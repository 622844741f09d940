"""Engine speed on a GPU: lstmkit's Triton engine against cuDNN (torch.nn.LSTM / GRU).

For each configuration (T steps, B batch, H hidden = input size; one layer) and dtype it times,
in one process, interleaved (every repeat runs every case once, in a rotating order), after
warm-up, with CUDA events, and reports medians:

    cudnn LSTM / cudnn GRU        torch.nn.LSTM / GRU (cuDNN)
    triton LSTM / triton GRU      lstmkit with engine="triton", plain cell
    triton LSTM+trace             the same with return_trace=True
    triton LN-LSTM                layer_norm=True (the target: within 1.5x of plain cuDNN)

"forward" runs under torch.no_grad(); "fwd+bwd" is forward, loss = output.sum(), backward.
Peak memory of one training step per case is torch.cuda.max_memory_allocated growth.

    python benchmarks/engines_gpu.py                       # full grid, needs a CUDA GPU
    python benchmarks/engines_gpu.py --quick               # one small configuration
    TRITON_INTERPRET=1 python benchmarks/engines_gpu.py --quick --device cpu   # smoke test only

Results: benchmarks/results/engines-gpu.json and .md (GPU name, torch / triton versions, commit).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import environment  # noqa: E402  (the CPU suite's machine / version / commit record)

import lstmkit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GRID = [(T, B, H) for T in (100, 1024) for B in (16, 64) for H in (256, 512, 1024)]
QUICK = [(8, 4, 16)]
CASES = {  # name -> (cell, engine or None for cuDNN, layer_norm, trace)
    "cudnn LSTM": ("LSTM", None, False, False),
    "triton LSTM": ("LSTM", "triton", False, False),
    "triton LSTM+trace": ("LSTM", "triton", False, True),
    "triton LN-LSTM": ("LSTM", "triton", True, False),
    "cudnn GRU": ("GRU", None, False, False),
    "triton GRU": ("GRU", "triton", False, False),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument(
        "--dtypes",
        default="float32,float16",
        help="comma-separated dtypes to time (default float32,float16)",
    )
    p.add_argument("--quick", action="store_true", help="one small configuration, few repeats")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per case (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per case (default 3)")
    p.add_argument("--out", type=Path, default=RESULTS / "engines-gpu.json", help="JSON path")
    p.add_argument("--md", type=Path, default=RESULTS / "engines-gpu.md", help="table path")
    return p.parse_args(argv)


def build(case: str, H: int, dtype: torch.dtype, device: str):
    cell, engine, ln, _ = CASES[case]
    if engine is None:
        return getattr(torch.nn, cell)(H, H).to(device, dtype)
    return getattr(lstmkit, cell)(H, H, layer_norm=ln, engine=engine).to(device, dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(case: str, module, x, backward: bool, device: str) -> float:
    """Seconds for one forward (or forward + backward)."""
    trace = CASES[case][3]
    sync(device)
    start = time.perf_counter()
    if backward:
        module.zero_grad(set_to_none=True)
        out = module(x, return_trace=True)[0] if trace else module(x)[0]
        out.float().sum().backward()
    else:
        with torch.no_grad():
            module(x, return_trace=True) if trace else module(x)
    sync(device)
    return time.perf_counter() - start


def peak_memory(case: str, module, x, device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run_once(case, module, x, True, device)
    return torch.cuda.max_memory_allocated() - base


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "no CUDA GPU here: run this on a GPU machine (or --device cpu with "
            "TRITON_INTERPRET=1 for a smoke test)",
            file=sys.stderr,
        )
        return 2
    grid = QUICK if args.quick else GRID
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    rows = []
    bar = tqdm(total=len(grid) * len(dtypes), desc="configurations", unit="cfg")
    for (T, B, H), dtype in itertools.product(grid, dtypes):
        torch.manual_seed(0)
        x = torch.randn(T, B, H, device=args.device, dtype=dtype, requires_grad=True)
        modules = {c: build(c, H, dtype, args.device) for c in CASES}
        times = {(c, bw): [] for c in CASES for bw in (False, True)}
        for _ in range(warmup):
            for c, m in modules.items():
                run_once(c, m, x, False, args.device), run_once(c, m, x, True, args.device)
        for r in range(repeats):
            order = list(CASES)[r % len(CASES) :] + list(CASES)[: r % len(CASES)]
            for c in order:
                for bw in (False, True):
                    times[(c, bw)].append(run_once(c, modules[c], x, bw, args.device))
        for c, m in modules.items():
            rows.append(
                {
                    "T": T,
                    "B": B,
                    "H": H,
                    "dtype": str(dtype).replace("torch.", ""),
                    "case": c,
                    "forward_ms": 1e3 * statistics.median(times[(c, False)]),
                    "fwd_bwd_ms": 1e3 * statistics.median(times[(c, True)]),
                    "peak_train_bytes": peak_memory(c, m, x, args.device),
                    "engine": getattr(m, "last_engine", "cudnn"),
                }
            )
        bar.update()
    bar.close()
    for row in rows:  # ratios to the same cell's cuDNN time in the same configuration
        base = next(
            r
            for r in rows
            if (r["T"], r["B"], r["H"], r["dtype"]) == (row["T"], row["B"], row["H"], row["dtype"])
            and r["case"] == f"cudnn {CASES[row['case']][0]}"
        )
        row["fwd_bwd_vs_cudnn"] = row["fwd_bwd_ms"] / base["fwd_bwd_ms"]
        row["forward_vs_cudnn"] = row["forward_ms"] / base["forward_ms"]
    env = environment()
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    try:
        env["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        env["triton"] = "not installed"
    lines = [
        f"GPU engines, {env.get('gpu', args.device)}, torch {env['torch']}, "
        f"triton {env['triton']}, commit {env['git_commit'][:10]}",
        "",
        "| T | B | H | dtype | case | fwd ms | fwd+bwd ms | fwd+bwd / cuDNN | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = "-" if r["peak_train_bytes"] is None else f"{r['peak_train_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {r['T']} | {r['B']} | {r['H']} | {r['dtype']} | {r['case']} | "
            f"{r['forward_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
            f"{r['fwd_bwd_vs_cudnn']:.2f} | {mem} |"
        )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "results": rows}, indent=2))
    args.md.write_text("\n".join(lines) + f"\n\nCommand: `{env['command']}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
