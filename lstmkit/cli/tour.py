"""`lstmkit tour`: a short worked example of the core (exactness, engines, gate traces)."""

from __future__ import annotations

import argparse

from lstmkit.cli.options import HelpFormatter, add_seed_flag, int_in


def register(sub) -> None:
    p = sub.add_parser(
        "tour",
        help="a one-minute worked example: lstmkit.LSTM next to torch.nn.LSTM, engines, gates",
        formatter_class=HelpFormatter,
        description=(
            "Builds torch.nn.LSTM and lstmkit.LSTM with the same weights, shows they agree, "
            "shows which engine ran and why, and prints the gate activations of one sequence."
        ),
    )
    # small caps: the tour prints every step, and runs in a second
    p.add_argument(
        "--hidden-size",
        type=int_in(1, 4096),
        default=8,
        metavar="N",
        help="LSTM hidden units, 1 to 4096",
    )
    p.add_argument(
        "--steps",
        type=int_in(1, 10_000),
        default=6,
        metavar="T",
        help="sequence length, 1 to 10,000",
    )
    add_seed_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import lstmkit

    torch.manual_seed(args.seed)
    H, T = args.hidden_size, args.steps
    ref = torch.nn.LSTM(4, H, num_layers=2).double()
    ours = lstmkit.LSTM(4, H, num_layers=2).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, 3, 4, dtype=torch.float64)
    (y_ref, _), (y, _) = ref(x), ours(x)
    print(
        f"torch.nn.LSTM vs lstmkit.LSTM, same weights: max |difference| = "
        f"{(y_ref - y).abs().max().item():.2e}"
    )
    print(f"engine: {ours.last_engine} ({ours.last_engine_reason})")
    _, _, trace = ours(x, return_trace=True)
    print(f"with return_trace=True: {ours.last_engine_reason}")
    print(f"trace gates {trace.gate_names}, each {tuple(trace.gates['f'].shape)} = (L, D, T, B, H)")
    f = trace.gate("f", layer=-1)[:, 0]  # (T, H): last layer, first sequence
    print("forget gate of the last layer, sequence 0, mean over units, per step:")
    print("  " + " ".join(f"{v:.2f}" for v in f.mean(-1).tolist()))
    return 0
