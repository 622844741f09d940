"""`lstmkit demo`: RNN against LSTM on carrying a subject's number across a gap (no download)."""

from __future__ import annotations

import argparse

from lstmkit.cli.options import (
    NATURAL,
    POSITIVE,
    POSITIVE_FLOAT,
    HelpFormatter,
    add_seed_flag,
    add_threads_flag,
    int_in,
    reports_errors,
    set_threads,
)
from lstmkit.demo.config import DemoConfig

BATCH = 32  # sentences per training step (lstmkit.agreement.train.SentenceLMConfig)
DEFAULTS = DemoConfig()  # the flags' defaults are the config's, typed once there


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="RNN vs LSTM on long-distance agreement, with a report (a few minutes)",
        formatter_class=HelpFormatter,
        description="Generates an agreement corpus with the built-in grammar, trains a plain "
        "RNN and an LSTM language model of the same size, measures agreement "
        "accuracy against distance while they train and at the same fixed budget, finds the "
        "cells that carry the subject's number, zeroes them to see agreement break (against "
        "random cells), probes them with control tasks, and writes a report folder "
        "(index.html, PNGs, figures.json, summary.json, inspect.html, each kind's most "
        "accurate model). Needs no download; 1-2 minutes on 2 cores.",
    )
    p.add_argument("--out", default=DEFAULTS.out, help="report folder")
    p.add_argument(
        "--steps",
        type=POSITIVE,
        default=DEFAULTS.steps,
        metavar="N",
        help=f"training steps per model, {BATCH} sentences each; agreement accuracy is measured "
        "every steps/12 steps along the way",
    )
    p.add_argument(
        "--hidden-size",
        type=POSITIVE,
        default=DEFAULTS.hidden_size,
        metavar="N",
        help="recurrent units of both models",
    )
    p.add_argument(
        "--train-sentences",
        type=int_in(BATCH),
        default=DEFAULTS.train_sentences,
        metavar="N",
        help=f"generated training sentences, at least {BATCH} (one batch)",
    )
    p.add_argument(
        "--max-train-distance",
        type=NATURAL,
        default=DEFAULTS.max_train_distance,
        metavar="D",
        help="training distances 0..D, in words between subject and verb",
    )
    p.add_argument(
        "--max-test-distance",
        type=NATURAL,
        default=DEFAULTS.max_test_distance,
        metavar="D",
        help="test distances 0..D",
    )
    p.add_argument(
        "--per-distance",
        type=int_in(2),
        default=DEFAULTS.per_distance,
        metavar="N",
        help="test sentences per distance, at least 2 (half have a plural subject)",
    )
    p.add_argument(
        "--seeds",
        type=POSITIVE,
        default=DEFAULTS.seeds,
        metavar="N",
        help="models of each kind, trained from seeds --seed, --seed + 1, ...; the headline "
        "figure shows their mean and range",
    )
    p.add_argument(
        "--max-seconds",
        type=POSITIVE_FLOAT,
        default=DEFAULTS.max_seconds,
        metavar="S",
        help="cap on training time per model, in seconds",
    )
    add_seed_flag(p)
    add_threads_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    from lstmkit.demo.run import format_summary, run_demo

    set_threads(args.threads)
    cfg = DemoConfig(
        out=args.out,
        train_sentences=args.train_sentences,
        max_train_distance=args.max_train_distance,
        max_test_distance=args.max_test_distance,
        per_distance=args.per_distance,
        hidden_size=args.hidden_size,
        steps=args.steps,
        seeds=args.seeds,
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
