"""Variable-length batches and resets: lstmkit against torch.nn.LSTM's PackedSequence path.

For each configuration (T steps, B batch, I input, H hidden; one layer, float32; lengths drawn
uniformly from [T/4, T] with a fixed seed) it times, in one process and interleaved
(benchmarks/common.py), a training step (forward, loss = output.sum(), backward) and an
inference forward (torch.no_grad):

    torch padded         torch.nn.LSTM on the padded batch, no lengths (the plain speed)
    torch packed         torch.nn.LSTM on the PackedSequence (pack_padded_sequence, unsorted)
    auto lengths=        lstmkit.LSTM(x, lengths=...) with engine="auto"
    auto packed          lstmkit.LSTM on the same PackedSequence, engine="auto"
    auto padded          lstmkit.LSTM on the padded batch, no lengths (engine="auto")
    fused lengths= / native lengths=    the two engines auto chooses between, named

Packing is inside the timed step for torch packed and auto packed (a user packs every batch).

Resets (mode "train resets"): the same training step on the full-length padded batch with
per-sample resets (each step of each sequence starts afresh with probability 1/50, fixed seed,
as episode ends in reinforcement learning), against the same step without resets (three times
the rounds of the other sections, two steps per round: the ratio is near 1, and "auto resets" and
"fused resets" run the same code, so their spread shows the noise):

    auto resets / fused resets    lstmkit with resets= (auto runs the fused engine: torch's
                                  kernels have no resets)
    auto padded / fused padded    the same layers without resets

    python benchmarks/varlen.py --threads 1             # the committed run (~4 min)
    python benchmarks/varlen.py --quick --out /tmp/v.json --md /tmp/v.md   # smoke (~5 s)

Results: benchmarks/results/varlen.json and .md; the rules of engine="auto" that they back are
in docs/engines.md.
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import environment, interleaved, parser, provenance, write
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

CONFIGS = [(200, 32, 128, 128), (100, 64, 256, 256)]
QUICK_CONFIGS = [(12, 4, 8, 8)]


def parse_args(argv=None) -> argparse.Namespace:
    return parser(__doc__, "varlen", repeats=9).parse_args(argv)


def cases_for(T: int, B: int, I: int, H: int, train: bool, cell: str = "LSTM") -> tuple[dict, dict]:
    torch.manual_seed(0)
    ref = getattr(torch.nn, cell)(I, H)
    ours = {e: getattr(lstmkit, cell)(I, H, engine=e) for e in ("auto", "fused", "native")}
    for m in ours.values():
        m.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(1, T // 4), T + 1, (B,), generator=gen)
    lengths[0] = T
    x = torch.randn(T, B, I, requires_grad=train)

    def step(module, make_input, **kw):
        def run():
            out = module(make_input(), **kw)[0]
            if isinstance(out, torch.nn.utils.rnn.PackedSequence):
                out = out.data
            if train:
                out.sum().backward()
                module.zero_grad(set_to_none=True)
                x.grad = None

        return run

    padded = lambda: x  # noqa: E731
    packed = lambda: pack_padded_sequence(x, lengths, enforce_sorted=False)  # noqa: E731
    cases = {
        "torch padded": step(ref, padded),
        "torch packed": step(ref, packed),
        "auto lengths=": step(ours["auto"], padded, lengths=lengths),
        "auto packed": step(ours["auto"], packed),
        "auto padded": step(ours["auto"], padded),
        "fused lengths=": step(ours["fused"], padded, lengths=lengths),
        "native lengths=": step(ours["native"], padded, lengths=lengths),
    }
    return cases, ours


RAGGED_NAMES = ("torch packed", "auto lengths=", "auto packed", "native lengths=")


def ragged_row(T, B, I, H, mode: str, cell: str, repeats: int, names=None) -> dict:
    """One configuration's ragged cases (all, or `names`) timed; ratios to torch packed."""
    train = mode == "train"
    cases, ours = cases_for(T, B, I, H, train, cell)
    with torch.set_grad_enabled(train):
        times = interleaved({n: cases[n] for n in names or cases}, repeats, calls=1)
        ours["auto"](torch.randn(T, B, I, requires_grad=train), lengths=torch.full((B,), T))
    med = {n: t["median"] for n, t in times.items()}
    row = {
        "cell": cell, "T": T, "B": B, "I": I, "H": H, "mode": mode,
        "ms": {n: v * 1e3 for n, v in med.items()},
        "vs_torch_packed": {n: v / med["torch packed"] for n, v in med.items()},
        "auto_engine_for_lengths": ours["auto"].last_engine,
        "auto_reason_for_lengths": ours["auto"].last_engine_reason,
    }  # fmt: skip
    print(
        f"{cell} T={T} B={B} I={I} H={H} {mode}: "
        + ", ".join(f"{n} {v:.3f}x" for n, v in row["vs_torch_packed"].items()),
        flush=True,
    )
    return row


def reset_cases(T: int, B: int, I: int, H: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H)
    ours = {e: lstmkit.LSTM(I, H, engine=e) for e in ("auto", "fused")}
    for m in ours.values():
        m.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(0)
    resets = torch.rand(T, B, generator=gen) < 1 / 50
    x = torch.randn(T, B, I, requires_grad=True)

    def step(module, **kw):
        def run():
            module(x, **kw)[0].sum().backward()
            module.zero_grad(set_to_none=True)
            x.grad = None

        return run

    cases = {
        "torch padded": step(ref),
        "auto padded": step(ours["auto"]),
        "fused padded": step(ours["fused"]),
        "auto resets": step(ours["auto"], resets=resets),
        "fused resets": step(ours["fused"], resets=resets),
    }
    return cases, ours


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    repeats = 3 if args.quick else args.repeats
    rows, reset_rows = [], []
    # the GRU and the RNN in training (the rule applies to them too), then the LSTM in full
    cell_rows = [
        ragged_row(T, B, I, H, "train", cell, repeats, RAGGED_NAMES)
        for T, B, I, H in configs
        for cell in ("GRU", "RNN")
    ]
    for T, B, I, H in configs:
        for mode in ("train", "inference"):
            rows.append(ragged_row(T, B, I, H, mode, "LSTM", repeats))
        cases, ours = reset_cases(T, B, I, H)
        # a ratio near 1 needs more rounds than the others: three times as many, two calls each
        times = interleaved(cases, 3 * repeats, calls=2)
        med = {n: t["median"] for n, t in times.items()}
        row = {
            "T": T, "B": B, "I": I, "H": H, "mode": "train resets",
            "ms": {n: v * 1e3 for n, v in med.items()},
            "fused_resets_vs_fused_padded": med["fused resets"] / med["fused padded"],
            "auto_resets_vs_auto_padded": med["auto resets"] / med["auto padded"],
            "auto_engine_for_resets": ours["auto"].last_engine,
        }  # fmt: skip
        reset_rows.append(row)
        print(
            f"T={T} B={B} I={I} H={H} resets: fused {row['fused_resets_vs_fused_padded']:.3f}x "
            f"without, auto {row['auto_resets_vs_auto_padded']:.3f}x auto without",
            flush=True,
        )
    record = {
        "environment": environment(), "repeats": repeats, "rows": rows, "reset_rows": reset_rows,
        "cell_rows": cell_rows,
    }  # fmt: skip
    write(args.out, record, args.md, markdown(record))
    return 0


def markdown(record: dict) -> list[str]:
    env = record["environment"]
    names = list(record["rows"][0]["ms"])
    lines = [
        "# Variable-length batches (one layer, float32, lengths uniform in [T/4, T])",
        "",
        f"{provenance(env)} Medians of "
        f"{record['repeats']} interleaved rounds; milliseconds, and in brackets the ratio to "
        "torch packed. train = forward + backward; inference = forward under torch.no_grad.",
        "",
        "| T, B, I, H | mode | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in record["rows"]:
        cells = [f"{r['ms'][n]:.2f} ({r['vs_torch_packed'][n]:.2f}x)" for n in names]
        lines.append(
            f"| {r['T']}, {r['B']}, {r['I']}, {r['H']} | {r['mode']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "auto's choice with lengths=: "
        + "; ".join(
            f"{r['mode']} at T={r['T']}: {r['auto_engine_for_lengths']}" for r in record["rows"]
        ),
    ]
    names = list(record["cell_rows"][0]["ms"])
    lines += [
        "",
        "## GRU and RNN, training step (the same rule)",
        "",
        "| cell | T, B, I, H | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in record["cell_rows"]:
        cells = [f"{r['ms'][n]:.2f} ({r['vs_torch_packed'][n]:.2f}x)" for n in names]
        lines.append(
            f"| {r['cell']} | {r['T']}, {r['B']}, {r['I']}, {r['H']} | " + " | ".join(cells) + " |"
        )
    names = list(record["reset_rows"][0]["ms"])
    lines += [
        "",
        "## Per-sample resets (training step, each step resets with probability 1/50)",
        "",
        "| T, B, I, H | " + " | ".join(names) + " | fused resets / fused padded | "
        "auto resets / auto padded |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for r in record["reset_rows"]:
        times = " | ".join(f"{r['ms'][n]:.2f}" for n in names)
        lines.append(
            f"| {r['T']}, {r['B']}, {r['I']}, {r['H']} | {times} | "
            f"{r['fused_resets_vs_fused_padded']:.3f} | {r['auto_resets_vs_auto_padded']:.3f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
