"""Character-level LM on tiny-shakespeare with a 2 x 512 lstmkit.LSTM (char-rnn's setting).

Split: the first 90% of the characters train, the last 10% validate (nanoGPT's convention; the
dataset has no official split). Model: 65-character vocabulary (+ <unk>) -> embedding 128 ->
2-layer LSTM 512 -> dropout -> decoder. Adam lr 2e-3, batch 50 streams x 50 steps (char-rnn's
defaults), gradient norm clipped at 5. The goal is a validation loss below 1.45 nats per
character. `--minutes` caps the training time, for machines that cannot train to the end: the
script then evaluates on the whole validation text and records exactly what ran.

Before training it measures training tokens/s of lstmkit and torch.nn.LSTM, same weights,
interleaved in this process. Results: benchmarks/results/char_shakespeare.json (rewritten at
every validation).

    nice -n 10 python benchmarks/char_shakespeare.py --threads 1 --minutes 12
"""

from __future__ import annotations

import argparse
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

from lstmkit.data.batching import as_tensor, batchify, num_windows, windows  # noqa: E402
from lstmkit.data.text import read_text, tokenize  # noqa: E402
from lstmkit.data.vocab import UNK, Vocab  # noqa: E402
from lstmkit.training.checkpoint import save_checkpoint  # noqa: E402
from lstmkit.training.fit import Loop, LoopState, Step, fit  # noqa: E402
from lstmkit.training.loop import evaluate_stream, lm_loss  # noqa: E402
from lstmkit.training.model import (  # noqa: E402
    LanguageModel,
    ModelConfig,
    count_parameters,
    detach_hidden,
)

TARGET_NATS = 1.45


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data",
        default=str(REPO_ROOT.parent / "shared/data/tinyshakespeare"),
        help="directory with input.txt",
    )
    p.add_argument("--epochs", type=int, default=30, help="passes over the training text")
    p.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="stop training after this many minutes of training time, validation not "
        "counted (0 = no limit)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=5.0, help="max gradient L2 norm")
    p.add_argument("--bptt", type=int, default=50, help="characters per truncated-BPTT window")
    p.add_argument("--batch-size", type=int, default=50, help="parallel character streams")
    p.add_argument("--hidden-size", type=int, default=512, help="LSTM units per layer")
    p.add_argument("--emb-size", type=int, default=128, help="character embedding size")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers")
    p.add_argument("--dropout", type=float, default=0.25, help="dropout probability")
    p.add_argument("--engine", default="auto", help="lstmkit engine")
    p.add_argument(
        "--eval-every",
        type=int,
        default=1000,
        help="training windows between validations on the whole validation text",
    )
    p.add_argument(
        "--eval-streams",
        type=int,
        default=10,
        help="parallel streams the validation text is cut into",
    )
    p.add_argument(
        "--speed-steps",
        type=int,
        default=10,
        help="training steps per round of the tokens/s comparison (0 = skip it)",
    )
    p.add_argument(
        "--speed-rounds",
        type=int,
        default=3,
        help="interleaved rounds of the tokens/s comparison (the median is reported)",
    )
    add_training_flags(p, "char_shakespeare")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()
    text = read_text(Path(args.data) / "input.txt")
    split = int(0.9 * len(text))
    train_chars, valid_chars = tokenize(text[:split], "char"), tokenize(text[split:], "char")
    vocab = Vocab.build(train_chars, specials=(UNK,))
    train = batchify(as_tensor(vocab.encode(train_chars)), args.batch_size)
    # 10 streams of ~11k characters: every character but the first of each has >= 1 predecessor
    # of context, and validation runs ~5x faster than one stream on a CPU
    valid = batchify(as_tensor(vocab.encode(valid_chars)), args.eval_streams)
    config = ModelConfig(
        vocab_size=len(vocab),
        emb_size=args.emb_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        dropout=args.dropout,
        engine=args.engine,
    )
    model = LanguageModel(config)
    print(
        f"tiny-shakespeare: {len(train_chars):,} train / {len(valid_chars):,} valid chars, "
        f"vocabulary {len(vocab)}; model {count_parameters(model):,} parameters"
    )
    record = {
        "benchmark": "char_shakespeare_2x512",
        "target_valid_nats": TARGET_NATS,
        "env": environment(),
        "args": vars(args),
        "model": config.to_dict(),
        "vocab_size": len(vocab),
        "evals": [],
        "complete": False,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        record["elapsed_s"] = round(time.time() - t_start, 1)
        out.write_text(json.dumps(record, indent=1))

    if args.speed_steps > 0:
        record["speed"] = report_training_speed(model, train, args)
        write()

    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    per_epoch = num_windows(train, args.bptt)
    t_train, chars, run_loss, run_n, hidden = time.time(), 0, 0.0, 0, None
    state = LoopState()
    epoch = 1

    def validate(_state=None) -> None:
        nonlocal run_loss, run_n
        t0 = time.time()
        total, count = evaluate_stream(model, valid, bptt=200)
        e = {
            "step": state.step,
            "epoch": epoch,
            "train_chars": chars,
            "train_nats": run_loss / max(run_n, 1),
            "valid_nats": total / count,
            "valid_bpc": total / count / math.log(2),
            "eval_s": round(time.time() - t0, 1),
            "train_minutes": round(state.seconds / 60, 2),
        }
        record["evals"].append(e)
        run_loss, run_n = 0.0, 0
        tqdm.write(
            f"step {state.step} (epoch {epoch}): train {e['train_nats']:.4f}, valid "
            f"{e['valid_nats']:.4f} nats/char ({e['valid_bpc']:.3f} bpc)"
        )
        write()

    def compute(batch) -> Step:  # one window, from the carried (detached) state
        nonlocal hidden
        _k, x, y = batch
        logits, hidden = model(x, detach_hidden(hidden))
        return Step(lm_loss(logits, y), extra=y.numel())

    def after(state: LoopState, step: Step) -> None:
        nonlocal chars, run_loss, run_n
        chars, run_loss, run_n = chars + step.extra, run_loss + step.value, run_n + 1
        bar.update(1)
        bar.set_postfix_str(
            f"loss {step.value:.3f} {chars / (time.time() - t_train):,.0f} chars/s", False
        )

    # the shared training loop (lstmkit/training/fit.py); --minutes counts training time
    loop = Loop(clip=args.clip, max_seconds=60 * args.minutes or None, every=args.eval_every)
    bar = tqdm(total=args.epochs * per_epoch, unit="win", mininterval=30)
    for epoch in range(1, args.epochs + 1):  # noqa: B007 (validate() reads the epoch)
        hidden = None
        fit(model, optimizer, windows(train, args.bptt), compute, state, loop, after, validate)
        if state.stopped_by == "max_seconds":
            break
        validate()
    bar.close()
    out_of_time = state.stopped_by == "max_seconds"
    if run_n:
        validate()
    step = state.step
    record["train_s"] = round(time.time() - t_train, 1)
    record["train_tokens_per_s"] = round(chars / record["train_s"], 1)
    record["steps"], record["train_chars"] = step, chars
    record["epochs_run"] = round(step / per_epoch, 3)
    record["stopped_by"] = "time budget (--minutes)" if out_of_time else "epochs"
    best = min(e["valid_nats"] for e in record["evals"])
    record["best_valid_nats"] = best
    record["complete"] = not out_of_time
    record["reached_target"] = best < TARGET_NATS
    write()
    if args.save:
        save_checkpoint(
            args.save,
            model,
            config,
            vocab,
            data={"level": "char"},
            train={"benchmark": "char_shakespeare", **vars(args)},
        )
    print("\n| model | epochs run | steps | best valid nats/char | target | train time |")
    print("|---|---|---|---|---|---|")
    print(
        f"| lstmkit.LSTM 2x512 | {record['epochs_run']} | {step} | {best:.4f} | "
        f"< {TARGET_NATS} | {record['train_s'] / 60:.1f} min |"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
