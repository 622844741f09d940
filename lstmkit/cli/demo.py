"""`lstmkit demo`: RNN against LSTM on carrying a subject's number across a gap (no download)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="RNN vs LSTM on long-distance agreement, with a report (a few minutes)",
        description="Generates an agreement corpus with the built-in grammar, trains a plain "
        "RNN and an LSTM language model of the same size, measures agreement "
        "accuracy against distance while they train and at the end, finds the cells "
        "that carry the subject's "
        "number, and writes a report folder (index.html, PNGs, figures.json, "
        "summary.json, inspect.html, both models). Needs no download.",
    )
    p.add_argument("--out", default="lstmkit-demo", help="report folder (default lstmkit-demo)")
    p.add_argument(
        "--steps",
        type=int,
        default=3000,
        help="training steps per model, 32 sentences each (default 3000); agreement "
        "accuracy is measured every steps/12 steps along the way",
    )
    p.add_argument(
        "--hidden-size", type=int, default=64, help="recurrent units of both models (default 64)"
    )
    p.add_argument(
        "--train-sentences",
        type=int,
        default=20_000,
        help="generated training sentences (default 20,000)",
    )
    p.add_argument(
        "--max-train-distance",
        type=int,
        default=12,
        help="training distances 0..this, in words between subject and verb (default 12)",
    )
    p.add_argument(
        "--max-test-distance", type=int, default=18, help="test distances 0..this (default 18)"
    )
    p.add_argument(
        "--per-distance", type=int, default=100, help="test sentences per distance (default 100)"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=150,
        help="cap on training time per model, in seconds (default 150)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are small, and on a "
        "shared CPU more threads spin and slow everything down)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lstmkit.agreement.demo import DemoConfig, format_summary, run_demo

    torch.set_num_threads(args.threads)
    cfg = DemoConfig(
        out=args.out,
        train_sentences=args.train_sentences,
        max_train_distance=args.max_train_distance,
        max_test_distance=args.max_test_distance,
        per_distance=args.per_distance,
        hidden_size=args.hidden_size,
        steps=args.steps,
        max_seconds=args.max_seconds,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(
        f"lstmkit demo: RNN vs LSTM, {cfg.hidden_size} units each, on generated sentences "
        f"where the verb must agree with a subject 0-{cfg.max_test_distance} words back"
    )
    summary = run_demo(cfg)
    print()
    print("agreement accuracy (correct verb form preferred) by distance:")
    print(format_summary(summary))
    print(
        f"\nfinished in {summary['seconds']:.0f} s; report: {args.out}/index.html "
        f"(interactive: {args.out}/inspect.html)"
    )
    return 0
