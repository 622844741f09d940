"""Interventions (ablation / patching) on the fused engine against the reference engine.

A 2-layer LSTM the size of a small word model; the intervention zeroes 2 cells of layer 1 at
every step (the ablation of Lakretz et al.'s number units) and patches layer 0's hidden state
at half the steps from a recorded trace (activation patching). In one process, interleaved
(benchmarks/common.py), per configuration and mode:

    native plain       torch's kernels, no intervention (they cannot apply one)
    fused plain        the fused engine, no intervention
    fused edited       the fused engine with the intervention (what auto runs)
    reference edited   the reference engine with the intervention (the readable loop)

Modes: "inference" (torch.no_grad, what the agreement scorer and `lstmkit inspect` do) and
"train" (forward, loss = output.sum(), backward; gradients reach the patched values too).

    python benchmarks/interventions.py --threads 1     # the committed run (~1 min)
    python benchmarks/interventions.py --quick --out /tmp/i.json --md /tmp/i.md  # smoke
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import environment, interleaved, parser, provenance, write

import lstmkit
from lstmkit import Intervention

CONFIGS = [(35, 20, 200, 200), (100, 32, 256, 256)]  # (T, B, I, H)
QUICK_CONFIGS = [(8, 2, 4, 4)]


def parse_args(argv=None) -> argparse.Namespace:
    return parser(__doc__, "interventions", repeats=7).parse_args(argv)


def cases_for(T: int, B: int, I: int, H: int, train: bool) -> dict:
    torch.manual_seed(0)
    layers = {e: lstmkit.LSTM(I, H, 2, engine=e) for e in ("native", "fused", "reference")}
    for m in layers.values():
        m.load_state_dict(layers["native"].state_dict())
    x = torch.randn(T, B, I, requires_grad=train)
    with torch.no_grad():
        _, _, trace = layers["fused"](torch.randn(T, B, I), return_trace=True)
    patch = Intervention.patch(trace, layer=0, states=("h",), steps=range(0, T, 2))
    edit = Intervention.ablate(layer=1, units=[1, H - 1], state="c") + patch

    def step(module, intervention):
        def run():
            with torch.set_grad_enabled(train):
                out = module(x, intervention=intervention)[0]
            if train:
                out.sum().backward()
                module.zero_grad(set_to_none=True)
                x.grad = None

        return run

    return {
        "native plain": step(layers["native"], None),
        "fused plain": step(layers["fused"], None),
        "fused edited": step(layers["fused"], edit),
        "reference edited": step(layers["reference"], edit),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configs, repeats = (QUICK_CONFIGS, 2) if args.quick else (CONFIGS, args.repeats)
    env = environment()
    rows = []
    for T, B, I, H in configs:
        for mode in ("inference", "train"):
            times = interleaved(cases_for(T, B, I, H, mode == "train"), repeats, calls=2)
            base = times["fused plain"]["median"]
            for name, t in times.items():
                rows.append(
                    dict(T=T, B=B, I=I, H=H, mode=mode, case=name, median_s=t["median"],
                         min_s=t["min"], vs_fused_plain=t["median"] / base)
                )  # fmt: skip
                print(f"{T}x{B} {I}->{H} {mode:9s} {name:17s} {t['median'] * 1e3:8.2f} ms "
                      f"{t['median'] / base:5.2f}x", file=sys.stderr)  # fmt: skip
    lines = [
        "# Interventions: fused engine against the reference engine",
        "",
        provenance(env),
        "2-layer LSTM; the intervention ablates 2 cells of layer 1 at every step and patches "
        "layer 0's h at every other step. Median of the interleaved rounds; ratio to the fused "
        "engine without an intervention.",
        "",
        "| T x B | I -> H | mode | case | median ms | / fused plain |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} x {r['B']} | {r['I']} -> {r['H']} | {r['mode']} | {r['case']} | "
            f"{r['median_s'] * 1e3:.2f} | {r['vs_fused_plain']:.2f}x |"
        )
    write(args.out, {"environment": env, "repeats": repeats, "rows": rows}, args.md, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
