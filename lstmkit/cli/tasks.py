"""`lstmkit tasks`: the long-lag tasks (adding problem, temporal order 6a, copy memory).

lstmkit tasks show  --task adding --lag 100            # what one sequence looks like
lstmkit tasks train --task adding --lag 100 --cell lstm
lstmkit tasks sweep --task adding --cells rnn,gru,lstm --lags 25,50,100 --out runs/sweep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstmkit.cells.registry import cell_names
from lstmkit.cli.options import (
    FINITE,
    POSITIVE,
    POSITIVE_FLOAT,
    HelpFormatter,
    UsageError,
    add_seed_flag,
    add_threads_flag,
    float_in,
    int_in,
    reports_errors,
    set_threads,
)
from lstmkit.tasks.definitions import TASKS

# A sequence of T steps is allocated whole (input, states, and for training every step's
# activations), so a lag beyond this is a typo that would end in an allocation failure.
MAX_LAG = 100_000
LAG = int_in(1, MAX_LAG)
TASK_HELP = "adding (H&S 1997 exp. 4), temporal (H&S 1997 task 6a) or copy (Arjovsky et al. 2016)"
LAG_HELP = f"T: minimal length (adding), length (temporal), delay (copy); 1 to {MAX_LAG:,}"


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=sorted(TASKS), default="adding", help=TASK_HELP)
    p.add_argument("--hidden-size", type=POSITIVE, default=64, metavar="N", help="hidden units")
    p.add_argument(
        "--batch-size", type=POSITIVE, default=32, metavar="B", help="sequences per step"
    )
    p.add_argument(
        "--lr", type=POSITIVE_FLOAT, default=3e-3, metavar="LR", help="Adam learning rate, > 0"
    )
    p.add_argument(
        "--clip",
        type=POSITIVE_FLOAT,
        default=1.0,
        metavar="NORM",
        help="clip the gradient's L2 norm to NORM, > 0",
    )
    p.add_argument(
        "--forget-bias",
        type=FINITE,
        default=3.0,
        metavar="B",
        help="initial LSTM forget-gate bias; ignored for rnn/gru",
    )
    p.add_argument(
        "--window",
        type=POSITIVE,
        default=2000,
        metavar="N",
        help="success: this many most recent training sequences correct (2000 in the 1997 paper)",
    )
    p.add_argument(
        "--required-accuracy",
        type=float_in(0.0, 1.0, lo_open=True),
        default=1.0,
        metavar="P",
        help="share of the window that must be correct, > 0 and <= 1",
    )
    p.add_argument(
        "--max-sequences",
        type=POSITIVE,
        default=500_000,
        metavar="N",
        help="give up after this many training sequences",
    )
    p.add_argument(
        "--max-seconds",
        type=POSITIVE_FLOAT,
        default=600.0,
        metavar="S",
        help="give up after this many seconds of training per run",
    )
    p.add_argument(
        "--test-size",
        type=POSITIVE,
        default=2560,
        metavar="N",
        help="fresh test sequences after training (2560 in the paper)",
    )
    add_seed_flag(p)
    add_threads_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="long-lag tasks: adding problem, temporal order, copy memory",
        formatter_class=HelpFormatter,
        description="Synthetic tasks with exact definitions and success criteria: train an "
        "RNN, GRU or LSTM on them and measure how many training sequences it needs.",
    )
    ts = p.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    show = ts.add_parser(
        "show",
        formatter_class=HelpFormatter,
        help="print example sequences of a task",
        description="Print a few generated sequences and their targets.",
    )
    show.add_argument("--task", choices=sorted(TASKS), default="adding", help=TASK_HELP)
    show.add_argument("--lag", type=LAG, default=100, metavar="T", help=LAG_HELP)
    show.add_argument(
        "-n", type=int_in(1, 1000), default=2, metavar="N", help="number of sequences, 1 to 1000"
    )
    add_seed_flag(show)
    show.set_defaults(func=run_show)

    train = ts.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train one model on one task until solved",
        description="Train until the task's success criterion holds or a "
        "budget runs out; then test on fresh sequences.",
    )
    _train_flags(train)
    train.add_argument("--cell", choices=cell_names(), default="lstm", help="recurrent cell")
    train.add_argument("--lag", type=LAG, default=100, metavar="T", help=LAG_HELP)
    train.add_argument("--out", help="write the result as JSON to this file")
    train.set_defaults(func=run_train)

    sweep = ts.add_parser(
        "sweep",
        formatter_class=HelpFormatter,
        help="accuracy and sequences needed against lag, per cell",
        description="One training run per (cell, lag), same budget for all; "
        "writes results.json and two plots to --out.",
    )
    _train_flags(sweep)
    sweep.add_argument(
        "--cells", default="rnn,lstm", help=f"comma-separated cells, of {', '.join(cell_names())}"
    )
    sweep.add_argument("--lags", default="25,50,100", help="comma-separated T values")
    sweep.add_argument("--out", default="runs/tasks-sweep", help="output folder")
    sweep.set_defaults(func=run_sweep)
    p.set_defaults(func=lambda a: p.print_help() or 2)


@reports_errors
def run_show(args: argparse.Namespace) -> int:
    import torch

    from lstmkit.tasks.definitions import TEMPORAL_CLASSES, TEMPORAL_SYMBOLS, make_task

    task = make_task(args.task, args.lag)
    print(task.describe())
    b = task.sample(args.n, torch.Generator().manual_seed(args.seed))
    for k in range(args.n):
        L = int(b.lengths[k])
        x = b.x[:L, k]
        if args.task == "adding":
            marked = [t for t in range(L) if x[t, 1] == 1]
            print(
                f"sequence {k}: length {L}, markers at steps {marked}, values "
                f"{[round(float(x[t, 0]), 3) for t in marked]}, target "
                f"{float(b.target[k]):.4f}"
            )
        elif args.task == "temporal":
            syms = "".join(TEMPORAL_SYMBOLS[int(i)] for i in x.argmax(-1))
            print(f"sequence {k}: {syms}  -> class {TEMPORAL_CLASSES[int(b.target[k])]}")
        else:
            inp = " ".join(str(int(i)) for i in b.info["input"][:, k])
            tgt = " ".join(str(int(i)) for i in b.target[:, k])
            print(f"sequence {k}:\n  input  {inp}\n  target {tgt}")
    return 0


def _config(args, cell: str, lag: int):
    from lstmkit.tasks.train import TaskConfig

    return TaskConfig(
        task=args.task,
        lag=lag,
        cell=cell,
        hidden_size=args.hidden_size,
        batch_size=args.batch_size,
        lr=args.lr,
        clip=args.clip,
        forget_bias=args.forget_bias,
        window=args.window,
        required_accuracy=args.required_accuracy,
        max_sequences=args.max_sequences,
        max_seconds=args.max_seconds,
        test_size=args.test_size,
        seed=args.seed,
    )


@reports_errors
def run_train(args: argparse.Namespace) -> int:
    from lstmkit.tasks.definitions import make_task
    from lstmkit.tasks.train import format_table, train_task

    make_task(args.task, args.lag)  # a lag too short for the task stops here, not mid-run
    set_threads(args.threads)
    r = train_task(_config(args, args.cell, args.lag), progress=not args.no_progress)
    print(r.description)
    print(format_table([r]))
    print(f"stopped: {r.stopped_because}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r.to_dict(), indent=1))
        print(f"wrote {args.out}")
    return 0


def _sweep_grid(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """--cells and --lags, all checked before the first of possibly hours of runs."""
    from lstmkit.tasks.definitions import make_task

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in cell_names()]
    if not cells or unknown:
        raise UsageError(
            f"--cells {args.cells!r}: give comma-separated cells of {', '.join(cell_names())}"
        )
    try:
        lags = [LAG(x.strip()) for x in args.lags.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--lags {args.lags!r}: {e}") from None
    if not lags:
        raise UsageError(f"--lags {args.lags!r}: give comma-separated lags such as 25,50,100")
    for lag in lags:
        make_task(args.task, lag)
    return cells, lags


@reports_errors
def run_sweep(args: argparse.Namespace) -> int:
    from lstmkit.inspect.plots import plot_lines
    from lstmkit.tasks.train import format_table, train_task

    cells, lags = _sweep_grid(args)
    set_threads(args.threads)
    results = []
    for lag in lags:
        for cell in cells:
            results.append(train_task(_config(args, cell, lag), progress=not args.no_progress))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by_cell = {c: [r for r in results if r.config["cell"] == c] for c in cells}
    acc = plot_lines(
        {
            c.upper(): ([r.config["lag"] for r in rs], [r.test_accuracy for r in rs])
            for c, rs in by_cell.items()
        },
        out / "accuracy_by_lag.png",
        f"{args.task}: test accuracy after training, against T",
        "T",
        "share of test sequences correct",
    )
    seqs = plot_lines(
        {
            c.upper(): (
                [r.config["lag"] for r in rs if r.solved],
                [r.sequences for r in rs if r.solved],
            )
            for c, rs in by_cell.items()
        },
        out / "sequences_by_lag.png",
        f"{args.task}: training sequences until solved (unsolved runs left out)",
        "T",
        "training sequences",
        ylim=None,
    )
    (out / "results.json").write_text(
        json.dumps(
            {
                "runs": [r.to_dict() for r in results],
                "figures": {"accuracy_by_lag": acc, "sequences_by_lag": seqs},
            },
            indent=1,
        )
    )
    print(f"wrote {out}/results.json, accuracy_by_lag.png, sequences_by_lag.png")
    return 0
