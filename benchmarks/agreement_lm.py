"""Does the LSTM carry the number where the RNN cannot? LSTM and tanh RNN language models of the
same size and budget, trained on Penn Treebank, scored on data nobody here wrote.

Both models: 2 layers x 200 units, embedding 200, PTB's 10k words, bptt 20, batch 20, the same
number of epochs (the budget: the same tokens seen), no dropout. Each with a recipe that trains
it well (the RNN needs its own: the LSTM's SGD recipe made it diverge):

    lstm   Zaremba et al. 2014 "small": U(-0.1, 0.1) init, SGD lr 1 on the summed loss, clip 5,
           lr halved every epoch after the 4th
    rnn    torch's default init, Adam lr 1e-3 on the mean loss, clip 1, lr halved every epoch
           after the 4th

After every epoch the checkpoint is kept (RUN/epoch-K) with the training time so far, so the
scores can be drawn against training time. Then every kept checkpoint is scored on

    Marvin & Linzen 2018 (../shared/data/marvin_linzen_2018): `lstmkit agreement suite`, accuracy
        over the pairs the PTB vocabulary can tell apart, unscorable pairs counted
    Linzen et al. 2016 (../shared/data/linzen_rnn_agr_simple, numpred.test.1-4: 1 to 4
        attractors): `lstmkit agreement eval --format linzen`

(intermediate epochs on a spread subset, --per-test / --limit; the last epoch on everything).

    python benchmarks/agreement_lm.py                   # both models, then the scores (~2 h)
    python benchmarks/agreement_lm.py train --model rnn # one model (the default runs both at once)
    python benchmarks/agreement_lm.py score             # score what the runs kept
    python benchmarks/agreement_lm.py --quick           # smoke run: 40 steps, tiny subsets

Results: benchmarks/results/agreement_lm.json and .md (table and curve data).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO_ROOT, environment, write

DATA = REPO_ROOT.parent / "shared" / "data"
COMMON = [
    "--level", "ptb", "--layers", "2", "--hidden-size", "200", "--emb-size", "200",
    "--bptt", "20", "--batch-size", "20", "--schedule", "step", "--lr-decay", "0.5",
    "--decay-after", "4", "--seed", "1", "--threads", "1", "--no-progress",
]  # fmt: skip
RECIPES = {
    "lstm": ["--cell", "lstm", "--init", "uniform", "--init-range", "0.1", "--optimizer", "sgd",
             "--lr", "1", "--clip", "5", "--loss-per", "sequence"],
    "rnn": ["--cell", "rnn", "--optimizer", "adam", "--lr", "1e-3", "--clip", "1",
            "--loss-per", "token"],
}  # fmt: skip
LINZEN_FILES = [f"numpred.test.{k}" for k in (1, 2, 3, 4)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python benchmarks/agreement_lm.py --epochs 8",
    )
    p.add_argument("command", nargs="?", default="all", choices=["all", "train", "score"])
    p.add_argument("--model", choices=sorted(RECIPES), help="train: only this model")
    p.add_argument("--epochs", type=int, default=8, help="epochs per model (default 8)")
    p.add_argument("--runs", default="runs/agreement_lm", help="run directories (one per model)")
    p.add_argument("--data", default=str(DATA), help="the shared data folder")
    p.add_argument("--per-test", type=int, default=300, help="M&L items per file, early epochs")
    p.add_argument("--limit", type=int, default=2000, help="Linzen items per file, early epochs")
    p.add_argument(
        "--final-per-test", type=int, default=2000, help="M&L items per file, last epoch"
    )
    p.add_argument("--quick", action="store_true", help="40 steps per epoch, 2 epochs, tiny sets")
    p.add_argument("--out", default="benchmarks/results/agreement_lm.json")
    p.add_argument("--md", default="benchmarks/results/agreement_lm.md")
    return p.parse_args(argv)


def lstmkit(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lstmkit.cli.main", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)


def train(args, model: str) -> None:
    """Epoch by epoch (resuming the same run: bit for bit an uninterrupted one), keeping each."""
    run = Path(args.runs) / model
    ptb = Path(args.data) / "ptb"
    timeline_file = run / "timeline.json"
    timeline = json.loads(timeline_file.read_text()) if timeline_file.exists() else []
    done = len(timeline)
    epochs = 2 if args.quick else args.epochs
    for epoch in range(done + 1, epochs + 1):
        flags = [
            "train", "--train", str(ptb / "ptb.train.txt"), "--valid", str(ptb / "ptb.valid.txt"),
            "--out", str(run), "--epochs", str(epoch), *COMMON, *RECIPES[model],
        ]  # fmt: skip
        if args.quick:
            flags += ["--max-steps", str(40 * epoch)]
        if epoch > 1:
            flags.append("--resume")
        start = time.perf_counter()
        lstmkit(*flags)
        seconds = time.perf_counter() - start
        keep = run / f"epoch-{epoch}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(run / "last", keep)
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        last = log[-1] if log else {}
        total = (timeline[-1]["train_seconds"] if timeline else 0.0) + seconds
        timeline.append({"epoch": epoch, "train_seconds": total, "log": last})
        timeline_file.write_text(json.dumps(timeline, indent=1) + "\n")
        print(f"{model}: epoch {epoch} done, {total / 60:.1f} min, {last}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "train":
        for model in [args.model] if args.model else sorted(RECIPES):
            train(args, model)
        return 0
    if args.command == "all":  # the two models at once, one core each
        here = [sys.executable, __file__, "train", "--epochs", str(args.epochs),
                "--runs", args.runs, "--data", args.data]  # fmt: skip
        here += ["--quick"] if args.quick else []
        procs = [subprocess.Popen([*here, "--model", m]) for m in sorted(RECIPES)]
        if any(p.wait() for p in procs):
            print("error: a training run failed (its output is above)", file=sys.stderr)
            return 1
    from agreement_scores import score_all  # the scoring half of this benchmark

    record = {"environment": environment(), **score_all(args)}
    write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
