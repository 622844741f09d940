"""Benchmark (not a test): the adding problem of Hochreiter & Schmidhuber 1997 for RNN and LSTM.

For each lag T and cell: train until the paper's success criterion holds (the 2000 most recent
training sequences all within 0.04 of the target and their mean squared error below 0.01) or a
budget runs out, then test on 2560 fresh sequences. Records solved or not, the training
sequences needed, and the test errors, with the machine, versions and git commit.

The 1997 paper (Table 7) needed about 74,000 training sequences at T = 100 (209,000 at T = 500,
853,000 at T = 1000) with its LSTM without forget gate and online (one sequence at a time)
gradient descent. Here: minibatches of 32, Adam, gradient clipping, and a modern LSTM with a
forget gate; counts are in sequences, so the numbers are comparable in data, not in method.

    nice -n 10 python benchmarks/adding_problem.py --lags 100,200 --cells rnn,lstm \
        --out benchmarks/results/adding_problem.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import environment

from lstmkit.tasks.train import TaskConfig, format_table, train_task

PAPER_SEQUENCES = {100: 74_000, 500: 209_000, 1000: 853_000}  # Table 7, LSTM, 1997


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--lags",
        default="100,200",
        help="comma-separated minimal sequence lengths T (default 100,200)",
    )
    p.add_argument("--cells", default="rnn,lstm", help="comma-separated cells (default rnn,lstm)")
    p.add_argument("--hidden-size", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument(
        "--forget-bias", type=float, default=3.0, help="initial LSTM forget-gate bias (default 3.0)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument(
        "--max-sequences",
        type=int,
        default=1_500_000,
        help="training budget per run, in sequences (default 1,500,000)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="training budget per run, in seconds of wall time (default 300)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: these nets are too small to gain "
        "from more, and on a shared CPU more threads spin and slow down)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results/adding_problem.json",
        help="JSON file for the results (default benchmarks/results/adding_problem.json)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    env = environment()
    results = []
    for lag in [int(x) for x in args.lags.split(",")]:
        for cell in args.cells.split(","):
            cfg = TaskConfig(
                task="adding",
                lag=lag,
                cell=cell,
                hidden_size=args.hidden_size,
                lr=args.lr,
                forget_bias=args.forget_bias,
                batch_size=args.batch_size,
                max_sequences=args.max_sequences,
                max_seconds=args.max_seconds,
                seed=args.seed,
                log_every=100,
            )
            r = train_task(cfg, progress=not args.no_progress)
            results.append(r)
            print(format_table([r]).splitlines()[-1], flush=True)
    print()
    print(format_table(results))
    print()
    for r in results:
        lag = r.config["lag"]
        if lag in PAPER_SEQUENCES and r.solved:
            ratio = r.sequences / PAPER_SEQUENCES[lag]
            print(
                f"{r.config['cell']} T={lag}: {r.sequences:,} sequences = {ratio:.1f} x the "
                f"1997 paper's {PAPER_SEQUENCES[lag]:,}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "adding problem (Hochreiter & Schmidhuber 1997, experiment 4)",
                "environment": env,
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "paper_sequences_lstm_1997": PAPER_SEQUENCES,
                "runs": [{k: v for k, v in r.to_dict().items()} for r in results],
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
