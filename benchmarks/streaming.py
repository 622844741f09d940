"""Streaming latency: one call per token carrying the state (sampling, live loops), per token.

For each configuration (I input, H hidden, L layers, B batch; float32, eval, torch.no_grad) it
times, in one process and interleaved (benchmarks/common.py):

    torch.nn.<cell>        module(x_t[None], state): torch's whole-sequence kernel, T = 1
    torch.nn.<cell>Cell    a stack of L torch.nn cells (torch's own step kernels)
    lstmkit forward        lstmkit.<cell>(x_t[None], state): the layer's forward, T = 1
    stream                 layer.stream()(x_t): the compiled step (lstmkit.nn.stream)
    stream reference       the same with engine="reference": the reference engine's step
    matmuls alone          the token's products and nothing else: per layer one addmm of
                           [x_t | h] (B, I_l + H) with [W_ih | W_hh]^T and the folded bias

and reports medians of per-token time, with the targets of the streaming issue: stream at most
0.5x torch.nn's time at (64, 128, 1 layer) and 0.1x at (256, 512, 2 layers), and within 3x of
the matmuls alone.

    python benchmarks/streaming.py --threads 1            # the committed run (~2 min)
    python benchmarks/streaming.py --quick --out /tmp/s.json --md /tmp/s.md   # smoke (~5 s)

Results: benchmarks/results/streaming.json and .md.
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import environment, interleaved, parser, provenance, write

import lstmkit

CONFIGS = [(64, 128, 1, 1), (64, 128, 1, 8), (256, 512, 2, 1), (256, 512, 2, 8)]
QUICK_CONFIGS = [(8, 16, 2, 1)]
# stream / torch.nn.LSTM, from the streaming issue (it sets none for the GRU)
TARGETS = {("lstm", 64, 128, 1): 0.5, ("lstm", 256, 512, 2): 0.1}
TORCH = {"lstm": (torch.nn.LSTM, torch.nn.LSTMCell), "gru": (torch.nn.GRU, torch.nn.GRUCell)}


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(__doc__, "streaming", repeats=15)
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=sorted(TORCH))
    p.add_argument("--calls", type=int, default=40, help="tokens per timed round")
    return p.parse_args(argv)


def cases_for(cell: str, I: int, H: int, L: int, B: int) -> dict:
    torch.manual_seed(0)
    layer_cls, cell_cls = TORCH[cell]
    ref = layer_cls(I, H, L).eval()
    ours = getattr(lstmkit, cell.upper())(I, H, L).eval()
    ours.load_state_dict(ref.state_dict())
    ours_ref = getattr(lstmkit, cell.upper())(I, H, L, engine="reference").eval()
    ours_ref.load_state_dict(ref.state_dict())
    cells = [cell_cls(I if k == 0 else H, H) for k in range(L)]
    x = torch.randn(B, I)
    lstm = cell == "lstm"
    zeros = torch.zeros(L, B, H)
    state = {"torch": (zeros, zeros.clone()) if lstm else zeros, "ours": None}
    state["ours"] = state["torch"]
    cell_state = [(torch.zeros(B, H), torch.zeros(B, H)) if lstm else torch.zeros(B, H)] * L
    stream, stream_ref = ours.stream(batch_size=B), ours_ref.stream(batch_size=B)

    def torch_layer():
        _, state["torch"] = ref(x[None], state["torch"])

    def torch_cells():
        inp = x
        for k, c in enumerate(cells):
            cell_state[k] = c(inp, cell_state[k])
            inp = cell_state[k][0] if lstm else cell_state[k]

    def ours_forward():
        _, state["ours"] = ours(x[None], state["ours"])

    G = 4 if lstm else 3
    w = [torch.randn((I if k == 0 else H) + H, G * H) for k in range(L)]
    b = torch.randn(G * H)
    xh = [torch.randn(B, (I if k == 0 else H) + H) for k in range(L)]
    out = torch.empty(B, G * H)

    def matmuls():
        for k in range(L):
            torch.addmm(b, xh[k], w[k], out=out)

    return {
        f"torch.nn.{layer_cls.__name__}": torch_layer,
        f"torch.nn.{cell_cls.__name__} x{L}": torch_cells,
        "lstmkit forward": ours_forward,
        "stream": lambda: stream(x),
        "stream reference": lambda: stream_ref(x),
        "matmuls alone": matmuls,
    }, stream


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    repeats, calls = (3, 5) if args.quick else (args.repeats, args.calls)
    rows = []
    with torch.no_grad():
        for cell in args.cells:
            for I, H, L, B in configs:
                cases, stream = cases_for(cell, I, H, L, B)
                times = interleaved(cases, repeats, calls)
                torch_name = next(iter(cases))
                med = {n: t["median"] for n, t in times.items()}
                row = {
                    "cell": cell, "I": I, "H": H, "layers": L, "B": B,
                    "us_per_token": {n: v * 1e6 for n, v in med.items()},
                    "stream_vs_torch": med["stream"] / med[torch_name],
                    "stream_vs_matmuls": med["stream"] / med["matmuls alone"],
                    "target_vs_torch": TARGETS.get((cell, I, H, L)),
                    "stream_engine": stream.last_engine,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{cell} I={I} H={H} L={L} B={B}: stream {med['stream'] * 1e6:.1f} us, "
                    f"{row['stream_vs_torch']:.3f}x {torch_name}, "
                    f"{row['stream_vs_matmuls']:.2f}x the matmuls",
                    flush=True,
                )
    record = {"environment": environment(), "repeats": repeats, "calls": calls, "rows": rows}
    write(args.out, record, args.md, markdown(record))
    return 0


def markdown(record: dict) -> list[str]:
    env = record["environment"]
    lines = [
        "# Streaming latency (per token, batch B, float32, eval)",
        "",
        f"{provenance(env)} Medians of "
        f"{record['repeats']} interleaved rounds of {record['calls']} tokens, microseconds.",
        "",
        "| cell | I, H, layers | B | torch.nn layer | torch.nn cells | lstmkit forward | "
        "stream | stream reference | matmuls alone | stream / torch.nn (target) | "
        "stream / matmuls (target 3) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        us = list(r["us_per_token"].values())
        target = r["target_vs_torch"]
        lines.append(
            f"| {r['cell']} | {r['I']}, {r['H']}, {r['layers']} | {r['B']} | "
            + " | ".join(f"{v:.1f}" for v in us)
            + f" | {r['stream_vs_torch']:.3f}{f' ({target})' if target else ''} | "
            f"{r['stream_vs_matmuls']:.2f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
