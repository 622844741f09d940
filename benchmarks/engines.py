"""Engine speed on CPU: every lstmkit engine against torch.nn.LSTM, forward and forward+backward.

For each configuration (T steps, B batch, I input, H hidden; one layer, float32) it times

    torch.nn.LSTM            the baseline (oneDNN on CPU)
    native / fused / reference / auto   lstmkit.LSTM with that engine, plain LSTM
    fused+trace              engine="fused" with return_trace=True (the loss reads the output)
    ln fused / ln plain loop layer_norm=True: the fused engine vs the same cell as a plain loop
                             of autograd ops (benchmarks/ln_lstm_loop.py), the issue's baseline
    ln reference             layer_norm=True on the reference engine (lstmkit's readable loop)
    peephole fused, ...      with --cases: every other option of the core on the fused engine

in one process, interleaved (every repeat runs every case once, in a rotating order, so load
from other jobs hits all cases alike), after warm-up runs, and reports medians (and minima).
"forward" is an inference forward under torch.no_grad(); "fwd+bwd" is forward, loss =
output.sum(), backward (input requires grad, parameter gradients reset to None each time).

Peak memory of one training step is measured per case in a fresh subprocess (Linux): the
growth of the peak resident set size (VmHWM, reset just before the step through
/proc/self/clear_refs) over one fwd+bwd, after building the model and the input and a warm-up
step on a tiny input; it counts every allocation torch makes, which tracemalloc cannot see,
including the parameter gradients. The trace's own size is listed in the JSON.

    nice -n 10 python benchmarks/engines.py --threads 1   # the committed run (~17 min here)
    python benchmarks/engines.py --quick --out /tmp/q.json --md /tmp/q.md   # smoke run (~20 s)

Results: benchmarks/results/engines-cpu.json and .md (machine, torch version, threads, commit).
On a busy machine use --threads 1: OpenMP's spinning worker threads then measure the contention
(see docs/engines.md); the ratios between cases are what to compare, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import environment, provenance, write
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(100, 32, 256, 256), (100, 64, 512, 512), (200, 16, 128, 128), (50, 128, 1024, 1024)]
QUICK_CONFIGS = [(12, 4, 8, 8), (6, 3, 5, 7)]
# case name -> (module kind, lstmkit engine or None, layer_norm, return_trace)
CASES = {
    "torch.nn.LSTM": ("torch", None, False, False),
    "native": ("lstmkit", "native", False, False),
    "fused": ("lstmkit", "fused", False, False),
    "fused+trace": ("lstmkit", "fused", False, True),
    "auto": ("lstmkit", "auto", False, False),
    "reference": ("lstmkit", "reference", False, False),
    "ln fused": ("lstmkit", "fused", True, False),
    "ln plain loop": ("plain", None, True, False),
    "ln reference": ("lstmkit", "reference", True, False),
}
# Not in the default run: the other options of the core on the fused engine (training mode),
# each against the same torch.nn.LSTM. case name -> lstmkit.LSTM keyword arguments (H = hidden).
OPTION_CASES = {
    "peephole fused": lambda H: {"peephole": True},
    "coupled fused": lambda H: {"coupled": True},
    "recurrent dropout fused": lambda H: {"recurrent_dropout": 0.25},
    "zoneout fused": lambda H: {"zoneout": 0.1},
    "proj fused": lambda H: {"proj_size": H // 2},
    "everything fused": lambda H: {
        "peephole": True,
        "layer_norm": True,
        "recurrent_dropout": 0.25,
        "zoneout": 0.1,
        "proj_size": H // 2,
    },
}
# Not in the default run either: any case above under torch.compile (inductor), named with the
# suffix " compiled" (e.g. "fused compiled", "torch.nn.LSTM compiled"); compiled before timing.
COMPILED = " compiled"
MEMORY_CASES = ["torch.nn.LSTM", "fused", "fused+trace", "ln fused", "ln plain loop"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Configurations are (T, B, I, H): " + ", ".join(map(str, CONFIGS)),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny configurations, 1 warm-up, 3 repeats: a smoke run of a few seconds",
    )
    p.add_argument("--repeats", type=int, default=7, help="timed runs per case (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per case before timing")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch's default for this machine)",
    )
    p.add_argument(
        "--cases",
        default=",".join(CASES),
        help="comma-separated cases from: "
        + ", ".join(CASES)
        + "; and, not run by default, the other options on the fused engine: "
        + ", ".join(OPTION_CASES)
        + f"; any case with the suffix '{COMPILED}' runs it under torch.compile",
    )
    p.add_argument(
        "--configs",
        default="",
        help="override the configurations: 'T,B,I,H;T,B,I,H' (steps, batch, input "
        "and hidden units)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--out",
        default=str(REPO_ROOT / "benchmarks/results/engines-cpu.json"),
        help="JSON results path",
    )
    p.add_argument(
        "--md",
        default=str(REPO_ROOT / "benchmarks/results/engines-cpu.md"),
        help="markdown table path",
    )
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # internal
    return p.parse_args(argv)


def build(case: str, T: int, B: int, I: int, H: int):
    """The module, the input and whether to ask for a trace, seeded so every case is alike."""
    import lstmkit

    if case.endswith(COMPILED):
        module, x, trace = build(case[: -len(COMPILED)], T, B, I, H)
        return torch.compile(module), x, trace
    torch.manual_seed(0)
    if case in OPTION_CASES:
        module = lstmkit.LSTM(I, H, engine="fused", **OPTION_CASES[case](H))
        return module, torch.randn(T, B, I, requires_grad=True), False
    kind, engine, layer_norm, trace = CASES[case]
    if kind == "torch":
        module = torch.nn.LSTM(I, H)
    elif kind == "plain":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ln_lstm_loop import PlainLayerNormLSTM

        module = PlainLayerNormLSTM(lstmkit.LSTM(I, H, layer_norm=True))
    else:
        module = lstmkit.LSTM(I, H, layer_norm=layer_norm, engine=engine)
    x = torch.randn(T, B, I, requires_grad=True)
    return module, x, trace


def run_once(module, x, trace: bool, backward: bool) -> float:
    """Seconds for one forward (no_grad) or one forward+backward."""
    if backward:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        t0 = time.perf_counter()
        out = module(x, return_trace=True)[0] if trace else module(x)[0]
        out.sum().backward()
        return time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        module(x, return_trace=True) if trace else module(x)
        return time.perf_counter() - t0


def time_config(cfg, cases, repeats: int, warmup: int, bar) -> dict:
    """{case: {"forward": [s...], "fwd+bwd": [s...]}} with the cases interleaved."""
    built = {c: build(c, *cfg) for c in cases}
    times = {c: {"forward": [], "fwd+bwd": []} for c in cases}
    for rep in range(-warmup, repeats):
        k = rep % len(cases)
        for case in cases[k:] + cases[:k]:  # rotate the order every repeat
            module, x, trace = built[case]
            for mode, backward in (("forward", False), ("fwd+bwd", True)):
                seconds = run_once(module, x, trace, backward)
                if rep >= 0:
                    times[case][mode].append(seconds)
            bar.update(1)
    return times


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(spec: str) -> None:
    """In a fresh process: peak RSS growth (bytes) of one training step, printed as JSON.

    The peak (VmHWM) is reset to the current RSS just before the step by writing 5 to
    /proc/self/clear_refs (Linux >= 4.0). getrusage's ru_maxrss cannot be used: a child started
    from a large parent inherits the parent's peak.
    """
    case, dims = spec.split("|")
    T, B, I, H = map(int, dims.split(","))
    module, x, trace = build(case, T, B, I, H)
    run_once(module, torch.randn(2, 2, I, requires_grad=True), trace, True)  # lazy init
    for p in module.parameters():
        p.grad = None
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    run_once(module, x, trace, True)
    after = _status_kib("VmHWM")
    print(json.dumps({"peak_rss_growth_bytes": (after - before) * 1024}))


def measure_memory(case: str, cfg) -> int:
    cmd = [sys.executable, __file__, "--memory-child", f"{case}|{','.join(map(str, cfg))}"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_growth_bytes"]


def trace_bytes(T: int, B: int, H: int) -> int:
    """A one-layer LSTM trace: 4 gates, c and h, each (T, B, H) float32."""
    return 6 * T * B * H * 4


def summarise(results: list[dict]) -> list[str]:
    """The markdown table: medians in ms and ratios to torch.nn.LSTM / to the LN reference."""
    lines = [
        "| T, B, I, H | case | forward ms (median) | fwd+bwd ms (median) | fwd+bwd min ms "
        "| fwd+bwd / torch.nn.LSTM (medians) | (minima) | peak step memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = r["cases"].get("torch.nn.LSTM")
        for case, c in r["cases"].items():
            ratio = c["fwd+bwd_median_s"] / base["fwd+bwd_median_s"] if base else float("nan")
            ratio_min = c["fwd+bwd_min_s"] / base["fwd+bwd_min_s"] if base else float("nan")
            mem = c.get("peak_step_memory_bytes")
            mem_s = f"{mem / 2**20:.1f}" if mem is not None else "-"
            lines.append(
                f"| {', '.join(map(str, r['config']))} | {case} | "
                f"{c['forward_median_s'] * 1e3:.1f} | {c['fwd+bwd_median_s'] * 1e3:.1f} | "
                f"{c['fwd+bwd_min_s'] * 1e3:.1f} | {ratio:.2f}x | {ratio_min:.2f}x | {mem_s} |"
            )
        for other in ("ln plain loop", "ln reference"):
            if "ln fused" not in r["cases"] or other not in r["cases"]:
                continue
            fused, base = r["cases"]["ln fused"], r["cases"][other]
            s = base["fwd+bwd_median_s"] / fused["fwd+bwd_median_s"]
            s_min = base["fwd+bwd_min_s"] / fused["fwd+bwd_min_s"]
            lines.append(
                f"| {', '.join(map(str, r['config']))} | **ln fused speed-up over "
                f"{other}** | | **{s:.2f}x** | | (minima: {s_min:.2f}x) | | |"
            )
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.configs:
        configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c.removesuffix(COMPILED) not in {*CASES, *OPTION_CASES}]
    if unknown:
        raise SystemExit(
            f"unknown case(s) {unknown}; expected names from {list(CASES) + list(OPTION_CASES)}"
        )
    env = environment()
    results = []
    total = len(configs) * len(cases) * (repeats + warmup)
    with tqdm(total=total, desc="timing (case runs)", unit="run") as bar:
        for cfg in configs:
            times = time_config(cfg, cases, repeats, warmup, bar)
            entry = {"config": list(cfg), "cases": {}}
            for case, t in times.items():
                entry["cases"][case] = {
                    "forward_median_s": statistics.median(t["forward"]),
                    "fwd+bwd_median_s": statistics.median(t["fwd+bwd"]),
                    "forward_min_s": min(t["forward"]),
                    "fwd+bwd_min_s": min(t["fwd+bwd"]),
                    "forward_all_s": t["forward"],
                    "fwd+bwd_all_s": t["fwd+bwd"],
                }
            results.append(entry)
    if not args.no_memory:
        mem_cases = [c for c in MEMORY_CASES if c in cases]
        if args.quick:
            mem_cases = mem_cases[:2]
        jobs = [(r, c) for r in results for c in mem_cases]
        for r, case in tqdm(jobs, desc="peak memory (subprocesses)", unit="case"):
            r["cases"][case]["peak_step_memory_bytes"] = measure_memory(case, r["config"])
    for r in results:
        T, B, _, H = r["config"]
        r["trace_bytes"] = trace_bytes(T, B, H)
    env["load_average_at_end"] = os.getloadavg()
    report = {
        "environment": env,
        "method": {
            "repeats": repeats,
            "warmup": warmup,
            "statistic": "median (min also kept)",
            "interleaved": "every repeat runs every case once, order rotated per repeat",
            "forward": "torch.no_grad() inference forward",
            "fwd+bwd": "forward, loss = output.sum(), backward; input requires grad",
            "memory": "peak RSS growth (VmHWM reset via /proc/self/clear_refs, minus VmRSS) "
            "over one training step in a fresh subprocess, after a warm-up step on a "
            "(2, 2, I) input",
            "dtype": "float32",
            "layers": 1,
        },
        "results": results,
    }
    md = [
        "# Engine speed on CPU (lstmkit benchmarks/engines.py)",
        "",
        provenance(env) + f" Load average at start / end: {env['load_average_at_start']} / "
        f"{env['load_average_at_end']}.",
        "",
        *summarise(results),
        "",
    ]
    write(args.out, report, args.md, md)
    print(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
