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
from lstmkit.tasks.definitions import TASKS


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="adding",
        help="adding (H&S 1997 exp. 4), temporal (H&S 1997 task 6a) or copy "
        "(Arjovsky et al. 2016); default adding",
    )
    p.add_argument("--hidden-size", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    p.add_argument(
        "--forget-bias",
        type=float,
        default=3.0,
        help="initial LSTM forget-gate bias; ignored for rnn/gru (default 3.0)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=2000,
        help="success: this many most recent training sequences correct "
        "(default 2000, as in the 1997 paper)",
    )
    p.add_argument(
        "--required-accuracy",
        type=float,
        default=1.0,
        help="share of the window that must be correct (default 1.0)",
    )
    p.add_argument(
        "--max-sequences",
        type=int,
        default=500_000,
        help="give up after this many training sequences (default 500,000)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="give up after this many seconds of training per run (default 600)",
    )
    p.add_argument(
        "--test-size",
        type=int,
        default=2560,
        help="fresh test sequences after training (default 2560, as in the paper)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small nets gain nothing from more, and "
        "on a shared CPU more threads spin and slow everything down)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="long-lag tasks: adding problem, temporal order, copy memory",
        description="Synthetic tasks with exact definitions and success criteria: train an "
        "RNN, GRU or LSTM on them and measure how many training sequences it needs.",
    )
    ts = p.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    show = ts.add_parser(
        "show",
        help="print example sequences of a task",
        description="Print a few generated sequences and their targets.",
    )
    show.add_argument("--task", choices=sorted(TASKS), default="adding", help="default adding")
    show.add_argument(
        "--lag",
        type=int,
        default=100,
        help="T: minimal length (adding), length (temporal), delay (copy); default 100",
    )
    show.add_argument("-n", type=int, default=2, help="number of sequences (default 2)")
    show.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    show.set_defaults(func=run_show)

    train = ts.add_parser(
        "train",
        help="train one model on one task until solved",
        description="Train until the task's success criterion holds or a "
        "budget runs out; then test on fresh sequences.",
    )
    _train_flags(train)
    train.add_argument("--cell", choices=cell_names(), default="lstm", help="default lstm")
    train.add_argument("--lag", type=int, default=100, help="the task's T (default 100)")
    train.add_argument("--out", help="write the result as JSON to this file")
    train.set_defaults(func=run_train)

    sweep = ts.add_parser(
        "sweep",
        help="accuracy and sequences needed against lag, per cell",
        description="One training run per (cell, lag), same budget for all; "
        "writes results.json and two plots to --out.",
    )
    _train_flags(sweep)
    sweep.add_argument(
        "--cells", default="rnn,lstm", help="comma-separated cells (default rnn,lstm)"
    )
    sweep.add_argument(
        "--lags", default="25,50,100", help="comma-separated T values (default 25,50,100)"
    )
    sweep.add_argument(
        "--out", default="runs/tasks-sweep", help="output folder (default runs/tasks-sweep)"
    )
    sweep.set_defaults(func=run_sweep)
    p.set_defaults(func=lambda a: p.print_help() or 2)


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
    from lstmkit.tasks.train import TrainConfig

    return TrainConfig(
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


def run_train(args: argparse.Namespace) -> int:
    import torch

    from lstmkit.tasks.train import format_table, train_task

    torch.set_num_threads(args.threads)
    r = train_task(_config(args, args.cell, args.lag), progress=not args.no_progress)
    print(r.description)
    print(format_table([r]))
    print(f"stopped: {r.stopped_because}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r.to_dict(), indent=1))
        print(f"wrote {args.out}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    import torch

    from lstmkit.inspect.plots import plot_lines
    from lstmkit.tasks.train import format_table, train_task

    torch.set_num_threads(args.threads)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    lags = [int(x) for x in args.lags.split(",")]
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
