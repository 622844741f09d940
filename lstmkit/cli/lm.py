"""`lstmkit train | sample | evaluate | predict`: language models from text files.

    lstmkit train --train train.txt --valid valid.txt --level word --out runs/lm
    lstmkit predict runs/lm/best "i drank apple"
    lstmkit sample runs/lm/best --prime "the " --length 100 --temperature 0.8
    lstmkit evaluate runs/lm/best test.txt

Every command is a thin shell over lstmkit.training (train, predict, sample, evaluate), which
Python code may call directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

from lstmkit.cli.lm_flags import TRAIN_EPILOG, add_train_flags
from lstmkit.cli.options import HelpFormatter, reports_errors
from lstmkit.training.inference import ENCODING_ERRORS, MAX_SAMPLE_LENGTH, SEED_TEXT


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "train",
        help="train a language model on text files",
        formatter_class=fmt,
        description="Train an LSTM/GRU/RNN language model with truncated BPTT. Shows loss, "
        "perplexity (word) or bits per character (char), tokens/s and the time "
        "left; validates every --eval-every steps and keeps OUT/last and OUT/best.",
        epilog=TRAIN_EPILOG,
    )
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with settings")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last: model, optimizer, schedule, RNG and data "
        "position, so the run gives the same numbers as an uninterrupted one",
    )
    add_train_flags(p)
    p.set_defaults(func=run_train)

    # sample / evaluate / predict: the number flags are checked by lstmkit.training.inference
    # itself (so Python callers get the same sentences), and reported by reports_errors.
    p = sub.add_parser(
        "sample",
        help="generate text from a trained model",
        formatter_class=HelpFormatter,
        description="Generate text after an optional priming text.",
    )
    p.add_argument("checkpoint", help="checkpoint directory (RUN/best or RUN/last)")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument(
        "--length",
        type=int,
        default=200,
        metavar="N",
        help=f"tokens to generate: characters or words, 0 to {MAX_SAMPLE_LENGTH:,}",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="> 0; < 1 safer and more repetitive, > 1 more surprising",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=0,
        metavar="K",
        help="sample only among the K most probable tokens, 0 = all",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help=f"random seed, 0 to {SEED_TEXT} (default: fresh randomness each run)",
    )
    p.set_defaults(func=run_sample)

    p = sub.add_parser(
        "evaluate",
        help="perplexity / bits per character on a text file",
        formatter_class=HelpFormatter,
        description="Mean loss of a model on a text file, read the way the "
        "model's training text was (char / word / ptb).",
    )
    p.add_argument("checkpoint", help="checkpoint directory (RUN/best or RUN/last)")
    p.add_argument("file", help="UTF-8 text file")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="B",
        help="parallel streams, >= 1; 1 gives every token its full context",
    )
    p.add_argument(
        "--bptt",
        type=int,
        default=100,
        metavar="T",
        help="steps per forward call, >= 1; does not change the result",
    )
    p.add_argument(
        "--encoding-errors",
        choices=ENCODING_ERRORS,
        default="strict",
        help="what to do with bytes that are not UTF-8: stop, or replace them with U+FFFD",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser(
        "predict",
        help="the most probable next tokens after a prefix",
        formatter_class=HelpFormatter,
        description="Top-k next tokens after PREFIX, with probabilities.",
    )
    p.add_argument("checkpoint", help="checkpoint directory (RUN/best or RUN/last)")
    p.add_argument("prefix", help='text so far, e.g. "i drank apple"')
    p.add_argument("-k", "--top-k", type=int, default=10, metavar="K", help="how many tokens, >= 1")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_predict)


@reports_errors
def run_train(args: argparse.Namespace) -> int:
    from lstmkit.training.config import merge_config, read_config_file
    from lstmkit.training.loop import NonFiniteLossError
    from lstmkit.training.trainer import TrainingInterrupted, train

    flags = {
        k: v for k, v in vars(args).items() if k not in ("config", "resume", "func", "command")
    }
    file_values = read_config_file(args.config) if args.config else {}
    cfg = merge_config(file_values, flags, args.config or "flags")
    try:
        with _sigterm_as_interrupt():
            result = train(cfg, resume=args.resume)
    except NonFiniteLossError:
        return 1  # the trainer already said what happened and which checkpoint is kept
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"interrupted: {e}", file=sys.stderr)
        return 128 + getattr(signal, e.signal_name, signal.SIGINT)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun rank 0 alone reports
    best = f", best valid loss {result.best_valid_loss:.4f} nats" if result.best_valid_loss else ""
    print(f"done: {result.steps} steps ({result.stopped_by}){best}; checkpoints in {result.out}")
    return 0


class _Terminated(KeyboardInterrupt):
    signal_name = "SIGTERM"


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, a batch scheduler, torchrun stopping its workers) ends a run the way Ctrl-C
    does: the save in progress is undone or finished, and the user is told where to resume."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@reports_errors
def run_sample(args: argparse.Namespace) -> int:
    from lstmkit.training.inference import sample

    text = sample(
        args.checkpoint,
        prime=args.prime,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    print(text)
    return 0


@reports_errors
def run_evaluate(args: argparse.Namespace) -> int:
    from lstmkit.training.inference import evaluate

    r = evaluate(
        args.checkpoint,
        args.file,
        batch_size=args.batch_size,
        bptt=args.bptt,
        errors=args.encoding_errors,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    score = f"bits per character {r['bpc']:.4f}" if "bpc" in r else f"perplexity {r['ppl']:.2f}"
    print(
        f"{r['file']}: {r['tokens']:,} tokens, {score}, loss {r['nats']:.4f} nats/token, "
        f"unknown {100 * r['unk_rate']:.2f}%"
    )
    return 0


@reports_errors
def run_predict(args: argparse.Namespace) -> int:
    from lstmkit.training.checkpoint import load_checkpoint
    from lstmkit.training.inference import predict, unknown_prompt_tokens

    ckpt = load_checkpoint(args.checkpoint)
    top = predict(ckpt, args.prefix, k=args.top_k)
    unknown = unknown_prompt_tokens(ckpt, args.prefix)
    if args.json:
        print(
            json.dumps(
                {
                    "prefix": args.prefix,
                    "unknown": unknown,
                    "next": [{"token": t, "p": p} for t, p in top],
                }
            )
        )
        return 0
    if unknown:
        print(f"note: not in the vocabulary, read as <unk>: {unknown}")
    for token, p in top:
        print(f"{p:8.4f}  {token!r}")
    return 0
